"""``python -m trainer``: options, the model it writes, and one-line errors for bad input."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.modelfile import load_model, read_info
from core.quantize import conv_layers
from tests.conftest import make_model
from trainer import lossnets
from trainer.checkpoint import load_checkpoint
from trainer.cli import build_parser, config_from_args, main

REPO = Path(__file__).resolve().parents[2]


def tiny_args(tmp_path: Path, photos: Path, *extra: str) -> list[str]:
    return [
        "--dataset", str(photos), "--run-dir", str(tmp_path / "run"), "--image-size", "32",
        "--batch-size", "2", "--device", "cpu", "--workers", "0", "--log-every", "1",
        "--preview-every", "0", *extra,
    ]  # fmt: skip


def test_help_explains_every_option_with_its_default():
    out = subprocess.run(
        [sys.executable, "-m", "trainer", "style", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    out = " ".join(out.split())  # argparse wraps lines
    for option in ("--style-image", "--width", "--style-weight", "--amp", "--resume", "--epochs"):
        assert option in out
    assert "default 256, the paper's" in out and "mobilenet_v2" in out


def test_style_command_writes_a_model_into_the_user_models_folder(
    tmp_path, photos, painting, monkeypatch, capsys
):
    monkeypatch.setenv("IMPASTO_MODELS_DIR", str(tmp_path / "models"))
    args = ["style", "--style-image", str(painting), "--name", "stripes", "--width", "compact"]
    args += tiny_args(tmp_path, photos, "--epochs", "1", "--credit", "test pattern, CC0")
    assert main(args) == 0
    info = read_info(tmp_path / "models" / "stripes.impasto")
    assert info.training["steps"] == 4  # 8 photos, batch 2
    assert info.training["command"] == "python -m trainer " + shlex.join(args)
    assert info.credit == "test pattern, CC0" and info.display_name == "Stripes"
    assert "model written" in capsys.readouterr().out
    # Same name again: refused, nothing overwritten; export a checkpoint elsewhere instead.
    assert main(args) == 2
    assert "already exists: add --overwrite" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "run"), "--output", str(tmp_path / "copy.impasto")]) == 0
    assert read_info(tmp_path / "copy.impasto").training["steps"] == 4


def test_calibrate_adds_int8_ranges_to_existing_models(tmp_path, photos, monkeypatch, capsys):
    monkeypatch.setenv("IMPASTO_MODELS_DIR", str(tmp_path / "models"))
    make_model(tmp_path / "models", "old", width="compact")
    make_model(tmp_path / "models", "upscaler", kind="sr")
    before = load_model(tmp_path / "models" / "old.impasto")[0].state_dict()
    assert main(["calibrate", "old", "--dataset", str(photos)]) == 0
    net, info = load_model(tmp_path / "models" / "old.impasto")
    assert len(info.int8_ranges) == len(conv_layers(net))
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # weights kept
    assert "calibrated old" in capsys.readouterr().out
    assert main(["calibrate", "upscaler", "--dataset", str(photos)]) == 2
    assert "not a style model" in capsys.readouterr().err
    assert main(["calibrate", "nope", "--dataset", str(photos)]) == 2
    assert "unknown style 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "change, message",
    [
        (["--style-image", "missing.jpg"], "style image not found: missing.jpg"),
        (["--name", "my model!"], "invalid --name 'my model!'"),
        (["--dataset", "EMPTY"], "no readable photos in"),
        (["--batch-size", "9"], "only 8 readable photos"),
        (["--loss-weights", "BAD"], "not a readable mobilenet_v2 checkpoint"),
        (["--resume"], "no checkpoint at"),
        (["--steps", "0"], "--steps must be at least 1"),  # was: 0 read as the paper's 40000
        (["--init-model", "missing.impasto"], "--init-model: no such model file"),
        (["--init-model", "BAD"], "--init-model: bad.pth"),
    ],
)
def test_bad_input_is_one_clear_error_line(tmp_path, photos, painting, capsys, change, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.pth").write_bytes(b"\x00" * 100)
    args = [
        "style",
        "--style-image",
        str(painting),
        "--name",
        "ok",
        "--output",
        str(tmp_path / "o"),
    ]
    args += tiny_args(tmp_path, photos, "--steps", "1")
    change = [
        {"EMPTY": str(tmp_path / "empty"), "BAD": str(tmp_path / "bad.pth")}.get(c, c)
        for c in change
    ]
    assert main(args + change) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_vgg16_without_internet_or_file_points_to_mobilenet(
    tmp_path, photos, painting, capsys, monkeypatch
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(lossnets, "VGG16_URL", "http://127.0.0.1:9/vgg16-397923af.pth")
    args = ["style", "--style-image", str(painting), "--name", "v", "--output", str(tmp_path / "o")]
    args += tiny_args(tmp_path, photos, "--steps", "1", "--loss-network", "vgg16")
    assert main(args) == 2
    assert "--loss-network mobilenet_v2 (works offline)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_sr_command_checks_the_crop_fits_the_scale(tmp_path, photos, capsys):
    args = ["sr", "--name", "x4", "--output", str(tmp_path / "o")]
    assert main(args + tiny_args(tmp_path, photos, "--image-size", "30")) == 2
    assert "multiple of 4" in capsys.readouterr().err
    assert main(args + tiny_args(tmp_path, photos, "--image-size", "32", "--blocks", "40")) == 2
    assert "blocks=40 is outside 1 to 32" in capsys.readouterr().err  # what a model file may hold


@pytest.mark.slow
def ctrl_c_at(args: list[str], line_start: str) -> tuple[int, str, str]:
    """Run a trainer command and press Ctrl-C (SIGINT to its process group) at the first output
    line that starts with ``line_start``; its exit code, stdout and stderr."""
    process = subprocess.Popen(
        args, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    for line in process.stdout:
        if line.startswith(line_start):
            os.killpg(process.pid, signal.SIGINT)
            break
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def test_ctrl_c_checkpoints_and_resume_finishes(tmp_path, photos, painting):
    """A real SIGINT (as Ctrl-C sends to the whole process group, decoding workers included)."""
    args = [sys.executable, "-m", "trainer", "style", "--style-image", str(painting), "--name", "c"]
    args += ["--output", str(tmp_path / "c.impasto"), "--width", "compact"]
    args += tiny_args(tmp_path, photos, "--workers", "1", "--steps", "1000")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    returncode, out, err = ctrl_c_at(args, "step 2/")
    assert returncode == 1, err
    assert "--resume" in out and "Traceback" not in err
    stopped_at = load_checkpoint(tmp_path / "run")["step"]
    assert stopped_at >= 2 and not (tmp_path / "c.impasto").exists()
    steps = str(stopped_at + 1)
    done = subprocess.run(
        [*args[:-1], steps, "--resume"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert f"resuming c at step {stopped_at}" in done.stdout
    assert read_info(tmp_path / "c.impasto").training["steps"] == stopped_at + 1


def test_loss_form_chooses_its_weights_and_content_layer(tmp_path, photos, painting):
    def config(*extra: str):
        argv = ["style", "--style-image", str(painting), "--dataset", str(photos), "--name", "x",
                "--steps", "5", "--output", str(tmp_path / "x.impasto"), *extra]  # fmt: skip
        return config_from_args(build_parser().parse_args(argv), argv)

    paper = config()  # the default: Johnson et al.'s form with each network's weights
    assert (paper.loss_form, paper.content_weight, paper.style_weight) == ("paper", 1e5, 1e9)
    assert paper.content_layer == ""
    # The colour guide and the range term follow the content weight: on by default on any network.
    assert (paper.colour_weight, paper.range_weight) == (1e7, 1e5)
    assert config("--colour-weight", "0").colour_weight == 0.0
    relative = config("--loss-form", "relative")  # the same weights on every network
    assert (relative.content_weight, relative.style_weight, relative.tv_weight) == (1.0, 1.0, 0.0)
    assert relative.colour_weight == 100.0
    assert relative.content_layer == "block3"  # block6 is 16x16 at 128-px crops
    chosen = config("--loss-form", "relative", "--style-weight", "3", "--content-layer", "block6")
    assert (chosen.style_weight, chosen.content_layer) == (3.0, "block6")
