"""bench/search_efficiency.py on the NAS-Bench-201 table, as its docs run it but short: the
table's columns say the trial counts they were measured at (it said random@200 at any
--trials)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "bench/search_efficiency.py", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_a_short_run_names_its_own_trial_counts() -> None:
    result = _bench("--seeds", "1", "--trials", "50", "--strategies", "random", "--workers", "1")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "| strategy | HV@50 | trials to random@50 | worst seed@50 |" in result.stdout
    row = re.search(r"^\| random \| ([\d.]+) ± [\d.]+ \| (\d+) \|", result.stdout, re.MULTILINE)
    assert row, result.stdout[-2000:]
    # random reaches its own final mean at its last trial at the latest
    assert 0 < float(row.group(1)) <= 1 and 1 <= int(row.group(2)) <= 50
