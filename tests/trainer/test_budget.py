"""``--minutes``: a time budget ends on time with a calibrated model the registry lists at once."""

from __future__ import annotations

import os
import signal
import time

from core.modelfile import load_model, read_info
from core.registry import list_models
from tests.trainer.conftest import tiny_config
from tests.trainer.test_cli import tiny_args
from trainer.budget import TimeBudget
from trainer.checkpoint import load_checkpoint
from trainer.cli import main
from trainer.config import TrainConfig
from trainer.loop import train


def test_a_time_budget_ends_on_time_with_a_calibrated_listed_model(
    tmp_path, photos, painting, monkeypatch, capsys
):
    monkeypatch.setenv("IMPASTO_MODELS_DIR", str(tmp_path / "models"))
    args = ["style", "--style-image", str(painting), "--name", "quick", "--width", "compact"]
    # 18 s; 64 px crops at the end, 32 px before (the budget's schedule, half the size first)
    args += tiny_args(tmp_path, photos, "--minutes", "0.3", "--image-size", "64")
    started = time.time()
    assert main(args) == 0
    path = tmp_path / "models" / "quick.impasto"
    # Written on time; preparing it for OpenVINO follows, outside the budget (docs/training.md).
    assert 0.9 * 18 <= path.stat().st_mtime - started <= 1.1 * 18
    out = capsys.readouterr().out
    assert "time budget 0.3 min:" in out and "img/s  ETA" in out
    assert "32 px crops, the last" in out and "crops now 64 px" in out
    net, info = load_model(path)
    assert info.int8_ranges and len(info.int8_ranges) > 0  # calibrated: int8 on CPUs
    assert info.training["steps"] > 10
    assert "quick" in [m.name for m in list_models("style")]
    assert list((tmp_path / "run" / "previews").glob("step_*.png"))  # the model's last preview


def test_the_plan_trains_most_steps_small_and_ends_at_the_final_size():
    config = TrainConfig(
        task="style", name="p", dataset="-", output="-", run_dir="-", image_size=128,
        final_image_size=256, steps=40000, minutes=10,
    )  # fmt: skip
    budget = TimeBudget(config, started=0.0)
    now = 0.0
    for step in range(1, 30):  # 0.1 s per step at 128 px
        now += 0.1
        budget.after_step(step, now)
    # 576 s after the export's share: a third at 256 px (4x the pixels, 0.4 s), the rest at 128.
    assert config.final_image_size == 256 and 450 < config.final_steps < 500
    assert 3700 < config.steps - config.final_steps < 3900
    assert config.crop_size(config.steps - 1) == 256 and config.crop_size(100) == 128
    # The larger crops turn out slower than estimated: fewer of them, still ending on time.
    switch = config.steps - config.final_steps
    now = 400.0
    for step in range(switch, switch + 6):
        now += 0.8
        budget.after_step(step, now)
    assert config.steps - config.final_steps == switch  # the switch already happened
    assert abs((config.steps - step) * 0.8 - (budget.deadline - now)) < 1
    # Past the deadline nothing more is started: the run ends and writes its model.
    assert budget.after_step(step + 1, budget.deadline) and config.steps == step + 1


def test_ctrl_c_under_a_budget_also_writes_the_model_so_far(tmp_path, photos, painting):
    config = tiny_config(tmp_path, photos, painting, minutes=5.0, steps=40000)

    def ctrl_c(step: int) -> None:
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    result = train(config, on_step=ctrl_c)
    assert not result.finished and result.step == 3
    assert read_info(result.model_path).training["steps"] == 3
    assert load_checkpoint(config.run_dir)["step"] == 3  # and it can still be resumed
