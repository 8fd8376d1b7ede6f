"""Local inference server: keeps models loaded and runs one job at a time for the GIMP plug-in.

The protocol is documented in docs/protocol.md. Heavy modules (numpy, torch via core.engine) are
imported when the server runs, so building the command-line parser stays fast.
"""

from __future__ import annotations

import argparse
import ipaddress
import itertools
import json
import logging
import math
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
from urllib.parse import parse_qsl, urlsplit

import core
from core.connection import (
    API,
    PROTOCOL,
    ConnectionInfo,
    connection_path,
    probe,
    publish_connection,
    read_connection,
    withdraw_connection,
)

log = logging.getLogger("impasto.server")

DEFAULT_IDLE_TIMEOUT = 1800.0  # seconds without requests or jobs before the server exits
DEFAULT_MAX_MEGAPIXELS = 100.0  # largest image a job may read or write
DEFAULT_CLIENT_TIMEOUT = 10.0  # seconds a client may stay silent in the middle of a request
MAX_QUEUE = 16  # jobs waiting or running; more are refused with 503
MAX_CONNECTIONS = 64  # open connections; bounds the threads a flood of clients can hold
MAX_DIMENSION = 65535
HEARTBEAT = 0.5  # seconds between status events, so clients can cancel and detect a dead server
DRAIN_LIMIT = 64 << 20  # unread body bytes swallowed before an error, so the client sees the error
MODEL_NAME = re.compile(r"\w[\w .+-]{0,127}")  # fullmatch: no trailing newline
SAMPLE_TYPES = {"u8": ("uint8", 1), "u16": ("<u2", 2), "f32": ("<f4", 4)}
FINISHED = ("done", "failed", "cancelled")
OPERATIONS = {"stylize": "style", "upscale": "sr"}  # operation -> model kind it needs


