"""Runs one loaded network on one input with PyTorch, with its own or given instance-norm
statistics; its forms are also what core.convert traces for OpenVINO (core.ovruntime runs those).

Images go in and out as (1, H, W, 3) float32, the engine's own pixel layout. The three forms:
- whole: x -> y, the network itself (each instance norm uses the image's own statistics);
- ``LiveStats``: x -> stats, those statistics packed as a (2, channels) array of (mean, var), so
  a thumbnail's statistics can be reused;
- ``FrozenStats``: (x, affine) -> y, every instance norm normalises with given statistics
  (Thumbnail Instance Normalization), folded into a per-channel scale and shift, so the network
  is local and tiles have no seams.
Networks without instance norm (SR) return an empty (2, 0) statistics array.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from core.networks import InstanceNorm


def norm_layers(net: nn.Module) -> list[InstanceNorm]:
    """The network's instance norms in a fixed order (the order of the packed statistics)."""
    return [m for m in net.modules() if isinstance(m, InstanceNorm)]


class LiveStats(nn.Module):
    """The instance-norm statistics the network computes for an image, packed as (2, channels)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.norms = norm_layers(net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.norms:
            m.record, m.recorded = True, None
        try:
            self.net(x)
            means = [m.recorded[0].flatten() for m in self.norms]  # type: ignore[index]
            variances = [m.recorded[1].flatten() for m in self.norms]  # type: ignore[index]
        finally:
            for m in self.norms:
                m.record, m.recorded = False, None
        if not self.norms:
            return x.new_zeros(2, 0, dtype=torch.float32)
        return torch.stack([torch.cat(means), torch.cat(variances)])


class FrozenStats(nn.Module):
    """The network with every instance norm applying a given (scale, shift), packed as (2, channels).

    ``affine`` makes that input from packed statistics: each norm becomes a multiply-add.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.norms = norm_layers(net)

    def affine(self, stats: np.ndarray) -> torch.Tensor:
        """Packed (scale, shift) of every norm from packed (mean, var) statistics, on the
        network's device."""
        mean, var = torch.as_tensor(stats, dtype=torch.float32)
        parts, start = [], 0
        for m in self.norms:
            c = m.weight.numel()
            parts.append(m.affine(mean[start : start + c], var[start : start + c]))
            start += c
        if not parts:
            return torch.zeros(2, 0, device=mean.device)
        return torch.stack([torch.cat(p) for p in zip(*parts, strict=True)])

    def forward(self, x: torch.Tensor, affine: torch.Tensor | None = None) -> torch.Tensor:
        start = 0
        for m in self.norms:
            c = m.weight.numel()
            m.frozen = (
                affine[0, start : start + c].view(1, c, 1, 1),
                affine[1, start : start + c].view(1, c, 1, 1),
            )
            start += c
        try:
            return self.net(x)
        finally:
            for m in self.norms:
                m.frozen = None


def stats_channels(net: nn.Module) -> int:
    """Length of the packed statistics of ``net`` (0 without instance norm)."""
    return sum(m.weight.numel() for m in norm_layers(net))


# Optional compilation of the tile form on CUDA (unmeasured by default: off). "compile" is
# torch.compile; "cudagraphs" its "reduce-overhead" mode, which replays fixed tile shapes as CUDA
# graphs. bench/gpu_engine_check.py measures both against "off".
COMPILE_MODES = {"off": None, "compile": "default", "cudagraphs": "reduce-overhead"}


class TorchRunner:
    """Runs a network with PyTorch on a device; channels_last on CUDA, half precision with
    instance-norm statistics in fp32. Tensor forms take and give (1, 3, H, W) on the device."""

    def __init__(
        self, net: nn.Module, device: str, precision: str, compile_mode: str = "off"
    ) -> None:
        self.device = torch.device(device)
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
        # channels_last lets cuDNN use its fast NHWC kernels; on CPU it gains nothing here.
        self.memory_format = torch.channels_last if device == "cuda" else torch.contiguous_format
        if device == "cuda":
            # Tile shapes repeat: pick the fastest kernels once.
            torch.backends.cudnn.benchmark = True
        net = net.to(self.device, self.dtype, memory_format=self.memory_format)
        self.net, self.live, self.frozen = net, LiveStats(net), FrozenStats(net)
        self._frozen_call: Callable[..., torch.Tensor] = self.frozen
        if device == "cuda" and COMPILE_MODES[compile_mode] is not None:
            self._frozen_call = torch.compile(self.frozen, mode=COMPILE_MODES[compile_mode])

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, self.dtype).contiguous(memory_format=self.memory_format)

    def whole(self, x: torch.Tensor) -> torch.Tensor:
        """The network on a (1, 3, H, W) float input with H, W multiples of 4, its own statistics."""
        with torch.inference_mode():
            if self.dtype == torch.float32:
                return self.net(self._prepare(x))
            # Half precision: each norm measures its input in fp32 (the recording path), as
            # fp16 sums of squares overflow on bright images.
            norms = self.live.norms
            for m in norms:
                m.record = True
            try:
                return self.net(self._prepare(x))
            finally:
                for m in norms:
                    m.record, m.recorded = False, None

    def stats(self, x: torch.Tensor) -> torch.Tensor:
        """Packed (2, channels) fp32 instance-norm statistics of a (1, 3, H, W) input (a thumbnail)."""
        with torch.inference_mode():
            return self.live(self._prepare(x)).float()

    def affine(self, stats: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Packed fp32 (scale, shift) of every norm from packed statistics, on the device."""
        with torch.inference_mode():
            return self.frozen.affine(stats).to(self.device)

    def tile(self, x: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
        """The network on a (1, 3, H, W) input, every norm applying the packed ``affine``."""
        with torch.inference_mode():
            return self._frozen_call(self._prepare(x), affine)

    @staticmethod
    def _output(y: torch.Tensor) -> np.ndarray:
        # Transposed where the result is (on the GPU, not by numpy); a no-op for channels_last.
        return y.float().permute(0, 2, 3, 1).contiguous().cpu().numpy()

    @staticmethod
    def _input(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).permute(0, 3, 1, 2)

    def run_whole(self, x: np.ndarray, cancel: threading.Event | None) -> np.ndarray:
        """Output of a (1, H, W, 3) float32 input with H, W multiples of 4, its own statistics."""
        return self._output(self.whole(self._input(x)))

    def run_stats(self, x: np.ndarray, cancel: threading.Event | None) -> np.ndarray:
        """Packed instance-norm statistics of a (1, H, W, 3) float32 input (a thumbnail)."""
        return self.stats(self._input(x)).cpu().numpy()

    def run_frozen(
        self, x: np.ndarray, stats: np.ndarray, cancel: threading.Event | None
    ) -> np.ndarray:
        """Output of a (1, H, W, 3) float32 input with the given packed statistics."""
        return self._output(self.tile(self._input(x), self.affine(stats)))
