"""Where the local server is and how to reach it: the connection file and a liveness probe.

Standard library only: GIMP's Python imports this through core.client.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

PROTOCOL = 1  # major version of docs/protocol.md; a server speaking another one is replaced
API = f"/v{PROTOCOL}"
CONNECTION_FILE = "server.json"
CONFIG_ENV = "IMPASTO_CONFIG_DIR"
LOG_ENV = "IMPASTO_LOG_DIR"


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


def read_connection() -> ConnectionInfo | None:
    """The published connection, or None if there is no readable connection file."""
    try:
        return _parse_connection(connection_path().read_bytes())
    except OSError:
        return None


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


def publish_connection(info: ConnectionInfo) -> bool:
    """Create the connection file (mode 0600) unless one exists; False if another one is there.

    Creation is atomic (a hard link of a complete file), so of two servers started at once only one
    publishes and readers never see a half-written file.
    """
    folder = config_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".server-", suffix=".tmp")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(asdict(info), f)
        try:
            os.link(tmp, connection_path())
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: last writer wins
            os.replace(tmp, connection_path())
        return True
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def withdraw_connection(pid: int) -> None:
    """Remove the connection file if it belongs to the server with this pid (or is unreadable)."""
    path = connection_path()
    try:
        with open(path, "rb") as f:
            inode = os.fstat(f.fileno()).st_ino
            info = _parse_connection(f.read())
        # Another server may have replaced the file since: only remove the one that was read.
        if (info is None or info.pid == pid) and os.stat(path).st_ino == inode:
            path.unlink()
    except FileNotFoundError:
        pass


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
    if not pid_alive(info.pid):
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
