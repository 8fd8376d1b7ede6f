"""Image file speed: core.images load/save per format against Pillow's own 8-bit PNG in the same run.

    .venv/bin/python -m bench.image_io [--megapixels 12] [--repeat 3]

16-bit PNGs are decoded twice by Pillow (high and low bytes) and encoded by our own writer, so
they are the ones to watch; the ratio column is time / Pillow's plain 8-bit PNG load or save.
Times are CPU seconds of this process (all of this work is single-threaded), so other programs
sharing the machine do not distort them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from core.images import load_image, save_image


def photo_like(height: int, width: int) -> np.ndarray:
    """Smooth structure plus fine noise: compresses like a photo, unlike pure noise or flat colour."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([np.sin(x / 97) * np.cos(y / 53), np.cos((x + y) / 71), x / width], -1)
    noise = np.random.default_rng(0).normal(0, 0.02, (height, width, 3)).astype(np.float32)
    return np.clip(0.5 + 0.4 * base + noise, 0, 1)


def best_of(repeat: int, action) -> float:
    times = []
    for _ in range(repeat):
        start = time.process_time()
        action()
        times.append(time.process_time() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    width = int((args.megapixels * 1e6 * 4 / 3) ** 0.5)
    height = int(width * 3 / 4)
    pixels = photo_like(height, width)
    eight = (pixels * 255 + 0.5).astype(np.uint8)
    sixteen = (pixels * 65535 + 0.5).astype(np.uint16)

    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder) / "pillow.png"
        save_base = best_of(args.repeat, lambda: Image.fromarray(eight).save(base))
        load_base = best_of(args.repeat, lambda: np.asarray(Image.open(base)))
        cases = [
            ("PNG 8-bit", "x.png", eight),
            ("PNG 16-bit", "x16.png", sixteen),
            ("JPEG q92", "x.jpg", eight),
            ("TIFF 8-bit", "x.tif", eight),
        ]
        print(f"{width}x{height} RGB ({width * height / 1e6:.1f} MP), best of {args.repeat}")
        print("| file | size MB | save CPU s | save ratio | load CPU s | load ratio |")
        print("|---|---|---|---|---|---|")
        print(
            f"| Pillow PNG 8-bit (baseline) | {base.stat().st_size / 1e6:.1f} | {save_base:.2f} "
            f"| 1.00 | {load_base:.2f} | 1.00 |"
        )
        for label, name, array in cases:
            path = Path(folder) / name
            save = best_of(args.repeat, lambda p=path, a=array: save_image(p, a))
            load = best_of(args.repeat, lambda p=path: load_image(p))
            print(
                f"| core.images {label} | {path.stat().st_size / 1e6:.1f} | {save:.2f} | "
                f"{save / save_base:.2f} | {load:.2f} | {load / load_base:.2f} |"
            )


if __name__ == "__main__":
    main()
