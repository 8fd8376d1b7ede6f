"""Client of the local Impasto server: finds or starts it, sends a job, reports progress, cancels.

Standard library only: the GIMP plug-in imports this from GIMP's own Python (no torch, no numpy).
"""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from core.connection import (
    API,
    PROTOCOL,
    ConnectionInfo,
    UntrustedConnectionError,
    config_dir,
    log_path,
    pid_alive,
    probe,
    read_connection,
    server_running,
)
from core.requests import SAMPLE_TYPES

REPO = Path(__file__).resolve().parent.parent
LOG_KEEP = 1 << 20  # the log is rotated once it grows past this many bytes
# DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW: outlives GIMP, shows no console.
WINDOWS_DETACHED = 0x00000008 | 0x00000200 | 0x08000000


class ImpastoError(Exception):
    """A job or the server failed; the message says what happened and what to do."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code  # the protocol's error code, e.g. "unknown_model"; "" for local failures


class Cancelled(ImpastoError):
    """The job was cancelled by the caller."""


class _ServerGone(Exception):
    """The connection broke: the server died or was restarted (the job may be retried once)."""


# Failures that mean the server is not there (any more) rather than a refusal of the job.
_GONE = (
    ConnectionRefusedError,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
    http.client.RemoteDisconnected,
    http.client.IncompleteRead,
    _ServerGone,
)


def _published() -> ConnectionInfo | None:
    """The connection file's server, refusing one another user could have planted."""
    try:
        return read_connection()
    except UntrustedConnectionError as e:
        raise ImpastoError(str(e), "untrusted_connection") from None


