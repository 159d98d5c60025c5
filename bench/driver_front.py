"""What the driver pays per ended trial to keep its running front, as a search grows.

    python bench/driver_front.py                      # up to 10,000 trials
    python bench/driver_front.py --trials 2000 --repeats 10

After every ended trial the driver's MLflow callback (``search/tune/callbacks.py``) updates
the parent run's ``hypervolume`` metric and, when the front changed, its description (the
front as a table). Both used to be recomputed over every finished trial: the exact hypervolume
of all points and ``front_order`` of all of them, O(n) or worse per trial, so O(n^2) over a
search (the soak test measured 50 to 65 ms plus 16 ms per trial at 1,200 trials, growing).
They are now kept incrementally (``search.front.pareto.RunningFront``, and
``search.front.hypervolume.HypervolumeHistory`` over it).

This feeds one history of synthetic quickstart-shaped results (val_accuracy max, size_bytes
min, latency_ms min: accuracy rising with size, latency with size, noise on all three; 5% of
trials infeasible) through both, in one run: the incremental code over the whole history, and
the recompute-everything rule of before at the sizes printed, ``--repeats`` trials each (the
next trials of the history added one at a time, each timed). Each side's values are checked
equal at every timed trial. No training, no Ray, no MLflow: the driver's arithmetic only.

Run from the repository root with the project's environment active.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import load_average, machine
from nascomp.search.front.hypervolume import (
    HypervolumeHistory,
    hypervolume,
    search_reference,
    search_scale,
)
from nascomp.search.front.pareto import RunningFront, front_order, to_minimise

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import at_least

OBJECTIVES = {"val_accuracy": "max", "size_bytes": "min", "latency_ms": "min"}
MODES = list(OBJECTIVES.values())


def history(n: int, seed: int) -> list[dict[str, float] | None]:
    """Quickstart-shaped results; None for an infeasible or failed trial."""
    rng = np.random.default_rng(seed)
    size = np.exp(rng.uniform(np.log(2e3), np.log(5e6), n))
    accuracy = np.clip(0.55 + 0.07 * np.log10(size) + rng.normal(0, 0.04, n), 0.1, 0.995)
    latency = 0.01 + 2e-4 * np.sqrt(size) * rng.lognormal(0, 0.3, n)
    feasible = rng.random(n) > 0.05
    return [
        {"val_accuracy": float(a), "size_bytes": float(s), "latency_ms": float(t)} if ok else None
        for a, s, t, ok in zip(accuracy, size, latency, feasible, strict=True)
    ]


def recompute(points: list[list[float]]) -> tuple[float, list[int]]:
    """The rule before: the hypervolume and the front order of every feasible point so far."""
    minimised = to_minimise(np.array(points), MODES)
    scaled = minimised / search_scale(minimised[0], list(OBJECTIVES))
    return hypervolume(scaled, search_reference(scaled)), front_order(np.array(points), MODES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--trials",
        type=at_least(1),
        default=10_000,
        help="synthetic trials in the history; --sizes above it are left out (default %(default)s)",
    )
    parser.add_argument(
        "--sizes",
        type=at_least(1),
        nargs="+",
        default=[100, 1_000, 5_000, 10_000],
        help="trials so far at which both sides are timed (default: 100 1000 5000 10000)",
    )
    parser.add_argument("--repeats", type=at_least(1), default=20, help="timed trials per size")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the synthetic history (default %(default)s)"
    )
    args = parser.parse_args()
    results = history(args.trials + args.repeats, args.seed)
    sizes = sorted(s for s in args.sizes if s <= args.trials)
    print(f"{machine()}; load average {load_average()} at the start")
    print(f"{args.trials} synthetic trials, {args.repeats} timed per size, seed {args.seed}")

    progress = HypervolumeHistory(OBJECTIVES)
    front = RunningFront(len(OBJECTIVES))
    points: list[list[float]] = []
    ours: dict[int, list[float]] = {n: [] for n in sizes}
    before: dict[int, list[float]] = {n: [] for n in sizes}
    timed = {n + k: n for n in sizes for k in range(args.repeats)}
    front_size: dict[int, int] = {}
    for i, result in enumerate(results):
        started = time.perf_counter()
        value = progress.add(result)
        if result is not None:
            row = [result[m] for m in OBJECTIVES]
            if front.add(i, to_minimise(np.array([row]), MODES)[0]):
                front.order()
        elapsed = time.perf_counter() - started
        if result is not None:
            points.append(row)
        if i not in timed or not points:
            continue
        started = time.perf_counter()
        volume, order = recompute(points)
        before[timed[i]].append(time.perf_counter() - started)
        ours[timed[i]].append(elapsed)
        front_size[timed[i]] = len(front.keys)
        feasible = [k for k, r in enumerate(results[: i + 1]) if r is not None]
        if abs(volume - value) > 1e-12 * max(1.0, abs(volume)):
            raise SystemExit(f"trial {i}: hypervolume {value} against {volume} recomputed")
        if [feasible[k] for k in order] != front.order():
            raise SystemExit(f"trial {i}: the running front differs from the recomputed one")

    print()
    print(
        "| trials so far | front size | recompute, ms per trial | incremental, ms (max) "
        "| ratio of medians |"
    )
    print("|---:|---:|---:|---:|---:|")
    for n in sizes:
        old, new = statistics.median(before[n]) * 1e3, statistics.median(ours[n]) * 1e3
        most = max(ours[n]) * 1e3
        print(
            f"| {n:,} | {front_size[n]} | {old:.2f} | {new:.3f} ({most:.2f}) | {old / new:.0f}x |"
        )
    print()
    print("(medians of each size's timed trials; the values of both sides agreed at every one)")
    print(f"load average {load_average()} at the end")


if __name__ == "__main__":
    main()
