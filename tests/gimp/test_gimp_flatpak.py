"""The plug-in in a Flatpak-like GIMP: real GIMP 3 in the chroot, remapped as Flathub's sandbox is.

/.flatpak-info is present, XDG_* point into ~/.var/app/org.gimp.GIMP/, the plug-in sees only the
sandbox's pids and cannot run the core's venv Python, and there is no flatpak-spawn permission.
The server is started outside, on the host, by the login autostart entry install.py wrote.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_model
from tests.gimp import gimp_batch, gimp_chroot
from tests.gimp.test_gimp_e2e import assert_close, engine_result, photo_rgba

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
import install  # noqa: E402

H, W = 48, 64

BATCH = r"""
H, W = __H__, __W__

# Before the user's session started the server: the message says what to run.
image, layer = new_image("rgba.raw", W, H)
results["no_server"] = call("plug-in-impasto-stylize", image, layer, model="tiny")[1]

(OUT / "start-server").write_text("")  # the host's login autostart runs now
deadline = time.monotonic() + 180
while not (OUT / "server-up").exists() and time.monotonic() < deadline:
    time.sleep(0.1)

image, layer = new_image("rgba.raw", W, H)
_, r = call("plug-in-impasto-stylize", image, layer, model="tiny")
if r["status"] == "success":
    dump(image.get_layers()[0], "styled")
results["stylize"] = r
values, r = call("plug-in-impasto-upscale", image, layer, model="sr")
if r["status"] == "success":
    big = values.index(1)
    r["size"] = [big.get_width(), big.get_height()]
    dump(big.get_layers()[0], "upscaled")
