"""Blotch check: large flat, saturated single-colour regions that a style model paints into a photo.

A blotch is a connected region of 8x8 blocks, together at least 0.4% of the image, where the output
is nearly one colour (small spread in Lab), saturated, far from the photo's colour there, and
rare in the painting (so it is not the style's own palette). Every shipped style is run on the two
sample photos and ten held-out BSD100 photos; the exit code is 1 if any blotch is found.

    python bench/blotches.py [--models a,b] [--data DIR] [--out DIR]   # --out: marked pictures
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.metrics import srgb_to_lab  # noqa: E402

BLOCK = 8
MIN_AREA = 0.004  # of the image
FLAT = 6.0  # Lab spread (std) inside a block
SATURATED = 20.0  # Lab chroma
AWAY = 25.0  # Delta E from the photo's block colour
RARE = 0.01  # at most this share of the painting's pixels within Delta E 20 of the blotch colour


def _blocks(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per 8x8 block: mean Lab colour and spread (mean std of the three channels)."""
    h, w = (lab.shape[0] // BLOCK) * BLOCK, (lab.shape[1] // BLOCK) * BLOCK
    grid = lab[:h, :w].reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK, 3)
    return grid.mean((1, 3)), grid.std((1, 3)).mean(-1)


def _components(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """4-connected components of a small boolean grid."""
    seen, found = np.zeros_like(mask), []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        seen[start], stack, cells = True, [start], []
        while stack:
            y, x = stack.pop()
            cells.append((y, x))
            for n in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if (
                    0 <= n[0] < mask.shape[0]
                    and 0 <= n[1] < mask.shape[1]
                    and mask[n]
                    and not seen[n]
                ):
                    seen[n] = True
                    stack.append(n)
        found.append(cells)
    return found


def find_blotches(output: np.ndarray, photo: np.ndarray, painting: np.ndarray) -> list[dict]:
    """Blotches in ``output`` (uint8 RGB, the photo stylised): area share, mean colour, block box."""
    out_mean, out_spread = _blocks(srgb_to_lab(output))
    photo_mean, _ = _blocks(srgb_to_lab(photo))
    chroma = np.hypot(out_mean[..., 1], out_mean[..., 2])
    away = np.linalg.norm(out_mean - photo_mean, axis=-1)
    mask = (out_spread < FLAT) & (chroma > SATURATED) & (away > AWAY)
    palette = srgb_to_lab(painting.reshape(-1, 3)[:: max(1, painting.size // 3 // 200_000)])
    blotches = []
    for cells in _components(mask):
        area = len(cells) / mask.size
        if area < MIN_AREA:
            continue
        colour = np.mean([out_mean[c] for c in cells], axis=0)
        if np.mean(np.linalg.norm(palette - colour, axis=-1) < 20) > RARE:
            continue  # the painting's own colour
        ys, xs = zip(*cells, strict=True)
        box = tuple(int(v) * BLOCK for v in (min(xs), min(ys), max(xs) + 1, max(ys) + 1))
        rgb = (
            output[box[1] : box[3], box[0] : box[2]]
            .reshape(-1, 3)
            .mean(0)
            .round()
            .astype(int)
            .tolist()
        )
        blotches.append({"area": area, "rgb": tuple(rgb), "box": box})
    return blotches


def main() -> None:
    from bench.style_peer import models_from, painting_of, style_parser

    parser = style_parser(__doc__)
    parser.add_argument("--out", type=Path, help="write each photo with a blotch, marked, here")
    args = parser.parse_args()
    from core.engine import Engine
    from trainer.cli import data_root

    data = args.data or data_root()
    held_out = sorted((data / "sr" / "eval" / "BSD100" / "HR").glob("*.png"))[:10]
    if len(held_out) < 10:
        sys.exit(
            f"held-out photos not found under {data}/sr/eval/BSD100/HR: set IMPASTO_DATA or --data"
        )
    photos = [REPO / "docs" / "sample.jpg", REPO / "docs" / "sample-coffee.jpg", *held_out]
    engine, total = Engine(), 0
    print("| style | photos with a blotch | largest (share of image, colour) |")
    print("|---|---|---|")
    for model in models_from(args.models):
        painting = np.asarray(Image.open(painting_of(model, data)).convert("RGB"))
        hits, largest = [], None
        for path in photos:
            photo = np.asarray(Image.open(path).convert("RGB"))
            output = engine.stylize(model, photo)
            found = find_blotches(output, photo, painting)
            if found:
                hits.append(path.name)
                biggest = max(found, key=lambda b: b["area"])
                if largest is None or biggest["area"] > largest["area"]:
                    largest = {**biggest, "photo": path.name}
                if args.out:
                    marked = Image.fromarray(output)
                    for b in found:
                        ImageDraw.Draw(marked).rectangle(b["box"], outline=(255, 0, 255), width=3)
                    args.out.mkdir(parents=True, exist_ok=True)
                    marked.save(args.out / f"blotch-{model.stem}-{path.stem}.png")
        total += len(hits)
        what = (
            f"{largest['area']:.1%} rgb{largest['rgb']} in {largest['photo']}" if largest else "-"
        )
        print(
            f"| {model.stem} | {len(hits)}/{len(photos)} {', '.join(hits)} | {what} |", flush=True
        )
    sys.exit(1 if total else 0)


if __name__ == "__main__":
    main()
