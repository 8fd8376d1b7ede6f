"""The stdlib client against a real server: results, errors, concurrency, cancel, start on demand."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core.client import PROTOCOL, Cancelled, Client, ImpastoError
from core.connection import pid_alive, read_connection
from tests.conftest import make_model
from tests.core.test_server import (
    REPO,
    SERVE_OPTIONS,
    Server,
    engine_output,
    start_server,
    wait_until,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    make_model(folder, "tiny", width="compact")
    make_model(folder, "wide", seed=1, width="full")
    make_model(folder, "sr", kind="sr")
    return folder


def use_folders(env: pytest.MonkeyPatch, folder: Path, models: Path) -> None:
    """Point Impasto's config, log, cache and models folders at test folders."""
    env.setenv("IMPASTO_CONFIG_DIR", str(folder / "config"))
    env.setenv("IMPASTO_LOG_DIR", str(folder / "log"))
    env.setenv("IMPASTO_CACHE_DIR", str(folder / "cache"))
    env.setenv("IMPASTO_MODELS_DIR", str(models))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models: Path) -> Iterator[Server]:
    """One server for the tests that do not start their own."""
    folder = tmp_path_factory.mktemp("shared")
    with pytest.MonkeyPatch.context() as env:
        use_folders(env, folder, models)
        running = start_server(folder)
        yield running
        running.stop()


@pytest.fixture
def home(tmp_path: Path, models: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Private folders and no server yet; any server left running at the end is shut down."""
    use_folders(monkeypatch, tmp_path, models)
    yield tmp_path
    info = read_connection()
    if info is not None and pid_alive(info.pid):
        os.kill(info.pid, signal.SIGTERM)
        wait_until(lambda: not pid_alive(info.pid) or _zombie(info.pid), "the server to exit")


def _zombie(pid: int) -> bool:
    """A server this test process started and that exited but was not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return False


def rgba(photo: np.ndarray, tiles: int = 1) -> np.ndarray:
    """An RGBA layer as GIMP hands it over, ``tiles`` times the photo in each direction."""
    alpha = np.full(photo.shape[:2] + (1,), 200, np.uint8)
    return np.ascontiguousarray(np.tile(np.concatenate([photo, alpha], -1), (tiles, tiles, 1)))


def stylize(client: Client, image: np.ndarray, model: str = "tiny", **kwargs) -> np.ndarray:
    h, w, c = image.shape
    out = client.stylize(image.tobytes(), w, h, c, model, **kwargs)
    return np.frombuffer(out, np.uint8).reshape(h, w, c)


def test_client_imports_with_the_standard_library_only() -> None:
    # -S -I: no site-packages at all, as in GIMP's Python; numpy or torch would fail to import.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import core.client, core.connection; "
        "print(sorted({'numpy', 'torch', 'platformdirs'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-I", "-c", code, str(REPO)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_round_trip_equals_engine(server: Server, photo: np.ndarray) -> None:
    client = Client(autostart=False)
    assert client.health()["pid"] == server.process.pid
    assert {"tiny", "wide"} <= {m["name"] for m in client.models("style")}
    assert {m["kind"] for m in client.models("sr")} == {"sr"}

    image = rgba(photo)
    fractions: list[float] = []
    result = stylize(client, image, strength=0.5, scale=0.5, progress=fractions.append)
    expected = engine_output("stylize", "tiny", image, strength=0.5, scale=0.5)
    np.testing.assert_array_equal(result, expected)
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)

    gray = np.ascontiguousarray(photo[:32, :48, :1])
    pixels, width, height = client.upscale(gray.tobytes(), 48, 32, 1, "sr")
    upscaled = np.frombuffer(pixels, np.uint8).reshape(height, width, 1)
    assert (width, height) == (192, 128)
    np.testing.assert_array_equal(upscaled, engine_output("upscale", "sr", gray))


