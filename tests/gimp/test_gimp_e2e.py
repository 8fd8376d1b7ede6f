"""The plug-in in real GIMP 3 (headless, in a Debian 13 chroot) against a core server on the host.

One GIMP session runs every case of the batch script below and dumps pixels and messages; the
tests then compare them with the engine called directly on the same pixels.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.training import EXTRA_ARGS_ENV, MIN_PHOTOS
from tests.conftest import make_model
from tests.gimp import gimp_chroot
from tests.trainer.conftest import make_photos

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # install.py lives at the repo root
import install  # noqa: E402

H, W = 48, 64  # small: the models have random weights and GIMP's start dominates anyway
BIG = 2048  # for the cancel test: a job that runs long enough to be cancelled
PH, PW = 600, 800  # for the preview: larger than its 512 px view

# Runs inside GIMP (python-fu-eval). Each case makes its image from raw bytes, calls a procedure
# non-interactively as a script or another plug-in would, and dumps what a user would see.
BATCH = r"""
import json
from pathlib import Path
import gi
gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp

OUT = Path(__OUT__)
H, W = __H__, __W__
PH, PW = __PH__, __PW__
BIG = __BIG__
pdb = Gimp.get_pdb()
results = {}

def rect(d):
    return Gegl.Rectangle.new(0, 0, d.get_width(), d.get_height())

def dump(drawable, name, fmt):
    data = drawable.get_buffer().get(rect(drawable), 1.0, fmt, Gegl.AbyssPolicy.CLAMP)
    (OUT / f"{name}.raw").write_bytes(bytes(data))

def new_image(raw, base, layer_type, fmt):
    image = Gimp.Image.new(W, H, base)
    layer = Gimp.Layer.new(image, "photo", W, H, layer_type, 100.0, Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, None, 0)
    if raw:
        buffer = layer.get_buffer()
        buffer.set(rect(layer), fmt, (OUT / raw).read_bytes())
        buffer.flush()
    return image, layer

def call(name, image, layer, **args):
    proc = pdb.lookup_procedure(name)
    config = proc.create_config()
    if image is not None:
        config.set_property("image", image)
        config.set_core_object_array("drawables", [layer])
    for key, value in args.items():
        config.set_property(key.replace("_", "-"), value)
    values = proc.run(config)
    status = values.index(0)
    error = values.index(1) if status != Gimp.PDBStatusType.SUCCESS and values.length() > 1 else ""
    return values, {"status": status.value_nick, "error": error or ""}

rgba = ("rgba.raw", Gimp.ImageBaseType.RGB, Gimp.ImageType.RGBA_IMAGE, "R'G'B'A u8")

def script_fu_example():
    # docs/gimp.md's Script-Fu example, on the only open image.
    image, layer = new_image(*rgba)
    image.set_selected_layers([layer])
    _, r = call("plug-in-script-fu-eval", None, None, script=__SCRIPT_FU__)
    r["layers"] = len(image.get_layers())
    r["sizes"] = [[i.get_width(), i.get_height()] for i in Gimp.get_images()]
    return r

def python_example():
    # docs/gimp.md's Python example, as written (files in OUT).
    try:
        exec(__PYTHON__, {})
    except SystemExit as e:
        return {"status": "execution-error", "error": str(e)}
    return {"status": "success", "error": ""}

def new_layer():
    # Whole layer, new layer on top; the original stays as it was.
    image, layer = new_image(*rgba)
    _, r = call("plug-in-impasto-stylize", image, layer, model="tiny")
    layers = image.get_layers()
    r["layers"] = [l.get_name() for l in layers]
    dump(layers[0], "styled", "R'G'B'A u8")
    dump(layers[-1], "original_after", "R'G'B'A u8")
    return r

def options():
    # Strength and colour preservation reach the engine.
    image, layer = new_image(*rgba)
    _, r = call("plug-in-impasto-stylize", image, layer, model="tiny", strength=0.5,
                preserve_colors=True, output="in-place")
    dump(layer, "options", "R'G'B'A u8")
    return r

def selection():
    # A feathered selection, in place: outside untouched, inside styled, the border blended.
    image, layer = new_image(*rgba)
    image.select_ellipse(Gimp.ChannelOps.REPLACE, 10, 6, 40, 30)
    Gimp.Selection.feather(image, 8.0)
    _, x, y, w, h = layer.mask_intersect()
    mask = image.get_selection()
    data = mask.get_buffer().get(rect(mask), 1.0, "Y float", Gegl.AbyssPolicy.CLAMP)
    (OUT / "mask.raw").write_bytes(bytes(data))
    _, r = call("plug-in-impasto-stylize", image, layer, model="tiny", output="in-place")
    r["box"] = [x, y, w, h]
    dump(layer, "selection", "R'G'B'A u8")
    return r

