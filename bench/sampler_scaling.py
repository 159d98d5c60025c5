"""How long does the driver-side sampler take per suggestion as a search grows to 10,000 trials?

    python bench/sampler_scaling.py                    # 100, 1,000 and 10,000 finished trials
    python bench/sampler_scaling.py --quick            # 100 and 1,000, fewer asks
    python bench/sampler_scaling.py --sizes 100 2000 --asks 5 --samplers pls random

Ray's OptunaSearch asks its sampler for every new trial in the driver process, one after
another, so the sampler's time per suggestion caps how fast a search can hand out trials,
whatever the number of GPUs. This measures it for the quickstart experiment's sampler
(``spaces/quickstart.yaml``: ``search.sampler``, built by
``nascomp.search.samplers.make_sampler``) on the real joint space
(``nascomp.search.samplers.space.DefineByRun``), against Optuna's random and TPE samplers
(``search.sampler=random`` / ``tpe``), in one run.

A study is fast-forwarded to N finished trials with ``Study.add_trials`` of a pre-made history:
N points drawn at random from the space, with synthetic objective values (a cheap deterministic
function of the params, shaped like the quickstart's: val_accuracy max, size_bytes min,
latency_ms min, and the training seconds each complete trial records for ``pls``'s
``cost_aware`` model, which ``pls`` is timed with), so no trial trains. Then each sampler gets
``--asks`` ask + config + tell rounds, the samplers taking turns (A B C, A B C, ...) so the
shared machine's drift hits them alike, after one untimed round: a running search's sampler
has seen its trials one by one, while a fast-forwarded one reads all N at its first ask, as a
resumed search's sampler does once (that first ask is printed separately); a sampler that has
spent more than ``--budget-s`` asking at one N stops after ``--min-asks``. A random history is
an approximation: a real ``pls`` history clusters near the front.

Also measured at each N: what Tune does with the searcher's in-memory study (it pickles the
searcher, study included, into its experiment checkpoints): the pickle's size and time; and the
Pareto front's size and the number of non-dominated ranks of the history. With ``--profile``,
cProfile of one ``pls`` ask at the largest N (functions by cumulative time).

Run from the repository root with the project's environment active.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import math
import os
import pickle
import pstats
import sys
import time
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna
from optuna.trial import FrozenTrial, TrialState

from nascomp.search.driver import trial_base
from nascomp.search.experiment import Experiment, load_experiment
from nascomp.search.front.hypervolume import NORMALISED_REF, hypervolume, normalise
from nascomp.search.front.pareto import non_dominated_sort, to_minimise
from nascomp.search.samplers import make_sampler
from nascomp.search.samplers._common import COST_ATTR, STOPPED_ATTR, stopped_at
from nascomp.search.samplers.space import DefineByRun

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import at_least

SIZES = (100, 1_000, 10_000)
SAMPLERS = ("pls", "tpe", "random")


# ---------------------------------------------------------------- a trial that costs nothing
def synthetic_metrics(config: dict[str, Any]) -> dict[str, float]:
    """Quickstart-shaped objective values from a trial's flat config, in microseconds.

    Bigger networks are more accurate, larger and slower; pruning and fewer bits shrink them at
    some accuracy; distillation helps a little. A hash of the params adds deterministic noise so
    that equal-looking configs do not tie. Only the shape matters here, not realism.
    """
    channels = config["arch.base_channels"]
    depth = config["arch.n_stages"] * config["arch.blocks_per_stage"]
    block = {"plain": 1.0, "residual": 1.15, "depthwise": 0.35}[config["arch.block"]]
    params = (
        block * depth * channels**2 * config["arch.kernel_size"] ** 2 * 2 ** config["arch.n_stages"]
    )
    keep = 1.0 if config["prune.method"] == "none" else 1.0 - config["prune.ratio"]
    bits = config["quant.bits"]
    size_bytes = params * keep * bits / 8 + 2_000
    structured = keep if config["prune.method"] == "structured" else 1.0
    latency_ms = 0.02 + params * structured * (0.6 if bits < 32 else 1.0) / 2e6
    noise = (zlib.crc32(repr(sorted(config.items())).encode()) % 10_000) / 10_000 - 0.5
    accuracy = (
        0.99
        - 0.5 / math.log(params + 10.0)
        - 0.08 * (1.0 - keep) ** 2
        - (0.03 if bits == 4 else 0.0)
        + (0.01 * config["distill.alpha"] if config["distill.enabled"] else 0.0)
        + 0.01 * noise
    )
    # training from scratch costs what the dense network computes (pls's cost_aware learns it)
    train_seconds = 1.0 + params / 2e5
    return {
        "val_accuracy": accuracy,
        "size_bytes": size_bytes,
        "latency_ms": latency_ms,
        "train_seconds": train_seconds,
    }


@dataclass(frozen=True)
class Setup:
    experiment: Experiment
    space: DefineByRun
    names: list[str]
    directions: list[str]

    def values(self, trial: optuna.Trial) -> list[float]:
        """The trial's objectives; its training seconds recorded as a search records them."""
        metrics = synthetic_metrics(self.space.config(trial))
        trial.set_user_attr(COST_ATTR, metrics["train_seconds"])
        return [metrics[name] for name in self.names]


