"""Impasto model files: network weights plus metadata, loaded without executing code.

A model file is a torch.save archive. Its metadata is read without importing torch (listing
models and running a prepared one need no torch, which takes ~1 s to import): the archive's
pickle is read with an unpickler that knows only the few objects a model file holds.
"""

from __future__ import annotations

import collections
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.netspec import check_options

if TYPE_CHECKING:
    from torch import nn

FORMAT = "impasto-model"
FORMAT_VERSION = 1
SUFFIX = ".impasto"


class ModelFileError(Exception):
    """A model file is missing, corrupt, unsafe or of an unknown format."""


@dataclass
class ModelInfo:
    """What a model file says about itself."""

    name: str
    kind: str  # "style" or "sr"
    arch: str  # "style" or "sr": the network to build
    options: dict[str, Any] = field(
        default_factory=dict
    )  # network options, e.g. {"width": "compact"}
    display_name: str = ""
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)  # command, settings, final losses
    credit: str = ""  # style image: title, artist, licence
    # (low, high) of each convolution's input on calibration photos (core.quantize.calibrate);
    # empty: the model runs in fp32 on the CPU, not int8.
    int8_ranges: list[list[float]] = field(default_factory=list)
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain metadata, as stored in the file and sent by the server."""
        d = {k: v for k, v in self.__dict__.items() if k != "path"}
        d["display_name"] = self.display_name or self.name
        return d


def save_model(path: str | Path, net: nn.Module, info: ModelInfo, half: bool = True) -> Path:
    """Write a model file atomically; ``half`` stores weights as fp16 (half the size)."""
    path = Path(path)
    state = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in net.state_dict().items()
    }
    blob = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "meta": info.to_dict(),
        "state_dict": state,
    }
    write_atomically(blob, path)
    return path


def write_atomically(obj: Any, path: Path) -> None:
    """torch.save ``obj`` to ``path`` via a synced temporary file: a crash or full disk leaves
    the previous file intact; a failed write raises OSError."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:  # torch reports a full disk as a failed zip write
            raise OSError(f"writing {path.name} failed, is the disk full? ({e})") from None
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _refused(path: Path, unsafe: str) -> ModelFileError:
    return ModelFileError(
        f"{path.name} was refused: it asks to run code or build objects other than "
        f"weights ({unsafe}); only trust model files from Impasto or your "
        "own training runs"
    )


def _unreadable(path: Path, why: str = "") -> ModelFileError:
    detail = f" ({why})" if why else ""
    return ModelFileError(
        f"{path.name} is not a readable model file{detail}; it may be truncated or corrupt: "
        "re-download or retrain it"
    )


class _Tensor:
    """Stands for a tensor of the archive, which metadata reading skips."""

    def __init__(self, *args: object) -> None:
        pass


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles a torch.save archive's data.pkl with tensors as placeholders; any other object
    than plain data, an ordered dict or a tensor is refused, never built."""

    ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _Tensor,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return _Tensor  # the storage type inside a tensor's reference
        raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        return None  # a tensor's storage: not read


def _read_metadata_blob(path: Path) -> dict[str, Any]:
    """The archive's top-level dict with every tensor a placeholder; torch is not imported."""
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            (name,) = [n for n in archive.namelist() if n.endswith("/data.pkl")] or [""]
            if not name:
                raise _unreadable(path)
            return _MetadataUnpickler(archive.open(name)).load()
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):
            raise _refused(path, str(e).strip()) from None
        raise _unreadable(path) from None
    except ModelFileError:
        raise
    except Exception as e:  # not a zip, truncated, ...
        raise _unreadable(path, type(e).__name__) from None


def _check_blob(path: Path, blob: object) -> dict[str, Any]:
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ModelFileError(f"{path.name} is not an Impasto model file")
    version = blob.get("version", 0)
    if not isinstance(version, int):
        raise ModelFileError(f"{path.name} is not an Impasto model file (bad format version)")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path.name} needs a newer Impasto (format {version})")
    return blob


def _read(path: Path) -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        # weights_only=True: a file that tries to run code is refused, never executed.
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        unsafe = [line for line in str(e).splitlines() if "Unsupported global" in line]
        if unsafe:
            raise _refused(path, unsafe[0].strip()) from None
        raise _unreadable(path) from None
    except Exception as e:  # truncated zip, random bytes, ...
        raise _unreadable(path, type(e).__name__) from None
    return _check_blob(path, blob)


# The type each metadata field must have; anything else is a broken (or hostile) file.
_FIELD_TYPES = {
    "name": str,
    "kind": str,
    "arch": str,
    "options": dict,
    "display_name": str,
    "description": str,
    "training": dict,
    "credit": str,
    "int8_ranges": list,
}


def _info(path: Path, meta: Any) -> ModelInfo:
    """The checked metadata: every field of the right type, a known kind and a buildable network."""
    broken = f"{path.name} has broken metadata"
    if not isinstance(meta, dict):
        raise ModelFileError(f"{broken} (no metadata table): re-download or retrain it")
    known = {k: meta[k] for k in _FIELD_TYPES if k in meta}
    for key, value in known.items():
        if not isinstance(value, _FIELD_TYPES[key]):
            raise ModelFileError(
                f"{broken} ({key} is a {type(value).__name__}, not a {_FIELD_TYPES[key].__name__})"
            )
    try:
        info = ModelInfo(**known, path=path)
    except TypeError as e:
        raise ModelFileError(f"{path.name} has incomplete metadata: {e}") from None
    if info.kind not in ("style", "sr"):
        raise ModelFileError(f"{broken} (unknown kind {info.kind[:40]!r}, not 'style' or 'sr')")
    problem = check_options(info.arch, info.options)
    if problem:
        raise ModelFileError(f"{broken} ({problem})")
    return info


def read_info(path: str | Path) -> ModelInfo:
    """Read only the metadata of a model file, without importing torch."""
    path = Path(path)
    return _info(path, _check_blob(path, _read_metadata_blob(path)).get("meta"))


def load_model(path: str | Path) -> tuple[nn.Module, ModelInfo]:
    """Load a model file into an fp32 network in eval mode."""
    from core.networks import build_network

    path = Path(path)
    blob = _read(path)
    info = _info(path, blob.get("meta"))
    try:
        net = build_network(info.arch, **info.options)
        net.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
    except (ValueError, TypeError, RuntimeError, KeyError) as e:
        raise ModelFileError(f"{path.name} does not match its architecture: {e}") from None
    return net.eval(), info
