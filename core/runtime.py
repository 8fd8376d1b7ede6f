"""Runs one loaded network on one input: PyTorch or OpenVINO, own or given instance-norm statistics.

Both runtimes take images as (1, H, W, 3) float32 (the engine's own pixel layout) and give images
back the same way; OpenVINO's first and last layers read and write that layout themselves, which
is 1.04-1.08x faster than transposing in numpy (bench/results/engine.md). Both run the same three
forms of a network:
- whole: x -> y, the network itself (each instance norm uses the image's own statistics);
- ``LiveStats``: x -> stats, those statistics packed as a (2, channels) array of (mean, var), so
  a thumbnail's statistics can be reused;
- ``FrozenStats``: (x, affine) -> y, every instance norm normalises with given statistics
  (Thumbnail Instance Normalization), folded into a per-channel scale and shift, so the network
  is local and tiles have no seams.
The whole form is its own because OpenVINO fuses a plain instance norm into one fast operation
(its MVN), ~1.3x faster than computing the statistics as outputs too. OpenVINO compiles the
frozen form for each image's scale and shift as constants, which it folds into the layers: tiles
run 1.2x faster and compile in 0.17 s instead of 0.22 (bench/results/engine.md). Networks
without instance norm (SR) return an empty (2, 0) statistics array.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.networks import InstanceNorm
from core.phased import phased
from core.quantize import quantized

CACHE_ENV = "IMPASTO_CACHE_DIR"
# Compiled shapes kept per runner and form: each holds its activation memory (~0.4 GB for a
# 1024x1024 tile, ~0.1 GB for a thumbnail). All tiles of an image share one compiled model;
# compiling one takes 0.15-0.35 s.
COMPILED_CACHE_SIZE = 1


# Part of every cache key: raise it when the traced graph changes for the same weights.
GRAPH_VERSION = 8


class RuntimeCancelled(Exception):
    """The cancel event was set while a network was running."""


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
        mean, var = torch.from_numpy(np.asarray(stats, np.float32))
        parts, start = [], 0
        for m in self.norms:
            c = m.weight.numel()
            parts.append(m.affine(mean[start : start + c], var[start : start + c]))
            start += c
        if not parts:
            return torch.zeros(2, 0)
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


class TorchRunner:
    """Runs a network with PyTorch on a device; half precision and channels_last on CUDA."""

    def __init__(self, net: nn.Module, device: str, precision: str) -> None:
        self.device = torch.device(device)
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
        # channels_last lets cuDNN use its fast NHWC kernels; on CPU it gains nothing here.
        self.memory_format = torch.channels_last if device == "cuda" else torch.contiguous_format
        if device == "cuda":
            # Tile shapes repeat: pick the fastest kernels once.
            torch.backends.cudnn.benchmark = True
        net = net.to(self.device, self.dtype, memory_format=self.memory_format)
        self.net, self.live, self.frozen = net, LiveStats(net), FrozenStats(net)

    def _input(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(x).to(self.device, self.dtype).permute(0, 3, 1, 2)
        return t.contiguous(memory_format=self.memory_format)

    @staticmethod
    def _output(y: torch.Tensor) -> np.ndarray:
        # Transposed where the result is (on the GPU, not by numpy); a no-op for channels_last.
        return y.float().permute(0, 2, 3, 1).contiguous().cpu().numpy()

    def run_whole(self, x: np.ndarray, cancel: threading.Event | None) -> np.ndarray:
        """Output of a (1, H, W, 3) float32 input with H, W multiples of 4, its own statistics."""
        with torch.inference_mode():
            return self._output(self.net(self._input(x)))

    def run_stats(self, x: np.ndarray, cancel: threading.Event | None) -> np.ndarray:
        """Packed instance-norm statistics of a (1, H, W, 3) float32 input (a thumbnail)."""
        with torch.inference_mode():
            return self.live(self._input(x)).float().cpu().numpy()

    def run_frozen(
        self, x: np.ndarray, stats: np.ndarray, cancel: threading.Event | None
    ) -> np.ndarray:
        """Output of a (1, H, W, 3) float32 input with the given packed statistics."""
        with torch.inference_mode():
            return self._output(self.frozen(self._input(x), self.frozen.affine(stats)))


def _weights_digest(net: nn.Module) -> str:
    """A key for the network's architecture and weights (model files of equal weights differ)."""
    digest = hashlib.sha256(f"{type(net).__name__} {GRAPH_VERSION}".encode())
    for name, value in sorted(net.state_dict().items()):
        digest.update(f"{name}{tuple(value.shape)}".encode())
        digest.update(value.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()[:20]


def cache_dir() -> Path:
    """Where converted OpenVINO models are kept: $IMPASTO_CACHE_DIR, else the user cache folder."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_cache_dir("impasto"))


def openvino_available() -> bool:
    """Whether the openvino package imports."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def openvino_supports(capability: str) -> bool:
    """Whether OpenVINO runs ``capability`` ("BF16", "INT8") natively on this CPU.

    Without BF16 (AMX or AVX-512 BF16) bf16 is emulated, slower than fp32; INT8 needs VNNI or
    similar instructions to gain.
    """
    import openvino as ov

    return capability in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVINORunner:
    """Runs a network with OpenVINO on the CPU; one compiled model per form and input shape (and,
    for tiles, the image's statistics).

    The network is traced once and the result saved in the cache folder (keyed by the model file's
    content), because tracing takes seconds and compiling a shape from it a fraction of a second.
    Precision "int8" runs the convolutions in int8 with ``int8_ranges`` (core.quantize).
    """

    def __init__(
        self,
        net: nn.Module,
        model_path: Path,
        precision: str,
        int8_ranges: list[list[float]] | None = None,
    ) -> None:
        # model_path only names the cache entries; weights identify them.
        import openvino as ov

        self.core = ov.Core()
        # int8 comes from the fake-quantized graph; everything else in it stays fp32.
        self.precision = {"bf16": "bf16", "fp16": "f16"}.get(precision, "f32")
        self.channels = stats_channels(net)
        net = phased(net)
        suffix = ""
        if precision == "int8":
            ranges = int8_ranges or []
            net = quantized(net, ranges)
            suffix = f"-int8-{hashlib.sha256(repr(ranges).encode()).hexdigest()[:8]}"
        self.name = f"{model_path.stem}-{_weights_digest(net)}{suffix}"
        self.forms = {"whole": net, "stats": LiveStats(net), "frozen": FrozenStats(net)}
        self.traced: dict[str, object] = {}
        # Compiled requests by (form, input shape[, digest of the frozen form's constants]).
        self.compiled: OrderedDict[tuple, object] = OrderedDict()

    def _traced(self, name: str):
        """The traced form ``name``, from the cache folder when it was traced before."""
        if name not in self.traced:
            self.traced[name] = self._trace(name)
        return self.traced[name]

    def _trace(self, name: str):
        import openvino as ov

        path = cache_dir() / "openvino" / f"{self.name}-{name}.xml"
        if path.is_file():
            try:
                return self.core.read_model(path)
            except RuntimeError:
                pass  # a damaged cache entry: trace again and overwrite it
        x = torch.rand(1, 3, 64, 64)
        example = (x, torch.ones(2, self.channels)) if name == "frozen" and self.channels else (x,)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python code
            # Trace here: openvino's own tracing re-runs and checks the trace, 3x slower.
            traced = torch.jit.trace(self.forms[name], example, check_trace=False)
            model = ov.convert_model(traced, input=[list(t.shape) for t in example])
        model = _channels_last(model, image_output=name != "stats")
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.xml")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            ov.save_model(model, tmp, compress_to_fp16=False)
            os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
            os.replace(tmp, path)
        except (OSError, RuntimeError):  # OpenVINO reports write errors as RuntimeError
            # A read-only or full cache folder only costs tracing again next time.
            for leftover in (tmp, tmp.with_suffix(".bin")):
                with contextlib.suppress(OSError):
                    leftover.unlink()
        return model

    def _request(self, form: str, shape: tuple[int, ...], affine: np.ndarray | None = None):
        key: tuple = (form, shape)
        if affine is not None:
            key += (hashlib.sha256(affine.tobytes()).hexdigest(),)
        if key not in self.compiled:
            self.compiled[key] = self._compile(form, shape, affine)
            self._evict(form)
        self.compiled.move_to_end(key)
        return self.compiled[key]

    def _compile(self, form: str, shape: tuple[int, ...], affine: np.ndarray | None = None):
        model = self._traced(form).clone()
        model.reshape({0: list(shape)})  # the frozen form's (2, channels) input was traced as is
        if affine is not None:
            _as_constant(model, 1, affine)
        compiled = self.core.compile_model(
            model,
            "CPU",
            {"INFERENCE_PRECISION_HINT": self.precision, "PERFORMANCE_HINT": "LATENCY"},
        )
        return compiled.create_infer_request()

    def _evict(self, form: str) -> None:
        """Drop the least recently used compiled shapes of ``form`` beyond COMPILED_CACHE_SIZE."""
        same_form = [k for k in self.compiled if k[0] == form]
        for old in same_form[: max(0, len(same_form) - COMPILED_CACHE_SIZE)]:
            del self.compiled[old]

    def _infer(
        self,
        form: str,
        inputs: list[np.ndarray],
        cancel: threading.Event | None,
        affine: np.ndarray | None = None,
    ):
        request = self._request(form, inputs[0].shape, affine)
        request.start_async(inputs)
        # Poll so a cancel stops the job inside a tile, not only between tiles.
        while not request.wait_for(100):
            if cancel is not None and cancel.is_set():
                request.cancel()
                try:
                    request.wait()  # collect the cancellation, or the request fails every later run
                except RuntimeError:
                    pass  # "Infer Request was canceled"
                raise RuntimeCancelled
        return [request.get_output_tensor(i).data.copy() for i in range(len(request.model_outputs))]

    def run_whole(self, x: np.ndarray, cancel: threading.Event | None) -> np.ndarray:
        """Output of a (1, H, W, 3) float32 input with H, W multiples of 4, its own statistics."""
        return self._infer("whole", [np.ascontiguousarray(x)], cancel)[0]

    def run_stats(self, x: np.ndarray, cancel: threading.Event | None) -> np.ndarray:
        """Packed instance-norm statistics of a (1, H, W, 3) float32 input (a thumbnail)."""
        (stats,) = self._infer("stats", [np.ascontiguousarray(x)], cancel)
        return stats.reshape(2, self.channels)

    def run_frozen(
        self, x: np.ndarray, stats: np.ndarray, cancel: threading.Event | None
    ) -> np.ndarray:
        """Output of a (1, H, W, 3) float32 input with the given packed statistics.

        The first tile of an image compiles its shape with the image's statistics (0.17 s).
        """
        affine = self.forms["frozen"].affine(stats).numpy() if self.channels else None
        return self._infer("frozen", [np.ascontiguousarray(x)], cancel, affine)[0]


def _channels_last(model, image_output: bool):
    """``model`` taking its image input (and giving its image output) as (1, H, W, 3)."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(model)
    ppp.input(0).tensor().set_layout(ov.Layout("NHWC"))
    ppp.input(0).model().set_layout(ov.Layout("NCHW"))
    if image_output:
        ppp.output(0).tensor().set_layout(ov.Layout("NHWC"))
        ppp.output(0).model().set_layout(ov.Layout("NCHW"))
    return ppp.build()


def _as_constant(model, index: int, value: np.ndarray) -> None:
    """Replace input ``index`` of an OpenVINO model by a constant, which it can fold into layers."""
    import openvino.opset13 as ops

    parameter = model.get_parameters()[index]
    constant = ops.constant(value)
    for target in list(parameter.output(0).get_target_inputs()):
        target.replace_source_output(constant.output(0))
    model.remove_parameter(parameter)
    model.validate_nodes_and_infer_types()
