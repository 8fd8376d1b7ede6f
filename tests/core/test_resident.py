"""Device-resident jobs (core.resident) on the CPU: the host path's results, cancel, half
precision without overflow, and memory bounded by the tile."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from core.engine import Cancelled, Engine, StyleOptions
from core.modelfile import load_model, save_model
from tests.conftest import make_model
from tests.core.test_engine import as_dtype, cancel_at, psnr, textured, with_channels


def alpha_ramp(h: int, w: int) -> np.ndarray:
    return np.clip(np.linspace(0, 2, w, dtype=np.float32), 0, 1)[None, :, None].repeat(h, 0)


def image_of(h: int, w: int, dtype, channels: int = 3, gain: float = 1.0) -> np.ndarray:
    rgb = textured(h, w) * np.float32(gain)
    return as_dtype(with_channels(rgb, channels, alpha_ramp(h, w)), dtype)


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    """Equal to float rounding: floats within 1e-4; integers at most 1 apart on under 1% of values."""
    assert a.shape == b.shape and a.dtype == b.dtype
    if a.dtype == np.float32:
        np.testing.assert_allclose(a, b, atol=1e-4)
    else:
        difference = np.abs(a.astype(np.int64) - b)
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01


@pytest.mark.parametrize(
    "tile, shape, dtype, channels, options",
    [
        (None, (48, 64), np.uint8, 3, StyleOptions()),  # one tile, whole
        (160, (203, 261), np.uint8, 3, StyleOptions()),  # many tiles, odd sides
        (160, (203, 261), np.uint16, 4, StyleOptions(strength=0.6)),  # alpha, uint16
        (160, (170, 333), np.float32, 1, StyleOptions(preserve_colors=True)),  # gray, float
        (160, (150, 210), np.float32, 3, StyleOptions(strength=0.5)),  # float above 1 (gain 2)
        (160, (120, 160), np.uint8, 2, StyleOptions(scale=1.7)),  # processing scale, tiled
    ],
)
def test_stylize_on_the_device_gives_the_host_paths_result(
    models_dir, tile, shape, dtype, channels, options
):
    gain = 2.0 if dtype == np.float32 and channels == 3 else 1.0
    image = image_of(*shape, dtype, channels, gain)
    device = Engine(device="cpu", backend="torch", tile_size=tile)
    host = Engine(device="cpu", backend="torch", tile_size=tile, resident=False)
    assert device.resident and not host.resident
    assert_same(device.stylize("tiny", image, options), host.stylize("tiny", image, options))


@pytest.mark.parametrize(
    "tile, shape, dtype, channels",
    [
        (None, (40, 56), np.uint8, 3),  # one tile
        (256, (70, 90), np.uint16, 4),  # many tiles, alpha
        (256, (67, 81), np.float32, 1),  # odd sides, gray
    ],
)
def test_upscale_on_the_device_gives_the_host_paths_result(
    models_dir, tile, shape, dtype, channels
):
    image = image_of(*shape, dtype, channels)
    device = Engine(device="cpu", backend="torch", tile_size=tile)
    host = Engine(device="cpu", backend="torch", tile_size=tile, resident=False)
    assert_same(device.upscale("sr", image), host.upscale("sr", image))


def test_cancel_between_tiles_on_the_device_leaves_the_engine_exact(models_dir):
    engine = Engine(device="cpu", backend="torch", tile_size=160)
    image = textured(300, 400)  # 9 tiles
    expected = engine.stylize("tiny", image)
    cancel, progress, seen = cancel_at(3)  # after the thumbnail and two tiles
    with pytest.raises(Cancelled):
        engine.stylize("tiny", image, progress=progress, cancel=cancel)
    assert seen == [0, 1, 2, 3]
    np.testing.assert_array_equal(engine.stylize("tiny", image), expected)
    cancel = threading.Event()
    with pytest.raises(Cancelled):  # upscaling too, from its first tile
        engine.upscale("sr", image[:100, :100], progress=lambda d, t: cancel.set(), cancel=cancel)


@pytest.fixture
def loud(models_dir):
    """A style model whose first layer gives activations of about 50: their squares summed over
    a tile overflow fp16 (largest 65504)."""
    path = make_model(models_dir, "loud", width="compact")
    net, info = load_model(path)
    with torch.no_grad():
        net.conv1[1].weight.mul_(30)
    return save_model(path, net, info), net


def test_fp16_statistics_do_not_overflow_on_bright_and_dark_images(loud):
    # fp16 only: bf16 has fp32's exponent range (and too few mantissa bits for this model's
    # amplified activations to compare closely).
    path, net = loud
    bright, dark = 0.9 + 0.1 * textured(120, 180), 0.05 * textured(120, 180)
    first = net.conv1(torch.from_numpy(bright).permute(2, 0, 1)[None]).detach()
    assert torch.isinf((first.half() ** 2).sum(dim=(2, 3))).any()  # fp16 sums would overflow
    for image in (bright, dark):
        for tile in (None, 128):  # whole (own statistics) and tiled (the thumbnail's)
            half = Engine(device="cpu", backend="torch", precision="fp16", tile_size=tile)
            full = Engine(device="cpu", backend="torch", tile_size=tile)
            result = half.stylize(path, image)
            assert np.isfinite(result).all()
            assert psnr(result, full.stylize(path, image)) > 30  # measured 35-37 dB


class LargestFloat(TorchDispatchMode):
    """Records the largest float32 tensor any torch operation makes while active."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32:
                self.largest = max(self.largest, t.numel())
        return out


def test_device_memory_follows_the_tile_not_the_image(models_dir):
    # Four times the height, same width and tiles: no float tensor grows, and none is a float
    # copy of the image or the result (the host path's copies are numpy's, unseen here).
    engine = Engine(device="cpu", backend="torch", tile_size=160)
    styled, upscaled = [], []
    for height in (400, 1600):
        image = as_dtype(textured(height, 192), np.uint8)
        with LargestFloat() as mode:
            engine.stylize("tiny", image)
        styled.append(mode.largest)
        with LargestFloat() as mode:
            engine.upscale("sr", image[:, :48])
        upscaled.append(mode.largest)
    assert styled[1] <= styled[0] < 3 * 1600 * 192  # a tile's activations
    assert upscaled[1] <= upscaled[0] < 3 * (4 * 1600) * (4 * 48)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_stylizes_a_large_image_within_a_memory_budget(models_dir):
    # 24 MP in 2 GiB of GPU memory: eager whole-image inference needs several times that.
    budget = 2 * 2**30
    torch.cuda.set_per_process_memory_fraction(
        budget / torch.cuda.get_device_properties(0).total_memory
    )
    try:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        image = as_dtype(textured(4000, 6000), np.uint8)
        result = Engine(device="cuda", tile_size=1024).stylize("wide", image)
        assert result.shape == image.shape and torch.cuda.max_memory_allocated() <= budget
        net = load_model(models_dir / "wide.impasto")[0].cuda()
        with pytest.raises(torch.OutOfMemoryError), torch.no_grad():
            net(torch.from_numpy(image).cuda().permute(2, 0, 1)[None].float() / 255)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
