"""Device-resident jobs of the PyTorch backend: the image goes to the device once in its own dtype,
is converted, tiled, run and blended there, and comes back once in the caller's dtype.

The tile plan, blend weights and thumbnail statistics are the engine's (core.engine), so the
results equal its host path to float rounding; the same code runs on CUDA, MPS and the CPU. The
output is finished one band of rows at a time, as soon as no later tile adds to it: besides the
image and the result in their own dtypes, the device holds float32 for one row of tiles only.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core import engine as e
from core.runtime import TorchRunner

LUMA = torch.from_numpy(e.LUMA)
# A band of output rows (1, 3, rows, W) float32 and the first row's index, to be finished.
Sink = Callable[[int, torch.Tensor], None]
Convert = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Job:
    """What one job's network pass needs besides the image."""

    runner: TorchRunner
    has_norm: bool
    margin: int  # tile context in input pixels
    tile: int
    progress: e.Progress | None
    cancel: threading.Event | None
    phase: e.Phase | None


def upload(pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    """HxWxC pixels (a view) to the device as they are, (1, C, H, W) with channels last."""
    with warnings.catch_warnings():
        # A server's request body is read-only; the pixels are only read.
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        t = torch.from_numpy(np.ascontiguousarray(pixels))
    if device.type == "cuda":
        t = t.pin_memory()  # page-locked: the copy to the GPU runs asynchronously at full speed
    return t.to(device, non_blocking=True).permute(2, 0, 1)[None]


def to_float(t: torch.Tensor) -> torch.Tensor:
    """Pixels as float32: integers scaled to 0..1, floats as they are (none below 0)."""
    if t.dtype == torch.float32:
        return t.clamp(min=0)
    return t.to(torch.float32) / float(torch.iinfo(t.dtype).max)


def network_input(t: torch.Tensor) -> torch.Tensor:
    """Pixels as the network sees them: 0..1, three channels (gray repeated)."""
    rgb = to_float(t).clamp(max=1) if t.dtype == torch.float32 else to_float(t)
    return rgb.expand(-1, 3, -1, -1)


def from_float(rgb: torch.Tensor, dtype: torch.dtype, channels: int) -> torch.Tensor:
    """(1, 3, H, W) float RGB as the caller's dtype, HxWxC (gray takes the luminance), as _join."""
    rgb = rgb.clamp(min=0) if dtype == torch.float32 else rgb.clamp(0, 1)
    if channels < 3:
        rgb = luma(rgb)
    if dtype != torch.float32:
        rgb = (rgb * float(torch.iinfo(dtype).max)).round().to(dtype)
    return rgb[0].permute(1, 2, 0)


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """(1, 1, H, W) luminance of (1, 3, H, W) RGB."""
    return torch.einsum("bchw,c->bhw", rgb, LUMA.to(rgb.device))[:, None]


def stylize(job: Job, color: np.ndarray, options: e.StyleOptions) -> np.ndarray:
    """Stylised colour channels of ``color`` (HxWxC, C 1 or 3), in its dtype: Engine.stylize's
    result without alpha."""
    source = upload(color, job.runner.device)
    h, w = source.shape[-2:]
    out = torch.empty(h, w, color.shape[2], dtype=source.dtype, device=source.device)

    def finish(top: int, styled: torch.Tensor) -> None:
        rows = source[..., top : top + styled.shape[-2], :]
        original = to_float(rows).expand(-1, 3, -1, -1)  # the blends use values above 1 as given
        styled = styled.clamp(0, 1)
        if options.preserve_colors:  # original chroma, stylised luminance
            styled = original + (luma(styled) - luma(network_input(rows)))
        if options.strength != 1:
            styled = original + (styled - original) * options.strength
        out[top : top + styled.shape[-2]] = from_float(styled, source.dtype, color.shape[2])

    if options.scale == 1:
        run_tiled(job, source, network_input, 1, finish)
    else:
        # Processing scale: the resized image and result are whole float copies (not banded).
        size = (
            max(e.MIN_SIDE, round(h * options.scale)),
            max(e.MIN_SIDE, round(w * options.scale)),
        )
        styled = torch.empty(1, 3, *size, device=source.device)

        def keep(top: int, band: torch.Tensor) -> None:
            styled[..., top : top + band.shape[-2], :] = band

        run_tiled(job, resize(network_input(source), size), lambda t: t, 1, keep)
        finish(0, resize(styled, (h, w)))
    return out.cpu().numpy()


def upscale(job: Job, color: np.ndarray, scale: int) -> np.ndarray:
    """Upscaled colour channels of ``color`` (HxWxC, C 1 or 3), in its dtype."""
    source = upload(color, job.runner.device)
    h, w = source.shape[-2:]
    out = torch.empty(
        h * scale, w * scale, color.shape[2], dtype=source.dtype, device=source.device
    )

    def finish(top: int, band: torch.Tensor) -> None:
        out[top : top + band.shape[-2]] = from_float(band.clamp(0, 1), source.dtype, color.shape[2])

    run_tiled(job, source, network_input, scale, finish)
    return out.cpu().numpy()


def run_tiled(job: Job, source: torch.Tensor, convert: Convert, scale: int, sink: Sink) -> None:
    """The network over ``source`` (1, C, H, W), each tile made network input by ``convert``;
    bands of the blended output, cropped to the image, go to ``sink`` top to bottom."""
    h, w = source.shape[-2:]
    margin, blend, align, multiple, in_tile = e.tile_plan(job.has_norm, job.margin, job.tile, scale)
    ph, pw = h + -h % align, w + -w % align
    report = job.progress or (lambda done, total: None)
    enter = job.phase or (lambda name: None)
    runner, device = job.runner, job.runner.device
    no_stats = torch.zeros(2, 0, device=device)

    if ph * pw <= in_tile * in_tile:  # as the host path: an image within one tile's area runs whole
        enter("tiles")
        report(0, 1)
        e._check(job.cancel)
        whole = _pad(convert(source), ph, pw)
        out = runner.whole(whole) if job.has_norm else runner.tile(whole, no_stats)
        e._check(job.cancel)
        sink(0, out[..., : h * scale, : w * scale].float())
        report(1, 1)
        return

    overlap = 2 * margin + blend
    tile_h, starts_y = e._plan_axis(ph, in_tile, overlap, align, multiple)
    tile_w, starts_x = e._plan_axis(pw, in_tile, overlap, align, multiple)
    weights_y = [
        _on(w, device) for w in e._blend_weights(starts_y, tile_h, ph, margin, blend, scale)
    ]
    weights_x = [
        _on(w, device) for w in e._blend_weights(starts_x, tile_w, pw, margin, blend, scale)
    ]
    total = len(starts_y) * len(starts_x) + int(job.has_norm)
    done = 0
    report(done, total)
    affine = no_stats
    if job.has_norm:
        e._check(job.cancel)
        enter("statistics")
        side = min(e.THUMBNAIL_SIDE, in_tile)
        small = thumbnail(source, convert, side, in_tile)
        affine = runner.affine(runner.stats(_pad_to4(small)))
        done += 1
        report(done, total)
    enter("tiles")
    # One row of tiles in float32: rows above the next row's start are final, then shift up.
    band = torch.zeros(1, 3, tile_h * scale, pw * scale, device=device)
    for row, (y0, wy) in enumerate(zip(starts_y, weights_y, strict=True)):
        for x0, wx in zip(starts_x, weights_x, strict=True):
            e._check(job.cancel)
            piece = _pad(convert(source[..., y0 : y0 + tile_h, x0 : x0 + tile_w]), tile_h, tile_w)
            result = runner.tile(piece, affine)
            columns = band[..., x0 * scale : (x0 + tile_w) * scale]
            columns.addcmul_(result, wy[:, None] * wx[None, :])
            done += 1
            e._check(job.cancel)
            report(done, total)
        final = (starts_y[row + 1] if row + 1 < len(starts_y) else ph) - y0
        top, stop = y0 * scale, min(y0 + final, h) * scale
        if top < stop:
            sink(top, band[..., : stop - top, : w * scale])
        kept = (tile_h - final) * scale
        band[..., :kept, :] = band[..., final * scale :, :].clone()
        band[..., kept:, :] = 0


def thumbnail(source: torch.Tensor, convert: Convert, side: int, rows: int) -> torch.Tensor:
    """The network input shrunk to longest side ``side`` as core.engine._thumbnail_stats does,
    converted to float ``rows`` rows at a time: no float copy of the whole image."""
    h, w = source.shape[-2:]
    size = _thumbnail_size(h, w, side)
    if size == (h, w):
        return convert(source)
    # Antialiased bilinear is separable: widths first, band by band, then the heights at once.
    narrow = [
        _shrink(convert(source[..., y : y + rows, :]), (min(rows, h - y), size[1]))
        for y in range(0, h, rows)
    ]
    return _shrink(torch.cat(narrow, dim=2), size)


def _thumbnail_size(h: int, w: int, side: int) -> tuple[int, int]:
    factor = min(1.0, side / max(h, w))
    factor = min(1.0, max(factor, 2 * e.MIN_SIDE / min(h, w)))  # as _thumbnail_stats
    return (round(h * factor), round(w * factor)) if factor < 1 else (h, w)


def _pad_to4(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    return _pad(x, h + -h % 4, w + -w % 4)


def _shrink(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """core.resize.resize on the device: antialiased bilinear shrinking both sides, else bicubic."""
    if size[0] <= x.shape[-2] and size[1] <= x.shape[-1]:
        return _shrink(x, size)
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False)


def _pad(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Reflect-pad the bottom and right of ``x`` to (h, w), as the host path's _pad_to_size."""
    bottom, right = h - x.shape[-2], w - x.shape[-1]
    return F.pad(x, (0, right, 0, bottom), mode="reflect") if bottom or right else x


def _on(weights: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(weights).to(device)
