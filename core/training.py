"""The server's training job: one `python -m trainer style --minutes` run at a time, in its own
process (so it outlives the client that asked and can be cancelled), its model installed only
once it is complete. Standard library only: the GIMP plug-in uses the photo-folder check.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".webp",
    ".tif",
    ".tiff",
    ".ppm",
)  # trainer.data's
# Each step trains on one batch of distinct photos (4), and a style learnt from a handful of
# photos copies their content: 20 is the least that generalises to the user's other pictures.
MIN_PHOTOS = 20
MINUTES = (0.1, 24 * 60.0)
STYLE_SIZES = (64, 1024)  # the painting's longer side while training: "strokes"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # trainer.cli's --name, bounded
# Extra trainer options for tests (tiny crops), read from the server's environment: not an API.
EXTRA_ARGS_ENV = "IMPASTO_TRAIN_ARGS"
STEP_LINE = re.compile(r"step (\d+)/(\d+) .*ETA (\S+)")


def png_bytes(rgb: bytes, width: int, height: int) -> bytes:
    """8-bit RGB pixels as a PNG file (the painting the client hands the server)."""
    rows = b"".join(b"\0" + rgb[y * width * 3 : (y + 1) * width * 3] for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


class TrainingRefused(Exception):
    """A training request that cannot start: HTTP status, code, message for the user."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def count_photos(folder: str | Path, enough: int = MIN_PHOTOS) -> int:
    """How many image files ``folder`` holds (recursively), counting no further than ``enough``."""
    count = 0
    for _, _, files in os.walk(folder):
        count += sum(Path(f).suffix.lower() in IMAGE_SUFFIXES for f in files)
        if count >= enough:
            return count
    return count


def photo_folder_problem(folder: str | Path) -> str | None:
    """Why ``folder`` cannot train a style (None if it can), with how many photos it needs and why."""
    if not str(folder) or not Path(folder).is_dir():
        return f"the photo folder {folder} does not exist: choose a folder of your own photos"
    found = count_photos(folder)
    if found < MIN_PHOTOS:
        return (
            f"{folder} holds {found} photos; training needs at least {MIN_PHOTOS} of your own "
            "(every step learns from a batch of 4 different photos, and a style learnt from a "
            "few photos copies them instead of painting new ones)"
        )
    return None


