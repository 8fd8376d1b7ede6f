"""Upscale x4 in real GIMP 3: the selection's bounds, the visible image as the source, the new
image's name (a core server on the host, as in test_gimp_e2e)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_model
from tests.gimp import gimp_batch, gimp_chroot
from tests.gimp.test_gimp_e2e import assert_close, engine_result, photo_rgba

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
import install  # noqa: E402

H, W = 48, 64
SELECTION = (10, 6, 30, 20)  # x, y, width, height

BATCH = r"""
H, W = __H__, __W__
SX, SY, SW, SH = __SELECTION__

def upscaled(values, r, name):
    if r["status"] == "success":
        big = values.index(1)
        r["size"] = [big.get_width(), big.get_height()]
        r["name"] = big.get_name()
        r["precision"] = big.get_precision().value_nick
        dump(big.get_layers()[0], name)
    return r

# A saved photo with a rectangle selected: only the selection's bounds are upscaled.
image, layer = new_image("rgba.raw", W, H)
image.set_file(Gio.File.new_for_path(str(OUT / "photo.png")))
image.select_rectangle(Gimp.ChannelOps.REPLACE, SX, SY, SW, SH)
results["selection"] = upscaled(*call("plug-in-impasto-upscale", image, layer, model="sr"),
                                "selection_x4")

# Two layers, the top one smaller, moved and half transparent: the image as seen is upscaled.
image, bottom = new_image("rgba.raw", W, H)
_, top = new_image("top.raw", 32, 24, image=image, name="top")
top.set_offsets(20, 10)
top.set_opacity(60.0)
copy = image.duplicate()
dump(copy.merge_visible_layers(Gimp.MergeType.CLIP_TO_IMAGE), "visible")
copy.delete()
before = len(Gimp.get_images())
results["visible"] = upscaled(*call("plug-in-impasto-upscale", image, bottom, model="sr",
                                    source="visible"), "visible_x4")
results["visible"]["images_left"] = len(Gimp.get_images()) - before  # the merged copy is gone
results["visible"]["layers"] = len(image.get_layers())  # the user's image is as it was
results["visible_in_place"] = call("plug-in-impasto-upscale", image, bottom, model="sr",
                                   source="visible", output="in-place")[1]
"""


@pytest.fixture(scope="module")
def upscale_session(tmp_path_factory: pytest.TempPathFactory):
    try:
        root = gimp_chroot.ensure_chroot()
    except gimp_chroot.Unavailable as e:
        pytest.skip(f"no real GIMP 3: {e}")
    work = tmp_path_factory.mktemp("gimp-upscale")
    out, models = work / "out", work / "models"
    out.mkdir()
    make_model(models, "sr", kind="sr")
    image = photo_rgba()
    (out / "rgba.raw").write_bytes(image.tobytes())
    top = np.roll(photo_rgba(24, 32), 3, axis=-1)  # other colours, opaque somewhere
    (out / "top.raw").write_bytes(top.tobytes())
    plugin = install.install_plugin_into(work / "home/.config/GIMP/3.0", Path(sys.executable))
    server_env = {
        "IMPASTO_MODELS_DIR": str(models),
        "IMPASTO_CONFIG_DIR": str(work / "config"),
        "IMPASTO_LOG_DIR": str(work / "log"),
    }
    saved = {k: os.environ.get(k) for k in server_env}
    os.environ.update(server_env)
    from core.client import Client

    client = Client(python=sys.executable, repo=REPO)
    try:
        client.health()  # the server runs on the host; the plug-in finds it
        env = {
            "HOME": str(work / "home"),
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "IMPASTO_CONFIG_DIR": str(work / "config"),
        }
        script = gimp_batch.script(BATCH, out, H=H, W=W, SELECTION=SELECTION)
        with gimp_chroot.mounted(root, binds=(REPO, work)):
            done = gimp_chroot.run_batch(root, script, env)
        (out / "gimp.log").write_text(done.stdout + done.stderr)
        assert plugin.is_dir()
        if not (out / "results.json").is_file():
            pytest.fail(f"GIMP batch failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        yield out, json.loads((out / "results.json").read_text()), image, models
    finally:
        client.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def raw(out: Path, name: str, shape: tuple) -> np.ndarray:
    return np.frombuffer((out / f"{name}.raw").read_bytes(), np.uint8).reshape(shape)


def test_upscale_takes_the_selections_bounds_and_names_the_image(upscale_session) -> None:
    out, results, image, models = upscale_session
    case = results["selection"]
    assert case["status"] == "success", case["error"]
    x, y, w, h = SELECTION
    assert case["size"] == [4 * w, 4 * h]
    assert case["name"].startswith("photo x4")  # "<name> x4", after photo.png
    got = raw(out, "selection_x4", (4 * h, 4 * w, 4))
    assert_close(got, engine_result("upscale", image[y : y + h, x : x + w], "sr", models))


def test_upscale_of_the_visible_image(upscale_session) -> None:
    out, results, image, models = upscale_session
    case = results["visible"]
    assert case["status"] == "success", case["error"]
    assert case["size"] == [4 * W, 4 * H] and case["name"].startswith("photo x4")
    visible = raw(out, "visible", (H, W, 4))
    assert np.abs(visible.astype(int) - image).max() > 50  # the top layer shows: not the layer
    assert_close(
        raw(out, "visible_x4", (4 * H, 4 * W, 4)), engine_result("upscale", visible, "sr", models)
    )
    assert case["images_left"] == 1 and case["layers"] == 2  # only the x4 image was added


def test_visible_image_in_place_is_refused_with_what_to_choose(upscale_session) -> None:
    case = upscale_session[1]["visible_in_place"]
    assert case["status"] == "execution-error"
    assert "set output to 'new-image'" in case["error"]
