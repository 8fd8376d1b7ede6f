"""What differs between style and super-resolution training: network, inputs, loss and previews."""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from core.modelfile import load_model
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
    antialiased bicubic, like MATLAB's imresize that made the standard benchmarks' LR images;
    "photo": what real photos went through (see :func:`degrade_like_photos`).
    """
    with torch.autocast(hr.device.type, enabled=False):  # previews run under autocast: stay exact
        return _degrade(hr.float(), scale, method, sigma)


def _degrade(hr: torch.Tensor, scale: int, method: str, sigma: float) -> torch.Tensor:
    if method == "photo":
        return degrade_like_photos(hr, scale)
    if method == "paper":
        blurred = gaussian_blur(hr, sigma) if sigma > 0 else hr
        lr = F.interpolate(blurred, scale_factor=1 / scale, mode="bicubic", align_corners=False)
    elif method == "matlab":
        lr = F.interpolate(
            hr, scale_factor=1 / scale, mode="bicubic", align_corners=False, antialias=True
        )
    else:
        raise ValueError(f"unknown degradation {method!r}: expected 'paper', 'matlab' or 'photo'")
    return lr.clamp(0, 1)


# Per image, as real-world upscalers train (Real-ESRGAN's first stage, milder): a lens/focus blur,
# downscaling, sensor noise on half the images, JPEG on most. Drawn from torch's RNG, which
# checkpoints keep, so a resumed run degrades exactly as an uninterrupted one.
PHOTO_BLUR = (0.2, 1.6)  # Gaussian sigma, HR pixels
PHOTO_NOISE = (1.0, 8.0)  # Gaussian sigma, 8-bit levels, on half the images
PHOTO_JPEG = (40, 92)  # JPEG quality, on 3 of 4 images


def degrade_like_photos(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Low-resolution inputs like phone photos and web JPEGs: blur, downscale, noise, JPEG."""

    def uniform(bounds: tuple[float, float]) -> float:
        return bounds[0] + (bounds[1] - bounds[0]) * float(torch.rand(()))

    out = []
    for image in hr:
        x = gaussian_blur(image[None], uniform(PHOTO_BLUR))
        x = F.interpolate(x, scale_factor=1 / scale, mode="bicubic", antialias=True).clamp(0, 1)
        if torch.rand(()) < 0.5:
            x = (x + torch.randn_like(x) * uniform(PHOTO_NOISE) / 255).clamp(0, 1)
        if torch.rand(()) < 0.75:
            x = jpeg_roundtrip(x[0], round(uniform(PHOTO_JPEG)))[None]
        out.append(x)
    return torch.cat(out)


def jpeg_pixels(pixels: np.ndarray, quality: int) -> np.ndarray:
    """uint8 RGB pixels (H, W, 3) saved as JPEG at ``quality`` and read back."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def jpeg_roundtrip(image: torch.Tensor, quality: int) -> torch.Tensor:
    """An RGB image in [0, 1] (C, H, W) saved as JPEG at ``quality`` and read back."""
    pixels = image.detach().float().mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    decoded = jpeg_pixels(pixels, quality).astype(np.float32) / 255
    return torch.from_numpy(decoded).permute(2, 0, 1).to(image.device, image.dtype)


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
            config.range_weight,
            config.colour_weight,
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
        self.options: dict[str, object] = {
            "channels": config.sr_channels,
            "blocks": config.sr_blocks,
        }
        self.loss = SRLoss(
            config.sr_loss,
            lossnet,
            config.content_weight,
            config.tv_weight,
            config.pixel_weight,
            config.shifted_loss,
        )

    def network(self) -> nn.Module:
        """A freshly initialised x4 network."""
        return build_network("sr", **self.options)

    def inputs_and_targets(self, photos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Degraded low-resolution inputs and the high-resolution photos they came from."""
        c = self.config
        if c.dihedral:  # drawn from torch's RNG, which checkpoints keep: resumable
            photos = torch.rot90(photos, int(torch.randint(4, ())), (2, 3))
        return degrade(photos, c.scale, c.degradation, c.blur_sigma), photos

    def preview_rows(self, net: nn.Module, photos: torch.Tensor) -> list[torch.Tensor]:
        """Rows of a contact sheet: bicubic upscale, the network's upscale, the original."""
        low, _ = self.inputs_and_targets(photos)
        bicubic = F.interpolate(low, scale_factor=self.config.scale, mode="bicubic")
        return [bicubic.clamp(0, 1), net(low).clamp(0, 1), photos]


def start_from(net: nn.Module, path: str) -> nn.Module:
    """Copy a model file's weights into ``net``; residual blocks the file lacks start as the
    identity (their last layer zero), so a deeper network begins exactly where the file was."""
    source, _ = load_model(path)
    own, given = net.state_dict(), source.state_dict()
    clash = [k for k, v in given.items() if k not in own or own[k].shape != v.shape]
    if clash:
        raise ValueError(
            f"{path} is a different network ({', '.join(clash[:3])} do not fit): start from a "
            "model of the same architecture and width"
        )
    for key in own.keys() - given.keys():
        if key.startswith("res.") and (".conv2." in key or ".in2." in key):
            own[key] = torch.zeros_like(own[key])
    net.load_state_dict({**own, **given})
    return net


def make_task(config: TrainConfig, lossnet: LossNetwork | None) -> StyleTask | SRTask:
    """The task object for ``config.task``."""
    return StyleTask(config, lossnet) if config.task == "style" else SRTask(config, lossnet)
