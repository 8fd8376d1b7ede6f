"""What a job costs in memory and whether this computer has it: the bound on a job's size.

The engine tiles, so the network's own memory is small; what grows with the image is the whole
result, held by the server (float while it is assembled, then in the request's sample type), by
the client receiving it and by GIMP's buffer. Server and client share this machine (loopback).
"""

from __future__ import annotations

import os
import sys

HEADROOM = 0.8  # of the memory available now: the rest is for everything else that runs
FLOAT_RGB = 3 * 4  # bytes per pixel of the float result the engine assembles
FLOAT_ALPHA = 2 * 4  # bytes per pixel of an alpha channel resized in float (and its copy)


def available() -> int | None:
    """Bytes of memory available now (Linux: MemAvailable; elsewhere half the physical memory);
    None when unknown (then only the fixed limits apply)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if sys.platform == "win32":
        return None
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (OSError, ValueError, AttributeError):
        return None


def job_bytes(op: str, width: int, height: int, channels: int, sample_bytes: int) -> int:
    """Peak bytes of one job: the input as float, the result as float and as samples on the
    server, and the result twice more on the client's side (received, then in GIMP's buffer)."""
    factor = 16 if op == "upscale" else 1
    pixels = width * height
    out = pixels * factor
    alpha = FLOAT_ALPHA if channels in (2, 4) else 0
    server = pixels * channels * (sample_bytes + 4) + out * (
        FLOAT_RGB + alpha + channels * sample_bytes
    )
    client = 2 * out * channels * sample_bytes
    return server + client


def gib(size: int) -> str:
    return f"{size / 2**30:.1f} GB"
