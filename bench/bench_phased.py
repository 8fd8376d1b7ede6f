"""The networks' 3-channel 9x9 output layer, plain against in phases (core.phased), in one run.

PyTorch training (forward + backward, batch 4 at 256 px, as the trainer runs it on the CPU) and
OpenVINO fp32 inference (one 1024x1024 image, as the engine runs it), for both style widths.

    .venv/bin/python bench/bench_phased.py [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.phased import phased  # noqa: E402


def seconds(run, rounds: int = 4) -> float:
    """Median seconds of ``run`` after one warm-up."""
    run()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def training(layer: nn.Module, channels: int) -> float:
    x = torch.randn(4, channels, 264, 264, requires_grad=True)
    grad = torch.randn(4, 3, 256, 256)

    def run():
        layer.zero_grad()
        layer(x).backward(grad)

    return seconds(run)


def inference(layer: nn.Module, channels: int) -> float:
    import openvino as ov

    x = torch.randn(1, channels, 1032, 1032)
    with torch.no_grad():
        model = ov.convert_model(torch.jit.trace(layer, (x,)), input=[list(x.shape)])
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request, data = compiled.create_infer_request(), x.numpy()
    return seconds(lambda: request.infer([data]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| layer | run | plain ms | phased ms | speed-up |")
    print("|---|---|---|---|---|")
    for channels in (32, 16):
        torch.manual_seed(0)
        plain = nn.Sequential(nn.Conv2d(channels, 3, 9))
        fast = phased(plain)
        for label, measure in (
            ("training, batch 4 x 256 px", training),
            ("OpenVINO fp32, 1024 px", inference),
        ):
            a, b = measure(plain, channels), measure(fast, channels)
            print(
                f"| {channels}->3, 9x9 | {label} | {a * 1e3:.0f} | {b * 1e3:.0f} | {a / b:.2f}x |"
            )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
