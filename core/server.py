"""Local inference server: keeps models loaded and runs one job at a time for the GIMP plug-in.

The protocol is documented in docs/protocol.md. Heavy modules (numpy, torch via core.engine) are
imported when the server runs, so building the command-line parser stays fast.
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import itertools
import json
import logging
import os
import re
import secrets
import select
import signal
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import core
from core.connection import (
    API,
    PROTOCOL,
    ConnectionInfo,
    ServerLock,
    UntrustedConnectionError,
    connection_path,
    load_connection,
    publish_connection,
    read_connection,
    withdraw_connection,
)
from core.gate import DeadlineReader, HeadGate, raw_answer
from core.requests import (
    MODEL_NAME,
    OPERATIONS,
    SAMPLE_TYPES,
    TRAINING_OPS,
    RequestError,
    authenticate,
    digits,
    route,
)

log = logging.getLogger("impasto.server")

DEFAULT_IDLE_TIMEOUT = 1800.0  # seconds without requests or jobs before the server exits
DEFAULT_MAX_MEGAPIXELS = 0.0  # none: a job is bounded by the memory available (core.memory)
DEFAULT_CLIENT_TIMEOUT = 10.0  # seconds for a request head to arrive; of silence mid-body
MAX_QUEUE = 16  # jobs waiting or running; more are refused with 503
MAX_CONNECTIONS = 64  # connections past their head (handler threads); others wait in core.gate
MIN_BODY_RATE = 1 << 20  # bytes/s: a body of N bytes gets --client-timeout + N / this to arrive
MAX_UPLOADS = 2 << 30  # bytes of bodies received at once (a 100 MP RGBA f32 image is 1.6 GB)
HEARTBEAT = 0.5  # seconds between status events, so clients can cancel and detect a dead server
DRAIN_LIMIT = 64 << 20  # unread body bytes swallowed before an error, so the client sees the error
FINISHED = ("done", "failed", "cancelled")
BUSY_ANSWER = raw_answer(503, "busy", "too many connections; retry in a moment")


@dataclass
class Job:
    """One stylize or upscale request, from queue to result."""

    id: str
    op: str  # "stylize", "upscale" or "preview"
    model: Path
    model_name: str
    image: Any  # HxWxC numpy array; dropped when the job ends
    whole: Any = None  # preview: the thumbnail of the whole image whose statistics it uses
    options: dict[str, Any] = field(default_factory=dict)  # StyleOptions fields for stylize
    cancel: threading.Event = field(default_factory=threading.Event)
    state: str = "queued"  # queued, running, done, failed, cancelled
    phase: str = ""  # while running: the engine's phase (loading, statistics, tiles)
    done: int = 0
    total: int = 0
    result: Any = None
    error: tuple[str, str] | None = None  # (code, message) when failed or cancelled by the server


class JobQueue:
    """Runs jobs one at a time on one engine (one device) in a worker thread, in arrival order."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.changed = threading.Condition()  # notified on every queue, state or progress change
        self._waiting: deque[Job] = deque()
        self._running: Job | None = None
        self._stopping = False
        self._ids = itertools.count(1)
        self.last_activity = time.monotonic()
        self._worker = threading.Thread(target=self._work, name="impasto-worker", daemon=True)
        self._worker.start()

    def new_id(self) -> str:
        return str(next(self._ids))

    def submit(self, job: Job) -> None:
        with self.changed:
            if self._stopping:
                raise RequestError(
                    503, "shutting_down", "the Impasto server is shutting down; retry"
                )
            if self.count() >= MAX_QUEUE:
                raise RequestError(
                    503, "busy", f"the Impasto server already has {MAX_QUEUE} jobs; retry later"
                )
            self._waiting.append(job)
            self.changed.notify_all()

    def withdraw(self, job: Job) -> None:
        """Cancel a job whose client went away: dropped if waiting, stopped within a tile if running."""
        with self.changed:
            job.cancel.set()
            if job in self._waiting:
                self._waiting.remove(job)
                job.state, job.image = "cancelled", None
            self.changed.notify_all()

    def status(self, job: Job) -> dict[str, Any]:
        """What the job's client is told: its place in the queue or its progress."""
        with self.changed:
            if job.state == "queued":
                ahead = self._waiting.index(job) if job in self._waiting else 0
                return {"state": "queued", "position": ahead + (self._running is not None)}
            status = {"state": job.state, "done": job.done, "total": job.total}
            return {**status, "phase": job.phase} if job.state == "running" else status

    def wait(self, timeout: float) -> None:
        with self.changed:
            self.changed.wait(timeout)

    def snapshot(self) -> list[dict[str, Any]]:
        """Running and waiting jobs, for GET /v1/jobs."""
        with self.changed:
            return [
                {"id": j.id, "operation": j.op, "model": j.model_name, **self.status(j)}
                for j in self._active()
            ]

    def count(self) -> int:
        """Jobs running or waiting."""
        with self.changed:
            return len(self._waiting) + (self._running is not None)

    def _active(self) -> list[Job]:
        """The running job, then the waiting ones (call with the lock held)."""
        return ([self._running] if self._running else []) + list(self._waiting)

    def stop(self) -> None:
        """Refuse new jobs and cancel the waiting and running ones."""
        with self.changed:
            self._stopping = True
            for job in self._active():
                job.cancel.set()
                job.error = ("shutting_down", "the Impasto server was shut down during the job")
            for job in self._waiting:
                job.state, job.image = "cancelled", None
            self._waiting.clear()
            self.changed.notify_all()

    def _work(self) -> None:
        while True:
            with self.changed:
                while not self._waiting and not self._stopping:
                    self.changed.wait()
                if self._stopping:
                    return
                job = self._running = self._waiting.popleft()
                job.state = "running"
                self.changed.notify_all()
            state, result, error = self._run(job)
            with self.changed:
                job.state, job.result, job.image, job.whole = state, result, None, None
                job.error = job.error or error
                self._running = None
                self.last_activity = time.monotonic()
                self.changed.notify_all()

    def _run(self, job: Job) -> tuple[str, Any, tuple[str, str] | None]:
        """Run a job on the engine; any failure becomes an error for that job, never the worker's end."""
        import numpy as np

        from core.engine import Cancelled, EngineError, StyleOptions
        from core.registry import UnknownModelError

        def progress(done: int, total: int) -> None:
            with self.changed:
                job.done, job.total = done, total
                self.changed.notify_all()

        def phase(name: str) -> None:
            with self.changed:
                job.phase = name
                self.changed.notify_all()

        started = time.monotonic()
        (h, w, c), dtype = job.image.shape, job.image.dtype
        what = f"job {job.id}: {job.op} {job.model_name} {w}x{h}x{c} {dtype}"
        try:
            if job.op == "stylize":
                options = StyleOptions(**job.options)
                result = self.engine.stylize(
                    job.model, job.image, options, progress, job.cancel, phase
                )
            elif job.op == "preview":
                options = StyleOptions(**job.options)
                result = self.engine.preview(
                    job.model, job.image, job.whole, options, job.cancel, phase
                )
            else:
                result = self.engine.upscale(job.model, job.image, progress, job.cancel, phase)
        except Cancelled:
            log.info("%s cancelled after %.2f s", what, time.monotonic() - started)
            return "cancelled", None, None
        except UnknownModelError as e:
            return "failed", None, ("unknown_model", str(e))
        except EngineError as e:
            log.warning("%s failed: %s", what, e)
            return "failed", None, ("engine_error", str(e))
        except MemoryError:
            log.warning("%s ran out of memory", what)
            message = (
                "not enough memory for this image: close other programs or use a smaller image"
            )
            return "failed", None, ("out_of_memory", message)
        except Exception as e:  # noqa: BLE001 - a crashed job must not take the server down
            log.exception("%s crashed", what)
            return "failed", None, ("internal_error", f"the job failed: {type(e).__name__}: {e}")
        log.info("%s done in %.2f s", what, time.monotonic() - started)
        return "done", np.ascontiguousarray(result, dtype=dtype), None


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(32), 127]}  # how control characters go to the log


