"""Model files: round trip, refusal of files that carry code, clear errors, registry listing."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from core.modelfile import ModelFileError, load_model, read_info
from core.registry import SHIPPED_DIR, UnknownModelError, find_model, list_models
from tests.conftest import make_model


def test_round_trip_keeps_weights_and_metadata(tmp_path: Path) -> None:
    path = make_model(tmp_path, "roundtrip", width="compact")
    net, info = load_model(path)
    assert info.kind == "style" and info.options == {"width": "compact"}
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32)
    reference, _ = load_model(path)
    assert torch.equal(net(x), reference(x))
    assert path.stat().st_size < 1_000_000  # fp16 storage of the compact net


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/impasto-pwned"),))


def test_file_that_runs_code_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.impasto"
    torch.save({"format": "impasto-model", "payload": _Exploit()}, evil)
    Path("/tmp/impasto-pwned").unlink(missing_ok=True)
    with pytest.raises(ModelFileError, match="refused"):
        load_model(evil)
    assert not Path("/tmp/impasto-pwned").exists()


@pytest.mark.parametrize(
    "content, message",
    [(b"", "not a readable"), (b"garbage" * 10, "not a readable"), (None, "not found")],
)
def test_corrupt_or_missing_file_has_clear_error(tmp_path: Path, content, message) -> None:
    path = tmp_path / "bad.impasto"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelFileError, match=message):
        read_info(path)


def test_truncated_file_is_reported(tmp_path: Path) -> None:
    path = make_model(tmp_path, "cut", width="compact")
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        load_model(path)


def test_plain_pickle_is_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "plain.impasto"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ModelFileError, match="not an Impasto model"):
        load_model(path)
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ModelFileError):
        load_model(path)


def test_registry_lists_user_models_and_skips_broken(models_dir: Path) -> None:
    (models_dir / "broken.impasto").write_bytes(b"nope")
    names = [m.name for m in list_models("style")]
    assert "tiny" in names and "wide" in names and "broken" not in names and "sr" not in names
    assert {"sr", "sr-faithful", "sr-sharp"} <= {m.name for m in list_models("sr")}
    assert find_model("tiny") == models_dir / "tiny.impasto"
    with pytest.raises(UnknownModelError, match="known: .*tiny"):
        find_model("nonexistent", kind="style")


def test_user_model_replaces_shipped_one_of_the_same_name(models_dir: Path) -> None:
    make_model(models_dir, "udnie", width="compact")
    assert find_model("udnie") == models_dir / "udnie.impasto"
    assert [m.path for m in list_models() if m.name == "udnie"] == [models_dir / "udnie.impasto"]


def test_shipped_models_load_with_credits_and_training_record() -> None:
    shipped = {p.stem: p for p in SHIPPED_DIR.glob("*.impasto")}
    assert {"starry-night", "great-wave", "the-scream", "composition-vii", "udnie"} <= set(shipped)
    assert {"sr-faithful", "sr-sharp"} <= set(shipped)
    for name, path in shipped.items():
        net, info = load_model(path)
        assert info.name == name and info.training["command"].startswith("python -m trainer")
        if info.kind == "style":
            assert "public domain" in info.credit
            out = net(torch.rand(1, 3, 32, 32))
            assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()
