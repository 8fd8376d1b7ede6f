"""The local server over real loopback HTTP: round trip, refusals, hostile input, queue and cancel."""

from __future__ import annotations

import functools
import json
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core.connection import ConnectionInfo, probe, read_connection
from core.modelfile import read_info
from tests.conftest import make_model

REPO = Path(__file__).resolve().parents[2]
# Small tiles so a job has several of them (progress, cancel within a tile); PyTorch because it
# needs no per-shape compilation; a low megapixel limit to test it.
SERVE_OPTIONS = "--backend torch --tile-size 256 --client-timeout 2 --max-megapixels 4".split()
ENGINE_OPTIONS = {"backend": "torch", "tile_size": 256}  # the same engine settings, in-process


@dataclass
class Server:
    """A `python -m core serve` subprocess and how to reach it."""

    process: subprocess.Popen
    info: ConnectionInfo
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def start_server(home: Path, *options: str) -> Server:
    """Start a server with the environment's IMPASTO_* folders; wait until it answers."""
    log = home / f"server-{time.monotonic_ns()}.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "core", "serve", *SERVE_OPTIONS, *options],
            cwd=REPO,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        info = read_connection()
        if info is not None and info.pid == process.pid and probe(info):
            return Server(process, info, log)
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()}")
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"server did not start:\n{log.read_text()}")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """IMPASTO_CONFIG_DIR, _MODELS_DIR and _LOG_DIR in a temporary folder, with 'tiny', 'wide', 'sr'."""
    folder = tmp_path_factory.mktemp("impasto")
    make_model(folder / "models", "tiny", width="compact")
    make_model(folder / "models", "wide", seed=1, width="full")
    make_model(folder / "models", "sr", kind="sr")
    with pytest.MonkeyPatch.context() as env:
        use_folders(env, folder)
        yield folder


def use_folders(env: pytest.MonkeyPatch, folder: Path) -> None:
    """Impasto's config, models, log and cache folders inside ``folder``."""
    for name in ("CONFIG", "MODELS", "LOG", "CACHE"):
        env.setenv(f"IMPASTO_{name}_DIR", str(folder / name.lower()))


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[Server]:
    running = start_server(home)
    yield running
    running.stop()


def call(
    info: ConnectionInfo, method: str, path: str, body: bytes = b"", headers: dict | None = None
) -> tuple[int, Any]:
    """One authenticated request; the JSON answer decoded."""
    conn = info.http(timeout=30)
    try:
        conn.request(method, path, body=body, headers={**info.headers(), **(headers or {})})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def job_path(op: str, model: str, image: np.ndarray, **params: Any) -> str:
    h, w, c = image.shape
    dtype = {"uint8": "u8", "uint16": "u16", "float32": "f32"}[image.dtype.name]
    query = "&".join(
        f"{k}={v}"
        for k, v in {
            "model": model,
            "width": w,
            "height": h,
            "channels": c,
            "dtype": dtype,
            **params,
        }.items()
    )
    return f"/v1/{op}?{query}"


