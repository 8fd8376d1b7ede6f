"""How close the engine's int8 CPU output is to its fp32 output, for every shipped style model.

Photos: the two in docs/ (run whole), and the coffee photo upscaled 4x and 8x (3.8 and 15 MP,
tiled with thumbnail statistics), so both of the engine's paths are measured.

    .venv/bin/python bench/int8_accuracy.py [--big 4,8] [--styles starry-night,udnie]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_engine import psnr  # noqa: E402
from core.engine import Engine  # noqa: E402
from core.registry import list_models  # noqa: E402


def photos(big: list[int]) -> dict[str, np.ndarray]:
    """Name -> RGB uint8 image."""
    found = {}
    for name in ("sample.jpg", "sample-coffee.jpg"):
        found[name] = np.asarray(Image.open(REPO / "docs" / name).convert("RGB"))
    coffee = Image.open(REPO / "docs" / "sample-coffee.jpg").convert("RGB")
    for factor in big:
        size = (coffee.width * factor, coffee.height * factor)
        found[f"coffee x{factor}"] = np.asarray(coffee.resize(size, Image.BICUBIC))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", default="4,8", help="upscale factors of the coffee photo")
    parser.add_argument("--styles", help="comma-separated (default: every calibrated style)")
    args = parser.parse_args()
    styles = (
        args.styles.split(",")
        if args.styles
        else [m.name for m in list_models("style") if m.int8_ranges]
    )
    images = photos([int(f) for f in args.big.split(",") if f])
    int8, fp32 = Engine(device="cpu"), Engine(device="cpu", precision="fp32")
    print(f"# int8 ({int8.backend}) against fp32: PSNR dB / mean absolute difference in levels")
    print(
        "| style | "
        + " | ".join(f"{n} ({a.shape[1]}x{a.shape[0]})" for n, a in images.items())
        + " |"
    )
    print("|---|" + "---|" * len(images))
    for style in styles:
        cells = []
        for image in images.values():
            a, b = int8.stylize(style, image), fp32.stylize(style, image)
            cells.append(f"{psnr(a, b):.1f} / {np.abs(a.astype(int) - b).mean():.2f}")
        print(f"| {style} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