def gray():
    image, layer = new_image("gray.raw", Gimp.ImageBaseType.GRAY, Gimp.ImageType.GRAY_IMAGE,
                             "Y' u8")
    _, r = call("plug-in-impasto-stylize", image, layer, model="tiny", output="in-place")
    dump(layer, "gray", "Y' u8")
    return r

def offset():
    # A layer smaller than the image, moved, and a selection that covers part of it.
    image, layer = new_image(*rgba)
    layer.resize(40, 30, -10, -8)
    image.select_rectangle(Gimp.ChannelOps.REPLACE, 0, 0, 30, 25)
    dump(layer, "offset_before", "R'G'B'A u8")
    _, x, y, w, h = layer.mask_intersect()
    _, r = call("plug-in-impasto-stylize", image, layer, model="tiny", output="in-place")
    r["box"] = [x, y, w, h]
    r["offsets"] = list(layer.get_offsets()[1:])
    dump(layer, "offset_after", "R'G'B'A u8")
    return r

def deep():
    # A 16-bit image: the plug-in exchanges 8-bit pixels, GIMP converts both ways.
    image, layer = new_image(*rgba)
    image.convert_precision(Gimp.Precision.U16_NON_LINEAR)
    layer = image.get_layers()[0]
    _, r = call("plug-in-impasto-stylize", image, layer, model="tiny", output="in-place")
    dump(layer, "deep", "R'G'B'A u8")
    return r

def precise(precision, fmt, raw):
    # A 1024-level ramp in an image of that precision, stylized at strength 0 (the identity), then
    # upscaled into a new image: nothing may be lost to an 8-bit exchange.
    image = Gimp.Image.new_with_precision(1024, 16, Gimp.ImageBaseType.RGB, precision)
    layer = Gimp.Layer.new(image, "ramp", 1024, 16, Gimp.ImageType.RGB_IMAGE, 100.0,
                           Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, None, 0)
    buffer = layer.get_buffer()
    buffer.set(rect(layer), fmt, (OUT / raw).read_bytes())
    buffer.flush()
    _, r = call("plug-in-impasto-stylize", image, layer, model="tiny", strength=0.0,
                output="in-place")
    dump(layer, raw.replace(".raw", "_styled"), fmt)
    values, up = call("plug-in-impasto-upscale", image, layer, model="sr")
    r["upscale"] = up
    if up["status"] == "success":
        r["precision"] = values.index(1).get_precision().value_nick
    r["source_precision"] = image.get_precision().value_nick
    return r

def deep_u16():
    return precise(Gimp.Precision.U16_NON_LINEAR, "R'G'B' u16", "ramp_u16.raw")

def deep_float():
    return precise(Gimp.Precision.FLOAT_LINEAR, "R'G'B' float", "ramp_f32.raw")

def upscale_new():
    # Into a new image, returned to the caller.
    image, layer = new_image(*rgba)
    values, r = call("plug-in-impasto-upscale", image, layer, model="sr")
    big = values.index(1)
    r["size"] = [big.get_width(), big.get_height()]
    r["source_size"] = [image.get_width(), image.get_height()]
    dump(big.get_layers()[0], "upscaled", "R'G'B'A u8")
    return r

def upscale_in_place():
    image, layer = new_image(*rgba)
    _, r = call("plug-in-impasto-upscale", image, layer, model="sr", output="in-place")
    r["size"] = [image.get_width(), image.get_height()]
    dump(image.get_layers()[0], "upscaled_in_place", "R'G'B'A u8")
    return r

def unknown_model():
    image, layer = new_image(*rgba)
    return call("plug-in-impasto-stylize", image, layer, model="nope")[1]

def wrong_kind():
    image, layer = new_image(*rgba)
    return call("plug-in-impasto-upscale", image, layer, model="tiny")[1]

def indexed():
    image, layer = new_image(None, Gimp.ImageBaseType.INDEXED, Gimp.ImageType.INDEXED_IMAGE, "")
    return call("plug-in-impasto-stylize", image, layer, model="tiny")[1]

def bad_arguments():
    # Values outside what the procedures take, as a script may pass them: refused, named.
    image, layer = new_image(*rgba)
    r = {}
    for key, value in (("strength", 2.0), ("style_scale", 9.0), ("output", "new-image")):
        r[key] = call("plug-in-impasto-stylize", image, layer, model="tiny", **{key: value})[1]
    r["upscale_output"] = call("plug-in-impasto-upscale", image, layer, output="new-layer")[1]
    r["layers"] = len(image.get_layers())
    return r

