"""What differs between style and super-resolution training: network, inputs, loss and previews."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from core.networks import build_network
from trainer.config import TrainConfig
from trainer.data import load_style_image
from trainer.losses import SRLoss, StyleLoss
from trainer.lossnets import LossNetwork


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflected borders."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(images.dtype)
    c = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def degrade(
    hr: torch.Tensor, scale: int, method: str = "paper", sigma: float = 1.0
) -> torch.Tensor:
    """Low-resolution inputs from high-resolution images.

    "paper": Gaussian blur (sigma) then bicubic downsampling, as Johnson et al.; "matlab":
    antialiased bicubic, like MATLAB's imresize that made the standard benchmarks' LR images.
    """
    if method == "paper":
        blurred = gaussian_blur(hr, sigma) if sigma > 0 else hr
        lr = F.interpolate(blurred, scale_factor=1 / scale, mode="bicubic", align_corners=False)
    elif method == "matlab":
        lr = F.interpolate(
            hr, scale_factor=1 / scale, mode="bicubic", align_corners=False, antialias=True
        )
    else:
        raise ValueError(f"unknown degradation {method!r}: expected 'paper' or 'matlab'")
    return lr.clamp(0, 1)


class StyleTask:
    """Style transfer: the network maps a photo to its stylised version."""

    kind = "style"
    resize_crops = True

    def __init__(self, config: TrainConfig, lossnet: LossNetwork) -> None:
        self.config = config
        self.options = {"width": config.width}
        style = load_style_image(config.style_image, config.style_size)
        self.loss = StyleLoss(
            lossnet,
            style,
            config.content_weight,
            config.style_weight,
            config.tv_weight,
            config.loss_form,
            config.content_layer or None,
            config.tone_weight,
        )

    def network(self) -> nn.Module:
        """A freshly initialised transformation network."""
        return build_network("style", **self.options)

    def inputs_and_targets(self, photos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network input and what the loss compares its output with."""
        return photos, photos

    def preview_rows(self, net: nn.Module, photos: torch.Tensor) -> list[torch.Tensor]:
        """Rows of a contact sheet: the photos, then their stylised versions."""
        return [photos, net(photos).clamp(0, 1)]


class SRTask:
    """x4 super-resolution: the network maps a degraded low-resolution crop to the original."""

    kind = "sr"
    resize_crops = False  # native resolution: resizing the photos would blur the targets

    def __init__(self, config: TrainConfig, lossnet: LossNetwork | None) -> None:
        self.config = config
        self.options: dict[str, object] = {}
        self.loss = SRLoss(
            config.sr_loss, lossnet, config.content_weight, config.tv_weight, config.pixel_weight
        )

    def network(self) -> nn.Module:
        """A freshly initialised x4 network."""
        return build_network("sr", **self.options)

    def inputs_and_targets(self, photos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Degraded low-resolution inputs and the high-resolution photos they came from."""
        c = self.config
        return degrade(photos, c.scale, c.degradation, c.blur_sigma), photos

    def preview_rows(self, net: nn.Module, photos: torch.Tensor) -> list[torch.Tensor]:
        """Rows of a contact sheet: bicubic upscale, the network's upscale, the original."""
        low, _ = self.inputs_and_targets(photos)
        bicubic = F.interpolate(low, scale_factor=self.config.scale, mode="bicubic")
        return [bicubic.clamp(0, 1), net(low).clamp(0, 1), photos]


def make_task(config: TrainConfig, lossnet: LossNetwork | None) -> StyleTask | SRTask:
    """The task object for ``config.task``."""
    return StyleTask(config, lossnet) if config.task == "style" else SRTask(config, lossnet)
