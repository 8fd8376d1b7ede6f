"""Speed and peak memory of the engine against plain PyTorch eager fp32 whole-image inference.

The baseline is what pytorch/examples' fast_neural_style eval does: the whole image through the
network at once, fp32. Each case runs in its own subprocess so its peak memory (peak RSS, and
peak GPU memory on CUDA) is its own. The shipped Starry Night model of the width is used: its
int8 calibration lets the engine's default CPU precision be int8 (--precision fp32 compares fp32).

    .venv/bin/python bench/bench_engine.py                       # full width, 0.25/1/4/16 MP
    .venv/bin/python bench/bench_engine.py --width compact --sizes 1,4
    .venv/bin/python bench/bench_engine.py --device cuda --check  # also PSNR engine vs baseline
    .venv/bin/python bench/bench_engine.py --width compact --sizes 4 --repeat 5  # medians
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def image_size(megapixels: float) -> tuple[int, int]:
    """Height and width of a 4:3 landscape image of about ``megapixels``."""
    width = round(math.sqrt(megapixels * 1e6 * 4 / 3))
    return round(width * 3 / 4), width


def test_image(megapixels: float):
    """A photo-like uint8 RGB image: smooth gradients plus texture (deterministic)."""
    import numpy as np

    h, w = image_size(megapixels)
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 40, (h, w), dtype=np.uint8)
    channels = [
        (200 * c + 20).astype(np.uint8) + noise for c in (x + 0 * y, y + 0 * x, (x + y) / 2)
    ]
    return np.stack(channels, axis=-1)


SHIPPED = {"full": "starry-night-full", "compact": "starry-night"}


def write_model(folder: Path, width: str) -> Path:
    """A style model with random weights (instance-norm affine too), as the trainer writes one."""
    import torch

    from core.modelfile import ModelInfo, save_model
    from core.networks import build_network

    torch.manual_seed(0)
    net = build_network("style", width=width)
    for m in net.modules():
        if hasattr(m, "record"):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    info = ModelInfo(name=f"bench-{width}", kind="style", arch="style", options={"width": width})
    return save_model(folder / f"bench-{width}.impasto", net, info)


def cpu_seconds() -> float:
    """CPU time of this process, all threads: less disturbed than wall time on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(args: argparse.Namespace) -> None:
    """One case in this process: print a JSON line with seconds and peak memory."""
    import numpy as np
    import torch

    model_path = Path(args.model_path)
    image = test_image(args.megapixels)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())

    def sync():
        if cuda:
            torch.cuda.synchronize()

    if args.child == "engine":
        from core.engine import Engine

        engine = Engine(device=args.device, backend=args.backend, precision=args.precision)
        # Warm up on a smaller image that also tiles (2.5 MP is over one tile of either width):
        # traces both forms, as a server has done. The timed image's shapes still compile.
        engine.stylize(model_path, test_image(min(args.megapixels, 2.5)))
        label = f"{engine.device}/{engine.backend}/{engine.precision}"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        sync()
        start, cpu_start = time.perf_counter(), cpu_seconds()
        result = engine.stylize(model_path, image)
        sync()
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    else:
        from core.modelfile import load_model

        device = torch.device("cuda" if cuda else "cpu")
        net = load_model(model_path)[0].to(device)
        label = f"{device.type}/torch-eager/fp32"
        with torch.no_grad():  # warm up (cuDNN autotuning, allocator)
            net(torch.rand(1, 3, 256, 256, device=device))
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        sync()
        start, cpu_start = time.perf_counter(), cpu_seconds()
        # As pytorch/examples' eval: to float, the whole image through the network, back to 8 bits.
        with torch.no_grad():
            x = torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float() / 255
            y = net(x).clamp(0, 1).mul(255).round().byte()[0].permute(1, 2, 0).cpu().numpy()
        sync()
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
        result = y
    if args.save:
        np.save(args.save, result)
    report = {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "label": label,
    }
    if cuda:
        report["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(report))


def run_case(args, method: str, megapixels: float, model_path: Path, save: Path | None) -> dict:
    command = [sys.executable, __file__, "--child", method, "--megapixels", str(megapixels)]
    command += ["--model-path", str(model_path), "--device", args.device, "--backend", args.backend]
    command += ["--precision", args.precision]
    if save is not None:
        command += ["--save", str(save)]
    env = dict(os.environ)
    limit = None
    if method == "eager" and args.device != "cuda":
        limit = int(args.baseline_memory_gb * 2**30)

    def cap_memory():  # the eager baseline at 16 MP needs ~30 GB: refuse it cleanly instead
        if limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    done = subprocess.run(
        command, capture_output=True, text=True, env=env, preexec_fn=cap_memory, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
        oom = "memory" in tail[0].lower() or done.returncode in (-9, 137)
        return {"error": "OOM" if oom else tail[0][:80]}
    return json.loads(lines[-1])


def median_run(runs: list[dict]) -> dict:
    """One case from repeated runs: median seconds and CPU seconds, highest peak memory."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return failed[0]
    result = dict(runs[0])
    for key in ("seconds", "cpu_seconds"):
        result[key] = statistics.median(r[key] for r in runs)
    for key in ("peak_rss_gb", "peak_gpu_gb"):
        if key in result:
            result[key] = max(r[key] for r in runs)
    return result


def psnr(a, b) -> float:
    import numpy as np

    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255**2 / max(mse, 1e-12))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0.25,1,4,16", help="megapixels, comma-separated")
    parser.add_argument("--width", choices=["full", "compact"], default="full")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--backend", default="auto", help="engine backend: auto, openvino, torch")
    parser.add_argument("--precision", default="auto", help="engine precision (default auto)")
    parser.add_argument(
        "--random-weights", action="store_true", help="a random model instead of the shipped one"
    )
    parser.add_argument(
        "--baseline-memory-gb",
        type=float,
        default=10,
        help="address-space cap of the CPU eager baseline; above it the case reads n/a (OOM)",
    )
    parser.add_argument("--check", action="store_true", help="PSNR of engine vs baseline output")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each case, engine and baseline alternating, each in a fresh process; the "
        "table shows the median (a shared machine's noise comes in bursts)",
    )
    parser.add_argument("--child", choices=["engine", "eager"], help=argparse.SUPPRESS)
    parser.add_argument("--megapixels", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("IMPASTO_CACHE_DIR", str(Path(tmp) / "cache"))
        if args.random_weights:
            model_path = write_model(Path(tmp), args.width)
        else:
            model_path = REPO / "weights" / f"{SHIPPED[args.width]}.impasto"
        print(
            f"# bench_engine: width={args.width} model={model_path.stem} device={args.device} "
            f"precision={args.precision} cpus={os.cpu_count()} repeat={args.repeat} "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        header = (
            "| MP | engine s | engine s/MP | engine CPU-s/MP | engine peak "
            "| eager s | eager s/MP | eager CPU-s/MP | eager peak | speed-up | CPU-time ratio |"
        )
        if args.check:
            header += " PSNR dB |"
        print(header)
        print("|" + "---|" * (header.count("|") - 1))
        labels = set()
        for megapixels in [float(s) for s in args.sizes.split(",")]:
            saves = {m: Path(tmp) / f"{m}.npy" if args.check else None for m in ("engine", "eager")}
            runs: dict[str, list[dict]] = {m: [] for m in saves}
            for i in range(args.repeat):
                for m in saves:
                    save = saves[m] if i == 0 else None
                    runs[m].append(run_case(args, m, megapixels, model_path, save))
            results = {m: median_run(runs[m]) for m in saves}
            cells = [f"{megapixels:g}"]
            for method in ("engine", "eager"):
                r = results[method]
                if "error" in r:
                    cells += [f"n/a ({r['error']})", "", "", ""]
                    continue
                labels.add(r["label"])
                peak = f"{r['peak_rss_gb']:.2f} GB RSS"
                if "peak_gpu_gb" in r:
                    peak += f", {r['peak_gpu_gb']:.2f} GB GPU"
                cells += [f"{r['seconds']:.2f}", f"{r['seconds'] / megapixels:.2f}"]
                cells += [f"{r['cpu_seconds'] / megapixels:.2f}", peak]
            both = all("error" not in r for r in results.values())
            ratio = results["eager"]["seconds"] / results["engine"]["seconds"] if both else None
            cells.append(f"{ratio:.2f}x" if ratio else "n/a")
            if both:
                cells.append(
                    f"{results['eager']['cpu_seconds'] / results['engine']['cpu_seconds']:.2f}x"
                )
            else:
                cells.append("n/a")
            if args.check:
                import numpy as np

                if both:
                    cells.append(f"{psnr(np.load(saves['engine']), np.load(saves['eager'])):.1f}")
                else:
                    cells.append("n/a")
            print("| " + " | ".join(cells) + " |", flush=True)
        print(f"# runtimes: {', '.join(sorted(labels))}; load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
