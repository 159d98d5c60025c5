"""Ray started in a child process (search/tune/head.py) against ``ray.init`` in the driver.

    python bench/local_ray.py              # 6 alternating pairs of 2-trial searches
    python bench/local_ray.py --pairs 2    # a smoke run

Each side is a fresh Python process that does what ``nascomp search`` does: check the
experiment (importing torch), then import the driver (MLflow, Ray Tune, Optuna) and run the
search. ``child`` starts this machine's Ray in a child process first, before the experiment's
schema imports, as the CLI does; ``inline`` lets the driver call ``ray.init`` itself once it
needs Ray, as every search did before. The workload is ``bench/overhead.py``'s (the same
digits CNN in every trial, plain training) cut to 2 trials of 1 epoch, 2 at once, so that the
search's start and end weigh most. Each side's wall time is taken from outside its process
(start to exit); the sides alternate and the difference is taken per pair, because the
machine is shared.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import as_sets, at_least, load_average, machine, spread
from overhead import create_store, workload

SIDES = ("child", "inline")


def side_main(kind: str, sets: list[str]) -> int:
    """One search, in this process, the way ``kind`` starts Ray."""
    from nascomp.search.tune.head import starting_local_ray

    starting = starting_local_ray(None) if kind == "child" else contextlib.nullcontext()
    with starting as local_ray:  # as `nascomp search`: before the experiment's schema imports
        from nascomp.search.experiment import load_experiment

        experiment = load_experiment(None, sets)
        from nascomp.search.driver import run_search

        summary = run_search(experiment, echo=lambda line: None, local_ray=local_ray)
    return 0 if summary.count("ok") == len(summary.trials) == experiment.search.trials else 1


def run_side(kind: str, sets: list[str], tmp: Path) -> float:
    """Wall seconds of one search in a fresh process, from its start to its exit."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's unix sockets
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "NASCOMP_CACHE": str(tmp / "cache")}
    env.pop("RAY_ADDRESS", None)
    args = [arg for item in sets for arg in ("--set", item)]
    command = [sys.executable, str(Path(__file__).resolve()), "--side", kind, *args]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    shutil.rmtree(ray_tmp, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} search failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=at_least(1), default=6, help="alternating pairs of runs")
    parser.add_argument(
        "--trials", type=at_least(1), default=2, help="trials per search (default %(default)s)"
    )
    parser.add_argument(
        "--epochs",
        type=at_least(1),
        default=1,
        help="training epochs per trial (default %(default)s)",
    )
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side is not None:
        return side_main(args.side, args.set)
    print(f"machine: {machine()}; load average {load_average()}")
    print(
        f"{args.trials} trials of the same digits CNN ({args.epochs} epoch(s) each), 2 at once, "
        f"{args.pairs} alternating pair(s)"
    )
    walls: dict[str, list[float]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory(prefix="nascomp-local-ray-") as tmp_name:
        tmp = Path(tmp_name)
        store = f"sqlite:///{tmp / 'mlflow.db'}"
        print(f"creating the MLflow sqlite store (once per store): {create_store(store):.1f} s")
        sets = [
            *as_sets(workload(args.epochs)),
            f"search.trials={args.trials}",
            "search.concurrent=2",
            f"tracking.uri={store}",
            "tracking.experiment=local-ray",
            f"storage={tmp / 'results'}",
        ]
        for i in range(args.pairs):
            for side in SIDES if i % 2 == 0 else SIDES[::-1]:
                walls[side].append(run_side(side, sets, tmp))
                print(
                    f"  pair {i + 1} {side:6s} {walls[side][-1]:6.1f} s  (load {load_average()})",
                    flush=True,
                )
    saved = [a - b for a, b in zip(walls["inline"], walls["child"], strict=True)]
    print()
    print("| Ray started | wall s, start to exit, median [min, max] |")
    print("|---|---|")
    print(f"| in a child process (nascomp search) | {spread(walls['child'])} |")
    print(f"| by the driver's ray.init | {spread(walls['inline'])} |")
    print(f"\nseconds saved per search (inline - child, per pair): {spread(saved)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
