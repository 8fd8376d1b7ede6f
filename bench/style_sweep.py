"""Short style-training sweeps ranked by picture and palette: which recipe looks like the painting.

Each run trains the compact network for a few hundred steps at a small crop size, then stylises the
two sample photos; the sheet has one row per run (painting, then the photos), and the table gives
each run's palette distance to the painting (bench.metrics.palette_distance; lower is closer).

    python bench/style_sweep.py --style starry_night.jpg --steps 400 \
        --run "hed 1e10:loss_network=vgg16_hed,style_weight=1e10" \
        --run "bn 1e11:loss_network=vgg16_bn,style_weight=1e11" --out docs/sweep-starry-night.png

A run is "LABEL:FIELD=VALUE,..." with any trainer.config.TrainConfig field (numbers parsed).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.metrics import palette_distance  # noqa: E402
from trainer.cli import data_root  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.loop import train  # noqa: E402

PHOTOS = [REPO / "docs" / "sample.jpg", REPO / "docs" / "sample-coffee.jpg"]


def parse_run(text: str) -> tuple[str, dict[str, object]]:
    """ "LABEL:key=value,..." as (label, settings); values that parse as numbers become numbers."""
    label, _, fields = text.partition(":")
    settings: dict[str, object] = {}
    for item in filter(None, fields.split(",")):
        key, _, value = item.partition("=")
        try:
            settings[key] = int(value) if value.isdigit() else float(value)
        except ValueError:
            settings[key] = value
    return label, settings


def load_rgb(path: Path, shorter: int) -> np.ndarray:
    """A photo as uint8 RGB with its shorter side resized to ``shorter``."""
    image = Image.open(path).convert("RGB")
    scale = shorter / min(image.size)
    return np.asarray(
        image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    )


@torch.no_grad()
def stylise(net: torch.nn.Module, photo: np.ndarray) -> np.ndarray:
    """The network's uint8 output for one uint8 photo."""
    x = torch.from_numpy(photo.copy()).permute(2, 0, 1)[None].float() / 255
    y = net.eval()(x).clamp(0, 1)[0].permute(1, 2, 0)
    return (y * 255).round().byte().numpy()


def labelled_row(label: str, pictures: list[np.ndarray], height: int) -> Image.Image:
    """Pictures side by side at one height, with the label written on the first."""
    scaled = [
        Image.fromarray(p).resize((round(p.shape[1] * height / p.shape[0]), height))
        for p in pictures
    ]
    row = Image.new("RGB", (sum(s.width + 4 for s in scaled), height + 4), "white")
    x = 0
    for picture in scaled:
        row.paste(picture, (x, 0))
        x += picture.width + 4
    draw = ImageDraw.Draw(row)
    draw.rectangle((0, 0, 8 + 6 * len(label), 14), fill="white")
    draw.text((4, 2), label, fill="black")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--style", required=True, help="painting file name in DATA/styles")
    parser.add_argument("--run", action="append", required=True, help="LABEL:FIELD=VALUE,...")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--photo-size", type=int, default=256, help="shorter side of the photos")
    parser.add_argument(
        "--data", type=Path, default=None, help="default: $IMPASTO_DATA or ../shared/data"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--keep", type=Path, default=None, help="folder to keep each run's model in"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = args.data or data_root()
    painting_path = data / "styles" / args.style
    if not painting_path.is_file():
        sys.exit(f"painting not found: {painting_path} (set IMPASTO_DATA or --data)")
    painting = load_rgb(painting_path, args.photo_size)
    photos = [load_rgb(p, args.photo_size) for p in PHOTOS]
    rows = [labelled_row("photos", [painting, *photos], args.photo_size)]
    print(f"| run | palette distance (Lab, mean of {len(photos)} photos) | s | final losses |")
    print("|---|---|---|---|")
    for text in args.run:
        label, settings = parse_run(text)
        with tempfile.TemporaryDirectory() as folder:
            keep = args.keep / f"{label.replace(' ', '_')}.impasto" if args.keep else None
            config = TrainConfig(
                task="style", name="sweep", dataset=str(data / "sr" / "train"),
                output=str(keep or Path(folder) / "m.impasto"), run_dir=str(Path(folder) / "run"),
                style_image=str(painting_path), width="compact", image_size=args.image_size,
                steps=args.steps, amp=True, log_every=max(1, args.steps // 4),
                preview_every=10**9, checkpoint_every=10**9, **settings,
            )  # fmt: skip
            start = time.perf_counter()
            result = train(config)
            seconds = time.perf_counter() - start
        outputs = [stylise(result.net.cpu().float(), p) for p in photos]
        distance = np.mean([palette_distance(o, painting) for o in outputs])
        losses = ", ".join(f"{k} {v:.3g}" for k, v in result.losses.items())
        print(f"| {label} | {distance:.1f} | {seconds:.0f} | {losses} |", flush=True)
        rows.append(
            labelled_row(f"{label}  palette {distance:.1f}", [painting, *outputs], args.photo_size)
        )
        save_sheet(rows, args.out)  # after every run: a long sweep shows its progress
    print(f"sheet: {args.out}")


def save_sheet(rows: list[Image.Image], path: Path) -> None:
    """The rows stacked into one PNG."""
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


if __name__ == "__main__":
    main()