def help_ids():
    return {n: pdb.lookup_procedure(n).get_help_id()
            for n in ("plug-in-impasto-stylize", "plug-in-impasto-upscale", "plug-in-impasto-train")}

def dialog_config():
    # The real dialogs, used by a probe plug-in: pick, Save Settings, Reset, Load Saved Settings.
    r = {"status": "success", "error": ""}
    for name in ("impasto-probe-stylize", "impasto-probe-upscale"):
        path = OUT / f"{name}.json"
        _, status = call(name, None, None, out=str(path))
        if status["status"] != "success":
            return status
        r[name] = json.loads(path.read_text())
    return r

def progress():
    # A tiled job of a style not used yet (wide), with GIMP's progress calls recorded.
    image = Gimp.Image.new(1200, 1100, Gimp.ImageBaseType.RGB)
    layer = Gimp.Layer.new(image, "big", 1200, 1100, Gimp.ImageType.RGB_IMAGE, 100.0,
                           Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, None, 0)
    layer.fill(Gimp.FillType.WHITE)
    path = OUT / "progress.json"
    _, status = call("impasto-probe-progress", image, layer, out=str(path), model="wide",
                     output="in-place")
    if status["status"] != "success":
        return status
    return {**status, "calls": json.loads(path.read_text())}

def dialog_preview():
    # The live preview of a layer larger than the preview, used by a probe plug-in.
    image = Gimp.Image.new(PW, PH, Gimp.ImageBaseType.RGB)
    layer = Gimp.Layer.new(image, "big", PW, PH, Gimp.ImageType.RGBA_IMAGE, 100.0,
                           Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, None, 0)
    buffer = layer.get_buffer()
    buffer.set(rect(layer), "R'G'B'A u8", (OUT / "big.raw").read_bytes())
    buffer.flush()
    path = OUT / "preview.json"
    _, status = call("impasto-probe-preview", image, layer, out=str(path))
    if status["status"] != "success":
        return status
    return {**status, **json.loads(path.read_text())}

def dialog_stylize():
    # As from the menu: the dialog lists the server's styles, the user accepts the defaults.
    image, layer = new_image(*rgba)
    _, r = call("plug-in-impasto-stylize", image, layer, run_mode=Gimp.RunMode.INTERACTIVE,
                model="tiny")  # as last used: the dialog must offer it
    r["layers"] = [l.get_name() for l in image.get_layers()]
    dump(image.get_layers()[0], "dialog_styled", "R'G'B'A u8")
    return r

def dialog_upscale():
    image, layer = new_image(*rgba)
    before = len(Gimp.get_images())
    _, r = call("plug-in-impasto-upscale", image, layer, run_mode=Gimp.RunMode.INTERACTIVE)
    r["new_images"] = len(Gimp.get_images()) - before
    r["sizes"] = [[i.get_width(), i.get_height()] for i in Gimp.get_images()]
    return r

def locked():
    image, layer = new_image(*rgba)
    layer.set_lock_content(True)
    return call("plug-in-impasto-stylize", image, layer, output="in-place")[1]

def core_missing():
    # As after moving the Impasto folder without re-running install.py.
    core = Path(__CORE_FILE__)
    core.rename(core.with_suffix(".hidden"))
    try:
        image, layer = new_image(*rgba)
        return call("plug-in-impasto-stylize", image, layer)[1]
    finally:
        core.with_suffix(".hidden").rename(core)

def cancelled():
    # GIMP's Cancel button on the progress bar closes the plug-in; the test's watcher does the same.
    image = Gimp.Image.new(BIG, BIG, Gimp.ImageBaseType.RGB)
    layer = Gimp.Layer.new(image, "big", BIG, BIG, Gimp.ImageType.RGB_IMAGE, 100.0,
                           Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, None, 0)
    layer.fill(Gimp.FillType.WHITE)
    before = layer.get_buffer().get(rect(layer), 1.0, "R'G'B' u8", Gegl.AbyssPolicy.CLAMP)
    (OUT / "cancel-now").write_text("")
    _, r = call("plug-in-impasto-stylize", image, layer, model="wide", output="in-place")
    after = layer.get_buffer().get(rect(layer), 1.0, "R'G'B' u8", Gegl.AbyssPolicy.CLAMP)
    r["unchanged"] = bytes(after) == bytes(before)
    return r

def train_from_layer():
    # New Style from Layer... on the photo's layer: a tiny budget on 20 tiny photos (the server's
    # test options make the crops tiny), then the new style paints the layer.
    image, layer = new_image(*rgba)
    _, r = call("plug-in-impasto-train", image, layer, style_name="from-layer", minutes=0.2,
                style_size=64, photos=str(OUT / "photos"))
    if r["status"] != "success":
        return r
    _, r = call("plug-in-impasto-stylize", image, layer, model="from-layer")
    dump(image.get_layers()[0], "trained_styled", "R'G'B'A u8")
    return r

