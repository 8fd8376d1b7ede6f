"""Cost of going through GIMP: Filters > Neural Style in real GIMP 3 vs the same job sent by the client.

Both run against the same core server, on the same pixels, in this one run; the ratio is the plug-in's
overhead (plug-in start, reading and writing GIMP's buffers, undo). Needs root (the GIMP 3 chroot of
tests/gimp/gimp_chroot.py).

    python bench/gimp_roundtrip.py [--size 1024] [--model starry-night] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import install  # noqa: E402
from tests.gimp import gimp_chroot  # noqa: E402

BATCH = r"""
import json, time
from pathlib import Path
import gi
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp

OUT, N, MODEL, REPEAT = Path(__OUT__), __N__, __MODEL__, __REPEAT__
image = Gimp.Image.new(N, N, Gimp.ImageBaseType.RGB)
layer = Gimp.Layer.new(image, "photo", N, N, Gimp.ImageType.RGB_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
image.insert_layer(layer, None, 0)
buffer = layer.get_buffer()
buffer.set(Gegl.Rectangle.new(0, 0, N, N), "R'G'B' u8", (OUT / "photo.raw").read_bytes())
buffer.flush()
proc = Gimp.get_pdb().lookup_procedure("plug-in-impasto-stylize")
times = []
for _ in range(REPEAT):
    config = proc.create_config()
    config.set_property("image", image)
    config.set_core_object_array("drawables", [layer])
    config.set_property("model", MODEL)
    config.set_property("output", "in-place")
    start = time.perf_counter()
    status = proc.run(config).index(0)
    times.append(time.perf_counter() - start)
    assert status == Gimp.PDBStatusType.SUCCESS, status
(OUT / "times.json").write_text(json.dumps(times))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="square image side (px)")
    parser.add_argument("--model", default="starry-night", help="style model name")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the fastest counts")
    args = parser.parse_args()

    root = gimp_chroot.ensure_chroot()
    work = Path(tempfile.mkdtemp(prefix="impasto-bench-"))
    os.environ["IMPASTO_CONFIG_DIR"] = str(work / "config")
    from core.client import Client

    photo = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    (work / "photo.raw").write_bytes(photo.tobytes())
    plugin_home = work / "home"
    install.install_plugin_into(plugin_home / ".config/GIMP/3.0", Path(sys.executable))
    client = Client(python=sys.executable, repo=REPO)
    try:
        health = client.health()
        direct = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            client.stylize(photo.tobytes(), args.size, args.size, 3, args.model)
            direct.append(time.perf_counter() - start)
        script = BATCH
        for key, value in {
            "__OUT__": repr(str(work)),
            "__N__": str(args.size),
            "__MODEL__": repr(args.model),
            "__REPEAT__": str(args.repeat),
        }.items():
            script = script.replace(key, value)
        env = {
            "HOME": str(plugin_home),
            "PATH": "/usr/bin:/bin",
            "IMPASTO_CONFIG_DIR": str(work / "config"),
        }
        in_gimp = gimp_chroot.batch_json(root, script, env, work / "times.json", 1800, (REPO, work))
        if in_gimp is None:
            return 1
    finally:
        client.shutdown()
    print(
        f"{args.size}x{args.size} px, model {args.model}, best of {args.repeat}, "
        f"server on {health['device']} ({health['backend']})"
    )
    print(f"client -> server (baseline): {min(direct):.2f} s")
    print(f"GIMP plug-in -> server:      {min(in_gimp):.2f} s")
    print(f"ratio (GIMP / baseline):     {min(in_gimp) / min(direct):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
