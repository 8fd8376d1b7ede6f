"""Where the local server is and how to reach it: the connection file and a liveness probe.

Standard library only: GIMP's Python imports this through core.client.
"""

from __future__ import annotations

import http.client
import json
import os
import stat
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PROTOCOL = 1  # major version of docs/protocol.md; a server speaking another one is replaced
API = f"/v{PROTOCOL}"
CONNECTION_FILE = "server.json"
LOCK_FILE = "server.lock"  # locked by the running server for its whole life
MAX_CONNECTION_BYTES = 4096  # a real connection file is about 150 bytes
CONFIG_ENV = "IMPASTO_CONFIG_DIR"
LOG_ENV = "IMPASTO_LOG_DIR"
SANDBOX_INFO = "/.flatpak-info"  # in a Flatpak sandbox, whose pids are not the host's


@dataclass
class ConnectionInfo:
    """What a running server publishes about itself in the connection file."""

    host: str
    port: int
    token: str
    pid: int
    protocol: int = PROTOCOL

    def http(self, timeout: float) -> http.client.HTTPConnection:
        """A new HTTP connection to the server (one per request: loopback makes this cheap)."""
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def headers(self) -> dict[str, str]:
        """Headers every request needs: the token and a loopback Host the server accepts."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return {"Authorization": f"Bearer {self.token}", "Host": f"{host}:{self.port}"}


def _platform_dir(windows_env: str, mac: str, xdg_env: str, xdg_default: str) -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get(windows_env) or Path.home() / "AppData" / "Roaming") / "impasto"
    if sys.platform == "darwin":
        return Path.home() / "Library" / mac / "impasto"
    return Path(os.environ.get(xdg_env) or Path.home() / xdg_default) / "impasto"


def config_dir() -> Path:
    """Per-user config folder: $IMPASTO_CONFIG_DIR, else the platform's (~/.config/impasto on Linux)."""
    override = os.environ.get(CONFIG_ENV)
    if override:
        return Path(override)
    return _platform_dir("APPDATA", "Application Support", "XDG_CONFIG_HOME", ".config")


def log_dir() -> Path:
    """Per-user log folder for the server log: $IMPASTO_LOG_DIR, else the platform's cache/log folder."""
    override = os.environ.get(LOG_ENV)
    if override:
        return Path(override)
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Logs" / "impasto"
    return _platform_dir("LOCALAPPDATA", "Caches", "XDG_CACHE_HOME", ".cache") / "log"


def log_path() -> Path:
    """The log of a server started by the client (its stdout and stderr)."""
    return log_dir() / "server.log"


def connection_path() -> Path:
    """The connection file: host, port, token and pid of the running server."""
    return config_dir() / CONNECTION_FILE


class UntrustedConnectionError(Exception):
    """The connection file or its folder could have been planted by another user."""


def _check_private(path: Path, st: os.stat_result, what: str) -> None:
    """Refuse a file or folder that another user owns or may write (POSIX: uid and mode bits)."""
    if sys.platform == "win32":
        return  # per-user %APPDATA% with its own ACLs; no uid or mode bits to check
    if st.st_uid != os.getuid():
        raise UntrustedConnectionError(
            f"the Impasto {what} {path} belongs to another user, who could send your images to "
            "their own program: remove it, or set IMPASTO_CONFIG_DIR to a folder of your own"
        )
    if st.st_mode & 0o022:
        raise UntrustedConnectionError(
            f"the Impasto {what} {path} can be changed by other users (mode "
            f"{stat.S_IMODE(st.st_mode):o}), who could send your images to their own program: "
            f"run `chmod go-w {path}`"
        )


def check_config_dir() -> None:
    """Refuse a config folder that another user owns or may write (nothing to check if absent)."""
    folder = config_dir()
    try:
        st = os.stat(folder)
    except FileNotFoundError:
        return
    _check_private(folder, st, "config folder")


