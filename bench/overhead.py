"""What Ray, Optuna and MLflow add to a search: ``nascomp search`` against a plain Python loop.

    python bench/overhead.py                   # 32 trials, concurrency 2, 3 alternating pairs
    python bench/overhead.py --quick           # 8 trials, 1 pair (a smoke run)

Both sides run the same fixed workload: every trial trains the same digits CNN (the space is
pinned to one architecture with ``--set``, plain training, no pruning, quantization or
distillation), so every trial does the same work and only the orchestration differs.

- ``nascomp``: the real ``nascomp search`` command in a subprocess (interpreter start,
  ``ray.init``, Optuna, the Ray Tune loop, MLflow logging to a sqlite store, the front at the
  end, ``ray.shutdown``), ``search.concurrent`` trials at once. The store is created once,
  before the timed runs, as a user's ``mlflow.db`` serves search after search: creating an
  empty one runs MLflow's schema migrations (printed: several seconds on a 2-core machine).
- ``baseline``: a subprocess that starts ``concurrent`` plain processes (multiprocessing,
  spawn), each calling ``trainers.trial.run_trial`` on the same flat config, one trial after
  another, until all trials are done.

Both walls include starting Python and importing torch, so the ratio is what the platform
adds. The sides alternate (N B, B N, ...) and the ratio is taken per pair, because the machine
is shared. Goal of issue 6: wall-time ratio at most 1.15.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    DIGITS_ARCH,
    PLAIN_TRAINING,
    ROOT,
    as_sets,
    fixed_trial_config,
    load_average,
    machine,
    spread,
)

_PROGRESS = re.compile(r"^\[\s*(\d+)/(\d+)\]\s+([\d.]+)s", re.MULTILINE)


def workload(epochs: int) -> dict[str, Any]:
    """The ``--set`` overrides that pin every trial to the same work. Reuse of trained students
    is off: every trial here has the same config, so with it (the default) all but the first
    would skip training, and the search would do less work than the baseline."""
    return {
        **PLAIN_TRAINING,
        **DIGITS_ARCH,
        "train.epochs": epochs,
        "search.reuse_training": False,
    }


def create_store(uri: str) -> float:
    """Seconds to create an empty MLflow sqlite store (its schema migrations run once)."""
    from mlflow.tracking import MlflowClient

    started = time.perf_counter()
    MlflowClient(tracking_uri=uri).search_experiments()
    return time.perf_counter() - started


def run_nascomp(
    overrides: dict[str, Any], n_trials: int, concurrent: int, tmp: Path, store: str
) -> float:
    """Wall seconds of one real ``nascomp search`` (a new Ray session) logging into ``store``."""
    work = Path(tempfile.mkdtemp(prefix="nascomp-", dir=tmp))
    # Ray's unix sockets must stay under ~100 characters: a short folder directly in /tmp.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    sets = [*as_sets(overrides), f"storage={work / 'results'}"]
    command = [
        str(Path(sys.executable).with_name("nascomp")),
        "search",
        "--trials",
        str(n_trials),
        "--concurrent",
        str(concurrent),
        "--tracking-uri",
        store,
        "--experiment",
        "overhead",
        *[arg for item in sets for arg in ("--set", item)],
    ]
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "NASCOMP_CACHE": str(tmp / "cache")}
    env.pop("RAY_ADDRESS", None)
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=work, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    wall = time.perf_counter() - started
    shutil.rmtree(ray_tmp, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"nascomp search failed ({done.returncode}):\n{done.stderr[-3000:]}")
    finished = _PROGRESS.findall(done.stdout)
    if len(finished) != n_trials:
        raise RuntimeError(f"expected {n_trials} finished trials, saw {len(finished)}")
    if "ok" not in done.stdout or " error " in done.stdout:
        raise RuntimeError(f"a trial did not finish ok:\n{done.stdout[-3000:]}")
    return wall


def run_baseline(config: dict[str, Any], n_trials: int, concurrent: int, tmp: Path) -> float:
    """Wall seconds of the same trials in ``concurrent`` plain processes, no platform at all."""
    spec = tmp / "config.json"
    spec.write_text(json.dumps(config))
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--baseline-worker",
        str(spec),
        "--trials",
        str(n_trials),
        "--concurrent",
        str(concurrent),
    ]
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"baseline failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall


def _worker(config: dict[str, Any], n_trials: int) -> None:
    from nascomp.trainers.trial import run_trial

    for _ in range(n_trials):
        outcome = run_trial(config)
        if outcome.status != "ok":
            raise RuntimeError(f"baseline trial {outcome.status}: {outcome.reason}")


def baseline_main(spec: Path, n_trials: int, concurrent: int) -> int:
    config = json.loads(spec.read_text())
    # Trials split as a FIFO queue would split them between equal workers.
    shares = [n_trials // concurrent + (i < n_trials % concurrent) for i in range(concurrent)]
    context = mp.get_context("spawn")
    workers = [context.Process(target=_worker, args=(config, n)) for n in shares]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return max(worker.exitcode or 0 for worker in workers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 trials, 2 epochs, 1 pair")
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10, help="training epochs per trial")
    parser.add_argument("--pairs", type=int, default=3, help="alternating pairs of runs")
    parser.add_argument("--baseline-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline_worker is not None:
        return baseline_main(args.baseline_worker, args.trials, args.concurrent)
    if args.quick:
        args.trials, args.epochs, args.pairs = 8, 2, 1
    overrides = workload(args.epochs)
    config = fixed_trial_config(overrides)
    print(f"machine: {machine()}; load average {load_average()}")
    print(
        f"{args.trials} trials of the same digits CNN ({args.epochs} epochs each), "
        f"{args.concurrent} at once, {args.pairs} alternating pair(s)"
    )
    nascomp_walls: list[float] = []
    baseline_walls: list[float] = []
    with tempfile.TemporaryDirectory(prefix="nascomp-overhead-") as tmp_name:
        tmp = Path(tmp_name)
        # One store for all runs, as a user's mlflow.db serves search after search. Creating
        # it runs MLflow's schema migrations once; that one-time cost is printed, not timed.
        store = f"sqlite:///{tmp / 'mlflow.db'}"
        print(f"creating the MLflow sqlite store (once per store): {create_store(store):.1f} s")
        sides = {
            "nascomp": lambda: run_nascomp(overrides, args.trials, args.concurrent, tmp, store),
            "baseline": lambda: run_baseline(config, args.trials, args.concurrent, tmp),
        }
        walls = {"nascomp": nascomp_walls, "baseline": baseline_walls}
        for i in range(args.pairs):
            order = ("nascomp", "baseline") if i % 2 == 0 else ("baseline", "nascomp")
            for side in order:
                walls[side].append(sides[side]())
                print(
                    f"  pair {i + 1} {side:8s} {walls[side][-1]:7.1f} s  (load {load_average()})",
                    flush=True,
                )
    ratios = [n / b for n, b in zip(nascomp_walls, baseline_walls, strict=True)]
    per_trial = [
        (n - b) / args.trials * args.concurrent
        for n, b in zip(nascomp_walls, baseline_walls, strict=True)
    ]
    print()
    print("| side | wall s median [min, max] |")
    print("|---|---|")
    print(f"| nascomp search | {spread(nascomp_walls)} |")
    print(f"| plain processes | {spread(baseline_walls)} |")
    print(f"\nwall-time ratio nascomp / plain: {spread(ratios)}  (goal <= 1.15)")
    print(
        f"platform seconds per trial slot (difference x concurrency / trials): {spread(per_trial)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