def setup(sampler: str | None = None) -> Setup:
    overrides = [f"search.sampler={sampler}"] if sampler else []
    experiment = load_experiment(None, overrides)  # None: spaces/quickstart.yaml
    if experiment.search.sampler == "pls":  # timed with the option that costs most: cost_aware
        experiment = load_experiment(None, [*overrides, "search.cost_aware=true"])
    names = list(experiment.objectives)
    directions = ["maximize" if m == "max" else "minimize" for m in experiment.objectives.values()]
    space = DefineByRun(experiment.space.params(), trial_base(experiment))
    return Setup(experiment, space, names, directions)


def history(base: Setup, n_trials: int, seed: int = 1, stopped: float = 0.0) -> list[FrozenTrial]:
    """``n_trials`` trials drawn at random over the space, with synthetic values; a fraction
    ``stopped`` of them stopped early as ``search.scheduler: mo_asha`` stops them (PRUNED, with
    what they reached at a rung of 1/4 or 1/2 of training in ``STOPPED_ATTR``: accuracy lower
    by a tenth of what training was left, the sizes, no latency), the rest finished."""
    study = optuna.create_study(
        directions=base.directions, sampler=optuna.samplers.RandomSampler(seed=seed)
    )
    rng = np.random.default_rng(seed)
    for _ in range(n_trials):
        trial = study.ask()
        values = base.values(trial)
        if rng.random() >= stopped:
            study.tell(trial, values)
            continue
        fidelity = float(rng.choice([0.25, 0.5]))
        at_rung: dict[str, float | None] = dict(zip(base.names, values, strict=True))
        at_rung["val_accuracy"] = values[base.names.index("val_accuracy")] - 0.1 * (1 - fidelity)
        at_rung["latency_ms"] = None  # not measured at a rung
        trial.set_user_attr(STOPPED_ATTR, stopped_at(fidelity, list(at_rung.values())))
        study.tell(trial, state=TrialState.PRUNED)
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


# ---------------------------------------------------------------- timing
@dataclass
class Timings:
    ask_ms: list[float]
    tell_ms: list[float]

    def summary(self) -> str:
        ask = np.array(self.ask_ms)
        total = ask + np.array(self.tell_ms)
        return (
            f"{np.median(ask):9.1f} {np.percentile(ask, 90):9.1f} "
            f"{np.median(total):9.1f} {np.percentile(total, 90):9.1f}"
        )


def fast_forwarded(name: str, trials: Sequence[FrozenTrial]) -> tuple[Setup, optuna.Study]:
    """A fresh study with the sampler ``name`` that has ``trials`` finished already."""
    current = setup(name)
    experiment = current.experiment
    sampler = make_sampler(experiment.search, features=experiment.space.features())
    study = optuna.create_study(directions=current.directions, sampler=sampler)
    study.add_trials(trials)
    return current, study


def ask_and_tell(current: Setup, study: optuna.Study, timings: Timings) -> None:
    started = time.perf_counter()
    trial = study.ask()
    values = current.values(trial)  # samples every define-by-run param, as Ray's suggest does
    asked = time.perf_counter()
    study.tell(trial, values)
    timings.ask_ms.append((asked - started) * 1e3)
    timings.tell_ms.append((time.perf_counter() - asked) * 1e3)


def pickle_cost(study: optuna.Study) -> tuple[float, float]:
    """(MB, ms) of pickling the study, as Tune pickles the searcher into its checkpoints."""
    started = time.perf_counter()
    blob = pickle.dumps(study)
    return len(blob) / 1e6, (time.perf_counter() - started) * 1e3


def component_ms(
    trials: Sequence[FrozenTrial], directions: list[str]
) -> tuple[dict[str, float], np.ndarray]:
    """The non-dominated rank of every trial (0 = the Pareto front), and ms of the two steps
    that grow with N inside a ``pls`` ask and of a faster equivalent: the ranks of every
    finished trial by ``nascomp.search.front.pareto.non_dominated_sort`` (which ``pls`` runs
    on each ask),
    the same ranks by Optuna's own routine (what NSGA-II and TPE use), and one exact
    hypervolume of the front (``pls`` computes two per candidate neighbour)."""
    from nascomp.search.compat.optuna import fast_non_domination_rank

    modes = ["max" if d == "maximize" else "min" for d in directions]
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    values = to_minimise(np.array([t.values for t in finished]), modes)
    out = {}
    started = time.perf_counter()
    ours = non_dominated_sort(values)
    out["nascomp_sort"] = (time.perf_counter() - started) * 1e3
    started = time.perf_counter()
    theirs = fast_non_domination_rank(values)
    out["optuna_sort"] = (time.perf_counter() - started) * 1e3
    assert np.array_equal(ours, theirs), "the two rankings disagree"
    front = values[ours == 0]
    unit = normalise(front, values.min(axis=0), values.max(axis=0))
    started = time.perf_counter()
    hypervolume(unit, np.full(values.shape[1], NORMALISED_REF))
    out["front_hypervolume"] = (time.perf_counter() - started) * 1e3
    return out, ours