def load_connection() -> tuple[ConnectionInfo | None, str]:
    """The published connection and "", or None and why there is none usable ("" if no file).

    Only a small regular file of ours is read: a FIFO, device, symlink or huge file is stale, never
    opened for reading. UntrustedConnectionError if the file or folder is not private to the user.
    """
    check_config_dir()
    path = connection_path()
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None, ""
    except OSError as e:  # ELOOP: a symbolic link
        return None, f"it cannot be opened safely ({e.strerror})"
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, "it is not a regular file"
        _check_private(path, st, "connection file")
        if st.st_size > MAX_CONNECTION_BYTES:
            return None, f"it is {st.st_size} bytes, too large for a connection file"
        info = _parse_connection(f.read(MAX_CONNECTION_BYTES))
    return (info, "") if info else (None, "it is empty or not a connection file")


def read_connection() -> ConnectionInfo | None:
    """The published connection, or None if there is no usable connection file."""
    return load_connection()[0]


def _parse_connection(text: bytes) -> ConnectionInfo | None:
    """A connection file's content, or None if it is not one."""
    try:
        data = json.loads(text)
        return ConnectionInfo(
            host=str(data["host"]),
            port=int(data["port"]),
            token=str(data["token"]),
            pid=int(data["pid"]),
            protocol=int(data.get("protocol", 0)),
        )
    except (ValueError, KeyError, TypeError):
        return None


def publish_connection(info: ConnectionInfo) -> None:
    """Write the connection file (mode 0600), complete on disk before it appears under its name.

    Only the holder of the ServerLock calls this, so replacing whatever is there (stale) is safe.
    """
    folder = config_dir()
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".server-", suffix=".tmp")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(asdict(info), f)
            f.flush()
            os.fsync(f.fileno())  # a crash right after the rename must not leave an empty file
        os.replace(tmp, connection_path())
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def withdraw_connection(pid: int) -> None:
    """Remove the connection file if it belongs to the server with this pid (or is unusable).

    Only the holder of the ServerLock calls this: a live server's file is never removed by another.
    """
    try:
        info, _ = load_connection()
    except UntrustedConnectionError:
        return  # someone else's file now: not ours to remove
    if info is None or info.pid == pid:
        try:
            connection_path().unlink()
        except FileNotFoundError:
            pass


class ServerLock:
    """An exclusive lock on ``server.lock`` in the config folder, held by the running server for
    its whole life: the operating system releases it when the process ends, however it ends, so
    it says whether a server runs better than any request to a server that may be busy."""

    def __init__(self) -> None:
        check_config_dir()
        folder = config_dir()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        self.path = folder / LOCK_FILE
        self._fd = os.open(self.path, flags, 0o600)
        if not stat.S_ISREG(os.fstat(self._fd).st_mode):
            os.close(self._fd)
            raise UntrustedConnectionError(f"{self.path} is not a regular file: remove it")
        self.held = False

    def acquire(self, wait: float = 1.0) -> bool:
        """Take the lock (retrying for ``wait`` s: another process may be testing it); False if a
        running server holds it."""
        deadline = time.monotonic() + wait
        while not _try_lock(self._fd):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        self.held = True
        return True

    def close(self) -> None:
        """Release the lock (also done by the operating system when the process ends)."""
        os.close(self._fd)
        self.held = False


def server_running() -> bool:
    """Whether a server holds the lock, i.e. is alive, whether or not it answers right now."""
    try:
        check_config_dir()
        fd = os.open(config_dir() / LOCK_FILE, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    except (OSError, UntrustedConnectionError):
        return False
    try:
        if not _try_lock(fd):
            return True
        _unlock(fd)
        return False
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool:
    """Lock a whole file exclusively without waiting; False if another process holds it."""
    try:
        if sys.platform == "win32":
            import msvcrt

            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _unlock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (it may belong to another program)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        import ctypes  # os.kill(pid, 0) would terminate the process on Windows

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def probe(info: ConnectionInfo, timeout: float = 5.0) -> dict | None:
    """The server's health answer if it is really the server in ``info``, else None (stale file)."""
    # In a sandbox the host's pids are invisible; the token and the pid check below still hold.
    if not os.path.exists(SANDBOX_INFO) and not pid_alive(info.pid):
        return None
    conn = info.http(timeout)
    try:
        conn.request("GET", "/health", headers=info.headers())
        response = conn.getresponse()
        health = json.loads(response.read()) if response.status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    # The pid check catches a port reused by another program after the server died.
    if isinstance(health, dict) and health.get("pid") == info.pid:
        return health
    return None
