"""Training settings: one dataclass shared by the command line, the training loop and checkpoints."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from trainer.lossnets import LOSS_NETWORKS

DEFAULT_LOSS_NETWORK = "mobilenet_v2"  # installed with Impasto and works offline
_DEFAULTS = LOSS_NETWORKS[DEFAULT_LOSS_NETWORK]
LR_FLOOR = 0.01  # the cosine schedule ends at 1% of the learning rate


@dataclass
class TrainConfig:
    """Everything a training run depends on; stored in checkpoints and in the model file."""

    task: str  # "style" or "sr"
    name: str
    dataset: str
    output: str  # the model file to write
    run_dir: str  # checkpoints, loss log, curve, previews
    style_image: str | None = None
    width: str = "full"  # style network width
    image_size: int = 256  # training crop (style input, or SR high-resolution crop)
    # The last ``final_steps`` steps train on ``final_image_size`` crops (0: no change): most steps
    # small and cheap, the end at the size the strokes should have.
    final_image_size: int = 0
    final_steps: int = 0
    batch_size: int = 4  # per process
    steps: int = 40000
    # A time budget (trainer.budget): steps and crop schedule then follow from measured speed,
    # ``steps`` is their upper limit. 0: train exactly ``steps``.
    minutes: float = 0.0
    lr: float = 1e-3
    lr_schedule: str = "constant"  # or "cosine": down to LR_FLOOR x lr at the last step
    init_model: str = ""  # a model file whose weights the network starts from ("": random)
    loss_network: str = DEFAULT_LOSS_NETWORK
    loss_weights: str | None = None
    content_weight: float = _DEFAULTS.content_weight
    style_weight: float = _DEFAULTS.style_weight
    tv_weight: float = _DEFAULTS.tv_weight
    pixel_weight: float = 0.0
    style_size: int = 256
    loss_form: str = "paper"  # trainer.losses.LOSS_FORMS: "paper" or "relative"
    content_layer: str = ""  # the loss network's layer for the content loss ("": its default)
    range_weight: float = 0.0  # keep pixels in [0, 1] (the command line's default: content weight)
    colour_weight: float = 0.0  # coarse colours of the photo recoloured to the painting's
    tone_weight: float = 0.0  # keep the photo's large-scale brightness (trainer.losses.tone_error)
    sr_loss: str = "perceptual"
    scale: int = 4
    degradation: str = "paper"
    blur_sigma: float = 1.0
    shifted_loss: bool = False  # SR: the perceptual loss at a random pixel phase each step
    dihedral: bool = False  # SR: crops also turned by multiples of 90 degrees (torch RNG)
    sr_channels: int = 64
    sr_blocks: int = 4
    device: str = "auto"
    amp: bool = False
    compile: bool = False
    seed: int = 0
    workers: int = 0
    resident: bool = False  # keep the scaled photos on the training device (same crops)
    checkpoint_every: int = 500
    log_every: int = 50
    preview_every: int = 1000
    display_name: str = ""
    description: str = ""
    credit: str = ""
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    # Settings that may change between a run and its --resume without changing the result.
    RESUMABLE_CHANGES = (
        "steps", "output", "device", "workers", "checkpoint_every", "log_every", "preview_every",
        "display_name", "description", "credit", "command", "compile", "loss_weights", "dataset",
        "final_image_size", "final_steps", "resident", "minutes", "init_model",
    )  # fmt: skip

    def crop_size(self, step: int) -> int:
        """The training crop size for ``step`` (0-based) under the crop schedule."""
        late = self.final_image_size and step >= self.steps - self.final_steps
        return self.final_image_size if late else self.image_size

    def lr_at(self, step: int) -> float:
        """The learning rate for ``step`` (0-based) under ``lr_schedule``."""
        if self.lr_schedule != "cosine" or self.steps <= 1:
            return self.lr
        done = min(1.0, step / (self.steps - 1))
        return self.lr * (LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * done)))

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (safe for weights-only checkpoints and JSON)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The config saved by :meth:`to_dict` (unknown keys from other versions are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def resume_conflicts(self, saved: TrainConfig) -> list[str]:
        """Settings that differ from the run being resumed and would change its result."""
        return [
            f"{f.name}: {getattr(saved, f.name)!r} in the run, {getattr(self, f.name)!r} now"
            for f in dataclasses.fields(self)
            if f.name not in self.RESUMABLE_CHANGES
            and getattr(self, f.name) != getattr(saved, f.name)
        ]
