"""How close does each search strategy get to the exact NAS-Bench-201 Pareto front, how fast?

    python bench/search_efficiency.py                      # 10 seeds, val_accuracy vs params
    python bench/search_efficiency.py --cost macs --seeds 20
    python bench/search_efficiency.py --seeds 30 --strategies random pls   # seeds 0 to 29
    python bench/search_efficiency.py --first-seed 10 --seeds 20            # seeds 10 to 29

The exact front is computed over all 15,625 cells (validation accuracy against params or MACs
of the real network ``spaces`` builds). Every strategy then searches the same space for 200
trials per seed, and the table gives the hypervolume it has reached after 50, 100 and 200
trials as a fraction of the exact front's (mean and standard deviation over the seeds), the
number of trials after which its mean curve first matches random search's mean at the last
trial (``--trials``, 200 by default), and
how the worst seeds end (the lowest final fraction, and how many seeds end below 0.96).

What it measures is what ``nascomp search examples/nb201.yaml`` does: the same experiment file,
the same space (``spaces`` + ``nascomp.search.samplers.space.DefineByRun``), the same samplers
(``nascomp.search.samplers.make_sampler``, given the space's features as the driver does) and the
same trial function (``trainers.nb201_lookup.run_lookup_trial``). Only Ray is left out: trials
run one after another in this process, so 10+ seeds x 200 trials x several strategies take
minutes, not hours. (With ``search.concurrent`` > 1, Ray asks the sampler before earlier trials
finish, which can only make a model-based strategy slightly less informed per trial.)

Hypervolume rule here: objectives minimised, normalised so the exact front's ideal point is 0
and its nadir 1, reference point 1.1 per objective (search/front/hypervolume.py).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import platform
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna

from nascomp.search.driver import trial_base
from nascomp.search.experiment import Experiment, load_experiment
from nascomp.search.front.hypervolume import NORMALISED_REF, hypervolume, normalise
from nascomp.search.front.pareto import non_dominated_mask, to_minimise
from nascomp.search.samplers import make_sampler
from nascomp.search.samplers.space import DefineByRun
from nascomp.spaces.nb201 import N_EDGES, NB201_OPS, cell_string
from nascomp.trainers.nb201_lookup import lookup_accuracy, network_costs, run_lookup_trial

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import at_least

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "nb201.yaml"
CHECKPOINTS = (50, 100, 200)
STRATEGIES = ("random", "nsga2", "nsga2-pop10", "tpe", "tpe_local", "pls")
ROBUST = 0.96  # the table counts the seeds that end below this fraction of the exact HV


@dataclass(frozen=True)
class Truth:
    ideal: np.ndarray
    nadir: np.ndarray
    hypervolume: float
    front_size: int


def experiment_for(cost: str, strategy: str, seed: int, n_trials: int) -> Experiment:
    """The example experiment with this bench's objectives, strategy, seed and budget."""
    overrides = [
        f"objectives={{val_accuracy: max, {cost}: min}}",
        f"search.seed={seed}",
        f"search.trials={n_trials}",
        *STRATEGY_OVERRIDES[strategy],
    ]
    return load_experiment(EXAMPLE, overrides)


# Each strategy is a setting of the experiment file, so the winner is one line of YAML away.
STRATEGY_OVERRIDES: dict[str, list[str]] = {
    "random": ["search.sampler=random"],
    "tpe": ["search.sampler=tpe"],
    # The former default: population max(4, min(50, trials // 3)), 50 at 200 trials.
    "nsga2": ["search.sampler=nsga2"],
    "nsga2-pop10": ["search.sampler=nsga2", "search.population_size=10"],
    "tpe_local": ["search.sampler=tpe_local"],
    "pls": ["search.sampler=pls"],
}


def exact_truth(cost: str, dataset: str, table: str) -> Truth:
    """The exact Pareto front over every cell of the space, and its normalised hypervolume."""
    rows = []
    for ops in itertools.product(NB201_OPS, repeat=N_EDGES):
        cell = cell_string(ops)
        accuracy = lookup_accuracy(cell, dataset, table)["val_accuracy"]
        rows.append((accuracy, network_costs(cell, dataset)[cost]))
    values = to_minimise(np.array(rows), ["max", "min"])
    front = values[non_dominated_mask(values)]
    ideal, nadir = front.min(axis=0), front.max(axis=0)
    unit = normalise(front, ideal, nadir)
    ref = np.full(2, NORMALISED_REF)
    return Truth(ideal, nadir, hypervolume(unit, ref), len(np.unique(front, axis=0)))


