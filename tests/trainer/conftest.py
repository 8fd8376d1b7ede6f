"""Tiny photo folders and training settings that run in seconds on two CPU cores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainer.config import TrainConfig


@pytest.fixture(autouse=True)
def one_thread():
    """Train on one thread: on a shared 2-core machine, spinning OpenMP threads slow steps ~10x."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Models the trainer installs are prepared for OpenVINO into this test's cache, not the user's."""
    monkeypatch.setenv("IMPASTO_CACHE_DIR", str(tmp_path / "cache"))


def make_photos(folder: Path, count: int, size: tuple[int, int] = (56, 44), seed: int = 0) -> Path:
    """``count`` smooth, textured RGB photos (PNG and JPEG) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]].astype(np.float32)
    for i in range(count):
        f = rng.uniform(3, 12, 3)
        channels = [127 + 110 * np.sin(x / f[c] + i) * np.cos(y / f[(c + 1) % 3]) for c in range(3)]
        pixels = np.clip(np.stack(channels, -1) + rng.normal(0, 8, (*y.shape, 3)), 0, 255)
        suffix = ".png" if i % 2 else ".jpg"
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"photo_{i:02d}{suffix}")
    return folder


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder of eight tiny photos."""
    return make_photos(tmp_path / "photos", 8)


@pytest.fixture
def painting(tmp_path: Path) -> Path:
    """A small stripy 'painting' to use as the style image."""
    y, x = np.mgrid[0:48, 0:64].astype(np.float32)
    pixels = np.stack([200 * (np.sin(x / 2) > 0), 80 + 0 * x, 200 * (np.cos(y / 3) > 0)], -1)
    path = tmp_path / "painting.png"
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def tiny_config(tmp_path: Path, photos: Path, painting: Path | None, **changes) -> TrainConfig:
    """A style run (or SR with ``task="sr"``) at 32 px that takes seconds."""
    settings = dict(
        task="style",
        name="tiny_run",
        dataset=str(photos),
        output=str(tmp_path / "models" / "tiny_run.impasto"),
        run_dir=str(tmp_path / "run"),
        style_image=str(painting) if painting else None,
        width="compact",
        image_size=32,
        batch_size=2,
        steps=6,
        style_size=48,
        device="cpu",
        log_every=1,
        checkpoint_every=100,
        preview_every=0,
        lr=1e-2,
    )
    settings.update(changes)
    return TrainConfig(**settings)