class RequestError(Exception):
    """A request the server refuses: HTTP status, machine-readable code, message for the user."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


@dataclass
class Job:
    """One stylize or upscale request, from queue to result."""

    id: str
    op: str  # "stylize" or "upscale"
    model: Path
    model_name: str
    image: Any  # HxWxC numpy array; dropped when the job ends
    options: dict[str, Any] = field(default_factory=dict)  # StyleOptions fields for stylize
    cancel: threading.Event = field(default_factory=threading.Event)
    state: str = "queued"  # queued, running, done, failed, cancelled
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
            return {"state": job.state, "done": job.done, "total": job.total}

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
                job.state, job.result, job.image = state, result, None
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

        started = time.monotonic()
        (h, w, c), dtype = job.image.shape, job.image.dtype
        what = f"job {job.id}: {job.op} {job.model_name} {w}x{h}x{c} {dtype}"
        try:
            if job.op == "stylize":
                options = StyleOptions(**job.options)
                result = self.engine.stylize(job.model, job.image, options, progress, job.cancel)
            else:
                result = self.engine.upscale(job.model, job.image, progress, job.cancel)
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


def _whole_number(params: dict[str, str], name: str, low: int, high: int) -> int:
    value = params.get(name)
    if value is None:
        raise RequestError(400, "bad_request", f"missing parameter {name!r}")
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise RequestError(
            400, "bad_request", f"{name} must be a whole number from {low} to {high}, not {value!r}"
        )
    return int(value)


def _number(params: dict[str, str], name: str, default: float, low: float, high: float) -> float:
    try:
        value = float(params.get(name, default))
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # also false for nan
        raise RequestError(
            400,
            "bad_request",
            f"{name} must be a number from {low:g} to {high:g}, not {params[name]!r}",
        )
    return value


def _flag(params: dict[str, str], name: str) -> bool:
    value = params.get(name, "0").lower()
    if value not in ("0", "1", "true", "false"):
        raise RequestError(400, "bad_request", f"{name} must be 0 or 1, not {value!r}")
    return value in ("1", "true")


class Handler(BaseHTTPRequestHandler):
    """One connection, one request: checks who is asking, then routes; every refusal is JSON."""

    server: ImpastoHTTPServer
    protocol_version = "HTTP/1.1"  # for Expect: 100-continue; every response still closes
    default_request_version = "HTTP/1.0"  # answer even an HTTP/0.9-style request with a status line
    server_version = f"Impasto/{core.__version__}"
    error_content_type = "application/json"
    _checked: tuple[str, Any] | None = None  # the routed request, once checked
    _body_read = False

    # -- plumbing ---------------------------------------------------------------------------------

    def setup(self) -> None:
        self.timeout = self.server.client_timeout
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.info("%s %s", self.address_string(), format % args)

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
        self._send_head(status, {**headers, "Content-Length": str(len(body))})
        self.wfile.write(body)

    def _send_head(self, status: int, headers: dict[str, str]) -> None:
        """Status line and headers of the one response on this connection, which then closes."""
        self.close_connection = True
        self.send_response(status)
        for key, value in {**headers, "Cache-Control": "no-store", "Connection": "close"}.items():
            self.send_header(key, value)
        self.end_headers()

    def _refuse(self, error: RequestError) -> None:
        self._send_json(
            error.status, {"error": error.code, "message": error.message}, error.headers
        )

    def _discard_body(self) -> None:
        """Swallow a small unread body so the client can read our answer instead of a reset."""
        if self._body_read or getattr(self, "headers", None) is None:  # no headers: unparsable
            return
        self._body_read = True
        if self.headers.get("Expect", "").lower() == "100-continue":
            return  # the client waits for our answer before sending the body
        try:
            remaining = min(int(self.headers.get("Content-Length", 0)), DRAIN_LIMIT)
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                remaining -= len(chunk)
        except (ValueError, OSError):
            pass

    # -- checks before anything else happens --------------------------------------------------------

    def _check_caller(self) -> None:
        """Refuse web pages (Origin, foreign Host: DNS rebinding) and callers without the token."""
        if "Origin" in self.headers:
            raise RequestError(403, "forbidden", "requests from web pages are refused")
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1 or not self.server.host_allowed(hosts[0]):
            raise RequestError(403, "forbidden", f"Host {hosts[0] if hosts else ''!r} is refused")
        auth = self.headers.get("Authorization", "")
        expected = f"Bearer {self.server.token}"
        if not secrets.compare_digest(auth.encode(), expected.encode()):
            what = "wrong" if auth else "missing"
            raise RequestError(
                401,
                "unauthorized",
                f"{what} token: read it from the connection file {connection_path()}",
            )

    def _route(self) -> tuple[str, Any]:
        """Check the caller, the endpoint and, for jobs, every parameter; memoised per request."""
        if self._checked is None:
            self._check_caller()
            self.server.jobs.last_activity = time.monotonic()
            if not self.path.startswith("/"):
                raise RequestError(400, "bad_request", "the request target must be a path")
            url = urlsplit(self.path)
            route = url.path.rstrip("/") or "/"
            methods = {
                "/health": "GET",
                "/shutdown": "POST",
                f"{API}/models": "GET",
                f"{API}/jobs": "GET",
                **{f"{API}/{op}": "POST" for op in OPERATIONS},
            }
            if route not in methods:
                raise RequestError(404, "not_found", f"no endpoint {route!r}; see docs/protocol.md")
            if self.command != methods[route]:
                allow = {"Allow": methods[route]}
                raise RequestError(
                    405, "method_not_allowed", f"{route} takes {methods[route]}", allow
                )
            params = self._params(url.query)
            op = route.rsplit("/", 1)[1]
            self._checked = (op, self._job_request(op, params) if op in OPERATIONS else params)
        return self._checked

    def _params(self, query: str) -> dict[str, str]:
        try:
            pairs = parse_qsl(
                query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=20
            )
        except ValueError as e:
            raise RequestError(400, "bad_request", f"malformed query string: {e}") from None
        params = dict(pairs)
        if len(params) != len(pairs):
            raise RequestError(400, "bad_request", "a parameter is given twice")
        return params

    def _job_request(self, op: str, params: dict[str, str]) -> dict[str, Any]:
        """Validate a stylize/upscale request from its URL and headers, before its body is read."""
        allowed = {"model", "width", "height", "channels", "dtype"}
        if op == "stylize":
            allowed |= {"strength", "preserve_colors", "scale"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise RequestError(400, "bad_request", f"unknown parameter {unknown[0]!r} for {op}")
        from core.engine import MIN_SIDE, SCALE_RANGE

        width = _whole_number(params, "width", MIN_SIDE, MAX_DIMENSION)
        height = _whole_number(params, "height", MIN_SIDE, MAX_DIMENSION)
        channels = _whole_number(params, "channels", 1, 4)
        dtype = params.get("dtype", "u8")
        if dtype not in SAMPLE_TYPES:
            raise RequestError(
                400, "bad_request", f"dtype must be one of {', '.join(SAMPLE_TYPES)}"
            )
        factor = 16 if op == "upscale" else 1
        megapixels = width * height * factor / 1e6
        if megapixels > self.server.max_megapixels:
            what = "the result would be" if op == "upscale" else "the image is"
            raise RequestError(
                413,
                "too_large",
                f"{what} {megapixels:.1f} megapixels, above this server's limit of "
                f"{self.server.max_megapixels:g}: use a smaller image or selection, or start the "
                "server with a larger --max-megapixels",
            )
        expected = width * height * channels * SAMPLE_TYPES[dtype][1]
        lengths = self.headers.get_all("Content-Length") or []
        if "Transfer-Encoding" in self.headers or len(lengths) != 1:
            raise RequestError(
                411, "length_required", "send the pixels with one Content-Length header"
            )
        length = lengths[0]
        if not (length.isascii() and length.isdigit()) or int(length) != expected:
            raise RequestError(
                400,
                "bad_length",
                f"{width}x{height}x{channels} {dtype} pixels are {expected} bytes, "
                f"but Content-Length is {length!r}",
            )
        options: dict[str, Any] = {}
        if op == "stylize":
            options = {
                "strength": _number(params, "strength", 1.0, 0.0, 1.0),
                "preserve_colors": _flag(params, "preserve_colors"),
                "scale": _number(params, "scale", 1.0, *SCALE_RANGE),
            }
        name = params.get("model", "")
        return {
            "name": name,
            "path": self.server.model_path(name, OPERATIONS[op]),
            "shape": (height, width, channels),
            "dtype": dtype,
            "bytes": expected,
            "options": options,
        }

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

    # -- endpoints ------------------------------------------------------------------------------------

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
                self._send_json(200, {"models": self.server.models(request.get("kind"))})
            elif op == "jobs":
                self._send_json(200, {"jobs": self.server.jobs.snapshot()})
            elif op == "shutdown":
                self._send_json(200, {"status": "shutting down"})
                self.server.stop("shutdown requested")
            else:
                self._run_job(op, request)
        except RequestError as e:
            self._refuse(e)
        except ConnectionError:
            self.close_connection = True  # the client went away: nobody to answer
        except Exception:  # noqa: BLE001 - a bug must answer 500, not drop the connection silently
            self._internal_error()

    def _internal_error(self) -> None:
        log.exception("request %r failed", self.requestline)
        error = sys.exc_info()[1]
        message = f"internal error in the Impasto server: {type(error).__name__}: {error}"
        try:
            self._send_json(500, {"error": "internal_error", "message": message})
        except OSError:
            pass

    def _read_body(self, size: int) -> bytearray:
        """The request body into a writable buffer (no copy on the way to numpy)."""
        self._body_read = True
        buffer = bytearray(size)
        view, got = memoryview(buffer), 0
        while got < size:
            try:
                n = self.rfile.readinto(view[got:])
            except TimeoutError:
                raise RequestError(
                    408, "timeout", f"the pixels stopped arriving after {got} of {size} bytes"
                ) from None
            if not n:
                raise RequestError(400, "bad_length", f"the body ended after {got} of {size} bytes")
            got += n
        return buffer

    def _run_job(self, op: str, request: dict[str, Any]) -> None:
        import numpy as np

        body = self._read_body(request["bytes"])
        dtype = SAMPLE_TYPES[request["dtype"]][0]
        image = np.frombuffer(body, dtype=dtype).reshape(request["shape"])
        job = Job(
            id=self.server.jobs.new_id(),
            op=op,
            model=request["path"],
            model_name=request["name"],
            image=image,
            options=request["options"],
        )
        del body, image
        self.server.jobs.submit(job)
        try:
            self._stream(job, request["dtype"])
        finally:
            if job.state not in FINISHED:
                log.info("job %s: client went away; cancelling", job.id)
                self.server.jobs.withdraw(job)

    def _stream(self, job: Job, dtype: str) -> None:
        """Send status events until the job ends, then its result or error; stop if the client leaves."""
        self._send_head(200, {"Content-Type": "application/x-impasto-stream"})
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
                if self._client_gone():
                    return
                self.server.jobs.wait(HEARTBEAT / 2)
            if job.state == "done":
                result, job.result = job.result, None
                h, w = result.shape[:2]
                c = result.size // (h * w)
                self._event(
                    {
                        "event": "result",
                        "width": w,
                        "height": h,
                        "channels": c,
                        "dtype": dtype,
                        "bytes": result.nbytes,
                    }
                )
                self.wfile.write(memoryview(result).cast("B"))
            else:
                code, message = job.error or ("cancelled", "the job was cancelled")
                self._event({"event": "error", "error": code, "message": message})
        except OSError:  # the client closed the connection: the caller cancels the job
            return

    def _event(self, event: dict[str, Any]) -> None:
        self.wfile.write(json.dumps(event).encode() + b"\n")

    def _client_gone(self) -> bool:
        """Whether the client closed its end (the request is fully read, so readable means closed)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


