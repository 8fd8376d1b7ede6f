"""Big upscales from GIMP: time and peak memory (server and GIMP) of Filters > Upscale x4 on layers
of several sizes, in real GIMP 3 against a core server on the host. Needs root (the chroot of
tests/gimp/gimp_chroot.py).

    python bench/gimp_upscale.py [--sizes 1000x750 2000x1500 4000x3000] [--model sr-faithful]

Memory is sampled every 0.1 s: the server's resident set, and GIMP's (the core process plus the
plug-in's), the peak of each during each call.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import install  # noqa: E402
from tests.gimp import gimp_batch, gimp_chroot  # noqa: E402

BATCH = r"""
SIZES, MODEL = __SIZES__, __MODEL__
times = {}
for w, h in SIZES:
    image = Gimp.Image.new(w, h, Gimp.ImageBaseType.RGB)
    layer = Gimp.Layer.new(image, "photo", w, h, Gimp.ImageType.RGB_IMAGE, 100.0,
                           Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, None, 0)
    layer.get_buffer().set(rect(layer), "R'G'B' u8", (OUT / f"{w}x{h}.raw").read_bytes())
    (OUT / "now").write_text(f"{w}x{h}")
    start = time.perf_counter()
    values, r = call("plug-in-impasto-upscale", image, layer, model=MODEL)
    r["seconds"] = time.perf_counter() - start
    (OUT / "now").write_text("")
    if r["status"] == "success":
        big = values.index(1)
        r["size"] = [big.get_width(), big.get_height()]
        big.delete()
    image.delete()
    results[f"{w}x{h}"] = r
    time.sleep(1)  # let the memory samples settle between sizes
"""


def rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def gimp_pids(home: Path) -> list[int]:
    """GIMP's core process and its plug-ins (this run's: their command lines name its home)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"gimp-console-3.0") for a in args) or any(
            a.startswith(str(home).encode()) and a.endswith(b".py") for a in args
        ):
            found.append(int(cmdline.parent.name))
    return found


def sample(work: Path, server_pid: int, peaks: dict, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            now = (work / "now").read_text()
        except OSError:
            now = ""
        if now:
            peak = peaks.setdefault(now, [0, 0])
            peak[0] = max(peak[0], rss(server_pid))
            peak[1] = max(peak[1], sum(rss(p) for p in gimp_pids(work / "home")))
        time.sleep(0.1)


def layer_size(text: str) -> tuple[int, int]:
    """A "WIDTHxHEIGHT" option value."""
    try:
        width, height = (int(n) for n in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: sizes are WIDTHxHEIGHT, e.g. 1000x750"
        ) from None
    return width, height


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", nargs="+", type=layer_size, default=[(1000, 750), (2000, 1500)],
        help="layer sizes, WIDTHxHEIGHT (default 1000x750 2000x1500)",
    )  # fmt: skip
    parser.add_argument("--model", default="sr-faithful")
    args = parser.parse_args()
    sizes = args.sizes

    root = gimp_chroot.ensure_chroot()
    work = Path(tempfile.mkdtemp(prefix="impasto-bench-"))
    os.environ["IMPASTO_CONFIG_DIR"] = str(work / "config")
    os.environ["IMPASTO_LOG_DIR"] = str(work / "log")
    from core.client import Client

    rng = np.random.default_rng(0)
    for w, h in sizes:  # smooth structure plus noise: the network's cost does not depend on it
        y, x = np.mgrid[0:h, 0:w]
        base = 127 + 100 * np.sin(x / 37.0)[..., None] * np.cos(y / 23.0)[..., None]
        photo = np.clip(base + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)
        (work / f"{w}x{h}.raw").write_bytes(photo.tobytes())
    install.install_plugin_into(work / "home/.config/GIMP/3.0", Path(sys.executable))
    client = Client(python=sys.executable, repo=REPO)
    peaks: dict = {}
    stop = threading.Event()
    try:
        health = client.health()
        idle = rss(health["pid"])
        sampler = threading.Thread(target=sample, args=(work, health["pid"], peaks, stop))
        sampler.start()
        env = {"HOME": str(work / "home"), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        env["IMPASTO_CONFIG_DIR"] = str(work / "config")
        script = gimp_batch.script(BATCH, work, SIZES=sizes, MODEL=args.model)
        results = gimp_chroot.batch_json(
            root, script, env, work / "results.json", 3600, (REPO, work)
        )
        stop.set()
        sampler.join()
        if results is None:
            return 1
    finally:
        stop.set()
        client.shutdown()
    print(f"model {args.model}, server on {health['device']} ({health['backend']}, "
          f"{health['precision']}), server idle RSS {idle / 2**20:.0f} MiB")  # fmt: skip
    print("| layer | result | time | server peak RSS | GIMP peak RSS (core + plug-in) |")
    print("|---|---|---|---|---|")
    for w, h in sizes:
        r = results[f"{w}x{h}"]
        server, gimp = peaks.get(f"{w}x{h}", [0, 0])
        if r["status"] != "success":
            print(f"| {w} x {h} | refused: {r['error']} | | | |")
            continue
        rw, rh = r["size"]
        print(f"| {w} x {h} | {rw} x {rh} ({rw * rh / 1e6:.0f} MP) | {r['seconds']:.1f} s | "
              f"{server / 2**20:.0f} MiB | {gimp / 2**20:.0f} MiB |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
