"""GIMP's Flatpak sandbox (org.gimp.GIMP): how a plug-in inside it reaches a server outside.

Inside, XDG_* point into ~/.var/app/org.gimp.GIMP/, /usr is the runtime's (the core's venv Python
cannot run), pids are the sandbox's own, but the host's home and loopback are shared. So the
plug-in reads the connection file from the host's config folder and the server runs outside:
started by `flatpak-spawn --host` when GIMP may talk to org.freedesktop.Flatpak, else by the
login autostart that install.py sets up for Flatpak profiles.

Standard library only: GIMP's Python imports this.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from core.connection import CONFIG_ENV, LOG_ENV, SANDBOX_INFO

APP_ID = "org.gimp.GIMP"
GRANT = f"flatpak override --user --talk-name=org.freedesktop.Flatpak {APP_ID}"


def inside() -> bool:
    """Whether this process runs in a Flatpak sandbox."""
    return os.path.exists(SANDBOX_INFO)


def use_host_folders(config_dir: str | None, log_dir: str | None) -> None:
    """Point this process at the host's Impasto folders (as install.py recorded them on the host;
    else Flatpak's HOST_XDG_* or the XDG defaults), where the server outside publishes itself."""
    home = Path.home()
    for env, recorded, host_xdg, default, tail in (
        (CONFIG_ENV, config_dir, "HOST_XDG_CONFIG_HOME", ".config", "impasto"),
        (LOG_ENV, log_dir, "HOST_XDG_CACHE_HOME", ".cache", "impasto/log"),
    ):
        if not os.environ.get(env):
            base = os.environ.get(host_xdg) or str(home / default)
            os.environ[env] = recorded or str(Path(base) / tail)


def host_launcher(repo: str) -> list[str] | None:
    """The prefix that runs a command on the host, in ``repo``, with this process's Impasto
    folders; None when GIMP lacks the permission (flatpak-spawn then fails at once)."""
    spawn = shutil.which("flatpak-spawn")
    if spawn is None:
        return None
    try:
        allowed = (
            subprocess.run([spawn, "--host", "true"], capture_output=True, timeout=10).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        allowed = False
    if not allowed:
        return None
    folders = [
        f"--env={env}={os.environ[env]}" for env in (CONFIG_ENV, LOG_ENV) if env in os.environ
    ]
    return [spawn, "--host", f"--directory={repo}", *folders]


def start_command(python: str) -> str:
    """The one command that starts the server outside the sandbox, for a message."""
    return f"{python} -m core serve --idle-timeout 0"


def not_running_message(python: str) -> str:
    return (
        "Impasto's server is not running, and GIMP's Flatpak sandbox may not start programs "
        f"outside it: run `{start_command(python)}` in a terminal (install.py set it to start "
        "at login, so this is needed once)"
    )


def client(setup: dict, timeout: float):
    """A client for a plug-in inside the sandbox: the host's folders, the server started outside
    (or, without the permission, a message with the command that starts it)."""
    from core.client import Client

    use_host_folders(setup.get("config_dir"), setup.get("log_dir"))
    launcher = host_launcher(setup["repo"])
    return Client(
        python=setup["python"],
        repo=setup["repo"],
        timeout=timeout,
        autostart=launcher is not None,
        launcher=launcher,
        not_running=not_running_message(setup["python"]),
    )