def dialog_train():
    # New Style from Layer's dialog, opened by a probe plug-in as a user opens it the first time.
    image, layer = new_image(*rgba)
    path = OUT / "dialog-train.json"
    _, status = call("impasto-probe-train", image, layer, out=str(path))
    if status["status"] != "success":
        return status
    return {**status, **json.loads(path.read_text())}

dialogs = (dialog_preview, dialog_config, dialog_stylize, dialog_upscale, dialog_train) if __DIALOGS__ else ()
cases = (progress, deep_u16, deep_float, bad_arguments, help_ids, script_fu_example, python_example, new_layer, options, selection, offset, gray, deep,
         upscale_new, upscale_in_place, unknown_model, wrong_kind, indexed, locked, core_missing,
         cancelled, train_from_layer)
for case in (*dialogs, *cases):
    try:
        results[case.__name__] = case()
    except Exception as e:  # one broken case must not hide the others
        results[case.__name__] = {"status": "batch-error", "error": repr(e)}

(OUT / "results.json").write_text(json.dumps(results))
"""


def docs_example(language: str, out: Path) -> str:
    """A code block of docs/gimp.md, with its file and model names pointed at the test's."""
    text = (REPO / "docs" / "gimp.md").read_text()
    code = text.split(f"```{language}\n", 1)[1].split("```", 1)[0]
    for name in ("photo.jpg", "photo-starry.png", "photo-starry-x4.png"):
        code = code.replace(f'"{name}"', repr(str(out / name)))
    return code.replace('"starry-night"', '"tiny"').replace('"sr-sharp"', '"sr"')


def batch_script(out: Path, dialogs: bool, core_file: Path) -> str:
    values = {
        "__CORE_FILE__": repr(str(core_file)),
        "__DIALOGS__": str(dialogs),
        "__OUT__": repr(str(out)),
        "__H__": str(H),
        "__BIG__": str(BIG),
        "__PH__": str(PH),
        "__PW__": str(PW),
        "__W__": str(W),
        "__SCRIPT_FU__": repr(docs_example("scheme", out)),
        "__PYTHON__": repr(docs_example("python", out)),
    }
    script = BATCH
    for key, value in values.items():
        script = script.replace(key, value)
    return script


def ramps() -> dict:
    """1024 levels across 1024 pixels, per channel shifted: u16, and float from 0 to 2 (HDR)."""
    levels = (np.arange(1024)[None, :, None] + np.array([0, 341, 682])) % 1024 / 1023
    ramp = np.repeat(levels, 16, axis=0)
    return {"u16": np.rint(ramp * 65535).astype("<u2"), "f32": (2 * ramp).astype("<f4")}


