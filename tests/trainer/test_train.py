"""Training runs end to end: the loss falls, resuming is exact, models land where core finds them."""

from __future__ import annotations

import csv
import itertools
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from core.modelfile import load_model
from core.ovruntime import openvino_available
from core.quantize import conv_layers
from core.registry import list_models
from tests.trainer.conftest import tiny_config
from trainer.checkpoint import export_model, load_checkpoint
from trainer.loop import TrainingError, train
from trainer.tasks import degrade, make_task


def losses(run_dir: str, term: str = "total") -> list[float]:
    with open(Path(run_dir) / "loss.csv", newline="") as f:
        return [float(row[term]) for row in csv.DictReader(f)]


def test_style_training_lowers_the_loss_and_writes_a_listed_model(
    tmp_path, photos, painting, monkeypatch
):
    monkeypatch.setenv("IMPASTO_MODELS_DIR", str(tmp_path / "models"))
    config = tiny_config(
        tmp_path, photos, painting, steps=24, preview_every=12, display_name="Stripes"
    )
    result = train(config)
    assert result.finished and result.step == 24
    total = losses(config.run_dir)
    assert len(total) == 24
    assert sum(total[-4:]) < 0.8 * sum(total[:4])
    net, info = load_model(result.model_path)
    assert info.kind == "style" and info.options == {"width": "compact"}
    assert info.training["steps"] == 24 and info.training["settings"]["style_image"] == str(
        painting
    )
    assert info.training["final_losses"]["total"] == pytest.approx(total[-1])
    # Calibrated for int8 CPU inference on the training photos.
    assert len(info.int8_ranges) == len(conv_layers(net)) and info.int8_ranges[0] == [0.0, 1.0]
    listed = {m.name: m for m in list_models("style")}
    assert listed["tiny_run"].display_name == "Stripes"
    # Installed, so prepared for this computer's OpenVINO runtime: its first use is not a wait.
    if openvino_available():
        assert len(list((tmp_path / "cache" / "openvino").glob("tiny_run-*/frozen.json"))) == 1
    run = Path(config.run_dir)
    assert Image.open(run / "loss.png").size == (800, 480)
    sheet = Image.open(run / "previews" / "step_0000024.png")
    assert sheet.height > 2 * 32 and sheet.width > 4 * 32  # photos above, stylised below
    assert (run / "previews" / "step_0000012.png").is_file()


