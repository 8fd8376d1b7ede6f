"""Every figure of issue 18's targets in one run (under 10 minutes on a big GPU), as one table.

- speed: the engine (device-resident, its default precision) against eager fp32 whole-image
  inference (pytorch/examples' eval: to float, the network, back to 8 bits), uint8 in and out,
  at 1, 4 and 16 MP for both style widths and the upscaler (output megapixels); also the host
  path (resident=False) and torch.compile / CUDA graphs at 4 MP, which the engine leaves off;
- 64 MP stylised within an 8 GiB budget (torch.cuda.set_per_process_memory_fraction), where
  eager runs out of memory;
- PSNR of the engine's output against the CPU fp32 engine (tiled, the same tile size).

    python bench/gpu_engine_check.py              # on a CUDA machine, from the repo root
    python bench/gpu_engine_check.py --cpu-smoke  # tiny sizes on the CPU: checks the script runs
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_engine import image_size, psnr, test_image  # noqa: E402
from core.engine import Engine  # noqa: E402
from core.modelfile import load_model  # noqa: E402

MODELS = {
    "compact": REPO / "weights/starry-night.impasto",
    "full": REPO / "weights/starry-night-full.impasto",
    "sr": REPO / "weights/sr-faithful.impasto",
}
BUDGET_GIB = 8.0
TIME_BUDGET_S = 420  # no optional row starts past this, so one run stays under 10 minutes


@dataclass
class Setup:
    device: str
    sizes: tuple[float, ...]  # megapixels of the result
    compile_at: float  # the size at which the compile modes are measured
    large: float  # the bounded-memory case
    psnr_at: float
    repeat: int


GPU = Setup("cuda", (1, 4, 16), 4, 64, 1, 3)
SMOKE = Setup("cpu", (0.02, 0.05), 0.05, 0.1, 0.05, 1)


class Clock:
    """Wall time of a job on the device: synchronised before and after."""

    def __init__(self, device: str) -> None:
        self.cuda = device == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def seconds(self, job, repeat: int) -> float:
        """Median of ``repeat`` timed runs after one warm-up run."""
        job()
        times = []
        for _ in range(repeat):
            self.sync()
            start = time.perf_counter()
            job()
            self.sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()


def input_image(kind: str, megapixels: float) -> np.ndarray:
    """A uint8 photo-like image whose result has ``megapixels`` (the upscaler's input is 1/16)."""
    return test_image(megapixels / 16 if kind == "sr" else megapixels)


def run_engine(engine: Engine, kind: str, image: np.ndarray) -> np.ndarray:
    model = MODELS[kind]
    return engine.upscale(model, image) if kind == "sr" else engine.stylize(model, image)


def eager(kind: str, device: str):
    """Eager fp32 whole-image inference of the network, uint8 in and out."""
    net = load_model(MODELS[kind])[0].to(device).eval()

    def run(image: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float() / 255
            y = net(x).clamp(0, 1).mul(255).round().byte()
            return y[0].permute(1, 2, 0).cpu().numpy()

    return run


class Table:
    """Rows of (case, engine s/MP, reference s/MP, speed vs reference, peak GiB, target, met)."""

    header = (
        "case",
        "engine s/MP",
        "eager fp32 s/MP",
        "speed vs eager",
        "peak GiB",
        "target",
        "met",
    )

    def __init__(self) -> None:
        self.rows: list[tuple[str, ...]] = []
        self.start = time.perf_counter()

    def add(self, *cells: object) -> None:
        self.rows.append(tuple("" if c is None else str(c) for c in cells))
        print(" | ".join(self.rows[-1]), flush=True)  # as it goes, in case the run is cut short

    def out_of_time(self) -> bool:
        return time.perf_counter() - self.start > TIME_BUDGET_S

    def print(self) -> None:
        print("\n| " + " | ".join(self.header) + " |")
        print("|" + "---|" * len(self.header))
        for row in self.rows:
            print("| " + " | ".join(row + ("",) * (len(self.header) - len(row))) + " |")


def speed(table: Table, setup: Setup, clock: Clock, kind: str, megapixels: float) -> None:
    """One speed row: the engine and eager on the same image."""
    image = input_image(kind, megapixels)
    engine = Engine(device=setup.device, backend="torch")
    clock.reset_peak()
    job = partial(run_engine, engine, kind, image)
    t_engine = clock.seconds(job, setup.repeat)
    peak_engine = clock.peak_gib()
    del engine, job  # its tiles' memory is not eager's
    run = eager(kind, setup.device)
    clock.reset_peak()
    try:
        t_eager = clock.seconds(lambda: run(image), setup.repeat)
    except torch.OutOfMemoryError:
        table.add(
            f"{kind} {megapixels} MP", f"{t_engine / megapixels:.4f}", "OOM", "", _gib(peak_engine)
        )
        return
    peak_eager = clock.peak_gib()
    ratio = t_eager / t_engine
    peaks = f"{_gib(peak_engine)} / {_gib(peak_eager)}" if clock.cuda else ""
    table.add(
        f"{kind} {megapixels} MP",
        f"{t_engine / megapixels:.4f}",
        f"{t_eager / megapixels:.4f}",
        f"{ratio:.2f}x",
        peaks,
        ">= 1.0x",
        "yes" if ratio >= 1 else "NO",
    )


VARIANTS = [
    ("host path", {"resident": False}),
    ("torch.compile", {"compile_mode": "compile"}),
    ("CUDA graphs", {"compile_mode": "cudagraphs"}),
]


def variant(table: Table, setup: Setup, clock: Clock, kind: str, label: str, options: dict) -> None:
    """The host path or a compile mode at one size, for the record (not targets)."""
    megapixels = setup.compile_at
    if table.out_of_time():  # a compile takes a minute or more: none starts late
        table.add(f"{kind} {megapixels} MP {label}", "skipped: time")
        return
    image = input_image(kind, megapixels)
    engine = Engine(device=setup.device, backend="torch", resident=options.get("resident"))
    engine.compile_mode = options.get("compile_mode", "off")
    try:
        t = clock.seconds(partial(run_engine, engine, kind, image), setup.repeat)
    except Exception as e:  # noqa: BLE001 - a failing variant is a finding, not the end
        table.add(f"{kind} {megapixels} MP {label}", f"failed: {type(e).__name__}: {e}"[:120])
        return
    table.add(f"{kind} {megapixels} MP {label}", f"{t / megapixels:.4f}")


def bounded(table: Table, setup: Setup, clock: Clock, megapixels: float) -> None:
    """The full network at ``megapixels`` within BUDGET_GIB of GPU memory; eager under the same."""
    image = test_image(megapixels)
    if clock.cuda:
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        torch.cuda.set_per_process_memory_fraction(min(1.0, BUDGET_GIB / total))
    clock.reset_peak()
    engine = Engine(device=setup.device, backend="torch")
    start = time.perf_counter()
    result = run_engine(engine, "full", image)
    clock.sync()
    seconds = time.perf_counter() - start
    peak = clock.peak_gib()
    del engine
    try:
        eager("full", setup.device)(image)
        eager_note = "eager ran"
    except torch.OutOfMemoryError:
        eager_note = "eager: OOM"
    if clock.cuda:
        torch.cuda.set_per_process_memory_fraction(1.0)
    met = peak is None or peak <= BUDGET_GIB
    table.add(
        f"full {megapixels} MP, {BUDGET_GIB:g} GiB budget ({result.shape[1]}x{result.shape[0]})",
        f"{seconds / megapixels:.4f}",
        eager_note,
        "",
        _gib(peak),
        f"<= {BUDGET_GIB:g} GiB",
        "yes" if met else "NO",
    )


def accuracy(table: Table, setup: Setup, kind: str, megapixels: float) -> None:
    """PSNR of the engine against the CPU fp32 engine, both tiled with tiles of 512."""
    image = input_image(kind, megapixels)
    reference = Engine(device="cpu", backend="torch", precision="fp32", tile_size=512)
    engine = Engine(device=setup.device, backend="torch", tile_size=512)
    value = psnr(run_engine(engine, kind, image), run_engine(reference, kind, image))
    table.add(
        f"{kind} PSNR vs CPU fp32 ({engine.precision}, {image.shape[1]}x{image.shape[0]} in)",
        f"{value:.1f} dB",
        "",
        "",
        "",
        ">= 50 dB",
        "yes" if value >= 50 else "NO",
    )


def _gib(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU")
    args = parser.parse_args()
    setup = SMOKE if args.cpu_smoke else GPU
    if setup.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA GPU: use --cpu-smoke to check the script on the CPU")
    clock, table = Clock(setup.device), Table()
    name = torch.cuda.get_device_name() if clock.cuda else "CPU"
    print(f"{name}, torch {torch.__version__}; sizes are the result's megapixels", flush=True)
    for kind in ("compact", "full", "sr"):
        for megapixels in setup.sizes:
            speed(table, setup, clock, kind, megapixels)
    bounded(table, setup, clock, setup.large)
    for kind in ("compact", "full", "sr"):
        accuracy(table, setup, kind, setup.psnr_at)
    for label, options in VARIANTS:
        for kind in ("compact", "full", "sr"):
            variant(table, setup, clock, kind, label, options)
    table.print()
    print(f"\n{time.perf_counter() - table.start:.0f} s; image sizes: {image_size(1)} at 1 MP")


if __name__ == "__main__":
    main()
