"""Two fixed costs of a search, each against what replaced it, side by side in fresh processes.

    python bench/exit_cost.py            # 5 alternating pairs of each

- ``exit``: a process that has imported what ``nascomp search`` holds at its end (torch,
  MLflow, Ray Tune, the driver) exits the normal way (the interpreter's module teardown)
  against through ``nascomp.search.cli.exit_without_teardown``. Timed from a stamp the process
  writes just before exiting to the moment its parent sees it gone.
- ``mlflow``: what a worker's first trial paid when it wrote the MLflow ONNX model itself:
  importing ``mlflow.onnx``, ``onnx``, ``onnxruntime`` and ``mlflow.models`` in a process that
  has torch and the trainable loaded already, against staging the file
  (``stage_onnx_model``: no import). Timed inside the process.

The sides alternate (A B, B A, ...) because the machine is shared; medians per side.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import at_least, child_value, load_average, machine, spread

EXIT = textwrap.dedent(
    """
    import sys, time
    import torch, mlflow, ray.tune
    import nascomp.search.driver
    from nascomp.search.cli import exit_without_teardown

    with open(sys.argv[2], "w") as stamp:
        stamp.write(repr(time.time()))
    if sys.argv[1] == "fast":
        exit_without_teardown(0)
    """
)

FIRST_REPORT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    import nascomp.search.tune.trainable  # torch, Ray Tune and the trial code, as in a worker
    from nascomp.search.tracking.models import stage_onnx_model

    started = time.perf_counter()
    if sys.argv[1] == "import":
        import mlflow.onnx, onnx, onnxruntime
        from mlflow.models import infer_signature
    else:
        stage_onnx_model(b"0" * 100_000, Path(sys.argv[2]), np.zeros((1, 1, 8, 8), np.float32))
    print(time.perf_counter() - started)
    """
)


def exit_seconds(mode: str, tmp: Path) -> float:
    stamp = tmp / f"stamp-{mode}"
    subprocess.run([sys.executable, "-c", EXIT, mode, str(stamp)], check=True)
    return time.time() - float(stamp.read_text())


def first_report_seconds(mode: str, tmp: Path) -> float:
    return child_value(FIRST_REPORT, mode, str(tmp))


def alternate(measure, sides: tuple[str, str], pairs: int, tmp: Path) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {side: [] for side in sides}
    for i in range(pairs):
        for side in sides if i % 2 == 0 else sides[::-1]:
            times[side].append(measure(side, tmp))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pairs",
        type=at_least(1),
        default=5,
        help="alternating pairs of fresh processes per cost (default %(default)s)",
    )
    args = parser.parse_args()
    print(f"machine: {machine()}; load average {load_average()}")
    with tempfile.TemporaryDirectory(prefix="nascomp-exit-") as name:
        tmp = Path(name)
        exits = alternate(exit_seconds, ("normal", "fast"), args.pairs, tmp)
        reports = alternate(first_report_seconds, ("import", "stage"), args.pairs, tmp)
    print(f"load average at the end {load_average()}")
    print("\n| cost | before, s | now, s | saved, s (medians) |\n|---|---|---|---|")
    rows = [
        ("exit: teardown / exit_without_teardown", exits["normal"], exits["fast"]),
        ("worker's first report: import MLflow / stage", reports["import"], reports["stage"]),
    ]
    for label, before, now in rows:
        b, n = spread(before), spread(now)
        print(f"| {label} | {b} | {n} | {b.median - n.median:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
