"""Hostile local processes and broken files against the real server, client and CLI (issue 14).

Loopback only; every flood and request loop is bounded. The module ends with a fuzz round and a
good job that must still give the right pixels.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from core import cli
from core.client import Client, ImpastoError
from core.connection import ConnectionInfo, load_connection, log_path, read_connection
from core.images import load_image
from core.modelfile import ModelFileError, load_model
from tests.conftest import make_model
from tests.core.test_client import rgba, stylize, use_folders
from tests.core.test_server import (
    REPO,
    SERVE_OPTIONS,
    Server,
    call,
    engine_output,
    exchange,
    job_path,
    start_server,
    wait_until,
)

LIMITS = ["--max-megapixels", "100"]  # room for a 1.6 GB body (100 MP RGBA f32)
BIG_JOB = "/v1/stylize?model=tiny&width=10000&height=10000&channels=4&dtype=f32"  # 1.6e9 bytes
BROKEN = {  # model files that must be listed as broken, each with words from its reason
    "nometa": ({"format": "impasto-model", "version": 1, "state_dict": {}}, "no metadata"),
    "listmeta": ({"format": "impasto-model", "version": 1, "meta": [1, 2]}, "no metadata"),
    "intname": ({"name": 5, "kind": "style", "arch": "style"}, "name is a int"),
    "video": ({"name": "video", "kind": "video", "arch": "style"}, "unknown kind"),
    "huge": (
        {"name": "huge", "kind": "sr", "arch": "sr", "options": {"channels": 1024, "blocks": 20}},
        "channels=1024",
    ),
}

# A second process: COUNT connections, each sending one byte of a request head every 0.5 s,
# reconnecting when dropped, for SECONDS; prints how many connections it opened.
LORIS = """
import socket, sys, time
host, port, count, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
head = b"GET /health HTTP/1.1\\r\\nX-Slow: " + b"a" * 100000
conns, opened, end = [], 0, time.monotonic() + seconds
while time.monotonic() < end:
    while len(conns) < count and time.monotonic() < end:
        try:
            s = socket.create_connection((host, port), timeout=0.5)
        except OSError:
            continue  # the server's backlog is full: try again
        s.setblocking(False); conns.append([s, 0]); opened += 1
    for c in list(conns):
        try:
            c[0].send(head[c[1]:c[1] + 1]); c[1] += 1
        except OSError:
            c[0].close(); conns.remove(c)
    time.sleep(0.5)
print(opened, flush=True)
"""


def broken_blob(meta_or_blob: dict) -> dict:
    if "format" in meta_or_blob:
        return meta_or_blob
    return {"format": "impasto-model", "version": 1, "meta": meta_or_blob, "state_dict": {}}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Private folders with 'tiny', 'wide', 'sr' and one model file per kind of breakage."""
    folder = tmp_path_factory.mktemp("hostile")
    models = folder / "models"
    make_model(models, "tiny", width="compact")
    make_model(models, "wide", seed=1, width="full")
    make_model(models, "sr", kind="sr")
    for name, (content, _) in BROKEN.items():
        torch.save(broken_blob(content), models / f"{name}.impasto")
    with pytest.MonkeyPatch.context() as env:
        use_folders(env, folder, models)
        yield folder


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[Server]:
    running = start_server(home, *LIMITS)
    yield running
    running.stop()


def raw(info: ConnectionInfo, head: str, body: bytes = b"") -> socket.socket:
    """A connection that has sent an authenticated request head (and maybe some body)."""
    sock = socket.create_connection((info.host, info.port), timeout=15)
    auth = "".join(f"{k}: {v}\r\n" for k, v in info.headers().items())
    sock.sendall(f"{head}\r\n{auth}\r\n".encode() + body)
    return sock


