"""install.py on a fake home folder: what it installs, --check, and what --uninstall leaves."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_model

REPO = Path(__file__).resolve().parents[2]
# The venv running these tests already has the core's dependencies: install.py reuses it as is.
VENV = Path(sys.prefix)


def listing(home: Path) -> set[str]:
    return {str(p.relative_to(home)) + ("/" if p.is_dir() else "") for p in home.rglob("*")}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


def run_install(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "IMPASTO_"))}
    env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, str(REPO / "install.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_install_into_existing_gimp3_profiles_then_uninstall(home: Path) -> None:
    gimp3 = home / ".config/GIMP/3.2"
    flatpak = home / ".var/app/org.gimp.GIMP/config/GIMP/3.0"
    gimp2 = home / ".config/GIMP/2.10"
    for profile in (gimp3 / "plug-ins", flatpak, gimp2 / "plug-ins"):
        profile.mkdir(parents=True)
    before = listing(home)

    done = run_install(home, "--venv", str(VENV), "--no-sample", "--no-prepare")
    assert done.returncode == 0, done.stdout + done.stderr
    for profile in (gimp3, flatpak):
        plugin = profile / "plug-ins/impasto/impasto.py"
        assert plugin.read_text() == (REPO / "gimp_plugin/impasto.py").read_text()
        assert os.access(plugin, os.X_OK)
        core = json.loads((profile / "plug-ins/impasto/impasto-core.json").read_text())
        assert Path(core["python"]) == VENV / "bin/python" and Path(core["repo"]) == REPO
    assert not (gimp2 / "plug-ins/impasto").exists()  # GIMP 2 cannot run it
    assert not (home / ".config/GIMP/3.0").exists()  # profiles exist: none invented
    assert "core dependencies already installed" in done.stdout
    # The Flatpak GIMP cannot start the server: it starts at login (no systemd here: XDG autostart).
    autostart = home / ".config/autostart/impasto-server.desktop"
    assert "-m core serve --idle-timeout 0" in autostart.read_text()

    installed = listing(home)
    again = run_install(home, "--venv", str(VENV), "--no-sample", "--no-prepare")
    assert again.returncode == 0, again.stdout + again.stderr
    assert listing(home) == installed  # idempotent

    # A model the user trained must survive an uninstall.
    make_model(home / ".local/share/impasto/models", "mine", width="compact")
    model = ".local/share/impasto/models/mine.impasto"
    done = run_install(home, "--uninstall")
    assert done.returncode == 0, done.stdout + done.stderr
    assert listing(home) == before | {
        ".local/",
        ".local/share/",
        ".local/share/impasto/",
        ".local/share/impasto/models/",
        model,
    }
    assert VENV.is_dir()  # a venv it did not create is never removed

    done = run_install(home, "--uninstall", "--purge")
    assert done.returncode == 0, done.stdout + done.stderr
    assert model not in listing(home)


def test_without_gimp_profile_creates_the_3_0_one_and_removes_it_again(home: Path) -> None:
    done = run_install(home, "--venv", str(VENV), "--no-sample", "--no-prepare")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (home / ".config/GIMP/3.0/plug-ins/impasto/impasto.py").is_file()
    assert run_install(home, "--uninstall").returncode == 0
    assert listing(home) == set()


@pytest.mark.slow  # runs the core: a test stylization
def test_check_reports_profiles_core_and_a_test_stylization(home: Path, tmp_path: Path) -> None:
    (home / ".config/GIMP/3.0").mkdir(parents=True)
    make_model(home / ".local/share/impasto/models", "mine", width="compact")
    missing = run_install(home, "--check")
    assert missing.returncode == 1
    assert "MISSING" in missing.stdout and "install.py" in missing.stdout

    assert run_install(home, "--venv", str(VENV), "--no-sample", "--no-prepare").returncode == 0
    done = run_install(home, "--check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "plug-in in 3.0: installed" in done.stdout
    assert "device: " in done.stdout
    styles = next(line for line in done.stdout.splitlines() if "styles:" in line)
    assert "mine" in styles  # the user's own models are found
    assert re.search(r"test stylization with '[\w-]+': ok", done.stdout)


@pytest.mark.slow  # runs the core on docs/sample.jpg
def test_install_stylizes_the_sample_and_uninstall_removes_it(home: Path) -> None:
    make_model(home / ".local/share/impasto/models", "mine", width="compact")
    done = run_install(home, "--venv", str(VENV))
    assert done.returncode == 0, done.stdout + done.stderr
    samples = list((home / ".local/share/impasto/samples").glob("sample-*.jpg"))
    assert len(samples) == 1 and str(samples[0]) in done.stdout
    assert "Filters > Neural Style..." in done.stdout  # says how to go on in GIMP
    # The models were prepared for this computer first: the sample did not wait for it.
    assert "mine: ready" in done.stderr and "preparing" not in done.stderr
    assert run_install(home, "--uninstall").returncode == 0
    assert not (home / ".local/share/impasto/samples").exists()
    assert not (home / ".cache/impasto/openvino").exists()


def test_bad_arguments_are_refused_clearly(home: Path) -> None:
    done = run_install(home, "--check", "--uninstall")
    assert done.returncode == 2 and "not allowed with" in done.stderr
