"""The paper's transformation networks (Johnson et al., 2016): style transfer and x4 super-resolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.netspec import SR_DEFAULT_BLOCKS, STYLE_WIDTHS


class InstanceNorm(nn.Module):
    """Affine instance norm whose statistics can be frozen from a thumbnail.

    Thumbnail Instance Normalization (Chen et al., AAAI 2022): run the whole image once at low
    resolution with ``record`` set, then every tile reuses those statistics, so tiles have no seams.
    State-dict keys match ``nn.InstanceNorm2d(affine=True)``.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps
        self.record = False  # measure each input's (mean, var) into ``recorded``
        self.recorded: tuple[torch.Tensor, torch.Tensor] | None = None
        # Set for tiles: the per-channel (scale, shift) that ``affine`` made from given statistics.
        self.frozen: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frozen is not None:
            scale, shift = self.frozen
        elif self.record:
            var, mean = torch.var_mean(x.float(), dim=(2, 3), keepdim=True, correction=0)
            self.recorded = (mean, var)
            scale, shift = (
                t[..., None, None] for t in self.affine(mean.flatten(1), var.flatten(1))
            )
        else:
            return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)
        return x * scale.to(x.dtype) + shift.to(x.dtype)

    def affine(self, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (scale, shift) that normalise with the statistics (mean, var), then scale;
        channels in the last dimension."""
        mean, var = mean.to(self.weight.device).float(), var.to(self.weight.device).float()
        scale = self.weight.detach().float() * torch.rsqrt(var + self.eps)
        return scale, self.bias.detach().float() - mean * scale


class ConvLayer(nn.Sequential):
    """Reflection padding then convolution: no zero-padding artefacts at the borders."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__(nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride))


class UpsampleConvLayer(nn.Sequential):
    """Nearest x2 upsampling then convolution: avoids the checkerboard of transposed convs."""

    def __init__(self, cin: int, cout: int, kernel: int = 3) -> None:
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), ConvLayer(cin, cout, kernel))


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection; ``norm`` False for the SR network."""

    def __init__(self, channels: int, norm: bool = True) -> None:
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3)
        self.in1 = InstanceNorm(channels) if norm else nn.Identity()
        self.conv2 = ConvLayer(channels, channels, 3)
        self.in2 = InstanceNorm(channels) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.in1(self.conv1(x)))
        return x + self.in2(self.conv2(y))


class StyleNet(nn.Module):
    """Style transformation network: RGB in [0, 1] to stylised RGB (unclamped), any size."""

    def __init__(self, width: str = "full") -> None:
        super().__init__()
        c = STYLE_WIDTHS[width]
        self.width = width
        self.conv1, self.in1 = ConvLayer(3, c, 9), InstanceNorm(c)
        self.conv2, self.in2 = ConvLayer(c, 2 * c, 3, stride=2), InstanceNorm(2 * c)
        self.conv3, self.in3 = ConvLayer(2 * c, 4 * c, 3, stride=2), InstanceNorm(4 * c)
        self.res = nn.Sequential(*(ResidualBlock(4 * c) for _ in range(5)))
        self.up1, self.in4 = UpsampleConvLayer(4 * c, 2 * c), InstanceNorm(2 * c)
        self.up2, self.in5 = UpsampleConvLayer(2 * c, c), InstanceNorm(c)
        self.conv_out = ConvLayer(c, 3, 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # Two stride-2 stages: pad to a multiple of 4 so the output has the input's size.
        x = F.pad(x, (0, -w % 4, 0, -h % 4), mode="reflect") if (h % 4 or w % 4) else x
        y = F.relu(self.in1(self.conv1(x)))
        y = F.relu(self.in2(self.conv2(y)))
        y = F.relu(self.in3(self.conv3(y)))
        y = self.res(y)
        y = F.relu(self.in4(self.up1(y)))
        y = F.relu(self.in5(self.up2(y)))
        return self.conv_out(y)[..., :h, :w]


class SRNet(nn.Module):
    """x4 super-resolution network: residual blocks at low resolution, two x2 upsampling stages.

    Predicts the difference to a bicubic upscale (global skip), which trains faster and better than
    predicting the image. No normalisation, so tiles with enough overlap equal the whole image.
    """

    scale = 4

    def __init__(self, channels: int = 64, blocks: int = SR_DEFAULT_BLOCKS) -> None:
        super().__init__()
        self.conv_in = ConvLayer(3, channels, 9)
        self.res = nn.Sequential(*(ResidualBlock(channels, norm=False) for _ in range(blocks)))
        self.up1 = UpsampleConvLayer(channels, channels)
        self.up2 = UpsampleConvLayer(channels, channels)
        self.conv_out = ConvLayer(channels, 3, 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        y = self.res(F.relu(self.conv_in(x)))
        y = F.relu(self.up2(F.relu(self.up1(y))))
        return base + self.conv_out(y)


def build_network(arch: str, **options: object) -> nn.Module:
    """Build an untrained network by architecture name ("style" or "sr")."""
    if arch == "style":
        return StyleNet(**options)  # type: ignore[arg-type]
    if arch == "sr":
        return SRNet(**options)  # type: ignore[arg-type]
    raise ValueError(f"unknown architecture {arch!r}: expected 'style' or 'sr'")