def test_phases_show_what_the_job_waits_on(server: Server, photo: np.ndarray, models: Path) -> None:
    # A model this server never ran (loaded on first use), on an image of several tiles.
    make_model(models, "fresh", seed=3, width="compact")
    client = Client(autostart=False)
    phases: list[str] = []
    fractions: list[float] = []
    stylize(client, rgba(photo, 3), "fresh", phase=phases.append, progress=fractions.append)
    order = [p for i, p in enumerate(phases) if i == 0 or p != phases[i - 1]]
    assert [p for p in order if p] == ["loading", "statistics", "tiles"]
    assert any(0 < f < 1 for f in fractions) and fractions[-1] == 1.0  # it moves before the end
    health = client.health()
    assert health["device_name"] == "CPU" and health["precision"]  # "CPU, fp32": where it runs


def test_preview_of_a_crop_shows_what_stylize_gives_there(
    server: Server, photo: np.ndarray
) -> None:
    client = Client(autostart=False)
    image = rgba(photo, 4)  # 384x512: several of this server's tiles, normalised by a thumbnail
    full = stylize(client, image, "wide")
    y, x, side = 100, 200, 128
    crop = np.ascontiguousarray(image[y : y + side, x : x + side])
    whole = (image.tobytes(), image.shape[1], image.shape[0])  # small enough to be its thumbnail
    phases: list[str] = []
    view = client.preview(crop.tobytes(), side, side, 4, whole, "wide", phase=phases.append)
    view = np.frombuffer(view, np.uint8).reshape(side, side, 4)
    inner = slice(32, -32)  # the crop's border lacks the context the full image gives
    worst = np.abs(view[inner, inner].astype(int) - full[y : y + side, x : x + side][inner, inner])
    assert worst.max() <= 6 and worst.mean() < 1  # its own statistics would differ by tens
    assert "tiles" in phases


def test_errors_say_what_to_do(server: Server, photo: np.ndarray) -> None:
    client = Client(autostart=False)
    image = rgba(photo)
    with pytest.raises(ImpastoError, match="known: .*tiny, .*wide") as error:
        stylize(client, image, model="starry")
    assert error.value.code == "unknown_model"
    with pytest.raises(ImpastoError, match="is an upscaling model"):
        stylize(client, image, model="sr")
    with pytest.raises(ImpastoError, match="Content-Length is '49151'"):
        client.stylize(image.tobytes()[:-1], 128, 96, 4, "tiny")
    with pytest.raises(ImpastoError, match="--max-megapixels") as error:
        client.upscale(b"\0" * (600 * 500 * 3), 600, 500, 3, "sr")
    assert error.value.code == "too_large"
    assert client.health()["jobs"] == 0


def test_no_server_and_no_autostart_says_how_to_start_one(home: Path) -> None:
    with pytest.raises(ImpastoError, match="not running: start it with .* -m core serve"):
        Client(autostart=False).models()


def test_concurrent_clients_all_get_their_own_result(server: Server, photo: np.ndarray) -> None:
    images = [rgba(np.roll(photo, 17 * i, axis=1)) for i in range(4)]
    results: dict[int, np.ndarray] = {}
    positions: list[int] = []

    def work(i: int) -> None:
        results[i] = stylize(Client(autostart=False), images[i], queued=positions.append)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    for i, image in enumerate(images):
        np.testing.assert_array_equal(results[i], engine_output("stylize", "tiny", image))
    assert all(0 <= p <= 3 for p in positions)  # jobs ahead of the waiting one


def test_cancel_stops_the_job_and_frees_the_server(server: Server, photo: np.ndarray) -> None:
    client = Client(autostart=False)
    cancel = threading.Event()
    with pytest.raises(Cancelled):
        stylize(client, rgba(photo, 6), "wide", cancel=cancel, progress=lambda f: cancel.set())
    wait_until(lambda: client.health()["jobs"] == 0, "the cancelled job to stop")
    assert "cancelled after" in server.log.read_text()
    already = threading.Event()
    already.set()
    with pytest.raises(Cancelled):  # cancelled before it starts: nothing is sent
        stylize(client, rgba(photo), cancel=already)


