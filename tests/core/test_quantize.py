"""Int8 CPU inference: calibration, the shipped models' accuracy in int8, and when it is used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.engine import Engine, EngineError
from core.modelfile import load_model, read_info, save_model
from core.networks import build_network
from core.ovruntime import openvino_available, openvino_supports
from core.quantize import CalibrationError, calibrate, conv_layers, quantized
from core.registry import SHIPPED_DIR

pytestmark = pytest.mark.skipif(not openvino_available(), reason="int8 runs on OpenVINO")
SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "sample.jpg"


@pytest.fixture(scope="module", autouse=True)
def openvino_cache(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMPASTO_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


def sample_photo(side: int = 320) -> np.ndarray:
    image = Image.open(SAMPLE).convert("RGB")
    image.thumbnail((side, side))
    return np.asarray(image)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


@pytest.mark.skipif(
    not openvino_available() or not openvino_supports("INT8"), reason="no int8 on this CPU"
)
@pytest.mark.parametrize("model", ["starry-night", "starry-night-full"])
def test_shipped_style_models_run_in_int8_within_a_few_levels_of_fp32(model):
    info = read_info(SHIPPED_DIR / f"{model}.impasto")
    assert len(info.int8_ranges) == len(conv_layers(load_model(info.path)[0]))
    fast = Engine(device="cpu")
    assert fast.precision == "int8"
    assert fast._load(model, "style").runner.model_precision == "int8"
    photo = sample_photo()
    exact = Engine(device="cpu", precision="fp32").stylize(model, photo)
    result = fast.stylize(model, photo)
    # Measured 38-42 dB and 1.6-2.4 levels on average for the shipped styles (docs/models.md).
    assert psnr(result, exact) > 34
    assert np.abs(result.astype(int) - exact).mean() < 4
    # Tiled int8 (thumbnail statistics) stays as close to tiled fp32. (Thumbnails much smaller
    # than the image move activations off the calibrated ranges: ~26 dB with 160-px tiles here.)
    tiled = Engine(device="cpu", tile_size=256).stylize(model, photo)
    tiled_exact = Engine(device="cpu", precision="fp32", tile_size=256).stylize(model, photo)
    assert psnr(tiled, tiled_exact) > 34


def test_uncalibrated_and_upscaling_models_stay_fp32(models_dir):
    engine = Engine(device="cpu")
    assert engine._load("tiny", "style").runner.model_precision != "int8"
    assert engine._load("sr-faithful", "sr").runner.model_precision != "int8"
    explicit = Engine(device="cpu", precision="int8")
    with pytest.raises(EngineError, match="no int8 calibration.*trainer calibrate tiny"):
        explicit.stylize("tiny", np.zeros((32, 32, 3), np.uint8))
    # upscales in fp32
    assert explicit._load("sr-faithful", "sr").runner.model_precision != "int8"
    with pytest.raises(EngineError, match="int8 runs on the openvino backend"):
        Engine(device="cpu", backend="torch", precision="int8")


def test_calibration_measures_every_convolution_input():
    torch.manual_seed(0)
    net = build_network("style", width="compact").eval()
    images = [torch.rand(1, 3, 40, 52) for _ in range(3)]
    ranges = calibrate(net, images)
    assert len(ranges) == len(conv_layers(net))
    assert ranges[0] == [0.0, 1.0]  # the image itself: 8-bit input is exact
    assert all(low <= 0 < high for low, high in ranges)
    # The fake-quantized copy computes nearly the same thing and leaves the original alone.
    copy = quantized(net, ranges)
    with torch.no_grad():
        a, b = net(images[0]), copy(images[0])
    assert isinstance(net.conv1[1], torch.nn.Conv2d)
    assert (a - b).abs().mean() < 0.05 * a.abs().mean()


def test_calibration_keeps_the_range_that_a_few_bright_images_need():
    # Eight dim photos and two bright ones: the range follows the 90th percentile of the images'
    # maxima, so the bright ones (a white cup rim) are not clipped to the dim ones' mean.
    torch.manual_seed(2)
    net = build_network("style", width="compact").eval()
    images = [0.1 * torch.rand(1, 3, 32, 32) for _ in range(8)] + [
        torch.rand(1, 3, 32, 32) for _ in range(2)
    ]
    maxima = []
    hook = conv_layers(net)[1].register_forward_pre_hook(
        lambda module, inputs: maxima.append(float(inputs[0].max()))
    )
    with torch.no_grad():
        for image in images:
            net(image)
    hook.remove()
    high = calibrate(net, images)[1][1]
    assert high == pytest.approx(float(np.quantile(maxima, 0.9)), rel=1e-6)
    assert high > np.mean(maxima)


def test_a_damaged_calibration_is_a_clear_error(models_dir):
    net, info = load_model(models_dir / "tiny.impasto")
    with pytest.raises(CalibrationError, match="2 ranges for 16 convolutions"):
        quantized(net, [[0, 1], [0, 2]])
    info.int8_ranges = [[1.0, 0.0]] * len(conv_layers(net))  # low above high
    save_model(models_dir / "tiny.impasto", net, info)
    with pytest.raises(EngineError, match="int8 calibration.*invalid.*trainer calibrate"):
        Engine(device="cpu").stylize("tiny", np.zeros((32, 32, 3), np.uint8))
