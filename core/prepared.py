"""Models prepared for OpenVINO, kept on disk so a prepared model runs without importing torch.

Preparing a model (core.convert: torch, ~1 s to import, then ~1-3 s to trace and convert each
form) gives the instance norms' parameters and three OpenVINO graphs, the forms of
core.ovruntime; each is converted when a job first needs it (an image that fits one tile needs
only the whole form), or all at once by `python -m core prepare`. An entry is a folder keyed by
the model file's content, the precision, GRAPH_VERSION and OpenVINO's version. Each part (the
norms, each form) has a manifest written after its files, with their SHA-256: a stale,
half-written or damaged part is never used, it is converted again and replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "IMPASTO_CACHE_DIR"
# Part of every cache key: raise it when the traced graph (or an entry's layout) changes for the
# same weights. 9: entries became folders with a manifest per part.
GRAPH_VERSION = 9
FORMS = ("whole", "stats", "frozen")
NORMS = "norms"

Notify = Callable[[str], None]


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


class Prepared:
    """A model prepared for OpenVINO: its norms' (weight, bias, eps) as a (3, channels) array in
    the order of the packed statistics ((3, 0) without instance norm), and its forms on demand.

    Raises core.quantize.CalibrationError (a ValueError) for int8 ranges that do not fit.
    """

    def __init__(
        self,
        model_path: Path,
        precision: str,
        int8_ranges: list[list[float]],
        notify: Notify | None = None,
    ) -> None:
        self.model_path, self.precision, self.int8_ranges = model_path, precision, int8_ranges
        self.notify = notify
        self.folder, self.key = _entry(model_path, precision)
        self.forms: dict[str, Any] = {}  # openvino.Model by form name
        self._converter: Any = None  # core.convert.Converter, once something is converted
        norms = _read_part(self.folder, self.key, NORMS)
        if norms is None:
            self.norms = self._convert().norms
            _write_part(self.folder, self.key, NORMS, self.norms)
            _drop_replaced(self.folder, self.key)
        else:
            self.norms = np.load(self.folder / f"{NORMS}.npy", allow_pickle=False)

    def form(self, name: str, core: Any) -> Any:
        """The openvino.Model of form ``name``: read from the entry (0.03-0.05 s), else converted
        and stored there."""
        if name not in self.forms:
            if _read_part(self.folder, self.key, name) is not None:
                self.forms[name] = core.read_model(self.folder / f"{name}.xml")
            else:
                self.forms[name] = self._convert().form(name)
                _write_part(self.folder, self.key, name, self.forms[name])
        return self.forms[name]

    def complete(self, core: Any) -> None:
        """Every form converted and stored, so no later job converts anything."""
        for name in FORMS:
            self.form(name, core)

    def _convert(self) -> Any:
        if self._converter is None:
            if self.notify is not None:
                self.notify(
                    f"preparing {self.model_path.stem} for this computer (once per model, "
                    "a few seconds)"
                )
            from core.convert import Converter  # imports torch: only here

            self._converter = Converter(self.model_path, self.precision, self.int8_ranges)
        return self._converter


def _entry(model_path: Path, precision: str) -> tuple[Path, dict[str, Any]]:
    """The entry's folder and key: the model file's SHA-256 (1-4 ms), precision, graph and
    OpenVINO versions (a new OpenVINO converts anew)."""
    import openvino as ov

    key = {
        "model_sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
        "precision": precision,
        "graph_version": GRAPH_VERSION,
        "openvino": ov.get_version(),
    }
    key["id"] = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / "openvino" / f"{model_path.stem}-{key['id']}", key


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _part_files(name: str) -> tuple[str, ...]:
    return (f"{name}.npy",) if name == NORMS else (f"{name}.xml", f"{name}.bin")


def _read_part(folder: Path, key: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The manifest of part ``name`` if it matches ``key`` and every file its hash, else None."""
    try:
        manifest = json.loads((folder / f"{name}.json").read_text())
        files = manifest["files"]
        if manifest["key"] != key or set(files) != set(_part_files(name)):
            return None
        if any(_sha256(folder / file) != digest for file, digest in files.items()):
            return None
        if name == NORMS:
            norms = np.load(folder / f"{NORMS}.npy", allow_pickle=False)
            if norms.ndim != 2 or norms.shape[0] != 3 or norms.dtype != np.float32:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing, stale or damaged: converted again
    return manifest


def _write_part(folder: Path, key: dict[str, Any], name: str, value: Any) -> None:
    """Write part ``name`` (norms array or openvino.Model): files under temporary names, moved in
    place, then the manifest. A cache folder that cannot be written only costs converting again
    next time."""
    import openvino as ov

    tmp = folder / f".{name}.{os.getpid()}.tmp"
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        if name == NORMS:
            np.save(tmp / f"{NORMS}.npy", value, allow_pickle=False)
        else:
            ov.save_model(value, tmp / f"{name}.xml", compress_to_fp16=False)
        files = {file: _sha256(tmp / file) for file in _part_files(name)}
        (folder / f"{name}.json").unlink(missing_ok=True)  # the old part is invalid from here
        for file in files:
            os.replace(tmp / file, folder / file)
        (tmp / "manifest").write_text(json.dumps({"key": key, "files": files}, indent=1))
        os.replace(tmp / "manifest", folder / f"{name}.json")
    except (OSError, RuntimeError):  # OpenVINO reports write errors as RuntimeError
        pass
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)


def _drop_replaced(folder: Path, key: dict[str, Any]) -> None:
    """Remove entries of earlier contents of the same model name and precision (a retrained or
    recalibrated model), so the cache does not grow with every training run."""
    cut = len(key["id"]) + 1
    stem = folder.name[:-cut]
    for other in folder.parent.glob(f"{stem}-*"):
        if other == folder or other.name[:-cut] != stem:
            continue  # ours, or another model whose name starts the same ("tiny-2" for "tiny")
        try:
            if (
                json.loads((other / f"{NORMS}.json").read_text())["key"]["precision"]
                == key["precision"]
            ):
                shutil.rmtree(other)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not an entry, or another process's: left alone