def photo_rgba(h: int = H, w: int = W) -> np.ndarray:
    """Smooth colour structure and an alpha ramp (alpha must survive untouched)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 127 + 100 * np.sin(x / 7.0) * np.cos(y / 9.0)
    g = 127 + 90 * np.cos((x + y) / 11.0)
    b = 40 + 3 * x * W / w
    a = 80 + 175 * (x / (w - 1))
    return np.clip(np.stack([r, g, b, a], -1), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def gimp_root() -> Path:
    try:
        return gimp_chroot.ensure_chroot()
    except gimp_chroot.Unavailable as e:
        pytest.skip(f"no real GIMP 3: {e}")


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory, gimp_root: Path):
    """Run the batch script once in GIMP, with the core server on the host; yield (out, results)."""
    work = tmp_path_factory.mktemp("gimp-e2e")
    out = work / "out"
    out.mkdir()
    models = work / "models"
    # Tooltips: a description that already gives the credit, and one that does not.
    credit = "A. Painter, Tiny (2026), public domain"
    tiny = {"description": f"Restyles a photo after {credit}", "credit": credit}
    make_model(models, "tiny", width="compact", info=tiny)
    make_model(models, "sr", kind="sr")
    make_model(models, "wide", width="full", info={"description": "Broad", "credit": "B. Painter"})
    image = photo_rgba()
    (out / "rgba.raw").write_bytes(image.tobytes())
    (out / "gray.raw").write_bytes(image[..., 1].tobytes())
    (out / "big.raw").write_bytes(photo_rgba(PH, PW).tobytes())
    for name, ramp in ramps().items():
        (out / f"ramp_{name}.raw").write_bytes(ramp.tobytes())
    Image.fromarray(image[..., :3]).save(out / "photo.jpg", quality=95)
    make_photos(out / "photos", MIN_PHOTOS)  # New Style from Layer's own photos
    home = work / "home"
    plugin = install.install_plugin_into(home / ".config" / "GIMP" / "3.0", Path(sys.executable))
    probe = plugin.parent / "impasto-probe" / "impasto-probe.py"  # drives the dialogs' config
    probe.parent.mkdir()
    probe.write_bytes((REPO / "tests" / "gimp" / "dialog_probe.py").read_bytes())
    probe.chmod(0o755)

    server_env = {
        "IMPASTO_MODELS_DIR": str(models),
        "IMPASTO_CONFIG_DIR": str(work / "config"),
        "IMPASTO_LOG_DIR": str(work / "log"),
        EXTRA_ARGS_ENV: "--image-size 32 --batch-size 2 --width compact --workers 0",
    }
    saved = {k: os.environ.get(k) for k in server_env}
    os.environ.update(server_env)  # the server started below inherits them
    from core.client import Client

    client = Client(python=sys.executable, repo=REPO)
    try:
        client.health()  # starts the server here, on the host; GIMP's plug-in finds it
        env = {
            "HOME": str(home),
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "IMPASTO_CONFIG_DIR": str(work / "config"),
        }
        with gimp_chroot.mounted(gimp_root, binds=(REPO, work)), contextlib.ExitStack() as stack:
            try:
                env["DISPLAY"] = stack.enter_context(gimp_chroot.virtual_display(gimp_root))
            except gimp_chroot.Unavailable:
                pass  # the dialog tests skip; everything else runs headless
            script = batch_script(out, "DISPLAY" in env, plugin / install.CORE_FILE)
            watcher = threading.Thread(target=cancel_like_gimp, args=(out, client), daemon=True)
            watcher.start()
            done = gimp_chroot.run_batch(gimp_root, script, env)
            (out / "gimp.log").write_text(done.stdout + done.stderr)  # for a failing case
            (out / "batch-done").write_text("")
            watcher.join()
        if not (out / "results.json").is_file():
            pytest.fail(f"GIMP batch failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        yield out, json.loads((out / "results.json").read_text()), image
    finally:
        client.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def cancel_like_gimp(out: Path, client) -> None:
    """Once the cancel case's job runs on the server, kill the plug-in as GIMP's Cancel does."""
    while not (out / "cancel-now").exists():
        if (out / "batch-done").exists():
            return
        time.sleep(0.05)
    deadline = time.monotonic() + 60
    while client.health()["jobs"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    plugin = str(out.parent / "home").encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.startswith(plugin) and a.endswith(b"impasto.py") for a in args):
            os.kill(int(cmdline.parent.name), signal.SIGKILL)
            (out / "killed").write_text(cmdline.parent.name)


def raw(out: Path, name: str, shape: tuple) -> np.ndarray:
    return np.frombuffer((out / f"{name}.raw").read_bytes(), np.uint8).reshape(shape)


def engine_result(op: str, image: np.ndarray, model: str, models: Path, **options) -> np.ndarray:
    """The core's own answer for these pixels: the engine called directly, no server, no GIMP."""
    from core.engine import Engine, StyleOptions

    path = str(models / f"{model}.impasto")
    if op == "stylize":
        return Engine().stylize(path, image, StyleOptions(**options))
    return Engine().upscale(path, image)


def assert_close(got: np.ndarray, want: np.ndarray, tolerance: int = 2) -> None:
    assert got.shape == want.shape
    worst = np.abs(got.astype(int) - want.astype(int)).max()
    assert worst <= tolerance, f"differs from the core's own result by up to {worst}"


def test_stylize_new_layer_matches_the_core(session) -> None:
    out, results, image = session
    assert results["new_layer"]["status"] == "success", results["new_layer"]["error"]
    assert len(results["new_layer"]["layers"]) == 2
    styled = raw(out, "styled", image.shape)
    assert np.abs(styled[..., :3].astype(int) - image[..., :3]).mean() > 5  # really restyled
    assert np.array_equal(styled[..., 3], image[..., 3])  # alpha kept exactly
    assert np.array_equal(raw(out, "original_after", image.shape), image)
    want = engine_result("stylize", image, "tiny", out.parent / "models")
    assert_close(styled, want)


def test_stylize_options_reach_the_core(session) -> None:
    out, results, image = session
    assert results["options"]["status"] == "success", results["options"]["error"]
    want = engine_result(
        "stylize", image, "tiny", out.parent / "models", strength=0.5, preserve_colors=True
    )
    assert_close(raw(out, "options", image.shape), want)


