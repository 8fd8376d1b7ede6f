"""Warming: a model chosen in a dialog is loaded before OK, and health says when that is done."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.client import Client, ImpastoError
from tests.conftest import make_model
from tests.core.test_client import use_folders
from tests.core.test_server import start_server, wait_until


def test_a_warmed_model_runs_its_first_job_without_loading(tmp_path: Path) -> None:
    models = tmp_path / "models"
    make_model(models, "wide", width="full")
    make_model(models, "sr", kind="sr")
    with pytest.MonkeyPatch.context() as env:
        use_folders(env, tmp_path, models)
        server = start_server(tmp_path)
        try:
            client = Client(autostart=False)
            assert client.health()["ready"] and client.health()["warm"] == []
            client.warm("wide")  # answers at once; the load runs in the background
            wait_until(lambda: client.health()["ready"], "the warm-up to finish")
            assert client.health()["warm"] == ["wide"]
            phases: list[str] = []
            image = np.zeros((64, 64, 3), np.uint8)
            client.stylize(image.tobytes(), 64, 64, 3, "wide", phase=phases.append)
            assert "loading" not in phases  # the job did not wait for the model
            with pytest.raises(ImpastoError) as unknown:
                client.warm("nope")
            assert unknown.value.code == "unknown_model"
            with pytest.raises(ImpastoError) as wrong:
                client.warm("sr")  # a style is warmed by default: sr is an upscaler
            assert wrong.value.code == "wrong_kind"
            client.warm("sr", kind="sr")
        finally:
            server.stop()
