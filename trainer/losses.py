"""Perceptual losses (Johnson et al., 2016): feature reconstruction, style (Gram) and total variation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer.lossnets import LossNetwork


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrices of a BxCxHxW batch, normalised by C*H*W, computed in fp32 even under autocast."""
    b, c, h, w = features.shape
    with torch.autocast(features.device.type, enabled=False):
        if features.is_contiguous(memory_format=torch.channels_last):
            # (b, h*w, c) is a view of channels_last features: no copy (1.2-1.6x faster here).
            f = features.float().permute(0, 2, 3, 1).reshape(b, h * w, c)
            return torch.bmm(f.transpose(1, 2), f) / (c * h * w)
        f = features.float().reshape(b, c, h * w)
        return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels: discourages high-frequency noise."""
    dy = images[..., 1:, :] - images[..., :-1, :]
    dx = images[..., :, 1:] - images[..., :, :-1]
    return dy.float().pow(2).mean() + dx.float().pow(2).mean()


LOSS_FORMS = ("paper", "relative")


def out_of_range(images: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of the pixels from [0, 1], where users' images are clipped to."""
    return (images.float() - images.float().clamp(0, 1)).pow(2).mean()


COLOUR_BLOCK = 8  # the colour guide's scale: block-mean colours; strokes inside a block are free
# 36 fixed axes (12 seeded rotations' columns): the guide is a deterministic function of the photo.
_AXES = torch.cat([
    torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(i)))[0].T
    for i in range(12)
])  # fmt: skip


def block_colours(images: torch.Tensor, block: int = COLOUR_BLOCK) -> torch.Tensor:
    """Mean colours of ``block`` x ``block`` blocks, as B x N x 3 (fp32)."""
    return F.avg_pool2d(images.float(), block, ceil_mode=True).flatten(2).transpose(1, 2)


def painting_quantiles(painting: torch.Tensor) -> torch.Tensor:
    """The painting's colours (M x 3) projected on each of recolour's axes and sorted: 36 x M."""
    # One axis at a time: the same float sums as the per-step projection this replaces.
    return torch.stack([(painting.float() @ a).sort().values for a in _AXES.to(painting.device)])


def _match_1d(values: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Each value replaced by the sorted ``reference``'s quantile at the value's (mid-)rank: equal
    values get equal results, so a flat region stays flat."""
    ordered = values.sort().values
    ties = torch.searchsorted(ordered, values) + torch.searchsorted(ordered, values, right=True)
    position = ties.float() / (2 * len(values)) * (len(reference) - 1)
    low = position.floor().long().clamp(max=len(reference) - 2)
    part = position - low
    return reference[low] * (1 - part) + reference[low + 1] * part


def recolour(colours: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
    """``colours`` (B x N x 3) moved onto the distribution of a painting's (its
    :func:`painting_quantiles`) by iterative distribution transfer (Pitie et al., 2005): 1-D
    quantile matching along 36 fixed axes. A map from colour to colour, the same over a photo: it
    keeps the photo's layout and paints no patch."""
    with torch.no_grad(), torch.autocast(colours.device.type, enabled=False):
        axes = _AXES.to(colours.device)
        out = []
        for x in colours.float():
            x = x.clone()
            for axis, reference in zip(axes, quantiles, strict=True):
                along = x @ axis
                x += (_match_1d(along, reference) - along)[:, None] * axis
            out.append(x.clamp(0, 1))
        return torch.stack(out)