def test_feathered_selection_blends_and_outside_is_untouched(session) -> None:
    out, results, image = session
    case = results["selection"]
    assert case["status"] == "success", case["error"]
    got = raw(out, "selection", image.shape).astype(int)
    mask = np.frombuffer((out / "mask.raw").read_bytes(), np.float32).reshape(H, W)
    x, y, w, h = case["box"]
    styled = image.astype(int)  # what the core makes of the selection's bounding box
    crop = image[y : y + h, x : x + w]
    styled[y : y + h, x : x + w] = engine_result("stylize", crop, "tiny", out.parent / "models")
    image = image.astype(int)

    outside, inside = mask == 0, mask == 1
    assert outside.sum() > 0 and inside.sum() > 0
    assert np.array_equal(got[outside], image[outside])
    assert np.abs(got[inside] - styled[inside]).max() <= 2
    border = (mask > 0.1) & (mask < 0.9)
    low = np.minimum(image, styled)[border][:, :3] - 2
    high = np.maximum(image, styled)[border][:, :3] + 2
    assert np.all((got[border][:, :3] >= low) & (got[border][:, :3] <= high))
    assert np.array_equal(got[..., 3], image[..., 3])


def test_moved_layer_and_selection_use_layer_coordinates(session) -> None:
    out, results, _ = session
    case = results["offset"]
    assert case["status"] == "success", case["error"]
    assert case["offsets"] == [10, 8] and case["box"] == [0, 0, 20, 17]
    before = raw(out, "offset_before", (30, 40, 4))
    after = raw(out, "offset_after", (30, 40, 4))
    want = engine_result("stylize", before[:17, :20], "tiny", out.parent / "models")
    assert_close(after[:17, :20], want)
    untouched = np.ones((30, 40), bool)
    untouched[:17, :20] = False
    assert np.array_equal(after[untouched], before[untouched])


def test_grayscale_layer(session) -> None:
    out, results, image = session
    assert results["gray"]["status"] == "success", results["gray"]["error"]
    gray = image[..., 1:2]
    want = engine_result("stylize", gray, "tiny", out.parent / "models")
    assert_close(raw(out, "gray", (H, W, 1)), want)


def test_16_bit_image(session) -> None:
    out, results, image = session
    assert results["deep"]["status"] == "success", results["deep"]["error"]
    want = engine_result("stylize", image, "tiny", out.parent / "models")
    assert_close(raw(out, "deep", image.shape), want)


def test_upscale_into_new_image_is_4x_and_matches_the_core(session) -> None:
    out, results, image = session
    case = results["upscale_new"]
    assert case["status"] == "success", case["error"]
    assert case["size"] == [4 * W, 4 * H] and case["source_size"] == [W, H]
    want = engine_result("upscale", image, "sr", out.parent / "models")
    assert_close(raw(out, "upscaled", (4 * H, 4 * W, 4)), want)


def test_upscale_in_place_resizes_the_image(session) -> None:
    out, results, image = session
    case = results["upscale_in_place"]
    assert case["status"] == "success", case["error"]
    assert case["size"] == [4 * W, 4 * H]
    want = engine_result("upscale", image, "sr", out.parent / "models")
    assert_close(raw(out, "upscaled_in_place", (4 * H, 4 * W, 4)), want)


def test_errors_say_what_to_do(session) -> None:
    _, results, _ = session
    unknown = results["unknown_model"]
    assert unknown["status"] == "execution-error"
    assert "nope" in unknown["error"] and "tiny" in unknown["error"]  # lists installed styles
    wrong = results["wrong_kind"]
    assert wrong["status"] == "execution-error" and "Installed: sr" in wrong["error"]
    indexed = results["indexed"]
    assert indexed["status"] == "execution-error" and "Image > Mode > RGB" in indexed["error"]
    assert "unlock them" in results["locked"]["error"]
    missing = results["core_missing"]
    assert missing["status"] == "execution-error" and "python3 install.py" in missing["error"]


def test_docs_script_fu_example(session) -> None:
    _, results, _ = session
    case = results["script_fu_example"]
    assert case["status"] == "success", case["error"]
    assert case["layers"] == 2  # the styled layer was added above the original
    assert [4 * W, 4 * H] in case["sizes"]  # the upscaled image


def test_docs_python_example(session) -> None:
    out, results, _ = session
    case = results["python_example"]
    assert case["status"] == "success", case["error"]
    assert Image.open(out / "photo-starry.png").size == (W, H)
    assert Image.open(out / "photo-starry-x4.png").size == (4 * W, 4 * H)


def dialog_case(results: dict, name: str) -> dict:
    if name not in results:
        pytest.skip("no X server (Xvfb) in the GIMP chroot for the dialogs")
    case = results[name]
    assert case["status"] == "success", case["error"]
    return case


def test_dialog_stylize_lists_the_servers_styles_and_runs(session) -> None:
    out, results, image = session
    case = dialog_case(results, "dialog_stylize")
    assert case["layers"] == ["photo (Tiny)", "photo"]  # named after the style's display name
    want = engine_result("stylize", image, "tiny", out.parent / "models")
    assert_close(raw(out, "dialog_styled", image.shape), want)


