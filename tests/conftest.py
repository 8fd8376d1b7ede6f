"""Shared fixtures: models with random weights in a temporary user models folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.modelfile import ModelInfo, save_model
from core.networks import build_network


def make_model(
    folder: Path, name: str, kind: str = "style", seed: int = 0, info: dict | None = None, **options
) -> Path:
    """Write a model file with random (seeded) weights, as a trained one would be written;
    ``info``: metadata fields (description, credit...) besides the defaults."""
    torch.manual_seed(seed)
    net = build_network(kind, **options)
    if kind == "style":
        # Random instance-norm affine parameters so frozen-vs-live statistics matter in tests.
        for m in net.modules():
            if hasattr(m, "record"):
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
    fields = {"display_name": name.title(), **(info or {})}
    return save_model(
        folder / f"{name}.impasto",
        net,
        ModelInfo(name=name, kind=kind, arch=kind, options=options, **fields),
    )


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user models folder holding 'tiny' (compact style), 'wide' (full style) and 'sr' models."""
    folder = tmp_path / "models"
    monkeypatch.setenv("IMPASTO_MODELS_DIR", str(folder))
    make_model(folder, "tiny", width="compact")
    make_model(folder, "wide", seed=1, width="full")
    make_model(folder, "sr", kind="sr")
    return folder


@pytest.fixture
def photo() -> np.ndarray:
    """A 96x128 RGB uint8 image with smooth structure and texture (not noise, not flat)."""
    y, x = np.mgrid[0:96, 0:128].astype(np.float32)
    r = 127 + 100 * np.sin(x / 9.0) * np.cos(y / 13.0)
    g = 127 + 90 * np.cos((x + y) / 17.0)
    b = 60 + 1.2 * x
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)
