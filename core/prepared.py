"""Models prepared for OpenVINO, kept on disk so a prepared model runs without importing torch.

Preparing (core.convert: tracing the network with torch, ~1 s to import and seconds to trace)
gives three OpenVINO graphs (the forms of core.ovruntime) and the instance norms' parameters. An
entry is a folder keyed by the model file's content, the precision and GRAPH_VERSION; its
manifest, written last, holds the SHA-256 of every other file, so a stale, half-written or
damaged entry is never used: it is prepared again and replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "IMPASTO_CACHE_DIR"
# Part of every cache key: raise it when the traced graph changes for the same weights.
GRAPH_VERSION = 9
FORMS = ("whole", "stats", "frozen")
MANIFEST = "manifest.json"
NORMS = "norms.npy"

Notify = Callable[[str], None]


@dataclass
class Prepared:
    """A model's OpenVINO graphs by form, and its norms' (weight, bias, eps) as a (3, channels)
    array in the order of the packed statistics ((3, 0) without instance norm)."""

    forms: dict[str, Any]  # openvino.Model
    norms: np.ndarray


def cache_dir() -> Path:
    """Where prepared models are kept: $IMPASTO_CACHE_DIR, else the user cache folder."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_cache_dir("impasto"))


def entry_dir(model_path: Path, precision: str) -> Path:
    """The cache folder of ``model_path`` prepared for ``precision``, named by its content."""
    return cache_dir() / "openvino" / f"{model_path.stem}-{_key(model_path, precision)['id']}"


def prepare(
    model_path: Path, precision: str, int8_ranges: list[list[float]], notify: Notify | None = None
) -> Prepared:
    """The model prepared for ``precision``: from the cache when a valid entry exists, else
    converted (``notify`` is told first: it takes seconds) and stored for next time.

    core.convert's errors (CalibrationError for bad int8 ranges) pass through.
    """
    import openvino as ov

    core = ov.Core()
    key = _key(model_path, precision)
    folder = cache_dir() / "openvino" / f"{model_path.stem}-{key['id']}"
    cached = _load(core, folder, key)
    if cached is not None:
        return cached
    if notify is not None:
        notify(f"preparing {model_path.stem} for this computer (once per model, a few seconds)")
    from core.convert import convert  # imports torch: only here

    prepared = convert(model_path, precision, int8_ranges)
    _store(folder, key, prepared)
    return prepared


def is_prepared(model_path: Path, precision: str) -> bool:
    """Whether a valid cache entry exists for the model and precision."""
    import openvino as ov

    key = _key(model_path, precision)
    return _load(ov.Core(), entry_dir(model_path, precision), key) is not None


def _key(model_path: Path, precision: str) -> dict[str, Any]:
    content = hashlib.sha256(model_path.read_bytes()).hexdigest()
    parts = {"model_sha256": content, "precision": precision, "graph_version": GRAPH_VERSION}
    parts["id"] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]
    return parts


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load(core: Any, folder: Path, key: dict[str, Any]) -> Prepared | None:
    """The entry in ``folder`` if its manifest matches ``key`` and every file its hash, else None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if not isinstance(manifest, dict) or manifest.get("key") != key:
            return None
        files = manifest["files"]
        if any(_sha256(folder / name) != digest for name, digest in files.items()):
            return None
        norms = np.load(folder / NORMS, allow_pickle=False)
        forms = {form: core.read_model(folder / f"{form}.xml") for form in FORMS}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError):
        return None  # missing, stale or damaged: prepared again
    if norms.ndim != 2 or norms.shape[0] != 3:
        return None
    return Prepared(forms, norms.astype(np.float32))


def _store(folder: Path, key: dict[str, Any], prepared: Prepared) -> None:
    """Write the entry into a temporary folder, then move it in place; a cache folder that
    cannot be written only costs preparing again next time."""
    import openvino as ov

    tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for form, model in prepared.forms.items():
            ov.save_model(model, tmp / f"{form}.xml", compress_to_fp16=False)
        np.save(tmp / NORMS, prepared.norms, allow_pickle=False)
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
        (tmp / MANIFEST).write_text(json.dumps({"key": key, "files": files}, indent=1))
        shutil.rmtree(folder, ignore_errors=True)  # a stale or damaged entry
        os.replace(tmp, folder)
    except (OSError, RuntimeError):  # OpenVINO reports write errors as RuntimeError
        pass
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
