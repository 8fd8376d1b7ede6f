"""Lists installed models: shipped ones in weights/ and the user's own in the user models folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from core.modelfile import SUFFIX, ModelFileError, ModelInfo, read_info

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "weights"
MODELS_ENV = "IMPASTO_MODELS_DIR"


class UnknownModelError(LookupError):
    """No installed model has the requested name."""


def user_models_dir() -> Path:
    """Folder for user-trained models: $IMPASTO_MODELS_DIR, else the platform's user data dir."""
    override = os.environ.get(MODELS_ENV)
    return Path(override) if override else Path(platformdirs.user_data_dir("impasto")) / "models"


def model_dirs() -> list[Path]:
    """Folders searched for models, user folder first so a user's model can replace a shipped one."""
    return [user_models_dir(), SHIPPED_DIR]


@dataclass
class BrokenModel:
    """An installed model file that cannot be used, and why."""

    path: Path
    reason: str


def scan_models(kind: str | None = None) -> tuple[list[ModelInfo], list[BrokenModel]]:
    """Installed models sorted by name (optionally one kind, "style" or "sr"), and the files that
    cannot be read: one broken file never hides the others."""
    found: dict[str, ModelInfo] = {}
    broken: dict[str, BrokenModel] = {}
    for folder in model_dirs():
        for path in sorted(folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []:
            if path.stem in found or path.stem in broken:
                continue
            try:
                info = read_info(path)
            except (ModelFileError, OSError) as e:
                broken[path.stem] = BrokenModel(path, str(e))
                continue
            if kind is None or info.kind == kind:
                found[path.stem] = info
    return sorted(found.values(), key=lambda m: m.name), list(broken.values())


def list_models(kind: str | None = None) -> list[ModelInfo]:
    """Installed models sorted by name, optionally only one kind; unreadable files are left out."""
    return scan_models(kind)[0]


def find_model(name: str, kind: str | None = None) -> Path:
    """Path of the installed model called ``name``; the error lists the known ones."""
    for folder in model_dirs():
        path = folder / f"{name}{SUFFIX}"
        if path.is_file():
            return path
    known = ", ".join(m.name for m in list_models(kind)) or "none installed"
    what = {"style": "style", "sr": "upscaling model"}.get(kind or "", "model")
    raise UnknownModelError(f"unknown {what} {name!r}; known: {known}")


def model_path(model: str | Path, kind: str | None = None) -> Path:
    """A path if ``model`` is one (a Path, ends with the suffix or has a separator), else by name."""
    text = str(model)
    if isinstance(model, Path) or text.endswith(SUFFIX) or "/" in text or os.sep in text:
        path = Path(model).expanduser()
        if not path.is_file():
            raise ModelFileError(f"model file not found: {path}")
        return path.resolve()
    return find_model(text, kind).resolve()
