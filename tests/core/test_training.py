"""Training a style through a real server: refused without enough photos, cancelled without a
trace, finished with a model that stylizes at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.client import Client, ImpastoError
from core.training import EXTRA_ARGS_ENV, MIN_PHOTOS
from tests.core.test_server import Server, start_server, use_folders
from tests.trainer.conftest import make_photos

TINY = "--image-size 32 --batch-size 2 --width compact --workers 0 --log-every 1"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A server's IMPASTO_* folders, a painting, 20 tiny photos and 3 in another folder."""
    folder = tmp_path_factory.mktemp("training")
    make_photos(folder / "photos", MIN_PHOTOS)
    make_photos(folder / "few", 3)
    y, x = np.mgrid[0:48, 0:64]
    stripes = np.stack([200 * (np.sin(x / 2) > 0), 80 + 0 * x, 200 * (np.cos(y / 3) > 0)], -1)
    (folder / "painting.raw").write_bytes(stripes.astype(np.uint8).tobytes())
    with pytest.MonkeyPatch.context() as env:
        use_folders(env, folder)
        env.setenv(EXTRA_ARGS_ENV, TINY)
        env.setenv("OMP_NUM_THREADS", "1")
        yield folder


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[Server]:
    running = start_server(home)
    yield running
    running.stop()


def train(home: Path, name: str, photos: str, minutes: float) -> dict:
    """Start training ``name`` on the stripes, as the plug-in does (8-bit RGB pixels)."""
    stripes = (home / "painting.raw").read_bytes()
    return Client(autostart=False).train(name, stripes, 64, 48, str(home / photos), minutes, 64)


def wait_for(client: Client, condition, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.training()
        if condition(status):
            return status
        time.sleep(0.2)
    pytest.fail(f"training still {status}")


def model_files(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "models").glob("*")) if (home / "models").is_dir() else []


def test_too_few_photos_are_refused_with_how_many_are_needed(home, server):
    client = Client(autostart=False)
    with pytest.raises(ImpastoError, match=f"holds 3 photos; training needs at least {MIN_PHOTOS}"):
        train(home, "mine", "few", 0.2)
    assert client.training()["state"] == "idle"


def test_a_cancelled_training_leaves_no_model(home, server):
    client = Client(autostart=False)
    train(home, "cancelled", "photos", 10)
    with pytest.raises(ImpastoError, match="'cancelled' is training"):  # one at a time
        train(home, "other", "photos", 1)
    wait_for(client, lambda s: s["step"] >= 2)
    client.cancel_training()
    status = wait_for(client, lambda s: s["state"] != "running", 60)
    assert status["state"] == "cancelled"
    assert model_files(home) == []  # nothing, not even a partial file
    assert not list((home / "config").glob("painting-*"))  # the client's copy is gone too
    assert not (home / "cache" / "training" / "cancelled").exists()
    assert "cancelled" not in [m["name"] for m in client.models("style")]


def test_a_finished_training_is_listed_and_stylizes_at_once(home, server):
    client = Client(autostart=False)
    started = train(home, "quick", "photos", 0.2)
    assert started["state"] == "running" and started["minutes"] == 0.2
    status = wait_for(client, lambda s: s["state"] != "running")
    assert status["state"] == "done", status
    assert model_files(home) == ["quick.impasto"] and "ready" in status["message"]
    assert "quick" in [m["name"] for m in client.models("style")]
    photo = np.asarray(Image.open(next((home / "photos").glob("*.png"))).convert("RGB"))
    h, w, _ = photo.shape
    result = client.stylize(photo.tobytes(), w, h, 3, "quick")
    assert len(result) == photo.size and result != photo.tobytes()