def printable(text: str) -> str:
    """``text`` with control characters escaped: what a stranger sends must not forge log lines."""
    return text.translate(_CONTROL)


class UploadBudget:
    """Bytes of request bodies being received at once, bounded so a few slow uploads cannot
    exhaust memory; a body is reserved before its first byte is read (refused with 503 past it)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self._lock = threading.Lock()

    def reserve(self, size: int) -> int:
        with self._lock:
            if self.used + size > self.limit:
                raise RequestError(
                    503,
                    "busy",
                    f"the Impasto server is receiving {self.used >> 20} MiB of other images; "
                    "retry when they are in",
                )
            self.used += size
        return size

    def release(self, size: int) -> None:
        with self._lock:
            self.used -= size


class Handler(BaseHTTPRequestHandler):
    """One connection, one request: HTTP parsing and answers; the checks are core.requests', the
    job's body and stream JobIO's. Every refusal is JSON."""

    server: ImpastoHTTPServer
    protocol_version = "HTTP/1.1"  # for Expect: 100-continue; every response still closes
    default_request_version = "HTTP/1.0"  # answer even an HTTP/0.9-style request with a status line
    server_version = f"Impasto/{core.__version__}"
    error_content_type = "application/json"
    _checked: tuple[str, Any] | None = None  # the routed request, once checked
    _body_read = False
    _reserved = 0  # bytes of the upload budget this request holds
    _authenticated = False

    def __init__(self, request: socket.socket, address: Any, server: Any, head: bytes) -> None:
        self._head = head  # what the gate already read: the request head, maybe more
        super().__init__(request, address, server)

    def setup(self) -> None:
        super().setup()
        self.reader = DeadlineReader(self.connection, self._head, self.server.client_timeout)
        self.reader.deadline = time.monotonic() + self.server.client_timeout  # rest of the head
        self.rfile = io.BufferedReader(self.reader)

    def finish(self) -> None:
        self.release_upload()
        super().finish()

    def release_upload(self) -> None:
        """Give back this request's share of the upload budget (once its body is in, or at the end)."""
        self.server.uploads.release(self._reserved)
        self._reserved = 0

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.info("%s %s", self.address_string(), printable(format % args))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's refusals (bad syntax, unknown method, huge headers) in JSON, as 4xx."""
        status = {501: 405, 505: 400}.get(code, code)  # unknown method, unsupported HTTP version
        text = message or HTTPStatus(status).phrase
        self._send_json(status, {"error": HTTPStatus(status).name.lower(), "message": text})

    def _send_json(
        self, status: int, payload: dict[str, Any], extra: dict[str, str] | None = None
    ) -> None:
        self._discard_body()
        body = json.dumps(payload, default=str).encode()
        headers = {"Content-Type": "application/json", **(extra or {})}
        self.send_head(status, {**headers, "Content-Length": str(len(body))})
        self.wfile.write(body)

    def send_head(self, status: int, headers: dict[str, str]) -> None:
        """Status line and headers of the one response on this connection, which then closes."""
        self.close_connection = True
        self.connection.settimeout(self.server.client_timeout)  # a reader that stops is dropped
        self.send_response(status)
        for key, value in {**headers, "Cache-Control": "no-store", "Connection": "close"}.items():
            self.send_header(key, value)
        self.end_headers()

    def _refuse(self, error: RequestError) -> None:
        self._send_json(
            error.status, {"error": error.code, "message": error.message}, error.headers
        )

    def _discard_body(self) -> None:
        """Swallow a small unread body so the client can read our answer instead of a reset.

        Only for callers with the token: a stranger's body would hold a handler thread meanwhile.
        """
        if self._body_read or not self._authenticated:
            return
        self._body_read = True
        if self.headers.get("Expect", "").lower() == "100-continue":
            return  # the client waits for our answer before sending the body
        remaining = min(digits(self.headers.get("Content-Length", "0")) or 0, DRAIN_LIMIT)
        self.reader.deadline = time.monotonic() + self.server.client_timeout
        try:
            while remaining > 0:
                chunk = self.rfile.read1(min(remaining, 1 << 20))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            pass

    def _route(self) -> tuple[str, Any]:
        """Authenticate, then route and check every parameter; memoised per request."""
        if self._checked is None:
            authenticate(self.headers, self.server)
            self._authenticated = True
            self.server.jobs.last_activity = time.monotonic()
            op, request = route(self.command, self.path, self.headers, self.server)
            if op in OPERATIONS:
                self._reserved = self.server.uploads.reserve(request["bytes"])
            self._checked = op, request
        return self._checked

    def handle_expect_100(self) -> bool:
        """Refuse a bad job before the client sends its pixels (it waits for our answer)."""
        try:
            self._route()
        except RequestError as e:
            self._refuse(e)
            return False
        except Exception:  # noqa: BLE001 - a bug must answer 500, not drop the connection silently
            self._internal_error()
            return False
        return super().handle_expect_100()

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        try:
            op, request = self._route()
            if op == "health":
                self._send_json(200, self.server.health())
            elif op == "models":
                self._send_json(200, self.server.models(request.get("kind")))
            elif op == "jobs":
                self._send_json(200, {"jobs": self.server.jobs.snapshot()})
            elif op == "warm":
                self._send_json(200, self.server.warm(request))
            elif op in TRAINING_OPS:
                self._send_json(*self.server.train(op, request))
            elif op == "shutdown":
                self._send_json(200, {"status": "shutting down"})
                self.server.stop("shutdown requested")
            else:
                JobIO(self).run(op, request)
        except RequestError as e:
            self._refuse(e)
        except Exception:  # noqa: BLE001 - a bug must answer 500, not drop the connection silently
            if isinstance(sys.exc_info()[1], OSError):
                raise  # the client went away or stalled: ImpastoHTTPServer.handle_error says so
            self._internal_error()

    def _internal_error(self) -> None:
        log.exception("request %r failed", self.requestline)
        error = sys.exc_info()[1]
        message = f"internal error in the Impasto server: {type(error).__name__}: {error}"
        self._send_json(500, {"error": "internal_error", "message": message})


