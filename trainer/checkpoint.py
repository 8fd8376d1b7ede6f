"""Training checkpoints (written atomically) and model files made from them."""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.modelfile import ModelInfo, save_model, write_atomically
from core.networks import build_network
from core.quantize import calibrate
from core.registry import user_models_dir
from trainer.config import TrainConfig
from trainer.data import DataError, calibration_images

CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(Exception):
    """A checkpoint is missing or unreadable."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically: a crash or full disk leaves the previous checkpoint intact."""
    write_atomically(state, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint` (a run folder finds its checkpoint.pt)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(e).__name__}); it may be truncated"
        ) from None
    if not isinstance(state, dict) or "config" not in state or "net" not in state:
        raise CheckpointError(f"{path} is not an Impasto training checkpoint")
    return state


def model_info(config: TrainConfig, options: dict[str, Any], training: dict[str, Any]) -> ModelInfo:
    """Metadata of a model trained with ``config``; ``training`` adds steps, losses and timing."""
    settings = {
        k: v for k, v in config.to_dict().items() if k not in ("command", "display_name", "extra")
    }
    return ModelInfo(
        name=config.name,
        kind=config.task,
        arch=config.task,
        options=options,
        display_name=config.display_name or config.name.replace("_", " ").replace("-", " ").title(),
        description=config.description,
        training={"command": config.command, "settings": settings, **training},
        credit=config.credit,
    )


def export_model(
    state: dict[str, Any], output: str | Path | None = None, net: nn.Module | None = None
) -> Path:
    """Write the model file for a checkpoint's state (to ``output``, default the run's output)."""
    config = TrainConfig.from_dict(state["config"])
    options = state["options"]
    if net is None:
        net = build_network(config.task, **options)
        net.load_state_dict(state["net"])
    info = model_info(config, options, training={
        "steps": state["step"],
        "final_losses": state.get("losses", {}),
        "seconds": round(state.get("elapsed", 0.0), 1),
        "device": state.get("device", ""),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })  # fmt: skip
    if config.task == "style":
        try:
            info.int8_ranges = int8_ranges(net, config.dataset)
        except DataError as e:  # e.g. exported on another machine: the model still works
            print(f"warning: no int8 calibration ({e}); the model runs in fp32 on CPUs",
                  file=sys.stderr)  # fmt: skip
    path = save_model(Path(output or config.output), net, info)
    prepare_installed(path)
    return path


def prepare_installed(path: Path) -> None:
    """Prepare a model written into the user models folder for this computer's default runtime
    (`python -m core prepare`), so its first use in GIMP is not a wait; failing only warns."""
    if path.resolve().parent != user_models_dir().resolve():
        return  # not installed: prepared on first use, if it is ever used
    from core.engine import Engine, EngineError

    try:
        engine = Engine()
        if engine.backend == "openvino":  # PyTorch needs no preparing
            engine.prepare(path)
    except (EngineError, OSError, RuntimeError) as e:
        print(f"warning: {path.name} is prepared on first use instead ({e})", file=sys.stderr)


def int8_ranges(net: nn.Module, dataset: str | Path) -> list[list[float]]:
    """Calibration for int8 CPU inference (core.quantize), measured on photos of ``dataset``."""
    return calibrate(copy.deepcopy(net).float().cpu().eval(), calibration_images(dataset))