def test_resumed_run_equals_an_uninterrupted_one(tmp_path, photos, painting):
    whole = train(tiny_config(tmp_path / "a", photos, painting))
    stop = threading.Event()
    interrupted = tiny_config(tmp_path / "b", photos, painting)
    first = train(interrupted, stop=stop, on_step=lambda step: step == 3 and stop.set())
    assert not first.finished and first.step == 3 and first.model_path is None
    assert load_checkpoint(interrupted.run_dir)["step"] == 3
    second = train(interrupted, resume=True)
    assert second.finished and second.step == 6
    a = load_checkpoint(whole.checkpoint)["net"]
    b = load_checkpoint(second.checkpoint)["net"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert losses(interrupted.run_dir) == losses(whole.checkpoint.parent)


def test_crop_schedule_trains_the_last_steps_larger_and_resumes_exactly(
    tmp_path, photos, painting, capsys
):
    schedule = dict(final_image_size=48, final_steps=2)
    config = tiny_config(tmp_path / "a", photos, painting, **schedule)
    assert [config.crop_size(s) for s in range(6)] == [32, 32, 32, 32, 48, 48]
    whole = train(config)
    assert "step 4: crops now 48 px" in capsys.readouterr().out
    # Stopped inside the large-crop phase and resumed: the same weights as never stopping.
    stop = threading.Event()
    interrupted = tiny_config(tmp_path / "b", photos, painting, **schedule)
    train(interrupted, stop=stop, on_step=lambda step: step == 5 and stop.set())
    second = train(interrupted, resume=True)
    a, b = (load_checkpoint(r.checkpoint)["net"] for r in (whole, second))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # And the schedule changed the result: all-small crops train other weights.
    small = load_checkpoint(train(tiny_config(tmp_path / "c", photos, painting)).checkpoint)["net"]
    assert not all(torch.equal(a[k], small[k]) for k in a)


def test_an_existing_run_is_never_silently_restarted(tmp_path, photos, painting):
    config = tiny_config(tmp_path, photos, painting, steps=2)
    train(config)
    with pytest.raises(TrainingError, match="already holds a run.*--resume"):
        train(config)
    changed = tiny_config(tmp_path, photos, painting, steps=4, lr=0.5)
    with pytest.raises(TrainingError, match="lr: 0.01 in the run, 0.5 now"):
        train(changed, resume=True)


def test_a_stopped_run_can_be_exported(tmp_path, photos, painting):
    stop = threading.Event()
    config = tiny_config(tmp_path, photos, painting)
    train(config, stop=stop, on_step=lambda step: step == 2 and stop.set())
    path = export_model(load_checkpoint(config.run_dir), tmp_path / "early.impasto")
    net, info = load_model(path)
    assert info.training["steps"] == 2 and info.name == "tiny_run"
    out = net(torch.rand(1, 3, 20, 28))
    assert out.shape == (1, 3, 20, 28)


@pytest.mark.parametrize("loss", ["pixel", "l1", "perceptual"])
def test_sr_training_writes_an_x4_model(tmp_path, photos, loss):
    config = tiny_config(
        tmp_path, photos, None, task="sr", sr_loss=loss, steps=16, image_size=32, lr=1e-3
    )
    result = train(config)
    total = losses(config.run_dir)
    # Adam's first update overshoots (every weight moves by lr); training then brings it down.
    assert sum(total[-3:]) < sum(total[1:4])
    net, info = load_model(result.model_path)
    assert info.kind == "sr" and info.training["settings"]["sr_loss"] == loss
    assert net(torch.rand(1, 3, 8, 10)).shape == (1, 3, 32, 40)


def test_sr_training_on_photo_degradations_with_amp_writes_its_model(tmp_path, photos):
    # The preview at the end runs under autocast: the degradations must stay in fp32 there.
    config = tiny_config(
        tmp_path,
        photos,
        None,
        task="sr",
        sr_loss="pixel",
        degradation="photo",
        amp=True,
        steps=2,
        preview_every=100,
    )
    result = train(config)
    assert result.model_path is not None and result.model_path.is_file()
    assert any((tmp_path / "run" / "previews").iterdir())


def test_dihedral_crops_take_all_four_turns_and_repeat_under_a_seed(tmp_path, photos):
    config = tiny_config(tmp_path, photos, None, task="sr", sr_loss="l1", dihedral=True)
    task = make_task(config, None)
    hr = torch.rand(2, 3, 16, 16)
    turns = {k: torch.rot90(hr, k, (2, 3)) for k in range(4)}
    torch.manual_seed(0)

    def turn_of(target: torch.Tensor) -> int:
        return next(k for k, t in turns.items() if torch.equal(target, t))

    seen = []
    for _ in range(40):
        low, target = task.inputs_and_targets(hr)
        seen.append(turn_of(target))
        torch.testing.assert_close(low, degrade(target, 4, config.degradation, config.blur_sigma))
    assert set(seen) == {0, 1, 2, 3}
    torch.manual_seed(0)
    again = [turn_of(task.inputs_and_targets(hr)[1]) for _ in range(40)]
    assert again == seen  # torch's RNG, which checkpoints keep: a resumed run turns the same way


def test_a_deeper_network_fine_tuned_from_a_model_starts_exactly_where_it_was(tmp_path, photos):
    shallow = train(tiny_config(tmp_path / "a", photos, None, task="sr", sr_loss="pixel"))
    source, _ = load_model(shallow.model_path)
    deeper = tiny_config(
        tmp_path / "b", photos, None, task="sr", sr_loss="pixel", sr_blocks=7, steps=0,
        init_model=str(shallow.model_path),
    )  # fmt: skip
    started = train(deeper).net.float()
    assert len(started.res) == 7
    low = torch.rand(1, 3, 12, 16)
    with torch.no_grad():
        assert torch.allclose(started(low), source(low), atol=1e-5)  # new blocks: the identity
    # And training goes on from there, with the cosine schedule, to a listed deeper model.
    tuned = train(tiny_config(
        tmp_path / "c", photos, None, task="sr", sr_loss="pixel", sr_blocks=7, steps=4,
        init_model=str(shallow.model_path), lr_schedule="cosine",
    ))  # fmt: skip
    net, info = load_model(tuned.model_path)
    assert len(net.res) == 7 and info.options["blocks"] == 7


def test_fine_tuning_from_another_network_says_so(tmp_path, photos, painting):
    style = train(tiny_config(tmp_path / "a", photos, painting))
    config = tiny_config(tmp_path / "b", photos, None, task="sr", init_model=str(style.model_path))
    with pytest.raises(TrainingError, match="--init-model: .*different network.*same architecture"):
        train(config)


def test_cosine_schedule_runs_from_the_rate_down_to_one_percent(tmp_path, photos):
    config = tiny_config(tmp_path, photos, None, lr=1e-3, steps=101, lr_schedule="cosine")
    rates = [config.lr_at(s) for s in range(101)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-5)
    assert all(a > b for a, b in itertools.pairwise(rates))
    assert tiny_config(tmp_path, photos, None).lr_at(5) == 0.01  # constant: the paper's


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 32 MB file system (tmpfs; needs root, as CI has), to fill up."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mountpoint)]
    if os.geteuid() != 0 or not shutil.which("mount") or subprocess.run(command).returncode:
        pytest.skip("mounting a small file system needs root")
    yield mountpoint
    # Lazy: torch's failed writer may still hold its (deleted) temporary file open.
    subprocess.run(["umount", "--lazy", str(mountpoint)], check=True)


def fill(folder: Path) -> None:
    with open(folder / "filler", "wb") as f:
        try:
            while True:
                f.write(bytes(1 << 16))
                f.flush()
        except OSError:
            pass


def test_a_full_disk_stops_training_and_keeps_the_last_checkpoint(
    tmp_path, photos, painting, small_disk
):
    run_dir = small_disk / "run"
    config = tiny_config(tmp_path, photos, painting, run_dir=str(run_dir), checkpoint_every=2)
    with pytest.raises(TrainingError) as stopped:
        train(config, on_step=lambda step: step == 3 and fill(small_disk))
    message = str(stopped.value)
    assert f"could not write to {run_dir} at step " in message  # 3 (log) or 4 (checkpoint)
    assert (
        "the checkpoint of step 2 is intact: free disk space" in message and "--resume" in message
    )
    assert load_checkpoint(run_dir)["step"] == 2
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]  # no partial files left
    (small_disk / "filler").unlink()
    resumed = train(config, resume=True)
    assert resumed.finished and resumed.step == 6
