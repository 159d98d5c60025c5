"""bench/driver_front.py runs, and its own check holds: the incremental front and hypervolume
equal the recomputed ones at every timed trial (the bench exits non-zero when they differ)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_driver_front_bench_agrees_with_the_recomputation() -> None:
    command = [sys.executable, "bench/driver_front.py", "--trials", "400", "--repeats", "5"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 100 |")]
    assert len(rows) == 1 and "the values of both sides agreed" in result.stdout
