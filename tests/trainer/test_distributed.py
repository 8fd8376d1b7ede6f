"""Data-parallel training with torchrun: two CPU processes (gloo) keep identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.networks import build_network
from tests.trainer.conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]

WORKER = """
import json, os, sys, torch
from trainer.config import TrainConfig
from trainer.loop import train
result = train(TrainConfig.from_dict(json.loads(sys.argv[1])))
torch.save(result.net.state_dict(), sys.argv[2] + f"/rank{os.environ['RANK']}.pt")
"""


@pytest.mark.slow
def test_two_processes_train_and_keep_identical_weights(tmp_path, photos, painting):
    config = tiny_config(tmp_path / "ddp", photos, painting, batch_size=1, steps=3)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(
        [*command, str(script), json.dumps(config.to_dict()), str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    torch.manual_seed(config.seed)
    initial = build_network("style", width="compact").state_dict()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    assert not torch.equal(rank0["conv_out.1.weight"], initial["conv_out.1.weight"])
    assert "2 process(es)" in done.stdout
    assert (tmp_path / "ddp" / "models" / "tiny_run.impasto").is_file()  # written once, by rank 0