class Client:
    """Talks to the local server; starts it (``python -m core serve`` in ``repo``) when not running.

    ``server_args``: extra `serve` options for a server this client starts (e.g. ["--device", "cpu"]).
    ``launcher``: a prefix that runs the server elsewhere (Flatpak: ``flatpak-spawn --host``).
    ``not_running``: the message when no server runs and none may be started.
    """

    def __init__(
        self,
        python: str | None = None,
        repo: str | Path | None = None,
        autostart: bool = True,
        timeout: float = 60,
        server_args: list[str] | None = None,
        launcher: list[str] | None = None,
        not_running: str | None = None,
    ) -> None:
        self.python = python or sys.executable
        self.repo = Path(repo) if repo else REPO
        self.autostart = autostart
        self.timeout = timeout
        self.server_args = list(server_args or [])
        self.launcher = list(launcher or [])
        self.not_running = not_running
        self._info: ConnectionInfo | None = None

    # -- public API ---------------------------------------------------------------------------------

    def health(self) -> dict:
        """The server's status: version, protocol, pid, device, backend, jobs, limits."""
        return self._get("/health")

    def models(self, kind: str | None = None) -> list[dict]:
        """Installed models (all, or "style" / "sr"), each with name, display_name, description..."""
        query = f"?{urlencode({'kind': kind})}" if kind else ""
        return self._get(f"{API}/models{query}")["models"]

    def stylize(
        self,
        pixels: bytes,
        width: int,
        height: int,
        channels: int,
        model: str,
        strength: float = 1.0,
        preserve_colors: bool = False,
        scale: float = 1.0,
        progress: Callable[[float], None] | None = None,
        cancel: threading.Event | None = None,
        queued: Callable[[int], None] | None = None,
        phase: Callable[[str], None] | None = None,
        dtype: str = "u8",
    ) -> bytes:
        """Stylize interleaved pixels (1-4 channels of ``dtype``: u8, u16 or f32, gamma-encoded,
        native little-endian); returns the same layout.

        ``progress`` gets the fraction done, ``queued`` the number of jobs ahead while waiting,
        ``phase`` the job's phase (protocol.md: loading, statistics, tiles) at every status event,
        about twice a second, so a caller can keep an indeterminate bar moving.
        """
        params = {
            "model": model,
            "width": width,
            "height": height,
            "channels": channels,
            "strength": strength,
            "preserve_colors": int(bool(preserve_colors)),
            "scale": scale,
            "dtype": dtype,
        }
        return self._job("stylize", params, pixels, progress, cancel, queued, phase, 1)[0]

    def preview(
        self,
        view: bytes,
        width: int,
        height: int,
        channels: int,
        whole: tuple[bytes, int, int],
        model: str,
        strength: float = 1.0,
        preserve_colors: bool = False,
        scale: float = 1.0,
        cancel: threading.Event | None = None,
        phase: Callable[[str], None] | None = None,
        dtype: str = "u8",
    ) -> bytes:
        """A preview: ``view`` (pixels as for stylize: a crop, or a downscaled copy of the image) stylized
        with the statistics of ``whole`` = (pixels, width, height), a thumbnail of the image with
        its longest side at most 768 (the engine's THUMBNAIL_SIDE), as stylize would."""
        pixels, whole_width, whole_height = whole
        params = {
            "model": model,
            "width": width,
            "height": height,
            "channels": channels,
            "stats_width": whole_width,
            "stats_height": whole_height,
            "strength": strength,
            "preserve_colors": int(bool(preserve_colors)),
            "scale": scale,
            "dtype": dtype,
        }
        return self._job("preview", params, view + pixels, None, cancel, None, phase, 1)[0]

    def upscale(
        self,
        pixels: bytes,
        width: int,
        height: int,
        channels: int,
        model: str,
        progress: Callable[[float], None] | None = None,
        cancel: threading.Event | None = None,
        queued: Callable[[int], None] | None = None,
        phase: Callable[[str], None] | None = None,
        dtype: str = "u8",
    ) -> tuple[bytes, int, int]:
        """Upscale interleaved pixels (as for stylize) x4; returns (pixels, new width, new height)."""
        params = {
            "model": model,
            "width": width,
            "height": height,
            "channels": channels,
            "dtype": dtype,
        }
        return self._job("upscale", params, pixels, progress, cancel, queued, phase, 4)

    def warm(self, model: str, kind: str = "style") -> None:
        """Have the server load ``model`` now, in the background (a dialog chose it): its first job
        then starts at once. Returns without waiting for the load."""
        query = urlencode({"model": model, "kind": kind})
        self._retrying(lambda info: self._call(info, "POST", f"{API}/warm?{query}"))

    def train(
        self, name: str, rgb: bytes, width: int, height: int, photos: str, minutes: float,
        style_size: int = 256,
    ) -> dict:  # fmt: skip
        """Start training style ``name`` from a painting (8-bit RGB pixels) on the photos folder
        in the server's background (core.training); returns the training's status."""
        from core.training import png_bytes

        # The painting travels as a file in the connection's folder: the one place client and
        # server are sure to share (GIMP in a sandbox has its own /tmp).
        self._server()  # started if needed: it made the folder
        painting = config_dir() / f"painting-{os.getpid()}-{time.monotonic_ns()}.png"
        painting.write_bytes(png_bytes(rgb, width, height))
        query = urlencode({"name": name, "painting": str(painting), "photos": photos,
                           "minutes": minutes, "style_size": style_size})  # fmt: skip
        try:
            return self._retrying(lambda info: self._call(info, "POST", f"{API}/train?{query}"))
        finally:
            painting.unlink(missing_ok=True)

    def training(self) -> dict:
        """The current or last training: state (idle, running, done, failed, cancelled), name,
        step, steps, eta, message and, when done, model (its file)."""
        return self._get(f"{API}/training")

    def cancel_training(self) -> dict:
        """Cancel the running training (no model is written); returns its status."""
        return self._retrying(lambda info: self._call(info, "POST", f"{API}/training/cancel"))

    def running(self) -> bool:
        """Whether a server answers now (nothing is started): a caller can say a start is coming."""
        info = _published()
        return bool(info and probe(info, self.timeout))

    def shutdown(self) -> None:
        """Ask a running server to exit (cancelling its jobs); nothing happens if none runs."""
        info = _published()
        if info is not None and probe(info, self.timeout):
            self._ask_to_exit(info)
        self._info = None

    # -- finding and starting the server ----------------------------------------------------------

    def _server(self, fresh: bool = False) -> ConnectionInfo:
        """Connection to a live server speaking our protocol, started if needed and allowed."""
        if self._info is not None and not fresh:
            return self._info
        self._info = None
        info = _published()
        health = probe(info, self.timeout) if info else None
        if info and not health and server_running():
            health = self._wait_for_answer(info)
        if info and health and health.get("protocol") != PROTOCOL:
            if not self.autostart:
                raise ImpastoError(
                    f"the running Impasto server speaks protocol {health.get('protocol')}, this "
                    f"plug-in needs {PROTOCOL}: stop that server (pid {info.pid}) and try again"
                )
            self._ask_to_exit(info)
            self._wait_for_exit(info.pid)
            health = None
        if info and health:
            self._info = info
        elif self.autostart:
            self._info = self._start()
        else:
            raise ImpastoError(
                self.not_running
                or "the Impasto server is not running: start it with "
                f"`{self.python} -m core serve` in {self.repo}"
            )
        return self._info

    def _wait_for_answer(self, info: ConnectionInfo) -> dict | None:
        """A server is alive (it holds its lock) but did not answer: it is busy, so wait for it
        rather than start a second one; None once it is gone (then one may be started)."""
        deadline = time.monotonic() + self.timeout
        while server_running():
            health = probe(info, self.timeout)
            if health:
                return health
            if time.monotonic() > deadline:
                raise ImpastoError(
                    f"the Impasto server (pid {info.pid}) is running but does not answer: it may "
                    "be overloaded; try again in a moment, or stop that process"
                )
            time.sleep(0.2)
        return None

    def _start(self) -> ConnectionInfo:
        """Start `python -m core serve` detached, logging to the user log folder; wait until it answers."""
        log = log_path()
        log.parent.mkdir(parents=True, exist_ok=True)
        if log.exists() and log.stat().st_size > LOG_KEEP:
            os.replace(log, log.with_suffix(".log.1"))
        command = [*self.launcher, self.python, "-m", "core", "serve", *self.server_args]
        detach: dict[str, Any] = (
            {"creationflags": WINDOWS_DETACHED}
            if sys.platform == "win32"
            else {"start_new_session": True}
        )
        with open(log, "ab") as output:
            start = output.tell()
            try:
                process = subprocess.Popen(
                    command,
                    cwd=self.repo,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    close_fds=True,
                    **detach,
                )
            except OSError as e:
                raise ImpastoError(
                    f"could not start the Impasto server with {self.python}: {e.strerror or e}; "
                    "run install.py again to set up Impasto's Python"
                ) from None
        threading.Thread(target=process.wait, daemon=True).start()  # reaps it when it exits
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            info = _published()
            if info is not None and probe(info, self.timeout):
                return info
            if process.poll() is not None and not pid_alive(info.pid if info else -1):
                # It exited without another server taking its place: say why.
                raise ImpastoError(
                    f"the Impasto server could not start: {_last_error(log, start)} "
                    f"(command: {' '.join(command)} in {self.repo}; log: {log})"
                )
            time.sleep(0.1)
        process.kill()
        raise ImpastoError(
            f"the Impasto server did not start within {self.timeout:g} s; its log is {log}"
        )

    def _ask_to_exit(self, info: ConnectionInfo) -> None:
        """POST /shutdown; a server that drops the connection as it exits did what was asked."""
        try:
            self._call(info, "POST", "/shutdown")
        except _GONE:
            pass
        except OSError as e:  # a timeout, or a server that is stuck
            raise ImpastoError(
                f"could not stop the Impasto server (pid {info.pid}): {e}; stop that process "
                "and try again"
            ) from None

    def _wait_for_exit(self, pid: int) -> None:
        deadline = time.monotonic() + self.timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    # -- requests -------------------------------------------------------------------------------------

    def _get(self, path: str) -> Any:
        return self._retrying(lambda info: self._call(info, "GET", path))

    def _retrying(
        self, send: Callable[[ConnectionInfo], Any], cancel: threading.Event | None = None
    ) -> Any:
        """Send to the server; if it is gone (killed, crashed), start a new one and send once more."""
        for attempt in (1, 2):
            info = self._server(fresh=attempt > 1)
            try:
                return send(info)
            except _GONE:
                if cancel is not None and cancel.is_set():
                    raise Cancelled("cancelled") from None
                if attempt == 2 or not self.autostart:
                    raise ImpastoError(
                        "the Impasto server stopped unexpectedly (it may have crashed or run out "
                        f"of memory); if the plug-in started it, its log is {log_path()}"
                    ) from None
            except TimeoutError:
                raise ImpastoError(
                    f"the Impasto server did not answer within {self.timeout:g} s; "
                    f"it may be stuck: stop process {info.pid} and try again"
                ) from None
            except OSError as e:
                raise ImpastoError(f"could not talk to the Impasto server: {e}") from None
        raise AssertionError("unreachable")

    def _call(self, info: ConnectionInfo, method: str, path: str) -> Any:
        """A small JSON request; refusals become ImpastoError."""
        conn = info.http(self.timeout)
        try:
            conn.request(method, path, headers=info.headers())
            with conn.getresponse() as response:
                if response.status != 200:
                    raise _refusal(response)
                return json.loads(response.read())
        finally:
            conn.close()

    def _job(
        self,
        op: str,
        params: dict[str, Any],
        pixels: bytes,
        progress: Callable[[float], None] | None,
        cancel: threading.Event | None,
        queued: Callable[[int], None] | None,
        phase: Callable[[str], None] | None,
        scale: int,
    ) -> tuple[bytes, int, int]:
        """Send a job and return its result, checked to have the size this request must give."""
        path = f"{API}/{op}?{urlencode(params)}"

        def send(info: ConnectionInfo) -> tuple[bytes, int, int]:
            conn = info.http(self.timeout)
            try:
                return self._stream(conn, info, path, pixels, (progress, cancel, queued, phase))
            finally:
                conn.close()  # also how a cancel reaches the server: it stops the job within a tile

        data, width, height = self._retrying(send, cancel)
        expected = (params["width"] * scale, params["height"] * scale)
        size = width * height * params["channels"] * SAMPLE_TYPES[params["dtype"]][1]
        if (width, height) != expected or len(data) != size:
            raise ImpastoError(
                f"the Impasto server sent a {width}x{height} result of {len(data)} bytes for a "
                f"{expected[0]}x{expected[1]} image with {params['channels']} channels: it is "
                "not a working Impasto server; stop it and try again",
                "bad_result",
            )
        return data, width, height

    def _stream(
        self,
        conn: http.client.HTTPConnection,
        info: ConnectionInfo,
        path: str,
        pixels: bytes,
        callbacks: tuple,
    ) -> tuple[bytes, int, int]:
        """POST the pixels (after the server accepts the request), then follow the event stream."""
        cancel = callbacks[1]
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")
        conn.putrequest("POST", path, skip_host=True, skip_accept_encoding=True)
        headers = {
            **info.headers(),
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(pixels)),
            "Expect": "100-continue",
        }
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.endheaders()
        if _server_continues(conn.sock, self.timeout):
            conn.send(pixels)
        with conn.getresponse() as response:  # closing it is what tells the server we are gone
            return self._follow(response, *callbacks)

    def _follow(
        self,
        response: http.client.HTTPResponse,
        progress: Callable[[float], None] | None,
        cancel: threading.Event | None,
        queued: Callable[[int], None] | None,
        phase: Callable[[str], None] | None,
    ) -> tuple[bytes, int, int]:
        """Read the job's events: report the queue and progress, stop on cancel, return the result."""
        if response.status != 200:
            raise _refusal(response)
        done = -1.0
        while True:
            line = response.readline(1 << 16)
            if not line.endswith(b"\n"):  # the stream ended, maybe mid-line: the server died
                raise _ServerGone()
            event = json.loads(line)
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled")
            kind = event.get("event")
            if kind == "status" and event["state"] == "queued" and queued:
                queued(event["position"])
            elif kind == "status" and event["state"] == "running":
                if phase:
                    phase(event.get("phase", ""))  # absent from servers before phases
                if event.get("total") and progress and event["done"] / event["total"] != done:
                    done = event["done"] / event["total"]
                    progress(done)
            elif kind == "error":
                raise ImpastoError(event["message"], event["error"])
            elif kind == "result":
                data = response.read(event["bytes"])
                if len(data) != event["bytes"]:
                    raise _ServerGone()
                if progress and done != 1:
                    progress(1.0)
                return data, event["width"], event["height"]