class JobIO:
    """A job's network side: its body in (under a deadline and the upload budget), its events and
    result out, and noticing a client that leaves."""

    def __init__(self, handler: Handler) -> None:
        self.handler, self.server = handler, handler.server
        self.sock: socket.socket = handler.connection
        self._peer_done = False  # the client half-closed: only a failed write means it left

    def run(self, op: str, request: dict[str, Any]) -> None:
        import numpy as np

        body = self._read_body(request["bytes"])
        self.handler.release_upload()  # the queue bounds it from here
        dtype = SAMPLE_TYPES[request["dtype"]][0]
        pixels = np.frombuffer(body, dtype=dtype)
        h, w, c = request["shape"]
        image = pixels[: h * w * c].reshape(request["shape"])
        whole = (
            pixels[h * w * c :].reshape(request["stats_shape"]) if request["stats_shape"] else None
        )
        job = Job(
            id=self.server.jobs.new_id(),
            op=op,
            model=request["path"],
            model_name=request["name"],
            image=image,
            whole=whole,
            options=request["options"],
        )
        del body, pixels, image, whole
        self.server.jobs.submit(job)
        try:
            self._stream(job, request["dtype"])
        finally:
            if job.state not in FINISHED:
                log.info("job %s: client went away; cancelling", job.id)
                self.server.jobs.withdraw(job)

    def _read_body(self, size: int) -> bytearray:
        """The body, into a buffer that grows with what arrived (a declared size costs nothing), by
        a deadline scaled to its size that a trickle of bytes cannot move."""
        self.handler._body_read = True
        reader = self.handler.reader
        reader.deadline = time.monotonic() + self.server.client_timeout + size / MIN_BODY_RATE
        buffer = bytearray()
        while len(buffer) < size:
            try:
                chunk = self.handler.rfile.read1(min(size - len(buffer), 1 << 20))
            except TimeoutError:
                raise RequestError(
                    408,
                    "timeout",
                    f"the pixels stopped arriving after {len(buffer)} of {size} bytes",
                ) from None
            if not chunk:
                raise RequestError(
                    400, "bad_length", f"the body ended after {len(buffer)} of {size} bytes"
                )
            buffer += chunk
        return buffer

    def _stream(self, job: Job, dtype: str) -> None:
        """Send status events until the job ends, then its result or error; stop if the client leaves."""
        self.handler.send_head(200, {"Content-Type": "application/x-impasto-stream"})
        try:
            self._event({"event": "accepted", "job": job.id})
            last, sent_at = None, 0.0
            while True:
                status = self.server.jobs.status(job)
                if status["state"] in FINISHED:
                    break
                if status != last or time.monotonic() - sent_at >= HEARTBEAT:
                    self._event({"event": "status", **status})
                    last, sent_at = status, time.monotonic()
                if self._client_gone(status):
                    return
                self.server.jobs.wait(HEARTBEAT / 2)
            if job.state == "done":
                result, job.result = job.result, None
                h, w = result.shape[:2]
                c = result.size // (h * w)
                header = {"width": w, "height": h, "channels": c, "dtype": dtype}
                self._event({"event": "result", **header, "bytes": result.nbytes})
                # As long for the result as for a body of its size: a client that stops reading goes.
                self.sock.settimeout(self.server.client_timeout + result.nbytes / MIN_BODY_RATE)
                self.handler.wfile.write(memoryview(result).cast("B"))
            else:
                code, message = job.error or ("cancelled", "the job was cancelled")
                self._event({"event": "error", "error": code, "message": message})
        except OSError:  # the client closed the connection: the caller cancels the job
            return

    def _event(self, event: dict[str, Any]) -> None:
        self.handler.wfile.write(json.dumps(event).encode() + b"\n")

    def _client_gone(self, status: dict[str, Any]) -> bool:
        """Whether the client left. The body is read, so the socket turns readable only at its end
        of sending; a client that closed answers the next write with a reset, one that only
        half-closed (shutdown SHUT_WR) still reads, and gets its result."""
        if self._peer_done:
            return False  # the heartbeat writes fail once it is gone
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if not readable or self.sock.recv(1, socket.MSG_PEEK) != b"":
                return False
            self._event({"event": "status", **status})  # a closed peer answers this with a reset
            time.sleep(0.02)
            self.sock.recv(1, socket.MSG_PEEK)
        except OSError:
            return True
        self._peer_done = True
        return False


