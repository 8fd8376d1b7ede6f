"""The inference engine: stylise or upscale an image of any size with an Impasto model.

Images larger than one tile are processed in overlapping tiles of bounded size whose overlaps are
blended with linear ramps, so memory stays bounded (a 50-megapixel image works on a laptop).
Style networks normalise every tile with statistics measured once on a thumbnail of the whole
image (Thumbnail Instance Normalization, Chen et al., AAAI 2022), so tiles show no seams; an image
whose area fits one tile runs whole with its own statistics, exactly as the network was trained.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.modelfile import ModelFileError, ModelInfo, read_info
from core.netspec import STYLE_WIDTHS, sr_margin
from core.ovruntime import OpenVINORunner, RuntimeCancelled, openvino_available, openvino_supports
from core.registry import model_path
from core.resize import resize as _resize

if TYPE_CHECKING:
    from core.runtime import TorchRunner

# torch (~1 s to import) is imported only where it runs: the torch backend, device detection where
# a GPU may be present, and preparing a model for OpenVINO the first time (core.prepared).

# Tile side in output pixels per device; its square bounds the area (and activation memory) of
# one network run.
TILE_SIZE = {"cpu": 1024, "mps": 1024, "cuda": 2048}
MIN_TILE_SIZE = 128  # out-of-memory retries halve the tile down to this
THUMBNAIL_SIDE = 768  # longest side of the thumbnail whose statistics every tile uses
# Tile edges inside the image: ``margin`` input pixels are dropped (their context is cut off),
# then ``blend`` pixels ramp linearly into the neighbour. SR tiles are exact past its receptive field.
STYLE_MARGIN, STYLE_BLEND = 32, 32
SR_BLEND = 8  # the margin is each model's: core.netspec.sr_margin
SR_MIN_INPUT_TILE = 64
SR_MIN_CENTRE = 24  # the default network's 64-px minimum tile less its two margins and blend
# Tile lengths round up to these multiples. Style tiles compile once per image anyway (its
# statistics are constants in the compiled model), so fine steps save compute (8 runs as fast as
# 32 per pixel); SR tiles of every image share compiled shapes, so few distinct ones.
STYLE_TILE_MULTIPLE, SR_TILE_MULTIPLE = 8, 32
SCALE_RANGE = (0.1, 4.0)
MIN_SIDE = 16
MODEL_CACHE_SIZE = 2  # loaded models kept; each holds its compiled tile shapes
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as in JPEG's YCbCr

Progress = Callable[[int, int], None]
Notify = Callable[[str], None]
# What a job is doing, for people waiting on it: "loading" (the model, on its first use),
# "statistics" (the thumbnail pass of a tiled style job), "tiles" (the network's passes).
Phase = Callable[[str], None]


class EngineError(Exception):
    """A job cannot run; the message says why and what to do."""


class Cancelled(EngineError):
    """The job was cancelled."""


@dataclass
class StyleOptions:
    """How to stylise.

    strength: 0..1, blend of the stylised result with the original (0 returns the original).
    preserve_colors: keep the original colours, take only the luminance of the stylised result.
    scale: 0.1..4, processing scale: the image is stylised at ``scale`` times its size and brought
    back, so 0.5 gives strokes twice as coarse and 2 strokes twice as fine.
    """

    strength: float = 1.0
    preserve_colors: bool = False
    scale: float = 1.0


@dataclass
class _Loaded:
    stamp: tuple[int, int]  # (mtime_ns, size) of the file: a retrained model is reloaded
    info: ModelInfo
    runner: TorchRunner | OpenVINORunner
    has_norm: bool
    tile_size: int
    margin: int  # tile context in input pixels (the style network's, or the x4 network's)


class Engine:
    """Runs style and super-resolution models on one device, one job at a time.

    tile_size: largest tile side in output pixels (default per device, TILE_SIZE); precision:
    "auto" (fp16 on CUDA; on the CPU int8 for models calibrated for it, else bf16 where the CPU
    has it natively, else fp32), "fp32", "fp16", "bf16" or "int8" (OpenVINO; style models need a
    calibration, upscalers run as auto would without int8). resident: keep stylize and upscale
    on the device (core.resident; default with the torch backend), else tile and blend on the host.
    """

    def __init__(
        self,
        device: str = "auto",
        backend: str = "auto",
        tile_size: int | None = None,
        precision: str = "auto",
        resident: bool | None = None,
    ) -> None:
        self.device = _resolve_device(device)
        self.backend = _resolve_backend(backend, self.device)
        self.resident = self.backend == "torch" if resident is None else resident
        if self.resident and self.backend != "torch":
            raise EngineError("device-resident jobs need the torch backend")
        # torch.compile of the tile form on CUDA: "off" (default), "compile" or "cudagraphs".
        self.compile_mode = os.environ.get("IMPASTO_TORCH_COMPILE", "off")
        self.precision = _resolve_precision(precision, self.device, self.backend)
        self.auto_precision = precision == "auto"
        if tile_size is not None and tile_size < MIN_TILE_SIZE:
            raise EngineError(f"tile size {tile_size} is too small: use at least {MIN_TILE_SIZE}")
        self.tile_size = tile_size or TILE_SIZE[self.device]
        self.tile_size_given = tile_size is not None
        self._lock = threading.Lock()
        self._models: OrderedDict[Path, _Loaded] = OrderedDict()
        # Told of slow one-time phases of a job (preparing a model for OpenVINO), as a sentence.
        self.notify: Notify | None = None

    @property
    def device_name(self) -> str:
        """The device as a person names it: "CPU", or the GPU's name (e.g. "NVIDIA H200")."""
        if self.device == "cuda":
            import torch  # only on a GPU: the CPU path runs without torch

            return torch.cuda.get_device_name()
        return {"mps": "Apple GPU"}.get(self.device, "CPU")

    def model_info(self, model: str | Path) -> ModelInfo:
        """Metadata of a model given by registry name or path."""
        path = _model_path(model, None)
        try:
            return read_info(path)
        except ModelFileError as e:
            raise EngineError(str(e)) from None

    def prepare(self, model: str | Path) -> None:
        """Load ``model`` (by name or path) ready to run: with OpenVINO, prepared for this
        computer and cached on disk, so no later job or process waits for it."""
        with self._lock:
            runner = self._load(model, self.model_info(model).kind).runner
            if isinstance(runner, OpenVINORunner):
                runner.prepared.complete(runner.core)

    def warm(self, model: str | Path, kind: str) -> None:
        """Load ``model`` as its first job would, no more (prepare converts forms a job may never
        need: seconds, when a dialog only wants the next job not to wait)."""
        with self._lock:
            self._load(model, kind)

    def stylize(
        self,
        model: str | Path,
        image: np.ndarray,
        options: StyleOptions | None = None,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        phase: Phase | None = None,
    ) -> np.ndarray:
        """Stylise an HxWxC image (C 1-4; uint8, uint16 or float32): same shape and dtype back.

        float32 may hold values above 1 (HDR): the network sees the image clipped to 0..1 and
        gives 0..1; the strength blend and preserve_colors use the original as it is, so values
        above 1 survive as far as they are blended in (all of them at strength 0)."""

        if self.resident:
            chosen = options or StyleOptions()
            _check_options(chosen)
            return self._on_device(
                model,
                "style",
                image,
                phase,
                lambda job, color: _resident().stylize(job, color, chosen),
                progress,
                cancel,
            )

        def run(loaded: _Loaded, rgb: np.ndarray) -> np.ndarray:
            return self._run(loaded, rgb, progress, cancel, phase=phase)

        return self._stylize(model, image, options, run, phase)

    def preview(
        self,
        model: str | Path,
        view: np.ndarray,
        whole: np.ndarray,
        options: StyleOptions | None = None,
        cancel: threading.Event | None = None,
        phase: Phase | None = None,
    ) -> np.ndarray:
        """``view`` (a crop of an image, or a downscaled copy) stylised in one pass with the
        statistics of ``whole``, a thumbnail of that image (longest side up to THUMBNAIL_SIDE),
        measured as stylize measures them for an image larger than a tile: what stylize gives
        there, at that scale."""
        whole_rgb = np.clip(_split(whole)[0], 0, 1)  # as stylize's network sees it

        def run(loaded: _Loaded, rgb: np.ndarray) -> np.ndarray:
            try:
                _check(cancel)
                (phase or (lambda name: None))("tiles")
                side = min(THUMBNAIL_SIDE, loaded.tile_size)  # the thumbnail _run_tiled measures
                stats = _thumbnail_stats(loaded.runner, whole_rgb, side, cancel)
                out = loaded.runner.run_frozen(_batch(_pad_to(rgb, 4)), stats, cancel)
            except RuntimeCancelled:
                raise Cancelled("cancelled") from None
            return out[0, : rgb.shape[0], : rgb.shape[1]]

        return self._stylize(model, view, options, run, phase)

    def _stylize(
        self,
        model: str | Path,
        image: np.ndarray,
        options: StyleOptions | None,
        run: Callable[[_Loaded, np.ndarray], np.ndarray],
        phase: Phase | None,
    ) -> np.ndarray:
        """Stylise with ``run`` (the network's pass) at the options' scale, then blend."""
        options = options or StyleOptions()
        _check_options(options)
        rgb, alpha = _split(image)
        # The network knows 0..1; a float image's values beyond stay in what is blended with it.
        seen = np.clip(rgb, 0, 1) if image.dtype == np.float32 else rgb
        with self._lock:
            loaded = self._load(model, "style", phase)
            h, w = rgb.shape[:2]
            if options.scale == 1:
                styled = run(loaded, seen)
            else:
                size = (
                    max(MIN_SIDE, round(h * options.scale)),
                    max(MIN_SIDE, round(w * options.scale)),
                )
                styled = _resize(run(loaded, _resize(seen, size)), (h, w))
        np.clip(styled, 0, 1, out=styled)  # what the network means; blends may leave 0..1 below
        if options.preserve_colors:
            # Original chroma, stylised luminance: add the change in luma to every channel.
            delta = _luma(styled) - _luma(seen)
            np.copyto(styled, rgb)
            styled += delta[..., None]
        if options.strength != 1:
            styled -= rgb
            styled *= options.strength
            styled += rgb
        return _join(styled, alpha, image)

    def upscale(
        self,
        model: str | Path,
        image: np.ndarray,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        phase: Phase | None = None,
    ) -> np.ndarray:
        """Upscale an HxWxC image x4 (C 1-4; uint8, uint16 or float32): 4Hx4WxC, same dtype back."""
        if self.resident:
            return self._on_device(
                model,
                "sr",
                image,
                phase,
                lambda job, color: _resident().upscale(job, color, 4),
                progress,
                cancel,
            )
        rgb, alpha = _split(image)
        if image.dtype == np.float32:
            np.clip(
                rgb, 0, 1, out=rgb
            )  # the network knows 0..1 only: a float image's beyond is lost
        with self._lock:
            loaded = self._load(model, "sr", phase)
            scale = 4
            upscaled = self._run(loaded, rgb, progress, cancel, scale=scale, phase=phase)
        np.clip(upscaled, 0, 1, out=upscaled)
        return _join(upscaled, _upscale_alpha(alpha, scale), image)

    def _on_device(
        self,
        model: str | Path,
        kind: str,
        image: np.ndarray,
        phase: Phase | None,
        job: Callable,
        progress: Progress | None,
        cancel: threading.Event | None,
    ) -> np.ndarray:
        """A device-resident job: ``job(Job, colour channels)`` gives the colour result; alpha is
        the original's (resized x4 for upscaling), joined on the host."""
        color, alpha = _channels(image)
        with self._lock:
            loaded = self._load(model, kind, phase)

            def attempt(tile: int) -> np.ndarray:
                runner = loaded.runner  # a TorchRunner: resident jobs need the torch backend
                spec = _resident().Job(
                    runner, loaded.has_norm, loaded.margin, tile, progress, cancel, phase
                )
                return job(spec, color)

            out = self._retrying(loaded, attempt)
        if kind == "sr":
            alpha = _upscale_alpha(alpha, 4)
        if alpha is not None:
            out = np.concatenate([out, alpha], axis=2)
        return out[..., 0] if image.ndim == 2 else out

    def _load(self, model: str | Path, kind: str, phase: Phase | None = None) -> _Loaded:
        path = _model_path(model, kind)
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._models.get(path)
        if cached is not None and cached.stamp == stamp:
            _check_kind(cached.info, kind)  # a model cached by the other kind of job
            self._models.move_to_end(path)
            return cached
        if phase:
            phase("loading")
        try:
            info = read_info(path)
        except ModelFileError as e:
            raise EngineError(str(e)) from None
        _check_kind(info, kind)
        if self.backend == "openvino":
            runner: TorchRunner | OpenVINORunner = self._openvino_runner(path, info)
            has_norm = runner.channels > 0
        else:
            from core.modelfile import load_model
            from core.runtime import TorchRunner, norm_layers

            try:
                net, info = load_model(path)
            except ModelFileError as e:
                raise EngineError(str(e)) from None
            runner = TorchRunner(net, self.device, self.precision, self.compile_mode)
            has_norm = bool(norm_layers(net))
        margin = STYLE_MARGIN if has_norm else sr_margin(info.options)
        self._models[path] = _Loaded(
            stamp, info, runner, has_norm, self._tile_size_for(info), margin
        )
        self._models.move_to_end(path)
        while len(self._models) > MODEL_CACHE_SIZE:
            self._models.popitem(last=False)
        return self._models[path]

    def _openvino_runner(self, path: Path, info: ModelInfo) -> OpenVINORunner:
        """A runner of the model prepared for OpenVINO: from the cache, or prepared now."""
        from core.prepared import Prepared

        precision = self._model_precision(info)
        try:
            prepared = Prepared(path, precision, info.int8_ranges, self.notify)
        except ModelFileError as e:
            raise EngineError(str(e)) from None
        except ValueError as e:
            from core.quantize import CalibrationError  # torch is loaded: it was converting

            if not isinstance(e, CalibrationError):
                raise
            raise EngineError(
                f"{e} in {path.name}: redo it with `python -m trainer calibrate {info.name}`, "
                "or use precision fp32"
            ) from None
        return OpenVINORunner(prepared, precision)

    def _tile_size_for(self, info: ModelInfo) -> int:
        """The tile side for a model: narrower style networks get the same memory in larger tiles."""
        if self.tile_size_given or info.arch != "style":
            return self.tile_size
        # Activation memory per pixel follows the width: the compact network's is half the full's.
        width = info.options.get("width", "full")
        area = self.tile_size**2 * STYLE_WIDTHS["full"] / STYLE_WIDTHS[width]
        return int(math.sqrt(area)) // 64 * 64

    def _model_precision(self, info: ModelInfo) -> str:
        """The engine's precision, unless it is int8 and the model was not calibrated for it."""
        if self.precision != "int8" or info.int8_ranges:
            return self.precision
        if self.auto_precision or info.kind == "sr":  # upscalers are never calibrated: fp32
            return _resolve_precision("auto", self.device, self.backend, int8=False)
        raise EngineError(
            f"{info.name!r} has no int8 calibration: add it with `python -m trainer calibrate "
            f"{info.name}`, or use precision fp32"
        )

    def _run(
        self,
        loaded: _Loaded,
        rgb: np.ndarray,
        progress: Progress | None,
        cancel: threading.Event | None,
        scale: int = 1,
        phase: Phase | None = None,
    ) -> np.ndarray:
        """Run the network over the image on the host, in tiles if it is large."""
        return self._retrying(
            loaded, lambda tile: _run_tiled(loaded, rgb, tile, scale, progress, cancel, phase)
        )

    def _retrying(self, loaded: _Loaded, attempt: Callable[[int], np.ndarray]) -> np.ndarray:
        """``attempt(tile side)``, with smaller tiles when memory runs out."""
        tile = loaded.tile_size
        while True:
            try:
                return attempt(tile)
            except RuntimeCancelled:
                raise Cancelled("cancelled") from None
            except (RuntimeError, MemoryError) as e:
                if not _out_of_memory(e):
                    raise
                if self.device == "cuda":
                    import torch

                    torch.cuda.empty_cache()
                if tile // 2 < MIN_TILE_SIZE:
                    raise EngineError(
                        "not enough memory to process this image even in small tiles: close other "
                        "programs, or use a smaller image"
                    ) from None
                tile //= 2


