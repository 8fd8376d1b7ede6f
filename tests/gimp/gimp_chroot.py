"""A real GIMP 3 for the end-to-end tests: Debian 13's GIMP 3.0 in a cached debootstrap chroot.

The chroot lives outside the repo ($IMPASTO_GIMP_ROOT, default /var/cache/impasto-gimp-chroot),
is built once under a lock and reused. It shares the host's loopback network, so a plug-in inside
reaches a server started on the host.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

DEFAULT_ROOT = Path("/var/cache/impasto-gimp-chroot")
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ["gimp", "python3-gi", "gir1.2-gimp-3.0", "xvfb", "xauth", "xdotool"]
GIMP = "gimp-console-3.0"
READY = ".impasto-ready"  # written last: a half-built chroot is never mistaken for a good one


class Unavailable(Exception):
    """Real GIMP 3 cannot be provided here; the message says why (the tests skip with it)."""


def chroot_root() -> Path:
    """Where the chroot is cached: $IMPASTO_GIMP_ROOT or /var/cache/impasto-gimp-chroot."""
    return Path(os.environ.get("IMPASTO_GIMP_ROOT") or DEFAULT_ROOT)


def _run(cmd: list[str], what: str, timeout: float = 900) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise Unavailable(f"{what} failed: " + " | ".join(tail))


def ensure_chroot(root: Path | None = None) -> Path:
    """Build the GIMP 3 chroot if it is not there yet (idempotent, under a lock); return its root."""
    root = root or chroot_root()
    if os.geteuid() != 0:
        raise Unavailable("running GIMP in a chroot needs root (debootstrap, chroot, mount)")
    if _ready(root):
        return root
    if not shutil.which("debootstrap"):
        if not shutil.which("apt-get"):
            raise Unavailable("debootstrap is not installed and there is no apt-get to install it")
        _run(["apt-get", "update"], "apt-get update (to install debootstrap)")
        _run(["apt-get", "install", "-y", "debootstrap"], "installing debootstrap")
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be building it right now
        if _ready(root):
            return root
        if not (root / "usr/bin/apt-get").exists():
            if _mounts_under(root):
                raise Unavailable(f"{root} is half built and still has mounts: unmount them first")
            shutil.rmtree(root, ignore_errors=True)
            _run(
                ["debootstrap", "--variant=minbase", "trixie", str(root), MIRROR],
                f"debootstrap of Debian 13 from {MIRROR}",
            )
        with mounted(root):
            _run(["chroot", str(root), "apt-get", "update"], "apt-get update in the chroot")
            _run(
                ["chroot", str(root), "env", "DEBIAN_FRONTEND=noninteractive", "apt-get",
                 "install", "-y", "--no-install-recommends", *PACKAGES],
                "installing GIMP 3 in the chroot",
            )  # fmt: skip
        (root / READY).write_text(" ".join(PACKAGES) + "\n")
    return root


def _ready(root: Path) -> bool:
    """Built, with every package of PACKAGES (an older chroot just gets the new ones added)."""
    try:
        return set((root / READY).read_text().split()) >= set(PACKAGES)
    except OSError:
        return False


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve())
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def _is_mount(path: Path) -> bool:
    return str(path.resolve()) in _mounts_under(path)


@contextlib.contextmanager
def mounted(root: Path, binds: tuple[Path, ...] = ()) -> Iterator[None]:
    """Mount /proc, /dev and each bind folder at the same path inside the chroot; always unmount."""
    done: list[Path] = []
    try:
        for target, args in [
            (root / "proc", ["-t", "proc", "proc"]),
            (root / "dev", ["--bind", "/dev"]),
            *((root / str(b).lstrip("/"), ["--bind", str(b)]) for b in binds),
        ]:
            target.mkdir(parents=True, exist_ok=True)
            if _is_mount(target):
                continue
            _run(["mount", *args, str(target)], f"mount {target}", timeout=30)
            done.append(target)
        yield
    finally:
        for target in reversed(done):
            subprocess.run(["umount", "-l", str(target)], capture_output=True)


def _chroot(root: Path, env: dict[str, str], command: list[str]) -> list[str]:
    return ["chroot", str(root), "env", "-i", *(f"{k}={v}" for k, v in env.items()), *command]


def run_batch(
    root: Path, script: str, env: dict[str, str], timeout: float = 300, prefix: tuple = ()
) -> subprocess.CompletedProcess:
    """Run a python-fu-eval batch script in headless GIMP inside the chroot (it must be mounted);
    ``prefix`` wraps the chroot command (e.g. FLATPAK_PIDS)."""
    command = [GIMP, "-i", "--batch-interpreter=python-fu-eval", "-b", "-", "--quit"]
    # A session of its own, so a hung GIMP is killed with all its plug-ins.
    with subprocess.Popen(
        [*prefix, *_chroot(root, env, command)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(script, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            stderr += f"\nGIMP killed after {timeout:g} s"
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def batch_json(
    root: Path, script: str, env: dict[str, str], result: Path, timeout: float, binds: tuple
) -> object | None:
    """Run a batch script that writes ``result`` (JSON) with ``binds`` mounted and read it back;
    None, with GIMP's output on stderr, when the script wrote nothing."""
    with mounted(root, binds=binds):
        done = run_batch(root, script, env, timeout=timeout)
    if not result.is_file():
        print(done.stdout, done.stderr, file=sys.stderr)
        return None
    return json.loads(result.read_text())


