"""Models prepared for OpenVINO: a prepared model runs without torch, and the cache of prepared
models is keyed by content and rebuilt when damaged; listing models and --help load no runtime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.engine import Engine
from core.images import load_image
from core.ovruntime import openvino_available
from core.prepared import FORMS, entry_dir
from tests.conftest import make_model

pytestmark = pytest.mark.skipif(not openvino_available(), reason="openvino is not installed")
REPO = Path(__file__).resolve().parents[2]

# Run as `python -c`: importing torch (or, with "openvino" in argv[1], openvino) fails, then the
# command line runs on the rest of argv and the modules that got imported are checked.
WITHOUT = """
import sys
blocked = sys.argv[1].split(",")

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is blocked by the test")

sys.meta_path.insert(0, Refuse())
from core.cli import main
try:
    code = main(sys.argv[2:])
except SystemExit as e:  # --help
    code = e.code
assert not {m.split(".")[0] for m in sys.modules} & set(blocked), "a blocked module was imported"
sys.exit(code)
"""


def run_without(blocked: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT, blocked, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("IMPASTO_CACHE_DIR", str(folder))
    return folder


def textured(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([np.sin(x / 11) * np.cos(y / 7), np.cos((x + y) / 13), np.sin(y / 17)], -1)
    return np.rint((0.5 + 0.3 * base) * 255).astype(np.uint8)


@pytest.mark.parametrize("tile_size", [None, 160])  # whole, and tiles with thumbnail statistics
def test_a_prepared_model_runs_without_torch(models_dir, cache, tmp_path, tile_size):
    from PIL import Image

    image = textured(200, 260)
    Image.fromarray(image).save(tmp_path / "in.png")
    engine = Engine(device="cpu", backend="openvino", precision="fp32", tile_size=tile_size)
    engine.prepare("tiny")
    expected = engine.stylize("tiny", image)
    tiles = ["--tile-size", str(tile_size)] if tile_size else []
    args = ["stylize", str(tmp_path / "in.png"), "-s", "tiny", "--precision", "fp32", *tiles]
    done = run_without("torch", *args, "-o", str(tmp_path / "out.png"))
    assert done.returncode == 0, done.stderr
    assert "preparing" not in done.stderr
    np.testing.assert_array_equal(load_image(tmp_path / "out.png"), expected)


def test_listing_models_and_help_load_no_runtime(models_dir):
    done = run_without("torch,openvino", "styles")
    assert done.returncode == 0, done.stderr
    assert "tiny" in done.stdout
    for args in (["--help"], ["stylize", "--help"]):
        done = run_without("torch,openvino", *args)
        assert done.returncode == 0 and "usage" in done.stdout, done.stderr


def test_a_model_is_prepared_once_and_says_so(models_dir, cache):
    engine = Engine(device="cpu", backend="openvino", precision="fp32")
    told: list[str] = []
    engine.notify = told.append
    image = textured(48, 64)
    first = engine.stylize("tiny", image)
    assert len(told) == 1 and "preparing tiny" in told[0]
    # Only what this job needed was converted: an image of one tile runs the whole form.
    folder = entry_dir(models_dir / "tiny.impasto", "fp32")
    assert {p.stem for p in folder.glob("*.json")} == {"norms", "whole"}
    # Another process (a new engine) finds it prepared: nothing to say, the same result.
    again = Engine(device="cpu", backend="openvino", precision="fp32")
    again.notify = told.append
    np.testing.assert_array_equal(again.stylize("tiny", image), first)
    assert len(told) == 1


def test_a_damaged_or_stale_entry_is_prepared_again(models_dir, cache):
    image = textured(48, 64)
    engine = Engine(device="cpu", backend="openvino", precision="fp32")
    engine.prepare("tiny")
    expected = engine.stylize("tiny", image)
    folder = entry_dir(models_dir / "tiny.impasto", "fp32")
    weights = folder / "whole.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # zeroed weights: still loadable
    weights.write_bytes(bytes(data))
    (folder / "norms.npy").write_bytes(b"damaged")

    told: list[str] = []
    fresh = Engine(device="cpu", backend="openvino", precision="fp32")
    fresh.notify = told.append
    np.testing.assert_array_equal(fresh.stylize("tiny", image), expected)
    assert len(told) == 1  # prepared again, and the entry is whole again
    third = Engine(device="cpu", backend="openvino", precision="fp32")
    third.notify = told.append
    np.testing.assert_array_equal(third.stylize("tiny", image), expected)
    assert len(told) == 1  # the rebuilt parts are used as they are

    # A retrained model (new content, same name) gets its own entry, never the old graphs, and
    # replaces the old entry.
    make_model(models_dir, "tiny", seed=5, width="compact")
    assert entry_dir(models_dir / "tiny.impasto", "fp32") != folder
    retrained = Engine(device="cpu", backend="openvino", precision="fp32").stylize("tiny", image)
    assert np.abs(retrained.astype(int) - expected).mean() > 1
    assert not folder.exists()
    assert entry_dir(models_dir / "tiny.impasto", "fp32").is_dir()


def test_prepare_command_prepares_every_model(models_dir, cache):
    done = subprocess.run(
        [sys.executable, "-m", "core", "prepare", "tiny", "sr", "--precision", "fp32"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "tiny: ready" in done.stderr and "sr: ready" in done.stderr
    for name in ("tiny", "sr"):  # every form: no later job converts anything
        folder = entry_dir(models_dir / f"{name}.impasto", "fp32")
        assert {p.stem for p in folder.glob("*.json")} == {"norms", *FORMS}