class TrainingJob:
    """One training at a time: start, status, cancel; the model appears in the user models folder
    only when the run has written it whole."""

    def __init__(self, runs_dir: Path, models_dir: Path) -> None:
        self.runs_dir, self.models_dir = runs_dir, models_dir
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._state: dict[str, Any] = {"state": "idle"}
        self._cancelled = False

    def busy(self) -> bool:
        """Whether a training is running (the server must not exit while it does)."""
        with self._lock:
            return self._state["state"] == "running"

    def status(self) -> dict[str, Any]:
        """The current or last training: state, name, step, steps, eta, message, model."""
        with self._lock:
            return dict(self._state)

    def start(self, params: dict[str, str]) -> dict[str, Any]:
        """Start the run ``params`` describe (name, painting, photos, minutes, style_size)."""
        name, painting, photos = (params.get(k, "") for k in ("name", "painting", "photos"))
        minutes = _number(params, "minutes", 20.0, MINUTES)
        style_size = int(_number(params, "style_size", 256, STYLE_SIZES))
        if not NAME.fullmatch(name):
            raise TrainingRefused(400, "bad_request", f"invalid style name {name!r}: use letters, "
                                  "digits, '_', '.' and '-'")  # fmt: skip
        if not Path(painting).is_file():
            raise TrainingRefused(400, "bad_request", f"painting not found: {painting}")
        problem = photo_folder_problem(photos)
        if problem:
            raise TrainingRefused(400, "too_few_photos", problem)
        if (self.models_dir / f"{name}.impasto").exists():
            raise TrainingRefused(
                409, "exists", f"a style called {name!r} exists: pick another name"
            )
        with self._lock:
            if self._state["state"] == "running":
                raise TrainingRefused(
                    409, "busy", f"{self._state['name']!r} is training: wait or cancel it first"
                )
            run_dir = self.runs_dir / name
            shutil.rmtree(run_dir, ignore_errors=True)  # an earlier cancelled or failed run
            run_dir.mkdir(parents=True)
            # The client's file is temporary: the run keeps its own copy (and shows what it used).
            shutil.copyfile(painting, run_dir / "painting.png")
            output = run_dir / f"{name}.impasto"
            command = [
                sys.executable, "-m", "trainer", "style", "--name", name,
                "--style-image", str(run_dir / "painting.png"), "--dataset", photos, "--minutes", f"{minutes:g}",
                "--style-size", str(style_size), "--run-dir", str(run_dir / "run"),
                "--output", str(output), "--description", "Your own style, trained in Impasto",
                *shlex.split(os.environ.get(EXTRA_ARGS_ENV, "")),
            ]  # fmt: skip
            repo = Path(__file__).resolve().parent.parent
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]),
            }
            log = (run_dir / "train.log").open("w")
            self._process = subprocess.Popen(
                command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
                start_new_session=True,  # a Ctrl-C meant for the server is not the trainer's
            )  # fmt: skip
            log.close()
            self._cancelled = False
            self._state = {
                "state": "running", "name": name, "step": 0, "steps": 0, "eta": "",
                "minutes": minutes, "started": time.time(), "message": "starting",
            }  # fmt: skip
            state = dict(self._state)
        threading.Thread(
            target=self._follow, args=(self._process, run_dir, output), daemon=True
        ).start()
        return state

    def cancel(self) -> dict[str, Any]:
        """Stop the running training; it leaves no model (SIGTERM: the trainer only checkpoints)."""
        with self._lock:
            if self._state["state"] == "running" and self._process is not None:
                self._cancelled = True
                self._process.send_signal(signal.SIGTERM)
            return dict(self._state)

    def wait(self, timeout: float) -> None:
        """Wait until no training runs (or ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while self.busy() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _follow(self, process: subprocess.Popen, run_dir: Path, output: Path) -> None:
        """Progress from the trainer's output; at its end, install the model or clean up."""
        assert process.stdout is not None
        for line in process.stdout:
            match = STEP_LINE.match(line)
            with self._lock:
                if match:
                    self._state.update(step=int(match[1]), steps=int(match[2]), eta=match[3])
                self._state["message"] = line.strip()[:300]
        code = process.wait()
        with self._lock:
            cancelled = self._cancelled
        if cancelled:
            shutil.rmtree(run_dir, ignore_errors=True)
            self._finish("cancelled", "cancelled: no model was written")
        elif code == 0 and output.is_file():
            self._finish(
                "done", f"{self._state['name']} is ready", model=str(self._install(output))
            )
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            error = _last_error(run_dir / "train.log")
            self._finish("failed", error or f"the trainer stopped (exit code {code})")

    def _install(self, output: Path) -> Path:
        """Copy the finished model into the models folder under a name the registry ignores, then
        rename it: the folder never holds a partial model file."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        final = self.models_dir / output.name
        partial = final.with_name(f".{output.name}.partial")
        shutil.copyfile(output, partial)
        os.replace(partial, final)
        return final

    def _finish(self, state: str, message: str, **extra: Any) -> None:
        with self._lock:
            self._state.update(state=state, message=message, ended=time.time(), **extra)


def _number(
    params: dict[str, str], name: str, default: float, bounds: tuple[float, float]
) -> float:
    try:
        value = float(params.get(name, default))
    except ValueError:
        value = float("nan")
    if not bounds[0] <= value <= bounds[1]:
        raise TrainingRefused(400, "bad_request", f"{name} must be {bounds[0]:g} to {bounds[1]:g}")
    return value


def _last_error(log: Path) -> str:
    """The trainer's one-line error (``error: ...``), if it printed one."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("error: ")]
    return errors[-1][7:] if errors else (lines[-1] if lines else "")
