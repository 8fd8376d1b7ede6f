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
# Part of every cache key: raise it when the traced graph (or an entry's layout) changes for the
# same weights. 9: entries became folders with a manifest.
GRAPH_VERSION = 9
FORMS = ("whole", "stats", "frozen")
MANIFEST = "manifest.json"
NORMS = "norms.npy"

Notify = Callable[[str], None]


@dataclass
class Prepared:
    """A model's OpenVINO graphs by form, and its norms' (weight, bias, eps) as a (3, channels)
    array in the order of the packed statistics ((3, 0) without instance norm)."""

    forms: dict[str, Any]  # openvino.Model by form name
    norms: np.ndarray
    folder: Path | None = None  # the cache entry holding the forms not read yet

    def form(self, name: str, core: Any) -> Any:
        """The openvino.Model of form ``name``, read from the entry when first needed: reading
        one takes 0.03-0.05 s, and an image that fits one tile needs only the whole form."""
        if name not in self.forms:
            self.forms[name] = core.read_model(self.folder / f"{name}.xml")
        return self.forms[name]


def cache_dir() -> Path:
    """Where prepared models are kept: $IMPASTO_CACHE_DIR, else the user cache folder."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_cache_dir("impasto"))


def entry_dir(model_path: Path, precision: str) -> Path:
    """The cache folder of ``model_path`` prepared for ``precision``, named by its content."""
    return _entry(model_path, precision)[0]


def prepare(
    model_path: Path, precision: str, int8_ranges: list[list[float]], notify: Notify | None = None
) -> Prepared:
    """The model prepared for ``precision``: from the cache when a valid entry exists, else
    converted (``notify`` is told first: it takes seconds) and stored for next time.

    core.convert's errors (CalibrationError for bad int8 ranges) pass through.
    """

    folder, key = _entry(model_path, precision)
    cached = _load(folder, key)
    if cached is not None:
        return cached
    if notify is not None:
        notify(f"preparing {model_path.stem} for this computer (once per model, a few seconds)")
    from core.convert import convert  # imports torch: only here

    prepared = convert(model_path, precision, int8_ranges)
    _store(folder, key, prepared)
    _drop_replaced(folder, key)
    return prepared


def _entry(model_path: Path, precision: str) -> tuple[Path, dict[str, Any]]:
    """The entry's folder and key: the model file's SHA-256 (1-4 ms), precision, graph version."""
    content = hashlib.sha256(model_path.read_bytes()).hexdigest()
    import openvino as ov

    key = {
        "model_sha256": content,
        "precision": precision,
        "graph_version": GRAPH_VERSION,
        "openvino": ov.get_version(),  # a new OpenVINO converts anew
    }
    key["id"] = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / "openvino" / f"{model_path.stem}-{key['id']}", key


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load(folder: Path, key: dict[str, Any]) -> Prepared | None:
    """The entry in ``folder`` if its manifest matches ``key`` and every file its hash, else None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if not isinstance(manifest, dict) or manifest.get("key") != key:
            return None
        files = manifest["files"]
        if any(_sha256(folder / name) != digest for name, digest in files.items()):
            return None
        if set(files) != {*(f"{form}{ext}" for form in FORMS for ext in (".xml", ".bin")), NORMS}:
            return None
        norms = np.load(folder / NORMS, allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing, stale or damaged: prepared again
    if norms.ndim != 2 or norms.shape[0] != 3:
        return None
    return Prepared({}, norms.astype(np.float32), folder)


def _drop_replaced(folder: Path, key: dict[str, Any]) -> None:
    """Remove entries of earlier contents of the same model name and precision (a retrained or
    recalibrated model), so the cache does not grow with every training run."""
    cut = len(key["id"]) + 1
    stem = folder.name[:-cut]
    for other in folder.parent.glob(f"{stem}-*"):
        if other.name[:-cut] != stem:
            continue  # another model whose name starts the same ("tiny-2" for "tiny")
        try:
            old = json.loads((other / MANIFEST).read_text())["key"]
            if old["id"] != key["id"] and old["precision"] == key["precision"]:
                shutil.rmtree(other)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not an entry, or another process's: left alone


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
