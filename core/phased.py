"""Convolutions with few output channels, computed as strided ones with many: same sums, faster.

A stride-1 convolution with 3 output channels (the networks' last layer) leaves CPU kernels mostly
idle: their vector registers hold 16 channels. Computed in ``PHASES`` x ``PHASES`` blocks, it is a
stride-``PHASES`` convolution with ``PHASES**2`` times the output channels, then depth-to-space:
in OpenVINO 2.2-2.5x faster in fp32 and ~3.5x in int8, in PyTorch training on the CPU 1.6-1.8x
(bench/bench_phased.py, bench/results/engine.md).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

# Stride-1 convolutions with fewer output channels than this run in phases.
FEW_CHANNELS = 16
PHASES = 4


def phase_weight(weight: torch.Tensor, phases: int) -> torch.Tensor:
    """(out, in, k, k) kernel -> (out * phases**2, in, k + phases - 1, ...) kernel of the strided form.

    Output pixel (a, b) of each block sees the kernel shifted by (a, b); channel order is
    pixel_shuffle's (out, a, b). Differentiable, so training can use it.
    """
    out, cin, k, _ = weight.shape
    r = phases
    shifted = [F.pad(weight, (b, r - 1 - b, a, r - 1 - a)) for a in range(r) for b in range(r)]
    return torch.stack(shifted, dim=1).reshape(out * r * r, cin, k + r - 1, k + r - 1)


class PhasedConv2d(nn.Conv2d):
    """An unpadded stride-1 nn.Conv2d computed in phases; same parameters and state-dict keys."""

    def _conv_forward(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return self.strided(x, phase_weight(weight, PHASES), bias)

    def strided(
        self, x: torch.Tensor, strided_weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """The convolution from its strided form's weight (phase_weight) and its own bias."""
        r, reach = PHASES, self.kernel_size[0] - 1
        h, w = x.shape[-2] - reach, x.shape[-1] - reach  # the plain convolution's output size
        x = F.pad(x, (0, -w % r, 0, -h % r))  # these zeros only meet zero weights
        bias = bias.repeat_interleave(r * r) if bias is not None else None
        y = F.conv2d(x, strided_weight, bias, stride=r)
        return F.pixel_shuffle(y, r)[..., :h, :w]


def phased(net: nn.Module, inplace: bool = False) -> nn.Module:
    """``net`` (a copy unless ``inplace``) whose stride-1 convolutions with few outputs run in phases.

    The parameters stay the same tensors: an optimizer made before or after sees the same ones.
    """
    net = net if inplace else copy.deepcopy(net)

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if (
                type(child) is nn.Conv2d
                and child.out_channels < FEW_CHANNELS
                and child.stride == (1, 1)
                and child.padding == (0, 0)
                and child.dilation == (1, 1)
                and child.groups == 1
            ):
                kernel = child.kernel_size
                fast = PhasedConv2d(child.in_channels, child.out_channels, kernel, device="meta")
                fast.weight, fast.bias = child.weight, child.bias
                setattr(module, name, fast)
            else:
                swap(child)

    swap(net)
    return net