def rss(pid: int) -> int:
    """Resident memory of a process in bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# -- 1. slow-loris ---------------------------------------------------------------------------------


def test_a_slow_loris_flood_does_not_lock_out_a_real_client(server: Server, photo) -> None:
    """300 connections (more than the gate holds) trickling bytes from another process; the plug-in's
    client still gets its job done in about the time it takes without them, from the same server."""
    client = Client(server_args=[*SERVE_OPTIONS, *LIMITS], timeout=15)
    image = rgba(photo)
    expected = engine_output("stylize", "tiny", image)
    np.testing.assert_array_equal(stylize(client, image), expected)  # loads the model

    def job_time() -> float:
        """Seconds per job, over three jobs that must all give the right pixels."""
        started = time.monotonic()
        for _ in range(3):
            np.testing.assert_array_equal(stylize(client, image), expected)
        return (time.monotonic() - started) / 3

    alone = job_time()
    flood = subprocess.Popen(
        [sys.executable, "-c", LORIS, server.info.host, str(server.info.port), "300", "8"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(3)  # the flood is established, the oldest connections already dropped once
        flooded = job_time()
    finally:
        opened = int(flood.communicate(timeout=30)[0])
    print(f"job alone {alone:.2f} s, under a flood of {opened} connections {flooded:.2f} s")
    # 2. No second server: the same one ran the jobs and owns the file; none was started.
    assert read_connection() == server.info and server.process.poll() is None
    assert not log_path().exists()
    assert opened > 300  # connections were dropped (deadline, full gate) and came back
    assert flooded < 3 * alone + 1.0
    assert "Traceback" not in server.log.read_text()


def trickle(sock: socket.socket, data: bytes, seconds: float) -> tuple[bytes, float]:
    """Send one byte every 0.2 s (each read is quick, the whole is slow) until the server answers
    or closes, for at most ``seconds``; its answer and when it came."""
    started = time.monotonic()
    sock.setblocking(False)
    for byte in data:
        if time.monotonic() - started > seconds:
            break
        try:
            sock.send(bytes([byte]))
            answer = sock.recv(4096)
            return answer, time.monotonic() - started  # an answer, or b"": closed
        except BlockingIOError:
            time.sleep(0.2)
        except OSError:
            return b"", time.monotonic() - started
    return b"(still open)", time.monotonic() - started


def test_heads_and_bodies_have_a_deadline_a_trickle_cannot_move(server: Server) -> None:
    """--client-timeout is 2 s: a head must be in by then, a 768-byte body about as soon."""
    sock = socket.create_connection((server.info.host, server.info.port), timeout=15)
    answer, after = trickle(sock, b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 1000, 10)
    sock.close()
    assert answer == b"" and after < 4, (answer, after)
    job = "/v1/stylize?model=tiny&width=16&height=16&channels=3"
    sock = raw(server.info, f"POST {job} HTTP/1.1\r\nContent-Length: 768")
    answer, after = trickle(sock, b"\0" * 768, 10)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408") and after < 4, (answer, after)


# -- 2. one server, never stranded ---------------------------------------------------------------


def test_a_live_server_that_does_not_answer_is_neither_replaced_nor_stranded(
    server: Server, home: Path
) -> None:
    before = (home / "config" / "server.json").read_bytes()
    os.kill(server.process.pid, signal.SIGSTOP)  # alive, holding its lock, answering no one
    try:
        second = subprocess.run(
            [sys.executable, "-m", "core", "serve", *SERVE_OPTIONS],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1 and "already running" in second.stderr
        with pytest.raises(ImpastoError, match="running but does not answer"):
            Client(server_args=SERVE_OPTIONS, timeout=2).health()
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert (home / "config" / "server.json").read_bytes() == before
    assert not log_path().exists()  # the client started no server
    assert call(server.info, "GET", "/health")[1]["pid"] == server.process.pid


# -- 4. memory follows the data, uploads are bounded -----------------------------------------------


def test_declared_bodies_cost_no_memory_and_uploads_are_bounded(server: Server) -> None:
    before = rss(server.process.pid)
    trickles = [
        raw(server.info, f"POST {BIG_JOB} HTTP/1.1\r\nContent-Length: 1600000000", b"\0" * 1000)
        for _ in range(1)
    ]
    time.sleep(1)
    assert rss(server.process.pid) - before < 100 << 20  # not 1.6 GB per connection
    # The budget (2 GiB) holds one such upload: the next is refused before its body is sent.
    waiting = raw(
        server.info,
        f"POST {BIG_JOB} HTTP/1.1\r\nContent-Length: 1600000000\r\nExpect: 100-continue",
    )
    answer = b""
    while chunk := waiting.recv(4096):  # the server closes after its refusal
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 503") and b"busy" in answer, answer
    waiting.close()
    for sock in trickles:
        sock.close()
    time.sleep(0.5)  # their reservations are released
    again = raw(
        server.info,
        f"POST {BIG_JOB} HTTP/1.1\r\nContent-Length: 1600000000\r\nExpect: 100-continue",
    )
    assert again.recv(4096).startswith(b"HTTP/1.1 100")
    again.close()


# -- 5. broken connection files ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["empty", "corrupt", "fifo", "devzero", "huge"])
def test_a_bad_connection_file_is_stale_and_never_blocks(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMPASTO_CONFIG_DIR", str(tmp_path))
    path = tmp_path / "server.json"
    make_bad_connection_file(path, kind)
    started = time.monotonic()
    info, why = load_connection()
    assert info is None and why and time.monotonic() - started < 1


def make_bad_connection_file(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "devzero":
        path.symlink_to("/dev/zero")
    else:
        path.write_bytes({"empty": b"", "corrupt": b'{"host": ', "huge": b" " * (1 << 20)}[kind])


def test_a_server_starts_over_a_fifo_connection_file(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMPASTO_CONFIG_DIR", str(tmp_path))
    make_bad_connection_file(tmp_path / "server.json", "fifo")
    fresh = start_server(tmp_path)
    try:
        assert stat.S_ISREG((tmp_path / "server.json").lstat().st_mode)
        assert "stale connection file" in fresh.log.read_text()
    finally:
        fresh.stop()
    assert not (tmp_path / "server.json").exists()


# -- 6. a broken model file breaks no listing --------------------------------------------------------


def test_broken_model_files_are_listed_as_broken_and_the_others_still_work(
    server: Server, home: Path, capsys: pytest.CaptureFixture
) -> None:
    status, listing = call(server.info, "GET", "/v1/models")
    assert status == 200
    names = {m["name"] for m in listing["models"]}  # ours and the shipped ones
    assert {"sr", "tiny", "wide"} <= names and not names & set(BROKEN)
    reasons = {b["file"]: b["error"] for b in listing["broken"]}
    assert sorted(reasons) == sorted(f"{name}.impasto" for name in BROKEN)
    for name, (_, words) in BROKEN.items():
        assert words in reasons[f"{name}.impasto"], reasons
    wait_until(lambda: "huge.impasto is left out" in server.log.read_text(), "the log line")
    assert cli.main(["styles"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and out.count("BROKEN") == len(BROKEN)
    # The huge architecture is refused from its metadata, before a network is built.
    started = time.monotonic()
    with pytest.raises(ModelFileError, match="outside 8 to 256"):
        load_model(home / "models" / "huge.impasto")
    assert time.monotonic() - started < 1


# -- 7. the client trusts only the user's own connection file ----------------------------------------


def test_the_client_refuses_a_connection_file_others_could_plant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMPASTO_CONFIG_DIR", str(tmp_path / "config"))
    folder = tmp_path / "config"
    folder.mkdir(mode=0o700)
    path = folder / "server.json"
    planted = {"host": "127.0.0.1", "port": 9, "token": "x", "pid": os.getpid(), "protocol": 1}
    path.write_text(json.dumps(planted))
    path.chmod(0o600)
    cases = [(folder, 0o777, "can be changed by other users"), (path, 0o622, "chmod go-w")]
    for target, mode, words in cases:
        target.chmod(mode)
        with pytest.raises(ImpastoError, match=words):
            Client(autostart=False).health()
        target.chmod(0o700 if target == folder else 0o600)
    if os.getuid() == 0:  # only root can give a file away
        os.chown(path, 65534, 65534)
        with pytest.raises(ImpastoError, match="belongs to another user"):
            Client(autostart=False).health()


def test_the_client_refuses_a_result_of_the_wrong_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, photo
) -> None:
    class Rogue(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # answers Expect: 100-continue

        def do_GET(self) -> None:
            self._send(json.dumps({"pid": os.getpid(), "protocol": 1}).encode())

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            result = {"event": "result", "width": 16, "height": 16, "channels": 4, "bytes": 1024}
            self._send(json.dumps(result).encode() + b"\n" + b"\0" * 1024)

        def _send(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    rogue = ThreadingHTTPServer(("127.0.0.1", 0), Rogue)
    threading.Thread(target=rogue.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("IMPASTO_CONFIG_DIR", str(tmp_path))
        info = {
            "host": "127.0.0.1",
            "port": rogue.server_address[1],
            "token": "t",
            "pid": os.getpid(),
        }
        (tmp_path / "server.json").write_text(json.dumps({**info, "protocol": 1}))
        (tmp_path / "server.json").chmod(0o600)
        with pytest.raises(ImpastoError, match="16x16 result") as error:
            stylize(Client(autostart=False), rgba(photo))
        assert error.value.code == "bad_result"
    finally:
        rogue.shutdown()
        rogue.server_close()


# -- 3 and the rest: the CLI ------------------------------------------------------------------------


def test_the_cli_never_destroys_an_input(home: Path, tmp_path: Path, photo, capsys) -> None:
    """The issue's two command lines: `cat.png cat-udnie.png --overwrite`, `x.png fold/ -o fold/`."""
    from core.images import save_image

    cat = save_image(tmp_path / "cat.png", photo)
    second = save_image(tmp_path / "cat-tiny.png", photo[::-1])
    fold = tmp_path / "fold"
    fold.mkdir()
    x = save_image(fold / "x.png", photo[:, ::-1])
    outside = save_image(tmp_path / "x.png", photo)
    files = {p: p.read_bytes() for p in (cat, second, x, outside)}
    for args in [[cat, second], [outside, fold, "-o", fold]]:
        code = cli.main(["stylize", "-s", "tiny", *map(str, args), "--overwrite"])
        assert code == 2 and "would overwrite the input" in capsys.readouterr().err
        assert {p: p.read_bytes() for p in files} == files


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_a_megapixel_limit_that_is_not_a_number_is_a_clear_error(
    value: str, home: Path, tmp_path: Path, photo, capsys
) -> None:
    for command in (["stylize", "-s", "tiny", str(tmp_path / "x.png")], ["serve"]):
        with pytest.raises(SystemExit) as exited:
            cli.main([*command, "--max-megapixels", value])
        err = capsys.readouterr().err
        assert exited.value.code == 2 and "not a number of megapixels" in err
        assert "Traceback" not in err


