"""Upscale x4 on real photos: JPEG and noisy phone-like inputs, and the grid on flat areas.

    python bench/sr_photos.py --models sr-faithful,sr-sharp,sr-photo [--out docs]
    python bench/sr_photos.py --grid OLD.impasto,NEW.impasto   # flat-area crops, before/after

Writes OUT/sr-photos.png: per input (our coffee photo downscaled x4 and saved as JPEG at quality
70; a crop of our sample photo downscaled x4 with sensor-like noise and JPEG 80), 2x-zoomed crops
of the input (nearest), bicubic, each model, and the original. With --grid, OUT/sr-grid.png: the
same for flat regions of Set14 (clean MATLAB-bicubic inputs), where an upsampling grid shows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.style_sweep import labelled_row, save_sheet  # noqa: E402
from core.engine import Engine  # noqa: E402
from trainer.cli import data_root  # noqa: E402
from trainer.tasks import jpeg_pixels  # noqa: E402

CROP = 160  # output pixels per crop, shown at 2x
GRID_CROPS = (("img_005.png", 0.2, 0.15), ("img_009.png", 0.15, 0.2), ("img_012.png", 0.1, 0.5))


def downscale(pixels: np.ndarray) -> np.ndarray:
    """A quarter of the size, antialiased (as a phone or a website would)."""
    h, w = pixels.shape[:2]
    return np.asarray(
        Image.fromarray(pixels).resize((w // 4, h // 4), Image.BICUBIC, reducing_gap=3.0)
    )


def real_inputs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, low-resolution input, original) for the JPEG and the noisy phone-like case."""
    coffee = np.asarray(Image.open(REPO / "docs" / "sample-coffee.jpg").convert("RGB"))
    sample = np.asarray(Image.open(REPO / "docs" / "sample.jpg").convert("RGB"))
    noise = np.random.default_rng(0).normal(0, 6, (*downscale(sample).shape[:2], 1))
    noisy = np.clip(downscale(sample) + noise, 0, 255)  # grey noise, as a phone sensor at ISO 800
    return [
        ("coffee, 1/4 size, JPEG q70", jpeg_pixels(downscale(coffee), 70), coffee),
        ("sample, 1/4 size, noise 6, JPEG q80", jpeg_pixels(noisy.astype(np.uint8), 80), sample),
    ]


def crops(pictures: list[np.ndarray], top: float, left: float) -> list[np.ndarray]:
    """The same CROP x CROP window (at fractions of the size) of each picture, zoomed 2x."""
    h, w = pictures[-1].shape[:2]
    y, x = int(top * (h - CROP)), int(left * (w - CROP))
    return [np.kron(p[y : y + CROP, x : x + CROP], np.ones((2, 2, 1), np.uint8)) for p in pictures]


def sheet_rows(engine: Engine, models: list[str], cases, where) -> list[Image.Image]:
    """Rows: input (nearest) | bicubic | each model | original, for each (label, low, truth)."""
    rows = []
    for (label, low, truth), (top, left) in zip(cases, where, strict=True):
        size = (truth.shape[1], truth.shape[0])
        shown = [
            np.asarray(Image.fromarray(low).resize(size, Image.NEAREST)),
            np.asarray(Image.fromarray(low).resize(size, Image.BICUBIC)),
            *(engine.upscale(m, low)[: truth.shape[0], : truth.shape[1]] for m in models),
            truth,
        ]
        rows.append(labelled_row(label, crops(shown, top, left), 2 * CROP))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--models", default="sr-faithful,sr-sharp,sr-photo", help="comma-separated names or files"
    )
    p.add_argument(
        "--grid", help="comma-separated models for the flat-area sheet (e.g. old,new sharp)"
    )
    p.add_argument("--data", type=Path, default=data_root())
    p.add_argument("--out", type=Path, default=REPO / "docs")
    args = p.parse_args()
    engine = Engine(device="cpu", backend="torch", precision="fp32")
    names = args.models.split(",")
    title = " | ".join(["input", "bicubic", *(Path(n).stem for n in names), "original"])
    rows = sheet_rows(engine, names, real_inputs(), [(0.5, 0.5), (0.45, 0.35)])
    save_sheet([labelled_row(title, [], 16), *rows], args.out / "sr-photos.png")
    print(f"wrote {args.out / 'sr-photos.png'}: {title}")
    if args.grid:
        hr = args.data / "sr" / "eval" / "Set14" / "HR"
        if not hr.is_dir():
            sys.exit(f"Set14 not found under {args.data}/sr/eval: set IMPASTO_DATA or --data")
        cases = [
            (name, np.asarray(Image.open(hr.parent / "LR_x4" / name).convert("RGB")),
             np.asarray(Image.open(hr / name).convert("RGB")))
            for name, _, _ in GRID_CROPS
        ]  # fmt: skip
        grid = args.grid.split(",")
        title = " | ".join(["input", "bicubic", *(Path(n).stem for n in grid), "original"])
        rows = sheet_rows(engine, grid, cases, [(top, left) for _, top, left in GRID_CROPS])
        save_sheet([labelled_row(title, [], 16), *rows], args.out / "sr-grid.png")
        print(f"wrote {args.out / 'sr-grid.png'}: {title}")


if __name__ == "__main__":
    main()
