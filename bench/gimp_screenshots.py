"""Screenshots of Filters > Neural Style's dialog with its live preview, in real GIMP 3 (the chroot
of tests/gimp/gimp_chroot.py, under Xvfb), for docs/gimp.md. Needs root.

    python bench/gimp_screenshots.py [--model starry-night] [--out docs]

Writes OUT/gimp-dialog-whole.png (the downscaled whole view) and OUT/gimp-dialog-1to1.png (the
centre at full size) of docs/sample.jpg scaled to 1024 x 1024, with the installed styles.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import install  # noqa: E402
from tests.gimp import gimp_chroot  # noqa: E402

BATCH = r"""
from pathlib import Path
import gi
gi.require_version("Gimp", "3.0")
from gi.repository import Gimp, Gio

OUT = Path(__OUT__)
image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(__PHOTO__))
image.scale(1024, 1024)
layer = image.get_layers()[0]
proc = Gimp.get_pdb().lookup_procedure("impasto-probe-screenshot")
config = proc.create_config()
config.set_property("image", image)
config.set_core_object_array("drawables", [layer])
config.set_property("model", __MODEL__)
config.set_property("out", str(OUT / "gimp-dialog"))
proc.run(config)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="starry-night", help="style shown")
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="folder of the PNGs")
    args = parser.parse_args()

    root = gimp_chroot.ensure_chroot()
    work = Path(tempfile.mkdtemp(prefix="impasto-shots-"))
    os.environ["IMPASTO_CONFIG_DIR"] = str(work / "config")
    home = work / "home"
    plugin = install.install_plugin_into(home / ".config/GIMP/3.0", Path(sys.executable))
    probe = plugin.parent / "impasto-probe" / "impasto-probe.py"
    probe.parent.mkdir()
    shutil.copyfile(REPO / "tests" / "gimp" / "dialog_probe.py", probe)
    probe.chmod(0o755)
    from core.client import Client

    client = Client(python=sys.executable, repo=REPO)
    try:
        client.health()  # the server runs on the host; the plug-in finds it
        script = BATCH
        for key, value in {
            "__OUT__": repr(str(work)),
            "__PHOTO__": repr(str(REPO / "docs" / "sample.jpg")),
            "__MODEL__": repr(args.model),
        }.items():
            script = script.replace(key, value)
        env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        env["IMPASTO_CONFIG_DIR"] = str(work / "config")
        with gimp_chroot.mounted(root, binds=(REPO, work)), contextlib.ExitStack() as stack:
            env["DISPLAY"] = stack.enter_context(gimp_chroot.virtual_display(root))
            done = gimp_chroot.run_batch(root, script, env, timeout=600)
    finally:
        client.shutdown()
    shots = sorted(work.glob("gimp-dialog-*.png"))
    if len(shots) != 2:
        print(done.stdout, done.stderr, file=sys.stderr)
        return 1
    for shot in shots:
        shutil.copyfile(shot, args.out / shot.name)
        print(args.out / shot.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