class ImpastoHTTPServer(ThreadingHTTPServer):
    """The HTTP server plus what the handlers share: token, limits, job queue, model lookup."""

    daemon_threads = True
    request_queue_size = 128  # accepted at once by the kernel: a flood must not drop real clients

    def __init__(self, address: tuple[str, int], jobs: JobQueue, args: argparse.Namespace) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.token = secrets.token_urlsafe(32)
        self.jobs = jobs
        self.max_megapixels = args.max_megapixels
        self.client_timeout = args.client_timeout
        self.loopback_only = _is_loopback(address[0])
        self._connections = 0
        self._lock = threading.Lock()
        self._model_kinds: dict[tuple[Path, int], str] = {}
        self._stopper: threading.Thread | None = None
        self.uploads = UploadBudget(MAX_UPLOADS)
        self.gate = HeadGate(self._handoff, deadline=args.client_timeout)
        self._broken_seen: set[tuple[str, str]] = set()
        self._warming: set[str] = set()
        self._warm_models: set[str] = set()
        self.training = _training_job()
        super().__init__(address, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """A new connection waits in the gate until its head has arrived (no thread meanwhile)."""
        self.gate.add(request, client_address)

    def _handoff(self, sock: socket.socket, address: Any, head: bytes) -> None:
        """A connection whose head has arrived gets a handler thread, if one of MAX_CONNECTIONS is free."""
        with self._lock:
            full = self._connections >= MAX_CONNECTIONS
            self._connections += not full
        if full:
            try:  # from the gate's thread: one small write a fresh socket's buffer takes whole
                sock.setblocking(False)
                sock.send(BUSY_ANSWER)
            except OSError:
                pass
            self.shutdown_request(sock)
            return
        threading.Thread(
            target=self._serve_connection, args=(sock, address, head), daemon=True
        ).start()

    def _serve_connection(self, sock: socket.socket, address: Any, head: bytes) -> None:
        try:
            Handler(sock, address, self, head)
        except Exception:  # noqa: BLE001 - reported by handle_error, the server carries on
            self.handle_error(sock, address)
        finally:
            self.shutdown_request(sock)
            with self._lock:
                self._connections -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that left or stalled mid-answer is one quiet line; anything else a traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            log.info("%s left before its answer was sent (%s)", client_address[0], error)
        else:
            log.exception("connection from %s failed", client_address[0])

    def host_allowed(self, host: str) -> bool:
        """Host header check against DNS rebinding: an IP literal (loopback if we bind loopback) or localhost."""
        # ASCII port digits only: int() of a huge or non-ASCII number must not raise or be accepted.
        match = re.fullmatch(
            r"\[([0-9a-fA-F:.]+)\](?::([0-9]{1,5}))?|([^:\[\]]+)(?::([0-9]{1,5}))?", host
        )
        if not match:
            return False
        name = match.group(1) or match.group(3)
        port = match.group(2) or match.group(4)
        if port is not None and int(port) != self.server_address[1]:
            return False
        if name.lower() == "localhost":
            return True
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return False  # a DNS name: the trick a rebinding web page relies on
        return address.is_loopback or not self.loopback_only

    def model_path(self, name: str, kind: str) -> Path:
        """The installed model for a job, refused with a clear message if unknown or of the wrong kind."""
        from core.modelfile import ModelFileError, read_info
        from core.registry import UnknownModelError, find_model

        if not MODEL_NAME.fullmatch(name):
            raise RequestError(
                400, "bad_request", f"model must be a name listed by {API}/models, not {name!r}"
            )
        try:
            path = find_model(name, kind)
            key = (path, path.stat().st_mtime_ns)
            if key not in self._model_kinds:
                self._model_kinds[key] = read_info(path).kind
        except UnknownModelError as e:
            raise RequestError(404, "unknown_model", str(e)) from None
        except (ModelFileError, OSError) as e:
            raise RequestError(400, "bad_model", str(e)) from None
        if self._model_kinds[key] != kind:
            wanted = {"style": "a style", "sr": "an upscaling model"}
            raise RequestError(
                400,
                "wrong_kind",
                f"{name!r} is {wanted[self._model_kinds[key]]}, not {wanted[kind]}: pick another model",
            )
        return path

    def models(self, kind: str | None) -> dict[str, Any]:
        """GET /v1/models: the usable models, and each broken file with the reason (logged once)."""
        from core.registry import scan_models

        if kind not in (None, "style", "sr"):
            raise RequestError(400, "bad_request", f"kind must be 'style' or 'sr', not {kind!r}")
        models, broken = scan_models(kind)
        for bad in broken:
            if (str(bad.path), bad.reason) not in self._broken_seen:
                self._broken_seen.add((str(bad.path), bad.reason))
                log.warning("model file %s is left out: %s", bad.path, bad.reason)
        return {
            "models": [info.to_dict() for info in models],
            "broken": [{"file": bad.path.name, "error": bad.reason} for bad in broken],
        }

    def train(self, op: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """POST /v1/train, GET /v1/training, POST /v1/training/cancel (core.training)."""
        from core.training import TrainingRefused

        try:
            if op == "train":
                return 200, self.training.start(params)
            return 200, self.training.cancel() if op == "cancel" else self.training.status()
        except TrainingRefused as e:
            return e.status, {"error": e.code, "message": e.message}

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "server": "impasto",
            "version": core.__version__,
            "protocol": PROTOCOL,
            "pid": os.getpid(),
            "device": self.jobs.engine.device,
            "device_name": self.jobs.engine.device_name,
            "backend": self.jobs.engine.backend,
            "precision": self.jobs.engine.precision,
            "jobs": self.jobs.count(),
            "max_megapixels": self.max_megapixels,
            **self.warmth(),
        }

    # -- warming: a model loaded while the user is still in the dialog --------------------------

    def warm(self, params: dict[str, str]) -> dict[str, Any]:
        """Load (and with OpenVINO, prepare) a model in the background, so its first job does not
        wait for it; answers at once. params: model, kind ("style" or "sr")."""
        kind = params.get("kind", "style")
        if kind not in ("style", "sr") or set(params) - {"model", "kind"}:
            raise RequestError(400, "bad_request", "warm takes model and kind (style or sr)")
        name = params.get("model", "")
        path = self.model_path(name, kind)
        with self._lock:
            if name in self._warming:
                return {"status": "warming", "model": name}
            self._warming.add(name)
        threading.Thread(target=self._warm, args=(name, path, kind), daemon=True).start()
        return {"status": "warming", "model": name}

    def _warm(self, name: str, path: Path, kind: str) -> None:
        try:
            self.jobs.engine.warm(path, kind)
            self._warm_models.add(name)
        except Exception as e:  # noqa: BLE001 - a job of this model will report it to its caller
            log.warning("could not warm %s: %s", name, e)
        finally:
            with self._lock:
                self._warming.discard(name)

    def warmth(self) -> dict[str, Any]:
        """Health's part: ready (nothing is loading), and which models are loading or loaded."""
        with self._lock:
            warming = sorted(self._warming)
        return {"ready": not warming, "warming": warming, "warm": sorted(self._warm_models)}

    def wait_for_handlers(self, timeout: float) -> None:
        """Give open connections a moment to finish, e.g. to tell a client its job was cancelled."""
        deadline = time.monotonic() + timeout
        while self._connections and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self, reason: str) -> None:
        """Stop serving (from any thread but the one running serve_forever)."""
        if self._stopper is None:
            log.info("stopping: %s", reason)
            self.jobs.stop()
            self.training.cancel()  # a checkpoint is kept in the run folder, no model
            self._stopper = threading.Thread(target=self.shutdown, daemon=True)
            self._stopper.start()


