"""Upscaling speed of x4 models against the shipped one, alternated in one process (A B A B).

The engine as users get it (default backend and precision on this device): seconds per output
megapixel for each model, and the ratio to the first, so a shared machine's noise cancels.

    .venv/bin/python bench/bench_upscale.py weights/sr-faithful.impasto NEW.impasto
    .venv/bin/python bench/bench_upscale.py A.impasto B.impasto --side 512 --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.image_io import photo_like  # noqa: E402
from core.engine import Engine  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", type=Path, nargs="+", help="model files; the first is the baseline")
    p.add_argument(
        "--side", type=int, default=256, help="input side in pixels (default 256: 1 MP out)"
    )
    p.add_argument("--repeat", type=int, default=3, help="rounds of A B ... (default 3)")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    engine = Engine(device=args.device)
    image = photo_like(args.side, args.side)
    megapixels = (4 * args.side) ** 2 / 1e6
    for model in args.models:  # first runs load, convert and compile: not timed
        engine.upscale(model, image)
    times: dict[Path, list[float]] = {m: [] for m in args.models}
    for _ in range(args.repeat):
        for model in args.models:
            start = time.perf_counter()
            engine.upscale(model, image)
            times[model].append((time.perf_counter() - start) / megapixels)
    base = statistics.median(times[args.models[0]])
    print(f"engine {engine.backend} {engine.precision} on {engine.device}, {args.side} px in, "
          f"{megapixels:.2f} MP out, median of {args.repeat}")  # fmt: skip
    for model, seconds in times.items():
        s = statistics.median(seconds)
        print(f"{model.name:32s} {s:.3f} s/MP  {s / base:.2f}x  (runs: "
              + ", ".join(f"{t:.3f}" for t in seconds) + ")")  # fmt: skip


if __name__ == "__main__":
    main()
