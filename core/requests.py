"""What the server accepts: who may call (authentication), which endpoint (routing) and a job's
parameters (parsing), each checked before a request's body is read. Refusals are RequestError.
"""

from __future__ import annotations

import math
import re
import secrets
from email.message import Message
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from core.connection import API, CONNECTION_FILE

MAX_DIMENSION = 65535
MAX_DIGITS = 12  # longer numbers are refused before int(), whose digit limit would raise
MODEL_NAME = re.compile(r"\w[\w .+-]{0,127}")  # fullmatch: no trailing newline
SAMPLE_TYPES = {"u8": ("uint8", 1), "u16": ("<u2", 2), "f32": ("<f4", 4)}
# operation -> model kind it needs; a preview is a stylize of a view with a whole image's statistics
OPERATIONS = {"stylize": "style", "upscale": "sr", "preview": "style"}
# core.training's endpoints: start one, its status, cancel it (the route's last part names them)
TRAINING = {"train": "POST", "training": "GET", "training/cancel": "POST"}
TRAINING_OPS = {path.rsplit("/", 1)[-1] for path in TRAINING}
METHODS = {
    "/health": "GET",
    "/shutdown": "POST",
    f"{API}/models": "GET",
    f"{API}/jobs": "GET",
    f"{API}/warm": "POST",  # load a model ahead of its first job (the dialog chose it)
    **{f"{API}/{op}": "POST" for op in OPERATIONS},
    **{f"{API}/{path}": method for path, method in TRAINING.items()},
}


