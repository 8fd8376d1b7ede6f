"""The first GIMP result after GIMP starts: Filters > Neural Style on a 512 px layer in real GIMP 3
with the core's server not running (the plug-in starts it), then a style this server never used,
then a style the dialog warmed while the user looked at it. Needs root (tests/gimp/gimp_chroot.py).

The GIMP here is the Flatpak-like one of tests/gimp/test_gimp_flatpak.py with flatpak-spawn
permitted: the only way a plug-in in the chroot can start the server on the host, as Flathub's GIMP
does (its relay adds ~0.05 s). Models come from the user's models folder, prepared as install.py
leaves them.

    python bench/gimp_first_stylize.py [--styles starry-night udnie the-scream]
"""

from __future__ import annotations

import argparse
import json
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
A, B, C = __STYLES__
image = Gimp.Image.new(512, 512, Gimp.ImageBaseType.RGB)
layer = Gimp.Layer.new(image, "photo", 512, 512, Gimp.ImageType.RGB_IMAGE, 100.0,
                       Gimp.LayerMode.NORMAL)
image.insert_layer(layer, None, 0)
layer.get_buffer().set(rect(layer), "R'G'B' u8", (OUT / "photo.raw").read_bytes())

def timed(name, model):
    start = time.perf_counter()
    _, r = call("plug-in-impasto-stylize", image, layer, model=model, **{"output": "in-place"})
    r["seconds"] = time.perf_counter() - start
    results[name] = r

timed("cold", A)  # no server yet: the plug-in starts it
timed("warm", A)
timed("new_style", B)
(OUT / "warm-now").write_text(C)  # the dialog opened with C chosen: it sends a warm request
while not (OUT / "warmed").exists():
    time.sleep(0.05)
timed("warmed_style", C)
"""


def warm_like_the_dialog(out: Path, think: float) -> None:
    """When the batch says the dialog opened, send its warm request; OK comes ``think`` s later."""
    from core.client import Client

    while not (out / "warm-now").exists():
        if (out / "results.json").exists():
            return
        time.sleep(0.05)
    Client(autostart=False).warm((out / "warm-now").read_text())
    time.sleep(think)
    (out / "warmed").write_text("")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--styles", nargs=3, default=["starry-night", "udnie", "the-scream"])
    parser.add_argument("--think", type=float, default=2.0, help="seconds in the dialog before OK")
    args = parser.parse_args()

    root = gimp_chroot.ensure_chroot()
    work = Path(tempfile.mkdtemp(prefix="impasto-bench-"))
    os.environ["IMPASTO_CONFIG_DIR"] = str(work / "config")  # no other server is found
    os.environ["IMPASTO_LOG_DIR"] = str(work / "log")
    photo = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    (work / "photo.raw").write_bytes(photo.tobytes())
    app = work / "home/.var/app/org.gimp.GIMP"
    install.install_plugin_into(app / "config/GIMP/3.0", Path(sys.executable))
    env = {
        "HOME": str(work / "home"),
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "XDG_CONFIG_HOME": str(app / "config"),
        "RELAY": str(work / "relay"),
    }
    warmer = threading.Thread(target=warm_like_the_dialog, args=(work, args.think), daemon=True)
    warmer.start()
    script = gimp_batch.script(BATCH, work, STYLES=args.styles)
    try:
        with gimp_chroot.flatpak_like(root, work / "overlay") as view:
            with gimp_chroot.host_relay(view, work / "relay"):
                with gimp_chroot.mounted(view, binds=(REPO, work)):
                    done = gimp_chroot.run_batch(
                        view, script, env, timeout=900, prefix=gimp_chroot.FLATPAK_PIDS
                    )
                    from core.client import Client

                    health = Client(autostart=False).health()
                    Client(autostart=False).shutdown()
    finally:
        warmer.join(5)
    if not (work / "results.json").is_file():
        print(done.stdout, done.stderr, file=sys.stderr)
        return 1
    r = json.loads((work / "results.json").read_text())
    for name, case in r.items():
        if case["status"] != "success":
            print(f"{name}: {case['status']} {case['error']}", file=sys.stderr)
            return 1
    a, b, c = args.styles
    print(f"512 x 512 RGB layer, server on {health['device']} ({health['backend']}, "
          f"{health['precision']}), load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"first stylize after GIMP starts, server cold ({a}): {r['cold']['seconds']:.2f} s")
    print(f"the same again, server warm:                     {r['warm']['seconds']:.2f} s")
    extra = r["new_style"]["seconds"] - r["warm"]["seconds"]
    print(f"a style never used before ({b}): {r['new_style']['seconds']:.2f} s, +{extra:.2f} s")
    extra = r["warmed_style"]["seconds"] - r["warm"]["seconds"]
    print(
        f"a new style the dialog warmed {args.think:g} s before OK ({c}): "
        f"{r['warmed_style']['seconds']:.2f} s, +{extra:.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