def _check_kind(info: ModelInfo, kind: str) -> None:
    if info.kind != kind:
        wanted = {"style": "a style model", "sr": "an upscaling model"}[kind]
        raise EngineError(f"{info.name!r} is a {info.kind!r} model; this needs {wanted}")


def _run_tiled(
    loaded: _Loaded,
    rgb: np.ndarray,
    tile: int,
    scale: int,
    progress: Progress | None,
    cancel: threading.Event | None,
    phase: Phase | None = None,
) -> np.ndarray:
    runner = loaded.runner
    h, w = rgb.shape[:2]
    margin, blend, align, multiple, in_tile = tile_plan(loaded.has_norm, loaded.margin, tile, scale)
    # The style network halves the size twice: pad like it does, to a multiple of 4.
    ph, pw = h + -h % align, w + -w % align
    no_stats = np.zeros((2, 0), np.float32)
    report = progress or (lambda done, total: None)
    enter = phase or (lambda name: None)

    # Memory follows the area, not the sides: an image no larger than one tile runs whole.
    if ph * pw <= in_tile * in_tile:
        enter("tiles")
        report(0, 1)
        _check(cancel)
        whole = _batch(_pad_to(rgb, align))
        if loaded.has_norm:
            out = runner.run_whole(whole, cancel)
        else:
            out = runner.run_frozen(whole, no_stats, cancel)
        _check(cancel)
        report(1, 1)
        return out[0, : h * scale, : w * scale]

    overlap = 2 * margin + blend
    tile_h, starts_y = _plan_axis(ph, in_tile, overlap, align, multiple)
    tile_w, starts_x = _plan_axis(pw, in_tile, overlap, align, multiple)
    weights_y = _blend_weights(starts_y, tile_h, ph, margin, blend, scale)
    weights_x = _blend_weights(starts_x, tile_w, pw, margin, blend, scale)
    total = len(starts_y) * len(starts_x) + int(loaded.has_norm)
    done = 0
    report(done, total)
    stats = no_stats
    if loaded.has_norm:
        _check(cancel)
        enter("statistics")
        stats = _thumbnail_stats(runner, rgb, min(THUMBNAIL_SIDE, in_tile), cancel)
        done += 1
        report(done, total)
    enter("tiles")
    out = np.zeros((ph * scale, pw * scale, 3), np.float32)
    # One thread adds each tile into ``out`` while the next tile runs (numpy frees the GIL);
    # leaving the block waits for the last one.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tile-blend") as blender:
        added = []
        for y0, wy in zip(starts_y, weights_y, strict=True):
            for x0, wx in zip(starts_x, weights_x, strict=True):
                _check(cancel)
                # Only tiles on the bottom or right edge need padding: no padded copy of the image.
                piece = _pad_to_size(rgb[y0 : y0 + tile_h, x0 : x0 + tile_w], tile_h, tile_w)
                result = runner.run_frozen(_batch(piece), stats, cancel)
                added.append(blender.submit(_add_tile, out, result, y0 * scale, x0 * scale, wy, wx))
                done += 1
                _check(cancel)
                report(done, total)
        for future in added:
            future.result()  # an error in a blend surfaces here
    return out[: h * scale, : w * scale]