class JobStream:
    """A job sent over a raw connection, read event by event (closing it cancels the job)."""

    def __init__(self, info: ConnectionInfo, path: str, image: np.ndarray) -> None:
        self.conn = info.http(timeout=60)
        self.conn.request("POST", path, body=image.tobytes(), headers=info.headers())
        self.response = self.conn.getresponse()
        assert self.response.status == 200, self.response.read()
        self.events: list[dict[str, Any]] = []

    def event(self) -> dict[str, Any]:
        line = self.response.readline()
        assert line, "the stream ended without a result"
        self.events.append(json.loads(line))
        return self.events[-1]

    def until(self, wanted: str, **fields: Any) -> dict[str, Any]:
        """Events up to the first of kind ``wanted`` whose fields match (state="running", ...)."""
        while True:
            event = self.event()
            if event["event"] == "error":
                pytest.fail(f"job failed: {event}")
            if event["event"] == wanted and all(event.get(k) == v for k, v in fields.items()):
                return event

    def result(self, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        header = self.until("result")
        assert (header["height"], header["width"], header["channels"]) == shape
        data = self.response.read(header["bytes"])
        return np.frombuffer(data, dtype=dtype).reshape(shape)

    def close(self) -> None:
        self.response.close()  # the response holds the socket once the server says it will close
        self.conn.close()


@functools.cache
def reference_engine():
    from core.engine import Engine

    return Engine(**ENGINE_OPTIONS)


def engine_output(op: str, model: str, image: np.ndarray, **options: Any) -> np.ndarray:
    """What the engine gives in-process for the same job (the reference for round trips)."""
    from core.engine import StyleOptions

    engine = reference_engine()
    if op == "upscale":
        return engine.upscale(model, image)
    return engine.stylize(model, image, StyleOptions(**options))


def wait_until(condition, what: str, timeout: float = 60) -> None:
    """Poll a condition with a generous bound (a hang fails the test, speed is not asserted)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# -- behaviour ------------------------------------------------------------------------------------


def test_health_and_models(server: Server) -> None:
    status, health = call(server.info, "GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["protocol"] == 1
    assert health["pid"] == server.process.pid and health["max_megapixels"] == 4
    status, answer = call(server.info, "GET", "/v1/models")  # ours and any shipped ones
    models = {m["name"]: m for m in answer["models"]}
    assert {"sr", "tiny", "wide"} <= set(models)
    assert models["tiny"]["display_name"] == "Tiny" and models["tiny"]["kind"] == "style"
    status, answer = call(server.info, "GET", "/v1/models?kind=sr")
    assert "sr" in [m["name"] for m in answer["models"]]
    assert {m["kind"] for m in answer["models"]} == {"sr"}


def test_connection_file_is_private(server: Server, home: Path) -> None:
    path = home / "config" / "server.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text())["token"] == server.info.token


@pytest.mark.parametrize("dtype, scale", [("uint8", 255), ("uint16", 65535), ("float32", 1)])
def test_stylize_round_trip_equals_engine(
    server: Server, photo: np.ndarray, dtype: str, scale: int
) -> None:
    alpha = np.linspace(0, 1, photo.shape[1])[None, :, None].repeat(photo.shape[0], 0)
    image = (np.concatenate([photo / 255, alpha], -1) * scale).astype(dtype)
    options = {"strength": 0.7, "preserve_colors": 1, "scale": 1.0}
    stream = JobStream(server.info, job_path("stylize", "tiny", image, **options), image)
    result = stream.result(image.shape, "<u2" if dtype == "uint16" else dtype)
    stream.close()
    expected = engine_output("stylize", "tiny", image, strength=0.7, preserve_colors=True)
    np.testing.assert_array_equal(result, expected)
    np.testing.assert_array_equal(result[..., 3], image[..., 3])  # alpha untouched


def test_upscale_round_trip_equals_engine(server: Server, photo: np.ndarray) -> None:
    image = np.ascontiguousarray(photo[:40, :72, :1])  # gray, two tiles
    stream = JobStream(server.info, job_path("upscale", "sr", image), image)
    result = stream.result((160, 288, 1), "uint8")
    stream.close()
    np.testing.assert_array_equal(result, engine_output("upscale", "sr", image))
    assert stream.events[0]["event"] == "accepted"
    progress = [(e["done"], e["total"]) for e in stream.events if e.get("state") == "running"]
    assert all(0 <= done <= total or total == 0 for done, total in progress)  # 0: not known yet


# -- refusals -------------------------------------------------------------------------------------


def refused(server: Server, headers: dict[str, str], path: str = "/health") -> tuple[int, str]:
    conn = server.info.http(timeout=10)
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    return response.status, body["message"]


def test_callers_without_the_token_or_from_web_pages_are_refused(server: Server) -> None:
    good = server.info.headers()
    port = server.info.port
    assert refused(server, {"Host": good["Host"]})[0] == 401
    status, message = refused(server, {**good, "Authorization": "Bearer " + "x" * 43})
    assert status == 401 and "connection file" in message
    assert refused(server, {**good, "Authorization": good["Authorization"].lower()})[0] == 401
    for host in [
        f"evil.example:{port}",
        f"localhost.evil.example:{port}",
        "127.0.0.1:1",
        f"10.0.0.1:{port}",
        "",
    ]:
        assert refused(server, {**good, "Host": host})[0] == 403, host
    for host in [f"localhost:{port}", f"[::1]:{port}", "127.0.0.1"]:
        assert call(server.info, "GET", "/health", headers={"Host": host})[0] == 200, host
    status, message = refused(server, {**good, "Origin": "http://evil.example"})
    assert status == 403 and "web pages" in message
    # A browser's simple POST with the right token (if a page ever learnt it) is still refused.
    status, message = refused(server, {**good, "Origin": "null"}, "/v1/models")
    assert status == 403


@pytest.mark.parametrize(
    "path, status, error, words",
    [
        ("/v1/stylize?model=nope&width=16&height=16&channels=3", 404, "unknown_model", "tiny, "),
        (
            "/v1/stylize?model=sr&width=16&height=16&channels=3",
            400,
            "wrong_kind",
            "upscaling model",
        ),
        ("/v1/upscale?model=tiny&width=16&height=16&channels=3", 400, "wrong_kind", "is a style"),
        (
            "/v1/stylize?model=../../etc/passwd&width=16&height=16&channels=3",
            400,
            "bad_request",
            "name",
        ),
        ("/v1/stylize?model=tiny&width=-16&height=16&channels=3", 400, "bad_request", "width"),
        ("/v1/stylize?model=tiny&width=16&height=0&channels=3", 400, "bad_request", "height"),
        ("/v1/stylize?model=tiny&width=15&height=16&channels=3", 400, "bad_request", "from 16"),
        ("/v1/stylize?model=tiny&width=16&height=16&channels=5", 400, "bad_request", "channels"),
        ("/v1/stylize?model=tiny&width=16&height=16", 400, "bad_request", "channels"),
        (
            "/v1/stylize?model=tiny&width=16&height=16&channels=3&dtype=f64",
            400,
            "bad_request",
            "dtype",
        ),
        (
            "/v1/stylize?model=tiny&width=16&height=16&channels=3&strength=2",
            400,
            "bad_request",
            "strength",
        ),
        (
            "/v1/stylize?model=tiny&width=16&height=16&channels=3&scale=nan",
            400,
            "bad_request",
            "scale",
        ),
        (
            "/v1/stylize?model=tiny&width=16&height=16&channels=3&colour=1",
            400,
            "bad_request",
            "colour",
        ),
        (
            "/v1/stylize?model=tiny&width=3000&height=2000&channels=3",
            413,
            "too_large",
            "--max-megapixels",
        ),
        (
            "/v1/upscale?model=sr&width=600&height=500&channels=3",
            413,
            "too_large",
            "result would be 4.8",
        ),
        (
            "/v1/stylize?model=tiny&width=16&height=16&channels=3&width=9",
            400,
            "bad_request",
            "twice",
        ),
        ("/v1/nothing", 404, "not_found", "protocol.md"),
    ],
)
def test_bad_jobs_get_a_clear_4xx_before_the_body_is_sent(
    server: Server, path: str, status: int, error: str, words: str
) -> None:
    # Expect: 100-continue, as the client sends it: the refusal comes without the pixels.
    conn = server.info.http(timeout=10)
    conn.putrequest("POST", path, skip_host=True)
    for key, value in {
        **server.info.headers(),
        "Content-Length": "768",
        "Expect": "100-continue",
    }.items():
        conn.putheader(key, value)
    conn.endheaders()
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    assert (response.status, body["error"]) == (status, error) and words in body["message"], body


def test_a_failing_job_is_reported_and_the_server_carries_on(
    server: Server, home: Path, photo: np.ndarray
) -> None:
    # Metadata says compact, weights are full width: the file lists fine and fails when loaded.
    broken = make_model(home / "models", "broken", width="full")
    blob = torch.load(broken, weights_only=True)
    blob["meta"]["options"] = {"width": "compact"}
    torch.save(blob, broken)
    assert read_info(broken).options == {"width": "compact"}

    stream = JobStream(server.info, job_path("stylize", "broken", photo), photo)
    while (event := stream.event())["event"] != "error":
        pass
    stream.close()
    assert (
        event["error"] == "engine_error" and "does not match its architecture" in event["message"]
    )
    again = JobStream(server.info, job_path("stylize", "tiny", photo), photo)
    np.testing.assert_array_equal(
        again.result(photo.shape, "uint8"), engine_output("stylize", "tiny", photo)
    )
    again.close()


def test_wrong_byte_count_is_refused(server: Server) -> None:
    path = "/v1/stylize?model=tiny&width=16&height=16&channels=3"
    status, body = call(server.info, "POST", path, body=b"\0" * 767)
    assert status == 400 and "768 bytes" in body["message"] and "767" in body["message"]
    status, body = call(server.info, "GET", path)
    assert status == 405 and body["error"] == "method_not_allowed"


def test_non_loopback_bind_needs_the_flag(home: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "core", "serve", "--host", "0.0.0.0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "--allow-remote" in result.stderr


def hostile_requests(info: ConnectionInfo) -> list[tuple[str, bytes]]:
    """A few hundred malformed or hostile requests, each a (category, raw bytes) pair; seeded."""
    rng = random.Random(1234)
    auth = "".join(f"{k}: {v}\r\n" for k, v in info.headers().items())
    job = "/v1/stylize?model=tiny&width=16&height=16&channels=3"  # 768 bytes of pixels
    pixels = b"\0" * 768
    cases: list[tuple[str, bytes]] = []

    def http(method: str, path: str, headers: str = auth, body: bytes = b"") -> None:
        cases.append(("http", f"{method} {path} HTTP/1.1\r\n{headers}\r\n".encode() + body))

    for length in "-1 abc 1e3 99999999999999999999 767 769 0x300 -0 +768 768.0".split() + [
        "",
        "7 68",
    ]:
        http("POST", job, auth + f"Content-Length: {length}\r\n", pixels)
    http("POST", job, auth + "Content-Length: 768\r\nContent-Length: 767\r\n", pixels)
    http(
        "POST", job, auth + "Transfer-Encoding: chunked\r\n", b"300\r\n" + pixels + b"\r\n0\r\n\r\n"
    )
    http("POST", job, auth + "Content-Length: 768\r\n", pixels[:400])  # short body, then EOF
    for width in (
        "-16 0 15 16.5 1e2 65536 99999999999 ８ %EF%BC%91%EF%BC%96 %00 16%00 0x10".split() + [""]
    ):
        http(
            "POST",
            job.replace("width=16", f"width={width}"),
            auth + "Content-Length: 768\r\n",
            pixels,
        )
    for query in [
        "%zz",
        "a",
        "&&&",
        "=&=",
        "model",
        "x=" + "y" * 5000,
        "&".join(f"p{i}=1" for i in range(50)),
    ]:
        http("POST", f"/v1/stylize?{query}", auth + "Content-Length: 0\r\n")
    for method in "PUT DELETE PATCH OPTIONS HEAD TRACE CONNECT FOO get P0ST".split():
        for path in ["/health", "/v1/models", job, "/shutdown"]:
            http(method, path)
    for path in "/ * http://127.0.0.1/health /../../etc/passwd /v1/../health /health/../x /health%00 /v2/models".split():
        http("GET", path)
    for _ in range(10):
        cases.append(
            ("huge", f"GET /health HTTP/1.1\r\n{auth}X-Pad: {'a' * 70000}\r\n\r\n".encode())
        )
    cases.append(
        (
            "huge",
            f"GET /health HTTP/1.1\r\n{auth}{''.join(f'X-{i}: {i}' + chr(13) + chr(10) for i in range(150))}\r\n".encode(),
        )
    )
    cases.append(("huge", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n"))
    for header in [
        "Host: a\r\nHost: b",
        "Authorization: Basic Zm9vOmJhcg==",
        "Origin: http://127.0.0.1",
        "Host: 127.0.0.1:1",
        f"Host: 127.0.0.1:{'1' * 5000}",  # int() refuses this many digits
    ]:
        http("GET", "/v1/models", header + "\r\n")
    http("GET", "/v1/models", auth.replace("Bearer ", "Bearer  "))
    http("GET", "/v1/models", auth.replace("Bearer ", ""))
    for _ in range(60):  # garbage bodies of the wrong size
        body = bytes(
            rng.randrange(256)
            for _ in range(rng.choice([0, 1, 767, 769, 1000, rng.randrange(700)]))
        )
        http("POST", job, auth + f"Content-Length: {len(body)}\r\n", body)
    for _ in range(60):  # not HTTP at all
        cases.append(("garbage", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))))
    for line in [
        b"GET /health\r\n\r\n",
        b"GET /health HTTP/2.0\r\n\r\n",
        b"GET /health HTTP/1.1 extra\r\n\r\n",
        b"\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /health HTTP/9.9\r\n\r\n",
        b"GET /health FOO/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello
    ]:
        cases.append(("garbage", line))
    valid = f"POST {job} HTTP/1.1\r\n{auth}Content-Length: 768\r\n\r\n".encode()
    for _ in range(40):  # random bytes changed in the head of a valid job request
        mutated = bytearray(valid)
        for _ in range(rng.randrange(1, 6)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        cases.append(("mutated", bytes(mutated) + pixels))
    return cases


def exchange(info: ConnectionInfo, payload: bytes) -> bytes:
    """Send raw bytes, close our sending side, read the whole answer (b"" if the server just closed)."""
    with socket.create_connection((info.host, info.port), timeout=15) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may answer and close before reading everything
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        return data


def test_hostile_requests_get_4xx_and_the_server_stays_healthy(server: Server) -> None:
    cases = hostile_requests(server.info)
    assert len(cases) > 250
    for category, payload in cases:
        answer = exchange(server.info, payload)
        status_line = answer.split(b"\r\n", 1)[0]
        if category == "mutated" and status_line.startswith(b"HTTP/1.1 200"):
            continue  # the changed bytes left a valid request
        if answer or category not in ("garbage", "mutated"):
            assert status_line[:10] in (b"HTTP/1.1 4", b"HTTP/1.0 4"), (
                category,
                payload[:200],
                answer[:300],
            )
            if b"\r\n\r\n" in answer and b"Content-Type: application/json" in answer:
                body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
                assert body["message"], body
    status, health = call(server.info, "GET", "/health")
    assert status == 200 and health["jobs"] == 0
    assert "Traceback" not in server.log.read_text()


def test_slow_clients_are_dropped_without_blocking_others(server: Server) -> None:
    slow = [
        socket.create_connection((server.info.host, server.info.port), timeout=15) for _ in range(8)
    ]
    for i, sock in enumerate(slow):
        sock.sendall(
            [
                b"GET /hea",
                b"POST /v1/stylize?model=tiny&width=16&height=16&channels=3 HTTP/1.1\r\n",
            ][i % 2]
        )
    assert call(server.info, "GET", "/health")[0] == 200  # others are served meanwhile
    for sock in slow:  # after --client-timeout (2 s) of silence the server hangs up
        try:
            assert sock.recv(1024) == b""
        except ConnectionResetError:
            pass
        sock.close()
    # A body that stops arriving is answered 408 once the client falls silent.
    sock = socket.create_connection((server.info.host, server.info.port), timeout=15)
    head = "".join(f"{k}: {v}\r\n" for k, v in server.info.headers().items())
    sock.sendall(
        f"POST /v1/stylize?model=tiny&width=16&height=16&channels=3 HTTP/1.1\r\n{head}Content-Length: 768\r\n\r\n".encode()
        + b"\0" * 50
    )
    assert sock.recv(1024).startswith(b"HTTP/1.1 408")
    sock.close()
    assert call(server.info, "GET", "/health")[0] == 200


# -- queue, progress, cancel ----------------------------------------------------------------------


@pytest.mark.slow
def test_queue_positions_progress_and_cancel_by_disconnect(
    server: Server, photo: np.ndarray
) -> None:
    big = np.ascontiguousarray(np.tile(photo, (8, 8, 1)))  # 768x1024: many 256 px tiles
    small = photo
    running = JobStream(server.info, job_path("stylize", "wide", big), big)
    while (status := running.until("status", state="running"))["done"] == 0:
        pass  # wait until tiles are being done
    assert 1 <= status["done"] < status["total"]
    second = JobStream(server.info, job_path("stylize", "tiny", small), small)
    assert second.until("status")["position"] == 1
    third = JobStream(server.info, job_path("stylize", "tiny", small), small)
    assert third.until("status")["position"] == 2
    status, listing = call(server.info, "GET", "/v1/jobs")
    assert [j["state"] for j in listing["jobs"]] == ["running", "queued", "queued"]

    third.close()  # a waiting client leaves: its slot is freed
    wait_until(
        lambda: len(call(server.info, "GET", "/v1/jobs")[1]["jobs"]) == 2, "the queued job to go"
    )
    running.close()  # the running client leaves: its job stops within a tile
    second.until("status", state="running")
    result = second.result(small.shape, "uint8")
    second.close()
    np.testing.assert_array_equal(result, engine_output("stylize", "tiny", small))
    wait_until(lambda: "cancelled after" in server.log.read_text(), "the log to record the cancel")
    assert call(server.info, "GET", "/v1/jobs")[1]["jobs"] == []


@pytest.mark.slow
def test_shutdown_and_idle_timeout_remove_the_connection_file(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, photo: np.ndarray
) -> None:
    monkeypatch.setenv("IMPASTO_CONFIG_DIR", str(tmp_path))
    idle = start_server(tmp_path, "--idle-timeout", "1")
    assert idle.process.wait(timeout=60) == 0
    assert not (tmp_path / "server.json").exists()

    running = start_server(tmp_path)
    big = np.ascontiguousarray(np.tile(photo, (8, 8, 1)))
    job = JobStream(running.info, job_path("stylize", "wide", big), big)
    job.until("status", state="running")
    assert call(running.info, "POST", "/shutdown")[0] == 200
    while (event := job.event())["event"] != "error":
        pass  # the running job is told why it stops
    assert event["error"] == "shutting_down" and "shut down" in event["message"]
    job.close()
    assert running.process.wait(timeout=60) == 0
    assert not (tmp_path / "server.json").exists()