def profile_one_ask(name: str, trials: Sequence[FrozenTrial], n_lines: int) -> str:
    current, study = fast_forwarded(name, trials)
    profiler = cProfile.Profile()
    profiler.enable()
    trial = study.ask()
    current.values(trial)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
    stats.print_stats(n_lines)
    return out.getvalue()


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=at_least(1),
        nargs="+",
        default=list(SIZES),
        help="finished trials each study is fast-forwarded to (default: "
        f"{' '.join(map(str, SIZES))})",
    )
    parser.add_argument(
        "--samplers",
        nargs="+",
        default=list(SAMPLERS),
        choices=SAMPLERS,
        help="search.sampler settings to time, taking turns (default: all)",
    )
    parser.add_argument(
        "--asks", type=at_least(1), default=7, help="timed asks per sampler and size"
    )
    parser.add_argument(
        "--min-asks", type=at_least(1), default=2, help="asks even when over budget"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=60.0,
        help="ask seconds per sampler and size after which it stops at --min-asks",
    )
    parser.add_argument(
        "--stopped",
        type=float,
        default=0.0,
        help="fraction of the history stopped early by mo_asha (pls learns from them), e.g. 0.6",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile one pls ask at top N")
    parser.add_argument("--quick", action="store_true", help="sizes 100 and 1,000, 5 asks")
    args = parser.parse_args(argv)
    if not 0 <= args.stopped < 1:  # a history of stopped trials alone has no front to time
        parser.error(f"--stopped: a fraction in [0, 1); got {args.stopped:g}")
    if args.quick:
        args.sizes, args.asks = [100, 1_000], 5
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    warnings.simplefilter("ignore")

    base = setup()
    print(
        f"quickstart sampler: {base.experiment.search.sampler}; objectives "
        f"{base.experiment.objectives}; optuna {optuna.__version__}; "
        f"load average {os.getloadavg()[0]:.2f}; {time.strftime('%Y-%m-%d %H:%M')}"
    )
    started = time.perf_counter()
    full = history(base, max(args.sizes), stopped=args.stopped)
    n_stopped = sum(t.state == TrialState.PRUNED for t in full)
    print(
        f"history of {len(full):,} random trials ({n_stopped:,} stopped early) made in "
        f"{time.perf_counter() - started:.1f} s"
    )

    header = "sampler   N        ask med   ask p90  ask+tell  a+t p90   (ms; n asks)"
    rows: list[str] = []
    for n in sorted(args.sizes):
        trials = full[:n]
        studies = {name: fast_forwarded(name, trials) for name in args.samplers}
        first = {name: Timings([], []) for name in args.samplers}
        for name in args.samplers:
            ask_and_tell(*studies[name], first[name])
        timings = {name: Timings([], []) for name in args.samplers}
        for repeat in range(args.asks):
            for name in args.samplers:  # taking turns: drift hits every sampler alike
                spent_s = sum(timings[name].ask_ms) / 1e3
                if repeat >= args.min_asks and spent_s > args.budget_s:
                    continue  # a slow sampler stops at min_asks once over its budget
                ask_and_tell(*studies[name], timings[name])
        megabytes, pickle_ms = pickle_cost(studies[args.samplers[0]][1])
        parts, ranks = component_ms(trials, base.directions)
        print(
            f"\nN={n:,}: front {np.sum(ranks == 0)} points, {ranks.max() + 1} non-dominated "
            f"ranks; pickled study "
            f"{megabytes:.1f} MB in {pickle_ms:.0f} ms; load average {os.getloadavg()[0]:.2f}\n"
            f"  ranks of all N: non_dominated_sort {parts['nascomp_sort']:.1f} ms, "
            f"optuna _fast_non_domination_rank {parts['optuna_sort']:.1f} ms; "
            f"hypervolume of the front once {parts['front_hypervolume']:.1f} ms"
        )
        print(
            "  first ask (reads all N; once per search or resume): "
            + ", ".join(f"{name} {first[name].ask_ms[0]:.0f} ms" for name in args.samplers)
        )
        print(header)
        for name in args.samplers:
            row = f"{name:8} {n:6,}  {timings[name].summary()}  (n={len(timings[name].ask_ms)})"
            rows.append(row)
            print(row, flush=True)

    print("\n" + header)
    print("\n".join(rows))
    if args.profile and "pls" in args.samplers:
        top = max(args.sizes)
        print(f"\ncProfile of one pls ask at N={top:,} (cumulative time):")
        print(profile_one_ask("pls", full[:top], 25))
    print(f"total {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
