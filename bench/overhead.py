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

Each side's wall is also split at the moments its trials finished (the nascomp driver's
progress lines, as they are read; a line the plain workers print after each trial): the first
round (launch until every slot has finished one trial: interpreter, imports, Ray's and the
workers' start, the first trials), the steady rounds after it, and the end after the last
result (front, plots, shutdown). The gap between the sides is split the same way, so a fixed
start-up cost is told apart from a cost that every trial pays (``phases``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    DIGITS_ARCH,
    PLAIN_TRAINING,
    ROOT,
    as_sets,
    at_least,
    fixed_trial_config,
    load_average,
    machine,
    spread,
)

_PROGRESS = re.compile(r"^\[\s*(\d+)/(\d+)\]\s+([\d.]+)s", re.MULTILINE)
_DONE = "nascomp-bench-trial-done"  # what a plain worker prints after each trial, with the time


@dataclass(frozen=True)
class Phases:
    """One run's wall time split at its trials' finishing times (seconds from the launch)."""

    first_round: float  # until every slot has finished one trial
    steady: float  # from there to the last trial's result
    end: float  # from the last result to the process's exit
    per_trial: float  # the steady part, in seconds per trial and slot
    train_s: float = 0.0  # the trials' median train_seconds: their training alone, as logged

    @property
    def wall(self) -> float:
        return self.first_round + self.steady + self.end


def phases(wall: float, finished: Sequence[float], concurrent: int, train_s: float = 0.0) -> Phases:
    """Split ``wall`` at the sorted finishing times ``finished`` of a run's trials, which ran
    ``concurrent`` at a time. With no more trials than slots, everything is the first round."""
    if not finished:
        raise ValueError("a run with no finished trial cannot be split")
    times = sorted(finished)
    n_round = min(concurrent, len(times))
    first_round = times[n_round - 1]
    steady = times[-1] - first_round
    later = len(times) - n_round
    per_trial = steady * concurrent / later if later else 0.0
    return Phases(first_round, steady, wall - times[-1], per_trial, train_s)


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
) -> Phases:
    """One real ``nascomp search`` (a new Ray session) logging into ``store``, timed."""
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
    env = {
        **os.environ,
        "RAY_TMPDIR": str(ray_tmp),
        "NASCOMP_CACHE": str(tmp / "cache"),
        "PYTHONUNBUFFERED": "1",  # each progress line as it is printed: its time is measured
    }
    env.pop("RAY_ADDRESS", None)
    with tempfile.TemporaryFile(mode="w+") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(
            command,
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        assert process.stdout is not None
        lines, finished = [], []
        for line in process.stdout:
            if _PROGRESS.match(line):
                finished.append(time.perf_counter() - started)
            lines.append(line)
        returncode = process.wait()
        wall = time.perf_counter() - started
        stderr.seek(0)
        errors = stderr.read()
    shutil.rmtree(ray_tmp, ignore_errors=True)
    stdout = "".join(lines)
    if returncode != 0:
        raise RuntimeError(f"nascomp search failed ({returncode}):\n{errors[-3000:]}")
    if len(finished) != n_trials:
        raise RuntimeError(f"expected {n_trials} finished trials, saw {len(finished)}")
    if "ok" not in stdout or " error " in stdout:
        raise RuntimeError(f"a trial did not finish ok:\n{stdout[-3000:]}")
    from nascomp.search.tracking.store import Tracker

    tracker = Tracker(store, "overhead")
    trials = tracker.trials(tracker.latest_search())
    train_s = statistics.median(t.metrics["train_seconds"] for t in trials)
    return phases(wall, finished, concurrent, train_s)


def run_baseline(config: dict[str, Any], n_trials: int, concurrent: int, tmp: Path) -> Phases:
    """The same trials in ``concurrent`` plain processes, no platform at all, timed."""
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
    launched = time.time()  # the workers' clock: they print time.time() after each trial
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"baseline failed ({done.returncode}):\n{done.stderr[-3000:]}")
    # Anywhere in a line: a library's output without a newline may run into a worker's line.
    lines = re.findall(rf"{_DONE} ([\d.]+) ([\d.]+)", done.stdout)
    finished = [float(time_) - launched for time_, _ in lines]
    if len(finished) != n_trials:
        raise RuntimeError(f"expected {n_trials} finished baseline trials, saw {len(finished)}")
    train_s = statistics.median(float(seconds) for _, seconds in lines)
    return phases(wall, finished, concurrent, train_s)


