"""Runs a prepared model (core.prepared) with OpenVINO on the CPU, without torch.

Like core.runtime's TorchRunner, it takes and gives images as (1, H, W, 3) float32, in three
forms: whole (x -> y, each instance norm with the image's own statistics), stats (x -> the
packed (2, channels) statistics of a thumbnail) and frozen ((x, affine) -> y, every norm applying
a given per-channel scale and shift, so tiles have no seams). The whole form is its own because
OpenVINO fuses a plain instance norm into one fast operation (its MVN), ~1.3x faster than
computing the statistics as outputs too. The frozen form is compiled for each image with its
scale and shift as constants, which OpenVINO folds into the layers: tiles run 1.2x faster and
compile in 0.17 s instead of 0.22 (bench/results/engine.md).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

from core.prepared import Prepared

# Compiled shapes kept per runner and form: each holds its activation memory (~0.4 GB for a
# 1024x1024 tile, ~0.1 GB for a thumbnail). All tiles of an image share one compiled model;
# compiling one takes 0.15-0.35 s.
COMPILED_CACHE_SIZE = 1


class RuntimeCancelled(Exception):
    """The cancel event was set while a network was running."""


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


def affine(norms: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """Packed (scale, shift) of every norm from packed (mean, var) statistics, as
    core.networks.InstanceNorm.affine computes them (float32)."""
    weight, bias, eps = norms
    mean, var = np.asarray(stats, np.float32)
    scale = weight * (np.float32(1) / np.sqrt(var + eps))
    return np.stack([scale, bias - mean * scale])


class OpenVINORunner:
    """Runs a prepared model; one compiled model per form and input shape (and, for tiles, the
    image's statistics). Precision "int8" came in the graph; others are compile hints."""

    def __init__(self, prepared: Prepared, precision: str) -> None:
        import openvino as ov

        self.core = ov.Core()
        self.model_precision = precision  # as prepared: "int8" is in the graph
        self.precision = {"bf16": "bf16", "fp16": "f16"}.get(precision, "f32")  # compile hint
        self.prepared = prepared
        self.norms = prepared.norms
        self.channels = prepared.norms.shape[1]
        # Compiled requests by (form, input shape[, digest of the frozen form's constants]).
        self.compiled: OrderedDict[tuple, object] = OrderedDict()

    def _request(self, form: str, shape: tuple[int, ...], constants: np.ndarray | None = None):
        key: tuple = (form, shape)
        if constants is not None:
            key += (hashlib.sha256(constants.tobytes()).hexdigest(),)
        if key not in self.compiled:
            self.compiled[key] = self._compile(form, shape, constants)
            self._evict(form)
        self.compiled.move_to_end(key)
        return self.compiled[key]

    def _compile(self, form: str, shape: tuple[int, ...], constants: np.ndarray | None = None):
        model = self.prepared.form(form, self.core).clone()
        model.reshape({0: list(shape)})  # the frozen form's (2, channels) input was traced as is
        if constants is not None:
            _as_constant(model, 1, constants)
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
        constants: np.ndarray | None = None,
    ):
        request = self._request(form, inputs[0].shape, constants)
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
        constants = affine(self.norms, stats) if self.channels else None
        return self._infer("frozen", [np.ascontiguousarray(x)], cancel, constants)[0]


def _as_constant(model, index: int, value: np.ndarray) -> None:
    """Replace input ``index`` of an OpenVINO model by a constant, which it can fold into layers."""
    import openvino.opset13 as ops

    parameter = model.get_parameters()[index]
    constant = ops.constant(value)
    for target in list(parameter.output(0).get_target_inputs()):
        target.replace_source_output(constant.output(0))
    model.remove_parameter(parameter)
    model.validate_nodes_and_infer_types()
