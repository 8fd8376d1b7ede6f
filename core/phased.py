"""Convolutions with few output channels, rewritten as strided ones with many: same products, faster.

A stride-1 convolution with 3 output channels (the networks' last layer) keeps CPU kernels busy
with padding: their vector registers hold 16 channels. Run in ``phases`` x ``phases`` blocks, it is
a stride-``phases`` convolution with ``phases**2`` times the output channels followed by
depth-to-space; OpenVINO runs that ~3x faster in fp32 and int8 (bench/results/engine.md).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

# Stride-1 convolutions with fewer output channels than this run in phases.
FEW_CHANNELS = 16
PHASES = 4


class PhasedConv(nn.Module):
    """A stride-1, unpadded convolution computed as a stride-``phases`` one, then depth-to-space."""

    def __init__(self, conv: nn.Conv2d, phases: int = PHASES) -> None:
        super().__init__()
        out, cin, k, _ = conv.weight.shape
        self.phases, self.reach = phases, k - 1
        self.conv = nn.Conv2d(cin, out * phases**2, k + phases - 1, stride=phases)
        weight = conv.weight.detach().new_zeros(self.conv.weight.shape)
        blocks = weight.view(out, phases, phases, cin, k + phases - 1, k + phases - 1)
        for a in range(phases):
            for b in range(phases):
                # Output pixel (a, b) of each block sees the kernel shifted by (a, b).
                blocks[:, a, b, :, a : a + k, b : b + k] = conv.weight.detach()
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(out)
        self.conv.weight.data.copy_(weight)
        self.conv.bias.data.copy_(bias.repeat_interleave(phases**2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.phases
        h, w = x.shape[-2] - self.reach, x.shape[-1] - self.reach  # the original output size
        x = F.pad(x, (0, -w % r, 0, -h % r))  # these zeros only meet zero weights
        return F.pixel_shuffle(self.conv(x), r)[..., :h, :w]


def phased(net: nn.Module) -> nn.Module:
    """A copy of ``net`` whose stride-1 convolutions with few output channels run in phases."""
    net = copy.deepcopy(net)

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if (
                isinstance(child, nn.Conv2d)
                and child.out_channels < FEW_CHANNELS
                and child.stride == (1, 1)
                and child.padding == (0, 0)
                and child.dilation == (1, 1)
                and child.groups == 1
            ):
                setattr(module, name, PhasedConv(child))
            else:
                swap(child)

    swap(net)
    return net