def _worker(config: dict[str, Any], n_trials: int) -> None:
    from nascomp.trainers.trial import run_trial

    for _ in range(n_trials):
        outcome = run_trial(config)
        if outcome.status != "ok":
            raise RuntimeError(f"baseline trial {outcome.status}: {outcome.reason}")
        # One write of the whole line: print's separate writes of its parts interleaved
        # with the other worker's on the shared pipe, and a trial went uncounted.
        sys.stdout.write(f"{_DONE} {time.time()} {outcome.metrics['train_seconds']}\n")
        sys.stdout.flush()


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
    parser.add_argument(
        "--trials",
        type=at_least(1),
        default=32,
        help="trials per run of each side (default %(default)s)",
    )
    parser.add_argument(
        "--concurrent",
        type=int,
        default=2,
        help="trials at once: search.concurrent, and the baseline's worker processes "
        "(default %(default)s)",
    )
    parser.add_argument("--epochs", type=at_least(1), default=10, help="training epochs per trial")
    parser.add_argument("--pairs", type=at_least(1), default=3, help="alternating pairs of runs")
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
    runs: dict[str, list[Phases]] = {"nascomp": [], "baseline": []}
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
        for i in range(args.pairs):
            order = ("nascomp", "baseline") if i % 2 == 0 else ("baseline", "nascomp")
            for side in order:
                run = sides[side]()
                runs[side].append(run)
                print(
                    f"  pair {i + 1} {side:8s} {run.wall:7.1f} s  (first round "
                    f"{run.first_round:.1f}, steady {run.steady:.1f}, end {run.end:.1f}; "
                    f"load {load_average()})",
                    flush=True,
                )
    print()
    print(report(runs["nascomp"], runs["baseline"], args.trials, args.concurrent))
    return 0


def report(ours: list[Phases], plain: list[Phases], n_trials: int, concurrent: int) -> str:
    """The walls, their split, and the gap between the sides per pair (medians and range)."""
    pairs = list(zip(ours, plain, strict=True))
    lines = [
        "| side | wall s | first round s | steady s per trial and slot | end s | train_seconds |",
        "|---|---|---|---|---|---|",
    ]
    for name, side in (("nascomp search", ours), ("plain processes", plain)):
        lines.append(
            f"| {name} | {spread([r.wall for r in side])} "
            f"| {spread([r.first_round for r in side])} "
            f"| {spread([r.per_trial for r in side])} | {spread([r.end for r in side])} "
            f"| {spread([r.train_s for r in side])} |"
        )
    ratios = [n.wall / b.wall for n, b in pairs]
    per_slot = [(n.wall - b.wall) / n_trials * concurrent for n, b in pairs]
    lines += [
        "",
        "the gap nascomp - plain, per pair, split the same way (seconds):",
        f"  first round {spread([n.first_round - b.first_round for n, b in pairs])}",
        f"  steady      {spread([n.steady - b.steady for n, b in pairs])}",
        f"  end         {spread([n.end - b.end for n, b in pairs])}",
        f"  per steady trial and slot {spread([n.per_trial - b.per_trial for n, b in pairs])}",
        f"  of it, training alone (median train_seconds) "
        f"{spread([n.train_s - b.train_s for n, b in pairs])}",
        "",
        f"wall-time ratio nascomp / plain: {spread(ratios)}  (goal <= 1.15)",
        f"platform seconds per trial slot (difference x concurrency / trials): {spread(per_slot)}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