def _add_tile(
    out: np.ndarray, result: np.ndarray, y: int, x: int, wy: np.ndarray, wx: np.ndarray
) -> None:
    """Add a (1, H, W, 3) tile result, weighted by its blend weights, into ``out`` at (y, x).

    The weights sum to 1 at every pixel, so where both of a tile's are 1 no other tile adds
    anything: there it is copied; only its blend bands are weighted, and its zero margins skipped.
    """
    tile = result[0]
    (top, bottom), (first, last) = _spans(wy)
    (left, right), (begin, end) = _spans(wx)
    out[y + first : y + last, x + begin : x + end] = tile[first:last, begin:end]
    bands = [
        (top, first, left, right),
        (last, bottom, left, right),
        (first, last, left, begin),
        (first, last, end, right),
    ]
    for r0, r1, c0, c1 in bands:
        if r0 < r1 and c0 < c1:
            weight = wy[r0:r1, None, None] * wx[None, c0:c1, None]
            out[y + r0 : y + r1, x + c0 : x + c1] += tile[r0:r1, c0:c1] * weight


def _spans(weights: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
    """(start, stop) of the nonzero weights, and of the run of weights equal to 1 inside it."""
    nonzero = np.flatnonzero(weights)
    ones = np.flatnonzero(weights == 1)
    start, stop = int(nonzero[0]), int(nonzero[-1]) + 1
    if ones.size == 0:
        return (start, stop), (start, start)
    assert ones[-1] - ones[0] + 1 == ones.size, "weights of 1 must be one run"
    return (start, stop), (int(ones[0]), int(ones[-1]) + 1)


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise RuntimeCancelled


def _thumbnail_stats(
    runner: TorchRunner | OpenVINORunner, rgb: np.ndarray, side: int, cancel: threading.Event | None
) -> np.ndarray:
    """Instance-norm statistics of the whole image, measured on a thumbnail of longest side ``side``."""
    h, w = rgb.shape[:2]
    factor = min(1.0, side / max(h, w))
    factor = min(1.0, max(factor, 2 * MIN_SIDE / min(h, w)))  # very long images keep some height
    thumbnail = _resize(rgb, (round(h * factor), round(w * factor))) if factor < 1 else rgb
    # The runner keeps this shape compiled (~0.1 GB): images of the same aspect ratio reuse it.
    return runner.run_stats(_batch(_pad_to(thumbnail, 4)), cancel)


def tile_plan(has_norm: bool, margin: int, tile: int, scale: int) -> tuple[int, int, int, int, int]:
    """(margin, blend, align, multiple, input tile side) for tiling a network of either kind."""
    if has_norm:
        return margin, STYLE_BLEND, 4, STYLE_TILE_MULTIPLE, tile - tile % 4
    # Wide enough that a deep network's margins still leave a centre (24 px, as the default's).
    in_tile = max(tile // scale, SR_MIN_INPUT_TILE, 2 * margin + SR_BLEND + SR_MIN_CENTRE)
    return margin, SR_BLEND, 1, SR_TILE_MULTIPLE, in_tile


def _plan_axis(
    length: int, tile: int, overlap: int, align: int, multiple: int
) -> tuple[int, list[int]]:
    """Tile length (rounded up to a multiple of ``multiple``, at most ``tile``) and start
    positions along one axis: evenly spread, overlapping by >= overlap."""
    if length <= tile:
        return length, [0]
    reach = overlap + align  # starts are rounded down to ``align``: keep that much slack
    count = math.ceil((length - reach) / (tile - reach))
    size = min(tile, multiple * math.ceil((math.ceil((length - reach) / count) + reach) / multiple))
    size -= size % align
    count = math.ceil((length - size) / (size - reach)) + 1
    step = (length - size) / (count - 1)
    starts = [int(i * step) // align * align for i in range(count - 1)] + [length - size]
    return size, starts


def _blend_weights(
    starts: list[int], size: int, length: int, margin: int, blend: int, scale: int
) -> list[np.ndarray]:
    """Per-tile 1-D weights in output pixels that sum to 1 at every position of the axis."""
    ramp = (np.arange(blend * scale, dtype=np.float32) + 0.5) / (blend * scale)
    cut = margin * scale
    weights = []
    for start in starts:
        w = np.ones(size * scale, np.float32)
        if start > 0:
            w[:cut] = 0
            w[cut : cut + ramp.size] = ramp
        if start + size < length:
            w[w.size - cut :] = 0
            w[w.size - cut - ramp.size : w.size - cut] = np.minimum(
                w[w.size - cut - ramp.size : w.size - cut], ramp[::-1]
            )
        weights.append(w)
    total = np.zeros(length * scale, np.float32)
    for start, w in zip(starts, weights, strict=True):
        total[start * scale : start * scale + w.size] += w
    assert total.min() > 0, "tiles overlap too little"
    return [w / total[s * scale : s * scale + w.size] for s, w in zip(starts, weights, strict=True)]


def _model_path(model: str | Path, kind: str | None) -> Path:
    try:
        return model_path(model, kind)
    except ModelFileError as e:  # a missing file; an unknown name stays UnknownModelError
        raise EngineError(str(e)) from None


def _check_options(options: StyleOptions) -> None:
    if not 0 <= options.strength <= 1:
        raise EngineError(f"strength {options.strength} is out of range: use 0 to 1")
    low, high = SCALE_RANGE
    if not low <= options.scale <= high:
        raise EngineError(f"scale {options.scale} is out of range: use {low} to {high}")


def _split(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Float32 RGB in [0, 1] (gray repeated) and the alpha channel, untouched (or None)."""
    color, alpha = _channels(image)
    if color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)
    return _to_float(color), alpha


def _channels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Views of a checked image's colour channels (RGB, or gray as one) and alpha (or None)."""
    if not isinstance(image, np.ndarray):
        raise EngineError(f"image must be a numpy array, not {type(image).__name__}")
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        raise EngineError(
            f"unsupported pixel type {image.dtype}: use uint8, uint16 or float32 in [0, 1]"
        )
    pixels = image[..., None] if image.ndim == 2 else image
    if pixels.ndim != 3 or not 1 <= pixels.shape[2] <= 4:
        raise EngineError(
            f"image shape {image.shape} is not HxWxC with C 1-4 (gray, gray+alpha, RGB, RGBA)"
        )
    if min(pixels.shape[:2]) < MIN_SIDE:
        raise EngineError(
            f"image is {pixels.shape[1]}x{pixels.shape[0]} pixels: "
            f"use one at least {MIN_SIDE}x{MIN_SIDE}"
        )
    channels = pixels.shape[2]
    color = pixels[..., :3] if channels >= 3 else pixels[..., :1]
    alpha = pixels[..., channels - 1 :] if channels in (2, 4) else None
    return color, alpha


def _upscale_alpha(alpha: np.ndarray | None, scale: int) -> np.ndarray | None:
    """Alpha resized ``scale`` times in its own dtype (None stays None)."""
    if alpha is None:
        return None
    size = (alpha.shape[0] * scale, alpha.shape[1] * scale)
    return _from_float(np.clip(_resize(_to_float(alpha), size), 0, 1), alpha.dtype)


def _resident():
    """core.resident, imported where it runs (it imports torch)."""
    from core import resident

    return resident


def _join(rgb: np.ndarray, alpha: np.ndarray | None, like: np.ndarray) -> np.ndarray:
    """Float RGB back to the layout and dtype of ``like`` (gray stays gray), alpha appended."""
    channels = 1 if like.ndim == 2 else like.shape[2]
    if like.dtype == np.float32:
        np.maximum(rgb, 0, out=rgb)  # float keeps values above 1 (HDR highlights); none below 0
    else:
        np.clip(rgb, 0, 1, out=rgb)
    out = _from_float(_luma(rgb)[..., None] if channels < 3 else rgb, like.dtype)
    if alpha is not None:
        out = np.concatenate([out, alpha], axis=2)
    return out[..., 0] if like.ndim == 2 else out


def _to_float(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.float32:
        return np.maximum(pixels, 0)  # values above 1 kept; stylize shows the network 0..1 only
    return pixels.astype(np.float32) / np.float32(np.iinfo(pixels.dtype).max)


def _from_float(pixels: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype == np.float32:
        return pixels.astype(np.float32, copy=False)
    # In place: at 16 megapixels every float copy is 200 MB.
    pixels *= np.float32(np.iinfo(dtype).max)
    return np.rint(pixels, out=pixels).astype(dtype)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb @ LUMA


def _pad_to(pixels: np.ndarray, multiple: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    return _pad_to_size(pixels, h + -h % multiple, w + -w % multiple)


def _pad_to_size(pixels: np.ndarray, h: int, w: int) -> np.ndarray:
    if pixels.shape[:2] == (h, w):
        return pixels
    pad = ((0, h - pixels.shape[0]), (0, w - pixels.shape[1]), (0, 0))
    return np.pad(pixels, pad, mode="reflect")


def _batch(pixels: np.ndarray) -> np.ndarray:
    """A batch of one (1, H, W, 3), contiguous as the runtimes need it."""
    return np.ascontiguousarray(pixels)[None]


def _out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    text = str(error).lower()
    return any(
        s in text for s in ("out of memory", "not enough memory", "failed to allocate", "bad_alloc")
    )


def _resolve_device(device: str) -> str:
    if device == "auto":
        if not _may_have_gpu():
            return "cpu"
        import torch

        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device not in ("cpu", "cuda", "mps"):
        raise EngineError(f"unknown device {device!r}: use auto, cuda, mps or cpu")
    if device != "cpu":
        import torch

        available = (
            torch.cuda.is_available() if device == "cuda" else torch.backends.mps.is_available()
        )
        if not available:
            raise EngineError(
                f"device {device!r} is not available on this machine: use auto or cpu"
            )
    return device


def _may_have_gpu() -> bool:
    """False only where torch surely finds no GPU (asking torch means importing it, ~1 s): Linux
    without an NVIDIA or AMD (ROCm) driver loaded, Windows without NVIDIA's driver library."""
    if sys.platform.startswith("linux"):
        return any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/kfd"))
    if sys.platform == "win32":
        system = Path(os.environ.get("SystemRoot", r"C:\Windows")) / "System32"
        return (system / "nvcuda.dll").exists()
    return True  # macOS (MPS) and others: ask torch


def _resolve_backend(backend: str, device: str) -> str:
    if backend == "auto":
        return "openvino" if device == "cpu" and openvino_available() else "torch"
    if backend == "torch":
        return backend
    if backend != "openvino":
        raise EngineError(f"unknown backend {backend!r}: use auto, openvino or torch")
    if device != "cpu":
        raise EngineError(f"the openvino backend runs on the CPU: use backend torch on {device}")
    if not openvino_available():
        raise EngineError(
            "the openvino backend is not installed: pip install openvino, or use torch"
        )
    return backend


def _resolve_precision(precision: str, device: str, backend: str, int8: bool = True) -> str:
    if precision == "auto":
        if device == "cuda":
            return "fp16"
        if backend == "openvino":
            # int8 only for calibrated models (Engine._model_precision); 2-3x fp32 with VNNI.
            if int8 and openvino_supports("INT8"):
                return "int8"
            if openvino_supports("BF16"):
                return "bf16"
        return "fp32"
    if precision not in ("fp32", "fp16", "bf16", "int8"):
        raise EngineError(f"unknown precision {precision!r}: use auto, fp32, fp16, bf16 or int8")
    if precision == "int8" and backend != "openvino":
        raise EngineError("int8 runs on the openvino backend (CPU): use fp32, fp16 or bf16")
    return precision
