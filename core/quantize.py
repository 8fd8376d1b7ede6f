"""Eight-bit CPU inference: calibrated activation ranges, and the network OpenVINO runs in int8.

Every convolution gets fake-quantized inputs (uint8, one range per layer, measured on photos) and
weights (int8, one scale per output channel); OpenVINO turns that pattern into int8 convolutions,
2-3x faster than fp32 on CPUs with VNNI. Instance norm, ReLU and the residual sums stay fp32.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from core.networks import ConvLayer, UpsampleConvLayer
from core.phased import PHASES, PhasedConv2d, phase_weight


class CalibrationError(ValueError):
    """Activation ranges that do not fit the network."""


def conv_layers(net: nn.Module) -> list[nn.Conv2d]:
    """The network's convolutions in a fixed order (the order of the stored ranges)."""
    return [m for m in net.modules() if isinstance(m, nn.Conv2d)]


RANGE_QUANTILE = 0.9  # of the calibration images' per-image maxima (and 1 - it of the minima)


def _quantile(values: list[float], q: float) -> float:
    return torch.tensor(values, dtype=torch.float64).quantile(q).item()  # linear, as numpy's


def calibrate(net: nn.Module, images: Iterable[torch.Tensor]) -> list[list[float]]:
    """(low, high) of each convolution's input over (1, 3, H, W) images in [0, 1].

    A layer's range runs from the 10th percentile of the images' own minima to the 90th of their
    maxima: a rare extreme is clipped rather than coarsening every other value, but a layer that
    runs high on a few kinds of image (bright smooth areas) is not clipped on them.
    """
    convs = conv_layers(net)
    lows: list[list[float]] = [[] for _ in convs]
    highs: list[list[float]] = [[] for _ in convs]

    def record(i: int):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            lows[i].append(float(inputs[0].min()))
            highs[i].append(float(inputs[0].max()))

        return hook

    hooks = [conv.register_forward_pre_hook(record(i)) for i, conv in enumerate(convs)]
    try:
        with torch.no_grad():
            for image in images:
                net(image)
    finally:
        for h in hooks:
            h.remove()
    if not lows[0]:
        raise CalibrationError("no calibration images")
    # The mean of the maxima (used until session 16) clipped Great Wave's bright cup rim in the tiled
    # path of a 15 MP photo: 30.7 dB against fp32, a grey ring; the 90th percentile: 36.8 dB.
    ranges = [
        [min(0.0, _quantile(lo, 1 - RANGE_QUANTILE)), max(_quantile(hi, RANGE_QUANTILE), 1e-3)]
        for lo, hi in zip(lows, highs, strict=True)
    ]
    # The input layer sees the image itself: [0, 1] in 255 steps is exact for 8-bit images.
    ranges[0] = [0.0, 1.0]
    return ranges


class InputQuantizer(nn.Module):
    """Fake-quantizes activations to uint8 over a calibrated [low, high]."""

    def __init__(self, low: float, high: float) -> None:
        super().__init__()
        self.scale = (high - low) / 255
        self.zero_point = round(-low / self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, 0, 255)


class QuantizedConv(nn.Module):
    """A convolution with per-channel int8 fake-quantized weights (its input is quantized before).

    A PhasedConv2d's strided weight is what gets quantized, so OpenVINO sees int8 weights feeding
    the convolution it runs; the values are those of the quantized original weight, rearranged.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        scale = conv.weight.detach().abs().amax(dim=(1, 2, 3)).clamp_min(1e-8) / 127
        if isinstance(conv, PhasedConv2d):
            scale = scale.repeat_interleave(PHASES**2)  # one output channel per phase
        self.register_buffer("weight_scale", scale)
        self.register_buffer("weight_zero", torch.zeros(scale.numel(), dtype=torch.int32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        phased = isinstance(c, PhasedConv2d)
        weight = phase_weight(c.weight, PHASES) if phased else c.weight
        w = torch.fake_quantize_per_channel_affine(
            weight, self.weight_scale, self.weight_zero, 0, -128, 127
        )
        return c.strided(x, w, c.bias) if phased else c._conv_forward(x, w, c.bias)


def quantized(net: nn.Module, ranges: list[list[float]]) -> nn.Module:
    """A copy of ``net`` whose convolutions are fake-quantized with ``ranges`` (from calibrate).

    Each layer's input is quantized where the layer starts, before its padding and upsampling:
    those then move bytes instead of floats (the same values: they only copy pixels).
    """
    net = copy.deepcopy(net)
    convs = conv_layers(net)
    if len(ranges) != len(convs):
        raise CalibrationError(
            f"the model's int8 calibration has {len(ranges)} ranges for {len(convs)} convolutions"
        )
    if not all(len(r) == 2 and -1e6 < r[0] < r[1] < 1e6 for r in ranges):
        raise CalibrationError("the model's int8 calibration has an invalid range")
    found = dict(zip(convs, ranges, strict=True))

    def quantize_weights(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(module, name, QuantizedConv(child))
            else:
                quantize_weights(child)

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, (ConvLayer, UpsampleConvLayer, nn.Conv2d)):
                (conv,) = conv_layers(child)
                layer = nn.Sequential(InputQuantizer(*found[conv]), child)
                quantize_weights(layer)
                setattr(module, name, layer)
            else:
                swap(child)

    swap(net)
    return net