def test_dialog_upscale_opens_a_new_image(session) -> None:
    _, results, _ = session
    case = dialog_case(results, "dialog_upscale")
    assert case["new_images"] == 1 and [4 * W, 4 * H] in case["sizes"]
    # Opening the dialog asked the server to load its upscaler before OK (a warm request).
    log = (session[0].parent / "log" / "server.log").read_text()
    assert "POST /v1/warm?model=sr&kind=sr" in log


def test_cancel_leaves_the_image_unchanged_and_stops_the_job(session) -> None:
    out, results, _ = session
    case = results["cancelled"]
    assert (out / "killed").is_file(), "the job ended before it could be cancelled"
    assert case["status"] != "success"
    assert case["unchanged"]  # nothing is written before the whole result is there
    log = (out.parent / "log" / "server.log").read_text()
    assert "cancel" in log  # the server dropped the job (its log says so)


def test_out_of_range_arguments_are_refused_by_name(session) -> None:
    _, results, _ = session
    case = results["bad_arguments"]
    for key, named in (
        ("strength", "strength must be between 0 and 1, not 2"),
        ("style_scale", "style-scale must be between 0.25 and 4, not 9"),
        ("output", "output must be 'new-layer' or 'in-place', not 'new-image'"),
        ("upscale_output", "output must be 'new-image' or 'in-place', not 'new-layer'"),
    ):
        assert case[key]["status"] == "execution-error", (key, case[key])
        assert named in case[key]["error"]
    assert case["layers"] == 1  # nothing was made


def test_new_style_from_layer_trains_then_stylizes(session) -> None:
    out, results, image = session
    case = results["train_from_layer"]
    assert case["status"] == "success", case["error"]
    assert (out.parent / "models" / "from-layer.impasto").is_file()  # installed for every client
    styled = raw(out, "trained_styled", image.shape)
    assert np.abs(styled[..., :3].astype(int) - image[..., :3]).mean() > 5  # the new style paints


def test_new_style_dialog_explains_the_photos_and_starts_at_pictures(session) -> None:
    out, results, _ = session
    case = dialog_case(results, "dialog_train")
    assert case["photos"] == str(out.parent / "home" / "Pictures")  # no XDG dirs: ~/Pictures
    assert case["photos"] in case["entries"] and "my-style" in case["entries"]
    text = " ".join(case["labels"])
    assert "at least 20" in text and "each step uses 4 different ones" in text
    assert "Time budget (minutes)" in text.replace("_", "") and not case["accepted"]


def test_help_opens_impastos_own_manual(session) -> None:
    out, results, _ = session
    plugin = out.parent / "home" / ".config" / "GIMP" / "3.0" / "plug-ins" / "impasto"
    # GIMP registered the plug-in's help domain (it would otherwise say its manual is missing) ...
    pluginrc = (out.parent / "home" / ".config" / "GIMP" / "3.0" / "pluginrc").read_bytes()
    pluginrc = pluginrc.decode(errors="replace")  # it holds icons' bytes too
    assert f'"impasto" "file://{plugin}/help"' in pluginrc
    # ... whose map sends each procedure's help ID to its section of the shipped manual.
    index = (plugin / "help" / "en" / "gimp-help.xml").read_text()
    page = (plugin / "help" / "en" / "impasto.html").read_text()
    sections = {"stylize": "Filters &gt; Neural Style...", "upscale": "Filters &gt; Upscale x4...",
                "train": "Filters &gt; New Style from Layer..."}  # fmt: skip
    for name, qualified in results["help_ids"].items():
        domain, help_id = qualified.split("?")
        assert domain == "impasto"
        ref = index.split(f'id="{help_id}" ref="', 1)[1].split('"', 1)[0]
        anchor = ref.split("#", 1)[1]
        section = page.split(f'<a id="{anchor}"></a>', 1)[1].split("\n", 1)[0]
        assert sections[name.rsplit("-", 1)[1]] in section


def test_dialog_model_combo_follows_reset_and_saved_settings(session) -> None:
    _, results, _ = session
    case = dialog_case(results, "dialog_config")["impasto-probe-stylize"]
    first = case["first"]  # the first installed style: what an empty model (the default) runs
    assert case["opened"]["model"] == first
    assert case["picked"] == {"model": "wide", "output": "in-place"}  # the combos set the config
    reset = case["reset"]  # Reset > Reset to Factory Defaults
    assert reset["model"] == reset["runs"] == first  # shows what OK runs
    assert reset["output"] == "new-layer" and reset["strength"][2] == 1.0
    assert case["loaded"]["model"] == "wide" and case["loaded"]["output"] == "in-place"
    upscale = dialog_case(results, "dialog_config")["impasto-probe-upscale"]
    assert upscale["reset"]["model"] == upscale["reset"]["runs"] == upscale["first"]
    assert upscale["reset"]["output"] == "new-image"
    assert upscale["loaded"]["model"] == "sr" and upscale["loaded"]["output"] == "in-place"