def _training_job() -> Any:
    """The server's one training job; its runs in the user cache, its models where users' go."""
    from core.prepared import cache_dir
    from core.registry import user_models_dir
    from core.training import TrainingJob

    return TrainingJob(cache_dir() / "training", user_models_dir())


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _watch_idle(server: ImpastoHTTPServer, idle_timeout: float) -> None:
    """Stop the server once it has had no request and no job for ``idle_timeout`` seconds."""
    while server._stopper is None:
        time.sleep(min(1.0, idle_timeout / 4))
        idle = time.monotonic() - server.jobs.last_activity
        if idle > idle_timeout and not server.jobs.count() and not server.training.busy():
            server.stop(f"idle for {idle_timeout:g} s")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `python -m core serve`."""
    from core.cli import megapixels

    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=0, help="port (default: 0, any free port)")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host other than loopback; anyone who gets the token can then use the server",
    )
    parser.add_argument("--device", default="auto", help="cuda, mps, cpu or auto (default)")
    parser.add_argument("--backend", default="auto", help="openvino, torch or auto (default)")
    parser.add_argument(
        "--tile-size", type=int, default=None, help="tile size in pixels (default: automatic)"
    )
    parser.add_argument(
        "--precision", default="auto", help="fp32, fp16, bf16, int8 or auto (default: per device)"
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT,
        help=f"exit after this many seconds without requests, 0 = never (default: {DEFAULT_IDLE_TIMEOUT:g})",
    )
    parser.add_argument(
        "--max-megapixels",
        type=megapixels,
        default=DEFAULT_MAX_MEGAPIXELS,
        help="largest image a job may read or write, in megapixels (default: 0, no fixed limit: "
        "a job is bounded by the memory available)",
    )
    parser.add_argument(
        "--client-timeout",
        type=float,
        default=DEFAULT_CLIENT_TIMEOUT,
        help="seconds a request head may take to arrive, and a client may stay silent mid-body "
        f"(default: {DEFAULT_CLIENT_TIMEOUT:g})",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until shut down, idle or interrupted; 0 on a clean exit, 1 if one is already running."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    if not _is_loopback(args.host) and not args.allow_remote:
        print(
            f"error: refusing to listen on {args.host}: other machines could reach the server; "
            "use the default 127.0.0.1, or add --allow-remote if you mean it",
            file=sys.stderr,
        )
        return 2
    if not _is_loopback(args.host):
        log.warning(
            "listening on %s: other machines can reach this server (token required)", args.host
        )
    try:
        lock = ServerLock()
        if not lock.acquire():
            running = read_connection()
            where = f" (pid {running.pid}, port {running.port})" if running else ""
            print(f"an Impasto server is already running{where}", file=sys.stderr)
            return 1
        # The lock is ours, so no other server is alive: whatever file is there is stale.
        stale, why = load_connection()
    except UntrustedConnectionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if stale is not None or why:
        log.info(
            "replacing the stale connection file %s (%s)",
            connection_path(),
            why or "its server is gone",
        )

    from core.engine import Engine, EngineError

    try:
        engine = Engine(args.device, args.backend, args.tile_size, args.precision)
    except EngineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    engine.notify = log.info  # "preparing STYLE for this computer": why a first use takes longer
    jobs = JobQueue(engine)
    host = "127.0.0.1" if args.host == "localhost" else args.host
    server = ImpastoHTTPServer((host, args.port), jobs, args)
    # Clients on this machine reach a wildcard address through loopback.
    connect_host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    info = ConnectionInfo(
        host=connect_host, port=server.server_address[1], token=server.token, pid=os.getpid()
    )
    publish_connection(info)
    previous = signal.signal(signal.SIGTERM, lambda *_: server.stop("SIGTERM"))
    if args.idle_timeout > 0:
        threading.Thread(target=_watch_idle, args=(server, args.idle_timeout), daemon=True).start()
    log.info(
        "Impasto %s server on http://%s:%d (pid %d, %s/%s); connection file %s",
        core.__version__,
        f"[{host}]" if ":" in host else host,
        info.port,
        info.pid,
        engine.device,
        engine.backend,
        connection_path(),
    )
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        log.info("interrupted")
    finally:
        jobs.stop()
        server.wait_for_handlers(timeout=2)
        server.server_close()
        server.gate.close()
        withdraw_connection(info.pid)
        lock.close()
        signal.signal(signal.SIGTERM, previous)
    log.info("server stopped")
    return 0