def colour_error(output: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between the output's block colours and ``guide`` (B x N x 3)."""
    return F.mse_loss(block_colours(output), guide)


def tone_error(output: torch.Tensor, photo: torch.Tensor, block: int = 8) -> torch.Tensor:
    """How far the output's large-scale brightness is from the photo's: mean squared difference of
    8x8-block mean luma, over the photo's own block-luma variance (scale-free). Colour is free."""
    weights = torch.tensor([0.299, 0.587, 0.114], device=output.device).view(1, 3, 1, 1)
    out, ref = ((x.float() * weights).sum(1, keepdim=True) for x in (output, photo))
    out, ref = F.avg_pool2d(out, block, ceil_mode=True), F.avg_pool2d(ref, block, ceil_mode=True)
    return F.mse_loss(out, ref) / ref.var().clamp_min(1e-6)


class StyleLoss(nn.Module):
    """Content (feature reconstruction) + style (Gram) + TV loss against one style image.

    ``form`` "paper": Johnson et al.'s mean squared errors. Their scale differs by orders of
    magnitude between layers (relu4_3's Gram energy is ~1e-7 of relu1_2's in VGG-16), so the deep
    layers that carry a painting's shapes barely count. "relative": each error divided by its
    target's mean square (the painting's Gram per layer, the photo's features per batch), so every
    style layer counts equally and the weights mean the same on every loss network.
    ``tone_weight``: a term that keeps the photo's large-scale brightness (tone_error): without it
    feature losses barely tell dark colours apart, and dark regions may come out in any hue.
    ``range_weight``: a term that keeps pixels inside [0, 1]. The loss network sees the output
    unclipped, users see it clipped; nothing in the feature losses stops a region drifting far out
    of range (a 20-minute model: -23 to +10), which clipping shows as a flat, saturated blotch.
    ``colour_weight``: a term that gives the output the photo's block colours moved onto the
    painting's palette (recolour, colour_error): Gram matrices of deep features barely fix a
    painting's colours (the old Great Wave came out grey-olive).
    The style image's Gram matrices are computed once; content targets under no_grad.
    """

    def __init__(
        self,
        lossnet: LossNetwork,
        style_image: torch.Tensor,
        content_weight: float,
        style_weight: float,
        tv_weight: float,
        form: str = "paper",
        content_layer: str | None = None,
        tone_weight: float = 0.0,
        range_weight: float = 0.0,
        colour_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if form not in LOSS_FORMS:
            raise ValueError(f"unknown loss form {form!r}: choose {', '.join(LOSS_FORMS)}")
        self.lossnet, self.relative, self.tone_weight = lossnet, form == "relative", tone_weight
        self.range_weight, self.colour_weight = range_weight, colour_weight
        optional = {"tone": tone_weight, "range": range_weight, "colour": colour_weight}
        self.terms = ("total", "content", "style", "tv") + tuple(
            t for t, w in optional.items() if w
        )
        self.content_weight, self.style_weight, self.tv_weight = (
            content_weight,
            style_weight,
            tv_weight,
        )
        spec = lossnet.spec
        self.content_layer = content_layer or spec.content_layer
        if self.content_layer not in spec.taps.values():
            taps = ", ".join(spec.taps.values())
            raise ValueError(f"{spec.name} has no layer {self.content_layer!r}: choose {taps}")
        self.style_layers = spec.style_layers
        # The painting's sorted colour projections, computed once: the guide's target every step.
        self.register_buffer(
            "painting_quantiles", painting_quantiles(block_colours(style_image)[0])
        )
        with torch.no_grad():
            features = lossnet(style_image.to(lossnet.mean.device), self.style_layers)
        for name in self.style_layers:
            gram = gram_matrix(features[name])
            self.register_buffer(f"gram_{name}", gram)
            energy = gram.pow(2).mean() if self.relative else torch.ones(())
            self.register_buffer(f"gram_scale_{name}", 1 / energy.clamp_min(1e-30))

    def forward(self, output: torch.Tensor, content: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted loss terms and their sum ("total") for a batch of outputs and their inputs."""
        with torch.no_grad():
            target = self.lossnet(content, (self.content_layer,))[self.content_layer].float()
        features = self.lossnet(output, (self.content_layer, *self.style_layers))
        content_loss = F.mse_loss(features[self.content_layer].float(), target)
        if self.relative:
            content_loss = content_loss / target.pow(2).mean().clamp_min(1e-30)
        style_loss = sum(
            getattr(self, f"gram_scale_{n}")
            * F.mse_loss(
                gram_matrix(features[n]), getattr(self, f"gram_{n}").expand(len(output), -1, -1)
            )
            for n in self.style_layers
        )
        terms = {
            "content": self.content_weight * content_loss,
            "style": self.style_weight * style_loss,
            "tv": self.tv_weight * total_variation(output),
        }
        if self.tone_weight:
            terms["tone"] = self.tone_weight * tone_error(output, content)
        if self.range_weight:
            terms["range"] = self.range_weight * out_of_range(output)
        if self.colour_weight:
            guide = recolour(block_colours(content), self.painting_quantiles)
            terms["colour"] = self.colour_weight * colour_error(output, guide)
        terms["total"] = sum(terms.values())
        return terms


SHIFT_PERIOD = 4  # the SR layer's stride: MobileNetV2 block3's 4 (a multiple of VGG relu2_2's 2)


def shifted_pair(output: torch.Tensor, target: torch.Tensor, period: int):
    """Both images cropped by the same random offset below ``period`` (torch's RNG, so resumable).

    A strided loss network sees each pixel phase differently: with a fixed phase, patterns at its
    stride fall in a blind spot the network learns to fill (the x4 model's grid). A fresh phase
    each step leaves no blind spot."""
    dy, dx = (int(v) for v in torch.randint(0, period, (2,)))
    h, w = output.shape[-2:]
    crop = (..., slice(dy, h - period + dy), slice(dx, w - period + dx))
    return output[crop], target[crop]


class SRLoss(nn.Module):
    """Super-resolution loss: "perceptual" (feature reconstruction, the paper's), "pixel" (MSE) or
    "l1" (mean absolute error, as EDSR: it keeps improving PSNR where MSE has stalled)."""

    def __init__(
        self,
        kind: str,
        lossnet: LossNetwork | None,
        content_weight: float,
        tv_weight: float,
        pixel_weight: float,
        shifted: bool = False,
    ) -> None:
        super().__init__()
        self.kind, self.lossnet, self.shifted = kind, lossnet, shifted
        self.terms = (
            ("total", "pixel") if kind in ("pixel", "l1") else ("total", "content", "pixel", "tv")
        )
        self.content_weight, self.tv_weight, self.pixel_weight = (
            content_weight,
            tv_weight,
            pixel_weight,
        )

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted loss terms and their sum ("total") for a batch of outputs and true HR images."""
        if self.kind in ("pixel", "l1"):
            distance = F.l1_loss if self.kind == "l1" else F.mse_loss
            terms = {"pixel": distance(output.float(), target.float())}
        else:
            layer = self.lossnet.spec.sr_layer
            if self.shifted:
                output, target = shifted_pair(output, target, SHIFT_PERIOD)
            with torch.no_grad():
                wanted = self.lossnet(target, (layer,))[layer]
            got = self.lossnet(output, (layer,))[layer]
            terms = {
                "content": self.content_weight * F.mse_loss(got.float(), wanted.float()),
                "pixel": self.pixel_weight * F.mse_loss(output.float(), target.float()),
                "tv": self.tv_weight * total_variation(output),
            }
        terms["total"] = sum(terms.values())
        return terms
