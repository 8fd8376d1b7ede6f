"""The engine's numpy resize gives torch's interpolate results, so dropping torch changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.resize import resize


def torch_resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """What the engine did before: torch's antialiased bilinear to shrink, bicubic to enlarge."""
    t = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    if size[0] <= pixels.shape[0] and size[1] <= pixels.shape[1]:
        t = F.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False)
    else:
        t = F.interpolate(t, size=size, mode="bicubic", align_corners=False)
    return t[0].permute(1, 2, 0).contiguous().numpy()


@pytest.mark.parametrize(
    "shape, size",
    [
        ((240, 320, 3), (120, 160)),  # a thumbnail, factor 2
        ((1000, 1500, 3), (512, 768)),  # an uneven factor
        ((97, 131, 3), (40, 77)),  # odd sizes, different factors per axis
        ((50, 60, 3), (100, 120)),  # processing scale 2
        ((37, 41, 1), (148, 164)),  # upscaled alpha
        ((64, 80, 3), (50, 200)),  # one side shrinks, the other grows: bicubic
        ((30, 40, 3), (30, 40)),  # same size
    ],
)
def test_resize_matches_torch(shape, size):
    pixels = np.random.default_rng(0).random(shape, dtype=np.float32)
    result = resize(pixels, size)
    assert result.shape == (*size, shape[2]) and result.dtype == np.float32
    np.testing.assert_allclose(result, torch_resize(pixels, size), rtol=0, atol=1e-5)