@pytest.mark.slow
def test_server_is_started_on_demand_and_restarted_after_a_kill(
    home: Path, photo: np.ndarray
) -> None:
    client = Client(server_args=SERVE_OPTIONS)
    image = rgba(photo)
    expected = engine_output("stylize", "tiny", image)
    np.testing.assert_array_equal(stylize(client, image), expected)
    first = read_connection()
    assert first is not None and (home / "log" / "server.log").exists()

    os.kill(first.pid, signal.SIGKILL)  # killed between jobs
    np.testing.assert_array_equal(stylize(client, image), expected)
    second = read_connection()
    assert second is not None and second.pid != first.pid

    # Killed in the middle of a job: the client starts a new server and sends the job again.
    big = rgba(photo, 3)  # several tiles
    killed = threading.Event()

    def kill_once(fraction: float) -> None:
        if not killed.is_set():
            killed.set()
            os.kill(second.pid, signal.SIGKILL)

    result = stylize(client, big, progress=kill_once)
    assert killed.is_set()
    np.testing.assert_array_equal(result, engine_output("stylize", "tiny", big))
    third = read_connection()
    assert third is not None and third.pid not in (first.pid, second.pid)

    client.shutdown()
    wait_until(lambda: not pid_alive(third.pid) or _zombie(third.pid), "the server to exit")
    assert read_connection() is None


@pytest.mark.slow
def test_stale_connection_file_is_replaced(home: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (home / "config").mkdir()
    stale = {"host": "127.0.0.1", "port": 9, "token": "old", "pid": dead.pid, "protocol": 1}
    (home / "config" / "server.json").write_text(json.dumps(stale))
    health = Client(server_args=SERVE_OPTIONS).health()
    assert health["pid"] != dead.pid and read_connection().pid == health["pid"]


OLD_SERVER = """
import http.server, json, os, sys
class Old(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # an Impasto of another protocol version
        body = json.dumps({"status": "ok", "server": "impasto", "protocol": 0, "pid": os.getpid()})
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body.encode())
    def do_POST(self):  # /shutdown: exits at once, dropping the connection unanswered
        os._exit(0)
server = http.server.HTTPServer(("127.0.0.1", 0), Old)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@pytest.mark.slow
def test_a_server_of_another_protocol_is_stopped_and_replaced(home: Path) -> None:
    old = subprocess.Popen([sys.executable, "-c", OLD_SERVER], stdout=subprocess.PIPE, text=True)
    port = int(old.stdout.readline())
    threading.Thread(target=old.wait, daemon=True).start()  # reaped as it exits, as a non-child is
    (home / "config").mkdir()
    info = {"host": "127.0.0.1", "port": port, "token": "t", "pid": old.pid, "protocol": 0}
    (home / "config" / "server.json").write_text(json.dumps(info))
    with pytest.raises(ImpastoError, match="speaks protocol 0.*stop that server"):
        Client(autostart=False).health()
    health = Client(server_args=SERVE_OPTIONS).health()  # stops it (no answer), starts ours
    assert old.wait(timeout=10) == 0
    assert health["protocol"] == PROTOCOL and read_connection().pid == health["pid"] != old.pid


def test_a_server_that_cannot_start_says_why(home: Path) -> None:
    with pytest.raises(ImpastoError, match="could not start the Impasto server with /nonexistent"):
        Client(python="/nonexistent/python3").health()
    system = "/usr/bin/python3"
    if (
        not Path(system).exists()
        or subprocess.run([system, "-c", "import torch"], capture_output=True).returncode == 0
    ):
        pytest.skip("needs a Python without Impasto's packages")
    with pytest.raises(ImpastoError, match="No module named .*run install.py again"):
        Client(python=system).health()