# Presses Return (OK) in every Impasto dialog that opens, as a user accepting the defaults would.
_ACCEPT_DIALOGS = r"""
while true; do
  for w in $(xdotool search --name '^(Neural Style|Upscale x4)$' 2>/dev/null); do
    sleep 1; xdotool windowfocus --sync "$w" key Return 2>/dev/null
  done
  sleep 0.3
done
"""


@contextlib.contextmanager
def virtual_display(root: Path) -> Iterator[str]:
    """An X server inside the chroot whose dialogs get accepted; yields its DISPLAY value."""
    display = f":{100 + os.getpid() % 400}"
    env = {"PATH": "/usr/bin:/bin", "DISPLAY": display}
    started = []
    try:
        for command in (
            ["Xvfb", display, "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
            ["bash", "-c", _ACCEPT_DIALOGS],
        ):
            started.append(
                subprocess.Popen(
                    _chroot(root, env, command),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
            time.sleep(1.0)  # the X server must accept connections before clients come
        if started[0].poll() is not None:
            raise Unavailable("Xvfb did not start in the chroot")
        yield display
    finally:
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# ---- a Flatpak-like sandbox -----------------------------------------------------------------

# Flatpak gives the sandbox its own pid namespace: the host's processes (the server) are invisible.
FLATPAK_PIDS = ("unshare", "--pid", "--fork", "--kill-child")


# flatpak-spawn as GIMP has it with --talk-name=org.freedesktop.Flatpak: the command runs on the
# host (here: by host_relay, through files in $RELAY) and this process lasts as long as it does.
_SPAWN = r"""#!/bin/sh
id=$$
printf '%s\0' "$@" > "$RELAY/.req.$id" && mv "$RELAY/.req.$id" "$RELAY/req.$id"
while [ ! -e "$RELAY/exit.$id" ]; do sleep 0.05; done
exit "$(cat "$RELAY/exit.$id")"
"""


def _relay(relay: Path, stop: threading.Event) -> None:
    """Run each flatpak-spawn request on the host, as flatpak-session-helper does."""
    while not stop.is_set():
        for request in relay.glob("req.*"):
            args = request.read_bytes().split(b"\0")[:-1]
            request.unlink()
            options = [a.decode() for a in args]
            cwd, env, i = None, dict(os.environ), 0
            while i < len(options) and options[i].startswith("--"):
                if options[i].startswith("--directory="):
                    cwd = options[i].split("=", 1)[1]
                elif options[i].startswith("--env="):
                    key, value = options[i].split("=", 1)[1].split("=", 1)
                    env[key] = value
                i += 1
            exit_file = relay / f"exit.{request.name.split('.', 1)[1]}"

            def run(command=options[i:], cwd=cwd, env=env, exit_file=exit_file) -> None:
                code = subprocess.run(
                    command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    start_new_session=True,
                ).returncode  # fmt: skip
                exit_file.write_text(str(code))

            threading.Thread(target=run, daemon=True).start()
        time.sleep(0.05)


@contextlib.contextmanager
def host_relay(view: Path, relay: Path) -> Iterator[None]:
    """Give the Flatpak-like view a flatpak-spawn that may run commands on the host (the
    permission granted); the sandbox must get RELAY=<relay> in its environment."""
    relay.mkdir(parents=True, exist_ok=True)
    spawn = view / "usr/bin/flatpak-spawn"  # in the overlay's upper layer only
    spawn.write_text(_SPAWN)
    spawn.chmod(0o755)
    stop = threading.Event()
    thread = threading.Thread(target=_relay, args=(relay, stop), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def flatpak_like(root: Path, scratch: Path) -> Iterator[Path]:
    """A copy-on-write view of the chroot with /.flatpak-info, as inside Flathub's GIMP; the cached
    chroot itself (shared with other runs) is never changed. Yields the view's root."""
    upper, work, view = (scratch / name for name in ("upper", "work", "root"))
    for folder in (upper, work, view):
        folder.mkdir(parents=True)
    options = f"lowerdir={root},upperdir={upper},workdir={work}"
    _run(["mount", "-t", "overlay", "overlay", "-o", options, str(view)], "overlay mount", 30)
    try:
        (view / ".flatpak-info").write_text("[Application]\nname=org.gimp.GIMP\n")
        yield view
    finally:
        subprocess.run(["umount", "-l", str(view)], capture_output=True)
