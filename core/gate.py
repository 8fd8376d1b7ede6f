"""Admission of new connections: request heads are read in one thread, under a deadline, before
any handler thread is spent on them, so clients without the token cannot hold the server's threads.
"""

from __future__ import annotations

import io
import json
import logging
import selectors
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

log = logging.getLogger("impasto.server")

MAX_PENDING = 256  # connections whose head is still arriving; past it the oldest is dropped
MAX_HEAD = 64 << 10  # bytes of request line plus headers
HEAD_ENDS = (b"\n\n", b"\n\r\n")  # a blank line ends the head (bare LF tolerated, as http.server)

Handoff = Callable[[socket.socket, Any, bytes], None]


def raw_answer(status: int, code: str, message: str) -> bytes:
    """A whole JSON refusal, for the few sent before a handler exists."""
    body = json.dumps({"error": code, "message": message}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class DeadlineReader(io.RawIOBase):
    """A socket's bytes (after ``prefix``, what the gate already read) under two limits: ``silence``
    seconds per read and an overall ``deadline`` (monotonic time) that a trickle of bytes cannot move.
    """

    def __init__(self, sock: socket.socket, prefix: bytes, silence: float) -> None:
        super().__init__()
        self._sock, self._prefix, self.silence = sock, memoryview(prefix), silence
        self.deadline = float("inf")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n], self._prefix = self._prefix[:n], self._prefix[n:]
            return n
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        self._sock.settimeout(min(self.silence, left))
        return self._sock.recv_into(buffer)


class _Pending:
    """A connection whose head is still arriving."""

    __slots__ = ("sock", "address", "data", "deadline")

    def __init__(self, sock: socket.socket, address: Any, deadline: float) -> None:
        self.sock, self.address, self.data, self.deadline = sock, address, bytearray(), deadline


class HeadGate:
    """Reads request heads of up to MAX_PENDING connections in one thread; a complete head (or one
    cut short by the client) goes to ``handoff``; a head not complete within ``deadline`` seconds
    of connecting is dropped, as is the oldest connection when a new one finds the gate full.
    """

    def __init__(self, handoff: Handoff, deadline: float) -> None:
        self._handoff, self._deadline = handoff, deadline
        self._pending: OrderedDict[int, _Pending] = OrderedDict()  # by fd, oldest first
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._incoming: list[_Pending] = []
        self._closed = False
        self.dropped = 0  # connections dropped for a slow head or a full gate
        threading.Thread(target=self._run, name="impasto-gate", daemon=True).start()

    def add(self, sock: socket.socket, address: Any) -> None:
        """Take a freshly accepted connection (from the accepting thread)."""
        sock.setblocking(False)
        with self._lock:
            self._incoming.append(_Pending(sock, address, time.monotonic() + self._deadline))
        self._wake_w.send(b"\0")

    def close(self) -> None:
        """Stop the gate thread; connections still waiting are closed."""
        self._closed = True
        self._wake_w.send(b"\0")

    def _run(self) -> None:
        while not self._closed:
            now = time.monotonic()
            oldest = next(iter(self._pending.values()), None)
            timeout = max(0.0, oldest.deadline - now) if oldest else None
            for key, _ in self._selector.select(timeout):
                try:
                    if key.fileobj is self._wake_r:
                        self._admit()
                    # An earlier event of this batch may have dropped it (full gate).
                    elif (pending := self._pending.get(key.fd)) and pending.sock is key.fileobj:
                        self._receive(pending)
                except Exception:  # noqa: BLE001 - the gate's end would be the server's
                    log.exception("the connection gate failed on one connection")
            now = time.monotonic()
            while self._pending:
                first = next(iter(self._pending.values()))
                if first.deadline > now:
                    break
                self._drop(first, "its request head did not arrive in time")
        for pending in list(self._pending.values()):
            self._forget(pending).close()

    def _admit(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            incoming, self._incoming = self._incoming, []
        for pending in incoming:
            # Past the cap the oldest goes: it had the most time, and a new client that sends its
            # head at once (as every real client does) is never the one dropped.
            if len(self._pending) >= MAX_PENDING:
                self._drop(next(iter(self._pending.values())), "too many connections are waiting")
            self._pending[pending.sock.fileno()] = pending
            self._selector.register(pending.sock, selectors.EVENT_READ)

    def _receive(self, pending: _Pending) -> None:
        try:
            chunk = pending.sock.recv(MAX_HEAD + 1 - len(pending.data))
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk and not pending.data:  # connected and left: nothing to answer
            self._forget(pending).close()
            return
        start = max(0, len(pending.data) - 2)  # only where an end can be new: no quadratic scan
        pending.data += chunk
        if not chunk or any(pending.data.find(end, start) >= 0 for end in HEAD_ENDS):
            sock = self._forget(pending)  # complete, or the client stopped sending: parse it
            sock.setblocking(True)
            self._handoff(sock, pending.address, bytes(pending.data))
        elif len(pending.data) > MAX_HEAD:
            self._refuse_huge(pending)

    def _refuse_huge(self, pending: _Pending) -> None:
        if b"\n" in pending.data:  # the request line ended: the headers are too long
            status, code = 431, "request_header_fields_too_large"
        else:
            status, code = 414, "request_uri_too_long"
        answer = raw_answer(status, code, f"the request head is over {MAX_HEAD} bytes")
        sock = self._forget(pending)
        try:
            sock.send(answer)  # a fresh socket's buffer takes it whole; a full one is not our loss
        except OSError:
            pass
        sock.close()

    def _drop(self, pending: _Pending, why: str) -> None:
        self.dropped += 1
        if self.dropped <= 3 or self.dropped % 1000 == 0:  # a flood must not flood the log
            log.info(
                "dropped a connection from %s: %s (%d so far)",
                pending.address[0],
                why,
                self.dropped,
            )
        self._forget(pending).close()

    def _forget(self, pending: _Pending) -> socket.socket:
        self._selector.unregister(pending.sock)
        del self._pending[pending.sock.fileno()]
        return pending.sock