results["upscale"] = r
"""


def start_at_login(entry: Path, out: Path) -> None:
    """What the desktop session does with install.py's XDG autostart entry, once GIMP asks."""
    fields = dict(line.split("=", 1) for line in entry.read_text().splitlines() if "=" in line)
    while not (out / "start-server").exists():
        if (out / "results.json").exists():
            return
        time.sleep(0.1)
    subprocess.Popen(
        shlex.split(fields["Exec"]),
        cwd=fields["Path"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    from core.client import Client

    client = Client(autostart=False, timeout=5)
    deadline = time.monotonic() + 120
    while not client.running() and time.monotonic() < deadline:
        time.sleep(0.1)
    (out / "server-up").write_text("")


def sandbox_folders(factory: pytest.TempPathFactory, name: str, upscaler: bool):
    """The chroot, and a work folder for one sandboxed GIMP session: out/ holding the RGBA photo
    GIMP loads, home/, and models/ with a compact style 'tiny' (and an upscaler 'sr')."""
    try:
        root = gimp_chroot.ensure_chroot()
    except gimp_chroot.Unavailable as e:
        pytest.skip(f"no real GIMP 3: {e}")
    work = factory.mktemp(name)
    out, home, models = work / "out", work / "home", work / "models"
    out.mkdir()
    make_model(models, "tiny", width="compact")
    if upscaler:
        make_model(models, "sr", kind="sr")
    image = photo_rgba()
    (out / "rgba.raw").write_bytes(image.tobytes())
    return root, work, out, home, models, image


def host_side(work: Path, models: Path, **extra: str) -> pytest.MonkeyPatch:
    """The host session's environment (where the server outside looks and publishes), set on a
    MonkeyPatch the fixture undoes at the end."""
    host = pytest.MonkeyPatch()
    host_env = {
        "IMPASTO_MODELS_DIR": str(models),
        "IMPASTO_CONFIG_DIR": str(work / "host-config" / "impasto"),
        "IMPASTO_LOG_DIR": str(work / "log"),
        **extra,
    }
    for key, value in host_env.items():
        host.setenv(key, value)
    return host


@pytest.fixture(scope="module")
def flatpak_session(tmp_path_factory: pytest.TempPathFactory):
    root, work, out, home, models, image = sandbox_folders(tmp_path_factory, "gimp-flatpak", True)
    app = home / ".var" / "app" / "org.gimp.GIMP"
    host = host_side(work, models, XDG_CONFIG_HOME=str(home / ".config"))
    try:
        plugin = install.install_plugin_into(app / "config" / "GIMP" / "3.0", Path(sys.executable))
        entry = install.install_autostart(Path(sys.executable), {})
        sandbox_env = {  # as Flatpak sets it for GIMP; no IMPASTO_* variables reach the plug-in
            "HOME": str(home),
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "XDG_CONFIG_HOME": str(app / "config"),
            "XDG_DATA_HOME": str(app / "data"),
            "XDG_CACHE_HOME": str(app / "cache"),
        }
        starter = threading.Thread(target=start_at_login, args=(entry, out), daemon=True)
        starter.start()
        script = gimp_batch.script(BATCH, out, H=H, W=W)
        with gimp_chroot.flatpak_like(root, work / "overlay") as view:
            venv_visible = (view / sys.executable.lstrip("/")).exists()
            with gimp_chroot.mounted(view, binds=(REPO, work)):
                done = gimp_chroot.run_batch(
                    view, script, sandbox_env, prefix=gimp_chroot.FLATPAK_PIDS
                )
        (out / "gimp.log").write_text(done.stdout + done.stderr)
        starter.join(5)
        if not (out / "results.json").is_file():
            pytest.fail(f"GIMP batch failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        yield {
            "out": out,
            "results": json.loads((out / "results.json").read_text()),
            "image": image,
            "entry": entry,
            "plugin": plugin,
            "venv_visible": venv_visible,
            "models": models,
            "host_config": os.environ["IMPASTO_CONFIG_DIR"],  # as host_side set it
        }
    finally:
        from core.client import Client

        Client(autostart=False, timeout=10).shutdown()
        host.undo()


def test_flatpak_gimp_stylizes_and_upscales_through_a_server_outside(flatpak_session) -> None:
    s = flatpak_session
    assert not s["venv_visible"]  # the plug-in could not have run the core's Python itself
    results, image, models = s["results"], s["image"], s["models"]
    assert results["stylize"]["status"] == "success", results["stylize"]["error"]
    styled = np.frombuffer((s["out"] / "styled.raw").read_bytes(), np.uint8).reshape(image.shape)
    assert_close(styled, engine_result("stylize", image, "tiny", models))
    up = results["upscale"]
    assert up["status"] == "success", up["error"]
    assert up["size"] == [4 * W, 4 * H]
    upscaled = np.frombuffer((s["out"] / "upscaled.raw").read_bytes(), np.uint8)
    assert_close(upscaled.reshape(4 * H, 4 * W, 4), engine_result("upscale", image, "sr", models))


def test_flatpak_without_a_server_says_the_command_to_run(flatpak_session) -> None:
    case = flatpak_session["results"]["no_server"]
    assert case["status"] == "execution-error"
    command = " ".join(install.server_command(Path(sys.executable)))
    assert command in case["error"]  # the one command that starts the server outside
    assert "Flatpak" in case["error"]


def test_install_sets_up_the_login_autostart_for_flatpak_profiles(flatpak_session) -> None:
    entry = flatpak_session["entry"]
    assert entry == install.autostart_path()  # a systemd user unit where systemd runs
    text = entry.read_text()
    assert " ".join(install.server_command(Path(sys.executable))) in text
    core = json.loads((flatpak_session["plugin"] / install.CORE_FILE).read_text())
    assert core["config_dir"] == flatpak_session["host_config"]  # where the plug-in looks


SPAWN_BATCH = r"""
H, W = __H__, __W__
image, layer = new_image("rgba.raw", W, H)
_, r = call("plug-in-impasto-stylize", image, layer, model="tiny")  # no server yet
if r["status"] == "success":
    dump(image.get_layers()[0], "styled")
results["stylize"] = r
"""


@pytest.fixture(scope="module")
def spawn_session(tmp_path_factory: pytest.TempPathFactory):
    """As flatpak_session, with GIMP allowed to run host commands (flatpak-spawn --host) and no
    server running: the plug-in starts it outside the sandbox itself."""
    root, work, out, home, models, image = sandbox_folders(
        tmp_path_factory, "gimp-flatpak-spawn", False
    )
    app = home / ".var" / "app" / "org.gimp.GIMP"
    host = host_side(work, models)
    from core.client import Client

    try:
        install.install_plugin_into(app / "config" / "GIMP" / "3.0", Path(sys.executable))
        sandbox_env = {
            "HOME": str(home),
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "XDG_CONFIG_HOME": str(app / "config"),
            "RELAY": str(work / "relay"),
        }
        script = gimp_batch.script(SPAWN_BATCH, out, H=H, W=W)
        with gimp_chroot.flatpak_like(root, work / "overlay") as view:
            with gimp_chroot.host_relay(view, work / "relay"):
                with gimp_chroot.mounted(view, binds=(REPO, work)):
                    done = gimp_chroot.run_batch(
                        view, script, sandbox_env, prefix=gimp_chroot.FLATPAK_PIDS
                    )
                    health = Client(autostart=False).health()
                    server_root = os.readlink(f"/proc/{health['pid']}/root")
                    Client(autostart=False).shutdown()
        (out / "gimp.log").write_text(done.stdout + done.stderr)
        if not (out / "results.json").is_file():
            pytest.fail(f"GIMP batch failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        results = json.loads((out / "results.json").read_text())
        yield out, results, image, models, server_root
    finally:
        Client(autostart=False, timeout=10).shutdown()
        host.undo()


def test_flatpak_gimp_with_permission_starts_the_server_outside(spawn_session) -> None:
    out, results, image, models, server_root = spawn_session
    assert results["stylize"]["status"] == "success", results["stylize"]["error"]
    assert server_root == "/"  # the server runs on the host, not in the sandbox's root
    styled = np.frombuffer((out / "styled.raw").read_bytes(), np.uint8).reshape(image.shape)
    assert_close(styled, engine_result("stylize", image, "tiny", models))


def test_check_says_how_a_flatpak_gimp_gets_its_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    python = Path(sys.executable)
    command = " ".join(install.server_command(python))
    if install.systemd_runs():
        pytest.skip("systemd runs here: install_autostart would enable a real user unit")
    assert install.flatpak_start_path(python) == (
        f"NOT started by anything: run python3 install.py, or run {command} before GIMP"
    )
    entry = install.install_autostart(python, {})
    assert (
        install.flatpak_start_path(python) == f"started at login by the XDG autostart entry {entry}"
    )
    install.remove_autostart({})  # as --uninstall does
    assert not entry.exists()