def search_values(cost: str, strategy: str, seed: int, n_trials: int) -> np.ndarray:
    """(n_trials, 2) minimised objective values, in the order the strategy found them."""
    experiment = experiment_for(cost, strategy, seed, n_trials)
    space = DefineByRun(experiment.space.params(), trial_base(experiment))
    sampler = make_sampler(experiment.search, features=experiment.space.features())
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        metrics = run_lookup_trial(space.config(trial)).metrics
        return metrics["val_accuracy"], metrics[cost]

    study.optimize(objective, n_trials=n_trials)
    values = np.array([t.values for t in study.trials])
    return to_minimise(values, ["max", "min"])


def hv_curve(values: np.ndarray, truth: Truth) -> np.ndarray:
    """Fraction of the exact hypervolume reached after 1, 2, ..., n trials."""
    unit = normalise(values, truth.ideal, truth.nadir)
    ref = np.full(2, NORMALISED_REF)
    return np.array(
        [hypervolume(unit[:n], ref) / truth.hypervolume for n in range(1, len(unit) + 1)]
    )


def _one_run(args: tuple[str, str, int, int, Truth]) -> tuple[str, np.ndarray, float]:
    cost, strategy, seed, n_trials, truth = args
    _quiet()
    started = time.perf_counter()
    values = search_values(cost, strategy, seed, n_trials)
    return strategy, hv_curve(values, truth), time.perf_counter() - started


def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(1)  # building 210 small networks: threads only add overhead


def trials_to_match(curve: np.ndarray, target: float) -> int | None:
    reached = np.flatnonzero(curve >= target - 1e-12)
    return int(reached[0]) + 1 if reached.size else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cost",
        choices=("params", "macs"),
        default="params",
        help="the real network's params or MACs, minimised against val_accuracy "
        "(default %(default)s)",
    )
    parser.add_argument("--seeds", type=at_least(1), default=10, help="how many seeds")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run from this one")
    parser.add_argument(
        "--trials",
        type=at_least(1),
        default=max(CHECKPOINTS),
        help="trials per search (default %(default)s)",
    )
    parser.add_argument(
        "--strategies",
        nargs="+",
        default=list(STRATEGIES),
        choices=STRATEGIES,
        help="the strategies to compare, each a setting of the experiment file (default: all)",
    )
    parser.add_argument(
        "--workers",
        type=at_least(1),
        default=os.cpu_count() or 1,
        help="searches run at once, a process each (default: the CPU count, %(default)s)",
    )
    args = parser.parse_args(argv)
    _quiet()

    started = time.perf_counter()
    base = load_experiment(EXAMPLE)
    truth = exact_truth(args.cost, base.nb201.dataset, base.nb201.table)
    print(
        f"exact front ({base.nb201.dataset}, val_accuracy vs {args.cost}): "
        f"{truth.front_size} points, normalised hypervolume {truth.hypervolume:.4f} "
        f"({time.perf_counter() - started:.0f} s)"
    )
    jobs = [
        (args.cost, strategy, seed, args.trials, truth)
        for strategy in args.strategies
        for seed in range(args.first_seed, args.first_seed + args.seeds)
    ]
    curves: dict[str, list[np.ndarray]] = {s: [] for s in args.strategies}
    seconds: dict[str, float] = dict.fromkeys(args.strategies, 0.0)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for strategy, curve, spent in pool.map(_one_run, jobs):
            curves[strategy].append(curve)
            seconds[strategy] += spent
    _print_table(curves, seconds, args)
    print(f"\ntotal {time.perf_counter() - started:.0f} s on {platform.processor() or 'cpu'}")
    return 0


def _print_table(
    curves: dict[str, list[np.ndarray]], seconds: dict[str, float], args: argparse.Namespace
) -> None:
    means = {s: np.mean(c, axis=0) for s, c in curves.items()}
    target = means["random"][-1] if "random" in means else None
    checkpoints = [n for n in CHECKPOINTS if n <= args.trials]
    header = [
        "strategy",
        *(f"HV@{n}" for n in checkpoints),
        f"trials to random@{args.trials}",  # random's mean at the last trial is the target
        f"worst seed@{args.trials}",
        f"seeds < {ROBUST:g}",
        "s/run",
    ]
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for strategy, runs in curves.items():
        stacked = np.array(runs)
        cells = [
            f"{stacked[:, n - 1].mean():.4f} ± {stacked[:, n - 1].std():.4f}" for n in checkpoints
        ]
        match = trials_to_match(means[strategy], target) if target is not None else None
        cells.append(str(match) if match else f"> {args.trials}")
        final = stacked[:, -1]
        cells.append(f"{final.min():.4f} (seed {args.first_seed + int(final.argmin())})")
        cells.append(str(int(np.sum(final < ROBUST))))
        cells.append(f"{seconds[strategy] / len(runs):.1f}")
        print(f"| {strategy} | " + " | ".join(cells) + " |")
    last = args.first_seed + args.seeds - 1
    print(
        f"\n{args.seeds} seeds ({args.first_seed} to {last}); "
        "mean ± standard deviation of HV / exact HV."
    )


if __name__ == "__main__":
    sys.exit(main())
