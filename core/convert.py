"""Converts a model file's network into OpenVINO graphs (core.prepared keeps them): the only part
of the OpenVINO path that needs torch.

Each form (core.ovruntime) is traced from torch at a small size; OpenVINO reshapes it per input.
Precision "int8" traces the fake-quantized network (core.quantize); everything else stays fp32 in
the graph and is chosen when compiling.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from core.modelfile import load_model
from core.phased import phased
from core.quantize import quantized
from core.runtime import FrozenStats, LiveStats, norm_layers, stats_channels


class Converter:
    """A model file's network, ready to give its norms' parameters and convert its forms.

    Raises core.quantize.CalibrationError for int8 ranges that do not fit the network.
    """

    def __init__(self, model_path: Path, precision: str, int8_ranges: list[list[float]]) -> None:
        net, _ = load_model(model_path)
        norms = [
            torch.stack([m.weight.detach(), m.bias.detach(), torch.full_like(m.weight, m.eps)])
            for m in norm_layers(net)
        ]
        packed = torch.cat(norms, 1).float().numpy() if norms else np.zeros((3, 0), np.float32)
        self.norms = np.ascontiguousarray(packed, np.float32)
        self.channels = stats_channels(net)
        net = phased(net)
        if precision == "int8":
            net = quantized(net, int8_ranges)
        self.modules = {"whole": net, "stats": LiveStats(net), "frozen": FrozenStats(net)}

    def form(self, name: str):
        """Form ``name`` ("whole", "stats" or "frozen") as an openvino.Model."""
        import openvino as ov

        x = torch.rand(1, 3, 64, 64)
        example = (x, torch.ones(2, self.channels)) if name == "frozen" and self.channels else (x,)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python code
            # Trace here: openvino's own tracing re-runs and checks the trace, 3x slower.
            traced = torch.jit.trace(self.modules[name], example, check_trace=False)
            model = ov.convert_model(traced, input=[list(t.shape) for t in example])
        return _channels_last(model, image_output=name != "stats")


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