def test_a_jpeg_with_corrupt_exif_gives_no_warning(tmp_path: Path, photo) -> None:
    from PIL import Image

    good = tmp_path / "good.jpg"
    Image.fromarray(photo).save(good)
    data = good.read_bytes()
    exif = b"Exif\0\0MM\0*\0\0\0\x08\xff\xff" + b"\x01" * 20  # more entries than bytes
    (tmp_path / "bad.jpg").write_bytes(
        data[:2] + b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif + data[2:]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = load_image(tmp_path / "bad.jpg")
    assert image.shape == photo.shape and caught == []


# -- the smaller server guards -----------------------------------------------------------------------


def test_huge_numbers_are_a_400(server: Server) -> None:
    digits = "9" * 5000
    for head in [
        f"POST /v1/stylize?model=tiny&width={digits}&height=16&channels=3 HTTP/1.1\r\nContent-Length: 768",
        f"POST /v1/stylize?model=tiny&width=16&height=16&channels=3 HTTP/1.1\r\nContent-Length: {digits}",
    ]:
        sock = raw(server.info, head, b"\0" * 768)
        assert sock.recv(4096).startswith(b"HTTP/1.1 400")
        sock.close()


def test_a_stranger_learns_nothing_and_cannot_forge_log_lines(server: Server, home: Path) -> None:
    answer = exchange(server.info, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 401") and str(home).encode() not in answer
    exchange(server.info, b"GET /\x1b[31m\rFORGED ERROR x HTTP/1.1\r\n\r\n")
    wait_until(lambda: b"\\x1b[31m" in server.log.read_bytes(), "the escaped line")
    log = server.log.read_bytes()
    assert b"\x1b" not in log and b"\rFORGED" not in log


def test_clients_that_leave_before_their_refusal_leave_one_quiet_line(server: Server) -> None:
    """Each closes right after sending, so the refusal's second write meets a reset (EPIPE)."""
    heads = [
        b"POST /v1/stylize HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n\r\n",
        b"GET /a b c d HTTP/1.1\r\n\r\n",
    ]
    for i in range(20):
        with socket.create_connection((server.info.host, server.info.port)) as sock:
            sock.sendall(heads[i % 2])
    assert call(server.info, "GET", "/health")[0] == 200
    time.sleep(0.5)
    log = server.log.read_text()
    assert "Traceback" not in log and "BrokenPipe" not in log.replace("BrokenPipeError(32", "")


def test_a_client_that_half_closes_after_its_body_gets_its_result(server: Server, photo) -> None:
    image = np.ascontiguousarray(photo[:32, :32])
    sock = raw(
        server.info,
        f"POST {job_path('stylize', 'tiny', image)} HTTP/1.1\r\nContent-Length: {image.nbytes}",
        image.tobytes(),
    )
    sock.shutdown(socket.SHUT_WR)
    data = b""
    while chunk := sock.recv(1 << 16):
        data += chunk
    sock.close()
    head, _, stream = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    pixels = stream.split(b'"bytes": 3072}\n', 1)[1]
    expected = engine_output("stylize", "tiny", image)
    np.testing.assert_array_equal(np.frombuffer(pixels, np.uint8).reshape(image.shape), expected)


# -- last: a fuzz round, then a good job -----------------------------------------------------------


def test_after_a_fuzz_round_a_good_job_still_gives_the_right_pixels(server: Server, photo) -> None:
    rng = random.Random(14)
    auth = "".join(f"{k}: {v}\r\n" for k, v in server.info.headers().items())
    valid = f"POST /v1/stylize?model=tiny&width=16&height=16&channels=3 HTTP/1.1\r\n{auth}"
    for _ in range(100):
        head = bytearray(f"{valid}Content-Length: 768\r\n\r\n".encode())
        for _ in range(rng.randrange(1, 8)):
            head[rng.randrange(len(head))] = rng.randrange(256)
        body = bytes(rng.randrange(256) for _ in range(rng.choice([0, 100, 768, 2000])))
        answer = exchange(server.info, bytes(head) + body)
        assert answer == b"" or answer.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), answer[:100]
    assert call(server.info, "GET", "/health")[1]["jobs"] == 0
    image = rgba(photo)
    client = Client(server_args=[*SERVE_OPTIONS, *LIMITS])
    np.testing.assert_array_equal(stylize(client, image), engine_output("stylize", "tiny", image))
    assert read_connection() == server.info
    assert "Traceback" not in server.log.read_text()