class ImpastoHTTPServer(ThreadingHTTPServer):
    """The HTTP server plus what the handlers share: token, limits, job queue, model lookup."""

    daemon_threads = True

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
        super().__init__(address, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            full = self._connections >= MAX_CONNECTIONS
            self._connections += not full
        if full:
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._connections -= 1

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

    def models(self, kind: str | None) -> list[dict[str, Any]]:
        from core.registry import list_models

        if kind not in (None, "style", "sr"):
            raise RequestError(400, "bad_request", f"kind must be 'style' or 'sr', not {kind!r}")
        return [info.to_dict() for info in list_models(kind)]

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "server": "impasto",
            "version": core.__version__,
            "protocol": PROTOCOL,
            "pid": os.getpid(),
            "device": self.jobs.engine.device,
            "backend": self.jobs.engine.backend,
            "jobs": self.jobs.count(),
            "max_megapixels": self.max_megapixels,
        }

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
            self._stopper = threading.Thread(target=self.shutdown, daemon=True)
            self._stopper.start()


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
        if idle > idle_timeout and not server.jobs.count():
            server.stop(f"idle for {idle_timeout:g} s")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `python -m core serve`."""
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
        type=float,
        default=DEFAULT_MAX_MEGAPIXELS,
        help=f"largest image a job may read or write (default: {DEFAULT_MAX_MEGAPIXELS:g})",
    )
    parser.add_argument(
        "--client-timeout",
        type=float,
        default=DEFAULT_CLIENT_TIMEOUT,
        help=f"seconds a client may stay silent mid-request (default: {DEFAULT_CLIENT_TIMEOUT:g})",
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
    running = read_connection()
    if running is not None:
        if probe(running):
            print(
                f"an Impasto server is already running (pid {running.pid}, port {running.port})",
                file=sys.stderr,
            )
            return 1
        log.info("removing stale connection file (pid %d is gone)", running.pid)
        withdraw_connection(running.pid)

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
    if not publish_connection(info):
        server.server_close()
        jobs.stop()
        print("another Impasto server started at the same time; using that one", file=sys.stderr)
        return 1
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
        withdraw_connection(info.pid)
        signal.signal(signal.SIGTERM, previous)
    log.info("server stopped")
    return 0