def test_dialog_sliders_tooltips_and_where_it_runs(session) -> None:
    _, results, _ = session
    case = dialog_case(results, "dialog_config")["impasto-probe-stylize"]
    opened = case["opened"]
    assert opened["strength"][:2] == [0.0, 1.0] and opened["style-scale"][:2] == [0.25, 4.0]
    assert "Brush size: smaller = bigger strokes" in opened["labels"]
    assert case["tiny_tooltip"].count("A. Painter") == 1  # the credit, once
    assert case["loaded"]["model_tooltip"] == "Broad\nB. Painter"
    # Where it runs, from the server's health answer (this server: the CPU).
    assert any(text.startswith("Runs on CPU, ") for text in opened["labels"])


def test_dialog_preview_shows_what_ok_gives_and_follows_the_options(session) -> None:
    out, results, _ = session
    case = dialog_case(results, "dialog_preview")
    assert any(text.startswith("Preparing Tiny") for text in case["texts"])  # first use
    assert case["output"] == "in-place"  # the last used output, kept
    models = out.parent / "models"
    whole = np.frombuffer((out / "preview-whole-view.raw").read_bytes(), np.uint8)
    thumbnail = whole.reshape(case["sent"]["whole"]["size"][::-1] + [4])  # longest side 512
    assert max(thumbnail.shape[:2]) == 512
    # The whole view: the core's preview of those pixels (its statistics: the 768 px thumbnail).
    shown = np.frombuffer((out / "preview-whole.raw").read_bytes(), np.uint8)
    assert shown.reshape(thumbnail.shape).std() > 5  # a picture, not a blank
    # The 1:1 centre: what OK gives there (the layer stylized whole), away from the crop's edges.
    big = photo_rgba(PH, PW)
    full = engine_result("stylize", big, "tiny", models, strength=0.5)
    crop = np.frombuffer((out / "preview-crop.raw").read_bytes(), np.uint8).reshape(512, 512, 4)
    y, x = (PH - 512) // 2, (PW - 512) // 2
    inner = slice(48, -48)
    diff = np.abs(crop[inner, inner].astype(int) - full[y : y + 512, x : x + 512][inner, inner])
    assert diff.mean() < 2, diff.mean()
    assert case["started_by_burst"] == 1  # five quick changes, one job
    assert 0.3 not in case["strengths_shown"]  # superseded while it ran: never shown
    assert case["strengths_shown"][-1] == 0.2


@pytest.mark.parametrize("name", ["u16", "f32"])
def test_16_bit_and_float_images_keep_their_precision(session, name) -> None:
    out, results, _ = session
    case = results[{"u16": "deep_u16", "f32": "deep_float"}[name]]
    assert case["status"] == "success", case["error"]
    ramp = ramps()[name]
    got = np.frombuffer((out / f"ramp_{name}_styled.raw").read_bytes(), ramp.dtype)
    got = got.reshape(ramp.shape)
    assert len(np.unique(got[..., 0])) == 1024  # not the 256 of an 8-bit round trip
    tolerance = 1 if name == "u16" else 1e-4  # float: GIMP's linear <-> perceptual conversions
    assert np.abs(got.astype(float) - ramp).max() <= tolerance  # strength 0: the original
    assert abs(got.max() - ramp.max()) <= tolerance  # float: values above 1.0 kept
    assert case["upscale"]["status"] == "success", case["upscale"]["error"]
    assert case["precision"] == case["source_precision"]  # the x4 image is just as deep


def test_progress_names_each_phase_and_the_bar_moves(session) -> None:
    _, results, _ = session
    case = results["progress"]
    assert case["status"] == "success", case["error"]
    texts = [c[1] for c in case["calls"] if c[0] in ("progress_init", "progress_set_text")]
    phases = ["reading the layer", "preparing Wide", "measuring the whole image", "painting"]
    phases.append("writing the result")
    found = [next((i for i, t in enumerate(texts) if p in t), None) for p in phases]
    assert None not in found and found == sorted(found), texts  # each phase, in order
    assert not any("waiting for 0" in t or "connecting" in t for t in texts)
    fractions = [c[1] for c in case["calls"] if c[0] == "progress_update"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert len([f for f in fractions if 0 < f < 1]) >= 3  # it moves tile by tile, not in one jump