class RequestError(Exception):
    """A request the server refuses: HTTP status, machine-readable code, message for the user."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


class Server(Protocol):
    """What the checks need to know about the server."""

    token: str
    max_megapixels: float

    def host_allowed(self, host: str) -> bool: ...

    def model_path(self, name: str, kind: str) -> Any: ...


# -- authentication ---------------------------------------------------------------------------------


def authenticate(headers: Message, server: Server) -> None:
    """Refuse web pages (Origin, foreign Host: DNS rebinding) and callers without the token."""
    if "Origin" in headers:
        raise RequestError(403, "forbidden", "requests from web pages are refused")
    hosts = headers.get_all("Host") or []
    if len(hosts) != 1 or not server.host_allowed(hosts[0]):
        raise RequestError(403, "forbidden", f"Host {hosts[0][:100] if hosts else ''!r} is refused")
    auth = headers.get("Authorization", "")
    expected = f"Bearer {server.token}"
    if not secrets.compare_digest(auth.encode(errors="replace"), expected.encode()):
        what = "wrong" if auth else "missing"
        # Only the file's name: its full path would tell a stranger where the user's files are.
        raise RequestError(
            401, "unauthorized", f"{what} token: read it from the connection file {CONNECTION_FILE}"
        )


# -- routing ----------------------------------------------------------------------------------------


def route(command: str, target: str, headers: Message, server: Server) -> tuple[str, Any]:
    """The endpoint's name and its checked parameters (a job's whole request for jobs)."""
    if not target.startswith("/"):
        raise RequestError(400, "bad_request", "the request target must be a path")
    url = urlsplit(target)
    path = url.path.rstrip("/") or "/"
    if path not in METHODS:
        raise RequestError(404, "not_found", f"no endpoint {path[:200]!r}; see docs/protocol.md")
    if command != METHODS[path]:
        allow = {"Allow": METHODS[path]}
        raise RequestError(405, "method_not_allowed", f"{path} takes {METHODS[path]}", allow)
    params = _params(url.query)
    op = path.rsplit("/", 1)[1]
    return op, job_request(op, params, headers, server) if op in OPERATIONS else params


def _params(query: str) -> dict[str, str]:
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


# -- a job's parameters -----------------------------------------------------------------------------


def job_request(
    op: str, params: dict[str, str], headers: Message, server: Server
) -> dict[str, Any]:
    """Validate a stylize/upscale request from its URL and headers, before its body is read."""
    allowed = {"model", "width", "height", "channels", "dtype"}
    if op in ("stylize", "preview"):
        allowed |= {"strength", "preserve_colors", "scale"}
    if op == "preview":
        allowed |= {"stats_width", "stats_height"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise RequestError(400, "bad_request", f"unknown parameter {unknown[0][:100]!r} for {op}")
    from core.engine import MIN_SIDE, SCALE_RANGE

    width = _whole_number(params, "width", MIN_SIDE, MAX_DIMENSION)
    height = _whole_number(params, "height", MIN_SIDE, MAX_DIMENSION)
    channels = _whole_number(params, "channels", 1, 4)
    dtype = params.get("dtype", "u8")
    if dtype not in SAMPLE_TYPES:
        raise RequestError(400, "bad_request", f"dtype must be one of {', '.join(SAMPLE_TYPES)}")
    _check_size(op, width, height, channels, dtype, server.max_megapixels)
    expected = width * height * channels * SAMPLE_TYPES[dtype][1]
    stats_shape = None
    if op == "preview":  # the body: the view's pixels, then the whole image's thumbnail's
        from core.engine import THUMBNAIL_SIDE

        stats_shape = (
            _whole_number(params, "stats_height", MIN_SIDE, THUMBNAIL_SIDE),
            _whole_number(params, "stats_width", MIN_SIDE, THUMBNAIL_SIDE),
            channels,
        )
        expected += stats_shape[0] * stats_shape[1] * channels * SAMPLE_TYPES[dtype][1]
    lengths = headers.get_all("Content-Length") or []
    if "Transfer-Encoding" in headers or len(lengths) != 1:
        raise RequestError(411, "length_required", "send the pixels with one Content-Length header")
    length = lengths[0]
    if digits(length) != expected:
        raise RequestError(
            400,
            "bad_length",
            f"{width}x{height}x{channels} {dtype} pixels{' and their thumbnail' if stats_shape else ''}"
            f" are {expected} bytes, "
            f"but Content-Length is {length[:40]!r}",
        )
    options: dict[str, Any] = {}
    if op in ("stylize", "preview"):
        options = {
            "strength": _number(params, "strength", 1.0, 0.0, 1.0),
            "preserve_colors": _flag(params, "preserve_colors"),
            "scale": _number(params, "scale", 1.0, *SCALE_RANGE),
        }
    name = params.get("model", "")
    return {
        "name": name,
        "path": server.model_path(name, OPERATIONS[op]),
        "shape": (height, width, channels),
        "stats_shape": stats_shape,
        "dtype": dtype,
        "bytes": expected,
        "options": options,
    }


def _check_size(
    op: str, width: int, height: int, channels: int, dtype: str, max_megapixels: float
) -> None:
    """Refuse a job over the server's --max-megapixels (0: none) or the memory this computer has
    now, with advice that works from GIMP."""
    from core import memory

    megapixels = width * height * (16 if op == "upscale" else 1) / 1e6
    what = "the result would be" if op == "upscale" else "the image is"
    if op == "upscale":
        advice = "select the part you need (Upscale x4 takes the selection's bounds)"
    else:
        advice = "select a part of the layer (Neural Style works on the selection)"
    if max_megapixels and megapixels > max_megapixels:
        raise RequestError(
            413,
            "too_large",
            f"{what} {megapixels:.1f} megapixels, above this server's limit of {max_megapixels:g} "
            f"(its --max-megapixels option): {advice}",
        )
    need = memory.job_bytes(op, width, height, channels, SAMPLE_TYPES[dtype][1])
    free = memory.available()
    if free is not None and need > free * memory.HEADROOM:
        deeper = "; or use Image > Precision > 8 bit integer first" if dtype != "u8" else ""
        raise RequestError(
            413,
            "too_large",
            f"{what} {megapixels:.0f} megapixels, which needs about {memory.gib(need)} of memory, "
            f"and this computer has {memory.gib(free)} available: {advice}, or close other "
            f"images and programs{deeper}",
        )


def digits(text: str) -> int | None:
    """A plain decimal number (ASCII digits, at most MAX_DIGITS of them), else None."""
    if text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS:
        return int(text)
    return None


def _whole_number(params: dict[str, str], name: str, low: int, high: int) -> int:
    value = params.get(name)
    if value is None:
        raise RequestError(400, "bad_request", f"missing parameter {name!r}")
    number = digits(value)
    if number is None or not low <= number <= high:
        raise RequestError(
            400,
            "bad_request",
            f"{name} must be a whole number from {low} to {high}, not {value[:40]!r}",
        )
    return number


def _number(params: dict[str, str], name: str, default: float, low: float, high: float) -> float:
    try:
        value = float(params.get(name, default))
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # also false for nan
        raise RequestError(
            400,
            "bad_request",
            f"{name} must be a number from {low:g} to {high:g}, not {params[name][:40]!r}",
        )
    return value


def _flag(params: dict[str, str], name: str) -> bool:
    value = params.get(name, "0").lower()
    if value not in ("0", "1", "true", "false"):
        raise RequestError(400, "bad_request", f"{name} must be 0 or 1, not {value[:40]!r}")
    return value in ("1", "true")
