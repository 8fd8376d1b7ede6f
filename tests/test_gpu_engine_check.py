"""bench/gpu_engine_check.py runs end to end (tiny sizes, on the CPU), so a lent GPU's few minutes
are not lost to a typo in it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_gpu_check_takes_every_figure_and_prints_one_table() -> None:
    result = subprocess.run(
        [sys.executable, "bench/gpu_engine_check.py", "--cpu-smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    cases = [row.split(" | ")[0][2:] for row in table[1:]]
    speeds = [c for c in cases if c.endswith(" MP") and c.split()[0] in ("compact", "full", "sr")]
    assert len(speeds) == 6  # both widths and the upscaler at both smoke sizes
    assert any("GiB budget" in c for c in cases)
    psnr_rows = [row for row in table if "PSNR" in row]
    assert len(psnr_rows) == 3 and all(row.rstrip(" |").endswith("yes") for row in psnr_rows)
    for variant in ("host path", "torch.compile", "CUDA graphs"):
        rows = [row for row in table if variant in row]
        assert len(rows) == 3 and not any("failed" in row for row in rows)
