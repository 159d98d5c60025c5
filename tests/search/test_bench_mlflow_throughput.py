"""bench/mlflow_throughput.py --count-slots (docs/scaling.md quotes it) runs through the real
callback and run log against its stub client: the stub followed Tracker once and must keep up
(``start_search`` began reading the experiment's tags, and the mode ended in AttributeError)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_counted_calls_per_trial_follow_the_batching() -> None:
    command = [sys.executable, "bench/mlflow_throughput.py", "--count-slots", "1"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    line = re.search(
        r"1 at a time, +24 trials: ([\d.]+) calls per trial unbatched, ([\d.]+) batched "
        r"\(create_run 1\.00, log_batch [\d.]+, log_dict 1\.00, set_terminated 1\.00\); "
        r"ratio ([\d.]+)",
        result.stdout,
    )
    assert line, result.stdout[-2000:]
    unbatched, batched, ratio = map(float, line.groups())
    # One run per trial either way; batched, its epochs' metrics go in a few log_batch calls.
    assert batched < unbatched and abs(ratio - batched / unbatched) < 0.01