def _server_continues(sock: socket.socket, timeout: float) -> bool:
    """Wait for "100 Continue" (consumed) or a final answer (left for getresponse), per RFC 9110."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], remaining)
        if not readable:
            break
        head = sock.recv(1024, socket.MSG_PEEK)
        if not head:
            return False
        if not head.startswith(b"HTTP/1.1 100"):
            if b"HTTP/1.1 100".startswith(head):
                time.sleep(0.001)  # only part of the status line has arrived
                continue
            return False
        end = head.find(b"\r\n\r\n")
        if end >= 0:
            _receive_exactly(sock, end + 4)
            return True
        time.sleep(0.001)
    return True  # no interim answer in time: send anyway, as the RFC says


def _receive_exactly(sock: socket.socket, size: int) -> None:
    while size > 0:
        chunk = sock.recv(size)
        if not chunk:
            raise _ServerGone()
        size -= len(chunk)


def _refusal(response: http.client.HTTPResponse) -> Exception:
    """The error a non-200 answer stands for; a wrong token means the server was replaced."""
    if response.status == 401:
        return _ServerGone()
    try:
        body = json.loads(response.read())
        return ImpastoError(body["message"], body.get("error", ""))
    except (ValueError, KeyError, TypeError):
        return ImpastoError(f"the Impasto server refused the request (HTTP {response.status})")


def _last_error(log: Path, start: int) -> str:
    """The last meaningful line the server wrote to its log since ``start``."""
    try:
        with open(log, "rb") as f:
            f.seek(max(start, f.seek(0, os.SEEK_END) - 8192))
            lines = [line.strip() for line in f.read().decode(errors="replace").splitlines()]
    except OSError:
        return "no log was written"
    lines = [line for line in lines if line and not line.startswith(("Traceback", "File ", "^"))]
    if not lines:
        return "it exited without a message"
    last = lines[-1]
    if "No module named" in last:
        last += "; this Python lacks Impasto's packages: run install.py again"
    return last
