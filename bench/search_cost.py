"""What does a good front cost? Hypervolume reached against CPU-seconds spent, on real training.

    python bench/search_cost.py                          # 5 seeds, 240 CPU-s per search
    python bench/search_cost.py --seeds 3 --budget 120   # a smaller run
    python bench/search_cost.py --strategies pls pls+reuse --plot cost.png
    python bench/search_cost.py --quick                  # 1 seed, 30 CPU-s: a smoke run
    python bench/search_cost.py --first-seed 5 --save s5.json   # keep the runs ...
    python bench/search_cost.py --combine s0.json s5.json       # ... and report sets as one

Every search trains real trials: the MNIST example's space (examples/mnist.yaml: a CNN's
stages, blocks, width, kernel and block type; pruning method and ratio; bit-width;
distillation on or off, its temperature and weight) on a subset of MNIST from
``--data-root``, one CPU thread per trial, the example's epochs (4 training, 2 pruning, 1 QAT).
Each trial evaluates the whole MNIST test split at its end unless ``--test-samples`` caps it
(``data.max_test_samples``, the same for every strategy).
The objectives are val_accuracy (max) and size_bytes (min); latency is left out because two
searches run side by side here and a timing taken next to another search is noise.

Strategies, each a setting of the experiment file:

- ``random``: random sampling;
- ``pls``: Pareto local search, full fidelity: every trial trains from scratch to the end.
  Its final hypervolume is the target;
- ``pls+mo_asha``: ``search.scheduler: mo_asha`` stops trials at rungs (epochs 1 and 2) by
  non-dominated sorting;
- ``pls+reuse``: ``search.reuse_training: true`` (on by default): a trial whose train phase
  equals an earlier trial's (same architecture, distillation, seed) starts from that trained
  student (``trainers.trained``; the result is bit-identical to training again), and ``pls``
  divides each move's predicted hypervolume gain by its compute (``ReusedMoveCost``: a move
  that only changes pruning or bits costs the epochs after training); the last 5 of its 10
  start trials take the architecture and distillation of finished earlier ones, so they reuse
  their students too;
- ``pls+reuse-blind``: the reuse alone, every move weighed as a full trial and the start
  design as in ``pls``;
- ``pls+reuse+mo_asha``: reuse and the rungs; ``pls``'s model learns from what the stopped
  trials reached (their accuracy at the rung, their fraction of training as an input), as in
  a search (the default whenever trials are stopped);
- ``pls+reuse+mo_asha-unheard``: the same with the stopped trials left out of the model, to
  measure what learning from them brings;
- ``pls+reuse+inherit``: reuse plus weight inheritance (``search.inherit_epochs``, here
  ``--inherit-epochs``): a move that changes the architecture or distillation starts from its
  parent's trained weights (sliced where shapes differ) and trains that many epochs, and
  ``pls`` weighs such a move by its shorter compute;
- ``pls+reuse+cost``, ``pls+reuse+mo_asha+cost``, ``pls+reuse+inherit+cost``:
  ``search.cost_aware: true``: ``pls`` also divides each candidate's predicted gain by its
  predicted cost of training from scratch, learned from the seconds the trials that trained
  from scratch took, and its start design is arranged to cost few MACs as it trains (each
  choice as often). Off by default: the rows without ``+cost`` are what a search does unless
  told;
- ``pls+reuse+mo_asha+inherit+cost``: all of them. The inheriting trials have rungs of their
  own (``--inherit-epochs`` long), as in a search.

Each search runs trials one after another until it has spent ``--budget`` CPU-seconds of
this process (``time.process_time``: training, measuring, the sampler's own asks), the way
``search.budget.cpu_hours`` ends a search after the trial that crosses it. What it measures
is what ``nascomp search`` does, with Ray left out as in bench/search_efficiency.py: the same
space (``DefineByRun``), samplers (``make_sampler``), trial function (``run_trial``), rung
rule (``MultiObjectiveAsha.decide`` with the predicted final sizes) and store. The teacher is
trained once before the searches and shared (as a search's cache shares it), so no
strategy pays for it.

Hypervolume: the reference front is the non-dominated set of every trial of every search of
the run; objectives are normalised to its ideal (0) and nadir (1), reference point 1.1. The
table gives each strategy's hypervolume as a fraction of the reference front's at fixed
fractions of the budget (mean ± standard deviation over seeds), and the CPU-seconds at which
its mean curve first reaches full-fidelity ``pls``'s final mean. Early-stopped trials are
never on any front.

A run of 5 seeds takes most of an hour on 2 cores, so a larger set is built in pieces:
``--save`` writes each search's trials (CPU-seconds and objectives) to a JSON file, and
``--combine`` reports several such files as one run (one reference front from the union of
all their trials, one mean curve per strategy over all their seeds). Files made with
different settings (budget, data subset, epochs of an inheriting trial, test images) or that
share a (strategy, seed) are refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    DEFAULT_DATA_ROOT,
    ROOT,
    above_zero,
    at_least,
    load_average,
    machine,
    output_file,
    write_whole,
)

EXAMPLE = ROOT / "examples" / "mnist.yaml"
STRATEGIES = (
    "random",
    "pls",
    "pls+mo_asha",
    "pls+reuse",
    "pls+reuse-blind",
    "pls+reuse+mo_asha",
    "pls+reuse+mo_asha-unheard",
    "pls+reuse+inherit",
    "pls+reuse+cost",
    "pls+reuse+mo_asha+cost",
    "pls+reuse+inherit+cost",
    "pls+reuse+mo_asha+inherit+cost",
)
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
MNIST_TEST_IMAGES = 10_000
OBJECTIVES = {"val_accuracy": "max", "size_bytes": "min"}


@dataclass(frozen=True)
class Job:
    strategy: str
    seed: int
    budget_s: float
    data_root: str
    train_samples: int
    image_size: int
    cache: str
    inherit_epochs: int = 1
    test_samples: int | None = None  # data.max_test_samples; None: MNIST's whole 10,000


@dataclass
class Run:
    """One search: per finished trial, the CPU-seconds spent when it ended and its
    objectives (None for a trial that was stopped early or failed)."""

    strategy: str
    seed: int
    spent: list[float]
    values: list[tuple[float, float] | None]
    n_stopped: int
    n_reused: int
    n_inherited: int = 0


# What a saved run must share with the runs it is combined with: the work each trial does and
# the budget each search had.
SETTINGS = ("budget_s", "train_samples", "image_size", "inherit_epochs", "test_samples")


class Refused(ValueError):
    """A file given to --combine that cannot be reported with the others (one line)."""


def settings_of(job: Job) -> dict[str, Any]:
    return {name: getattr(job, name) for name in SETTINGS}


def save_runs(path: Path, settings: dict[str, Any], runs: list[Run]) -> None:
    """Write ``runs`` to ``path`` as JSON, whole or not at all (a temporary file, renamed)."""
    document = {"bench": "search_cost", "settings": settings, "runs": [asdict(r) for r in runs]}
    write_whole(path, json.dumps(document, indent=1))


def _check_run(run: Run) -> None:
    """ValueError where a loaded run is not what :func:`run_search` makes (an edited or
    foreign file gave tracebacks deep in the report, or a row for an unknown strategy)."""
    if run.strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {run.strategy!r}")
    if len(run.spent) != len(run.values):
        raise ValueError(
            f"{run.strategy} seed {run.seed}: {len(run.spent)} times, {len(run.values)} values"
        )
    for value in run.values:
        if value is not None and (
            len(value) != 2 or not all(isinstance(v, int | float) for v in value)
        ):
            raise ValueError(f"{run.strategy} seed {run.seed}: a value {value!r}, not 2 numbers")


def load_runs(paths: list[Path]) -> tuple[dict[str, Any], list[Run]]:
    """The runs of several saved files and their common settings; Refused if they differ,
    repeat a (strategy, seed), or a strategy lacks a seed that another has."""
    settings: dict[str, Any] | None = None
    runs: list[Run] = []
    where: dict[tuple[str, int], Path] = {}
    for path in paths:
        try:
            document = json.loads(path.read_text())
            own = document["settings"]
            loaded = [Run(**r) for r in document["runs"]]
            if document.get("bench") != "search_cost":
                raise ValueError(f"written by {document.get('bench')!r}")
            for run in loaded:
                _check_run(run)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise Refused(f"{path}: not a file saved by --save ({error})") from None
        if not isinstance(own, dict) or set(own) != set(SETTINGS):
            raise Refused(f"{path}: not a file saved by --save (its settings are {own!r})")
        budget = own["budget_s"]
        if isinstance(budget, bool) or not isinstance(budget, int | float) or not budget > 0:
            raise Refused(f"{path}: not a file saved by --save (its budget_s is {budget!r})")
        if settings is None:
            settings, first = own, path
        for name in SETTINGS:
            if own[name] != settings[name]:
                raise Refused(
                    f"{path}: {name} is {own[name]!r}, but {settings[name]!r} in {first}; "
                    "only runs made with the same settings are combined"
                )
        for run in loaded:
            run.values = [tuple(v) if v is not None else None for v in run.values]
            key = (run.strategy, run.seed)
            if key in where:
                raise Refused(
                    f"{path}: {run.strategy} seed {run.seed} is also in {where[key]}; "
                    "combine files of different seeds"
                )
            where[key] = path
            runs.append(run)
    if settings is None or not runs:
        raise Refused("--combine: no runs in the files given")
    seeds = {s: {r.seed for r in runs if r.strategy == s} for s in {r.strategy for r in runs}}
    every = set().union(*seeds.values())
    for strategy, own_seeds in sorted(seeds.items()):
        if own_seeds != every:
            raise Refused(
                f"--combine: {strategy} lacks seeds {sorted(every - own_seeds)} that other "
                "strategies have; its mean would be over other seeds"
            )
    return settings, runs


def experiment_for(job: Job) -> Any:
    from nascomp.search.experiment import load_experiment

    sampler = "random" if job.strategy == "random" else "pls"
    overrides = [
        f"data.root={job.data_root}",
        f"data.max_train_samples={job.train_samples}",
        f"data.image_size={job.image_size}",
        # 1,200 validation images: evaluating 6,000 after every epoch cost more than training.
        "data.val_fraction=0.02",
        f"data.max_test_samples={'null' if job.test_samples is None else job.test_samples}",
        "objectives={val_accuracy: max, size_bytes: min}",
        f"search.sampler={sampler}",
        f"search.seed={job.seed}",
        f"search.scheduler={'mo_asha' if 'mo_asha' in job.strategy else 'none'}",
        f"search.reuse_training={'true' if 'reuse' in job.strategy else 'false'}",
        f"search.inherit_epochs={job.inherit_epochs if 'inherit' in job.strategy else 0}",
        f"search.cost_aware={'true' if '+cost' in job.strategy else 'false'}",
        "search.concurrent=1",
        "measure.n_warmup=1",
        "measure.n_repeat=3",
        "measure.latency_batch_size=8",
    ]
    return load_experiment(EXAMPLE, overrides)


class _Stop(Exception):
    """Raised from a trial's report when the rung rule stops it."""


class RungJudge:
    """A trial's ``report``: at each rung epoch, ``MultiObjectiveAsha.decide`` on its
    val_accuracy and predicted final size, as the scheduler does in a search; raises
    :class:`_Stop` when the trial is stopped. Does nothing without a scheduler."""

    def __init__(self, scheduler: Any, trial_id: str, config: dict[str, Any]) -> None:
        self.scheduler, self.trial_id, self.config = scheduler, trial_id, config
        self.size: float | None = None

    def __call__(self, metrics: dict[str, Any]) -> None:
        from ray.tune.schedulers import TrialScheduler

        from nascomp.trainers.predicted import predict_costs
        from nascomp.trainers.trained import REPLAYED_KEY

        if self.scheduler is None or metrics.get(REPLAYED_KEY):
            return  # a reused student's replayed epochs are not judged again (as in a search)
        length = self.scheduler.length_of(self.config)  # an inheriting trial's are its own
        if metrics["epoch"] not in self.scheduler.rungs_for(length):
            return
        if self.size is None:
            self.size = float(predict_costs(self.config)["size_bytes"])
        values = {"val_accuracy": metrics["val_accuracy"], "size_bytes": self.size}
        decision = self.scheduler.decide(self.trial_id, int(metrics["epoch"]), values, length)
        if decision == TrialScheduler.STOP:
            raise _Stop


def run_search(job: Job) -> Run:
    """One search, in this process, until ``job.budget_s`` CPU-seconds are spent."""
    _quiet()
    import optuna
    from optuna.trial import TrialState

    from nascomp.search.driver import trial_base
    from nascomp.search.experiment import teacher_job
    from nascomp.search.samplers import make_sampler
    from nascomp.search.samplers._common import COST_ATTR, STOPPED_ATTR, scratch_cost, stopped_at
    from nascomp.search.samplers.inherit import INHERITED_ATTR, Inheritance
    from nascomp.search.samplers.space import DefineByRun, PointCost
    from nascomp.search.tune.scheduler import MultiObjectiveAsha
    from nascomp.trainers.predicted import TrainMacs, predict_costs
    from nascomp.trainers.teacher import load_or_train_teacher
    from nascomp.trainers.trained import ReusedMoveCost, TrainedStore
    from nascomp.trainers.trial import run_trial

    os.environ["NASCOMP_CACHE"] = job.cache
    experiment = experiment_for(job)
    teacher = load_or_train_teacher(teacher_job(experiment))[0]  # cached by main()
    weighed = experiment.search.reuse_training and not job.strategy.endswith("-blind")
    inherit_epochs = experiment.search.inherit_epochs
    sampler = make_sampler(
        experiment.search,
        features=experiment.space.features(),
        move_cost=ReusedMoveCost.of(experiment.train, inherit_epochs) if weighed else None,
        learn_from_stopped=not job.strategy.endswith("-unheard"),
        start_cost=PointCost(experiment.space.params(), trial_base(experiment), TrainMacs()),
    )
    directions = ["maximize" if d == "max" else "minimize" for d in OBJECTIVES.values()]
    study = optuna.create_study(directions=directions, sampler=sampler)
    scheduler = None
    if experiment.search.scheduler == "mo_asha":
        rungs = experiment.search.rungs
        scheduler = MultiObjectiveAsha(
            OBJECTIVES,
            max_epochs=experiment.train.epochs,
            grace_period=rungs.grace_period,
            reduction_factor=rungs.reduction_factor,
            predict=predict_costs,
        )
    with tempfile.TemporaryDirectory(prefix="search-cost-") as folder:
        store = TrainedStore(folder) if experiment.search.reuse_training else None
        inherit = Inheritance(folder, inherit_epochs) if inherit_epochs else None
        space = DefineByRun(experiment.space.params(), trial_base(experiment), inherit)
        run = Run(job.strategy, job.seed, [], [], 0, 0)
        started = time.process_time()
        while time.process_time() - started < job.budget_s:
            trial = study.ask()
            config = space.config(trial)
            judge = RungJudge(scheduler, str(trial.number), config)
            try:
                outcome = run_trial(
                    config,
                    teacher_state=teacher if config.get("distill.enabled") else None,
                    report=judge,
                    trained=store,
                )
            except _Stop:
                # What the rung saw, kept on the trial as the searcher does in a search.
                reached = scheduler.reached(judge.trial_id)
                values = [reached["values"].get(name) for name in OBJECTIVES]
                trial.set_user_attr(STOPPED_ATTR, stopped_at(reached["fidelity"], values))
                study.tell(trial, state=TrialState.PRUNED)
                run.n_stopped += 1
                run.spent.append(time.process_time() - started)
                run.values.append(None)
                continue
            if outcome.status != "ok":
                study.tell(trial, state=TrialState.FAIL)
                run.spent.append(time.process_time() - started)
                run.values.append(None)
                continue
            values = tuple(float(outcome.metrics[name]) for name in OBJECTIVES)
            # As the searcher does in a search: before the tell, which is when pls reads it.
            inherited = bool(trial.user_attrs.get(INHERITED_ATTR))
            cost = scratch_cost(outcome.metrics, inherited=inherited)
            if cost is not None:
                trial.set_user_attr(COST_ATTR, cost)
            study.tell(trial, values)
            run.n_reused += int(outcome.metrics.get("reused_epochs", 0) > 0)
            run.n_inherited += int(config.get("train.init_match") == "slice")
            run.spent.append(time.process_time() - started)
            run.values.append(values)  # type: ignore[arg-type]
    return run


def _quiet() -> None:
    import optuna
    import torch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)


def minimised(values: list[tuple[float, float]]) -> np.ndarray:
    from nascomp.search.front.pareto import to_minimise

    return to_minimise(np.array(values, dtype=float), list(OBJECTIVES.values()))


@dataclass(frozen=True)
class Reference:
    ideal: np.ndarray
    nadir: np.ndarray
    hypervolume: float


def reference_front(runs: list[Run]) -> Reference:
    from nascomp.search.front.hypervolume import NORMALISED_REF, hypervolume, normalise
    from nascomp.search.front.pareto import non_dominated_mask

    points = minimised([v for run in runs for v in run.values if v is not None])
    front = points[non_dominated_mask(points)]
    ideal, nadir = front.min(axis=0), front.max(axis=0)
    ref = np.full(2, NORMALISED_REF)
    return Reference(ideal, nadir, hypervolume(normalise(front, ideal, nadir), ref))


def hv_at(run: Run, seconds: float, reference: Reference) -> float:
    """Fraction of the reference hypervolume of the trials ``run`` finished by ``seconds``."""
    from nascomp.search.front.hypervolume import NORMALISED_REF, hypervolume, normalise

    done = [v for s, v in zip(run.spent, run.values, strict=True) if s <= seconds and v]
    if not done:
        return 0.0
    unit = normalise(minimised(done), reference.ideal, reference.nadir)
    # Points beyond the reference front's nadir add nothing (clipped at the reference point).
    unit = np.minimum(unit, NORMALISED_REF)
    return hypervolume(unit, np.full(2, NORMALISED_REF)) / reference.hypervolume


def seconds_to_reach(grid: np.ndarray, curve: np.ndarray, target: float) -> float | None:
    reached = np.flatnonzero(curve >= target - 1e-12)
    return float(grid[reached[0]]) if reached.size else None


def report(runs: list[Run], budget_s: float, plot: Path | None) -> None:
    if not any(v is not None for run in runs for v in run.values):
        # every trial stopped or failed (a budget below one trial's length): no front to draw
        print(f"\nno trial finished in any search within {budget_s:g} CPU-s: nothing to compare")
        return
    reference = reference_front(runs)
    grid = np.linspace(0.0, budget_s, 241)[1:]
    strategies = list(dict.fromkeys(run.strategy for run in runs))
    curves = {
        s: np.array([[hv_at(r, t, reference) for t in grid] for r in runs if r.strategy == s])
        for s in strategies
    }
    means = {s: c.mean(axis=0) for s, c in curves.items()}
    target = means["pls"][-1] if "pls" in means else None
    pls_cost = seconds_to_reach(grid, means["pls"], target) if target is not None else None
    header = [
        "strategy",
        *(f"HV @ {f:.0%}" for f in FRACTIONS),
        "CPU-s to pls's final HV",
        "of pls's",
        "trials",
        "stopped",
        "reused",
        "inherited",
    ]
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for strategy in strategies:
        own = [r for r in runs if r.strategy == strategy]
        cells = []
        for fraction in FRACTIONS:
            column = curves[strategy][:, round(fraction * len(grid)) - 1]
            cells.append(f"{column.mean():.3f} ± {column.std():.3f}")
        reach = seconds_to_reach(grid, means[strategy], target) if target is not None else None
        cells.append(f"{reach:.0f}" if reach is not None else f"> {budget_s:.0f}")
        cells.append(f"{reach / pls_cost:.0%}" if reach is not None and pls_cost else "-")
        cells.append(f"{np.mean([len(r.values) for r in own]):.1f}")
        cells.append(f"{np.mean([r.n_stopped for r in own]):.1f}")
        cells.append(f"{np.mean([r.n_reused for r in own]):.1f}")
        cells.append(f"{np.mean([r.n_inherited for r in own]):.1f}")
        print(f"| {strategy} | " + " | ".join(cells) + " |")
    seeds = sorted({r.seed for r in runs})
    print(
        f"\n{len(seeds)} seeds ({seeds[0]} to {seeds[-1]}), {budget_s:.0f} CPU-s per search; HV "
        "as a fraction of the reference front's (the union of all runs), mean ± std over "
        "seeds; trials, stopped, reused and inherited: means per search, with the trial that "
        "crossed the budget (the HV columns count the trials ended within it; the reference "
        "front is of all)."
    )
    if target is not None:
        print(f"pls's final mean HV {target:.3f}, first reached at {pls_cost:.0f} CPU-s.")
    if plot is not None:
        write_plot(plot, grid, means, curves)
        print(f"plot: {plot}")


def write_plot(path: Path, grid: np.ndarray, means: dict, curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for strategy, mean in means.items():
        (line,) = axes.plot(grid, mean, label=strategy)
        std = curves[strategy].std(axis=0)
        axes.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.12)
    axes.set_xlabel("CPU-seconds spent")
    axes.set_ylabel("hypervolume / reference front's")
    axes.set_title("val_accuracy vs size_bytes on MNIST: cost of a front")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seeds",
        type=at_least(1),
        default=5,
        help="searches per strategy, one per seed (default %(default)s)",
    )
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="search.seed of the first search; the others count up from it (default %(default)s)",
    )
    parser.add_argument("--budget", type=above_zero, default=240.0, help="CPU-seconds per search")
    parser.add_argument(
        "--strategies",
        nargs="+",
        default=list(STRATEGIES),
        choices=STRATEGIES,
        help="the strategies to run, each a setting of the experiment (default: all)",
    )
    parser.add_argument(
        "--train-samples", type=at_least(1), default=2000, help="MNIST training subset"
    )
    parser.add_argument("--image-size", type=at_least(1), default=16, help="MNIST resized to this")
    parser.add_argument(
        "--data-root",
        default=str(DEFAULT_DATA_ROOT),
        help="folder holding MNIST "
        "(default %(default)s: $NASCOMP_DATA_ROOT if set, else ../shared/data)",
    )
    parser.add_argument(
        "--inherit-epochs", type=at_least(1), default=1, help="train epochs of an inheriting trial"
    )
    parser.add_argument(
        "--test-samples",
        type=int,
        default=None,
        help="data.max_test_samples of every search (default: the whole test split, 10,000)",
    )
    parser.add_argument(
        "--workers",
        type=at_least(1),
        default=os.cpu_count() or 1,
        help="searches run at once, a process each (default: the CPU count, %(default)s)",
    )
    parser.add_argument(
        "--plot", type=output_file, help="write the curves to this picture (PNG, SVG)"
    )
    parser.add_argument("--quick", action="store_true", help="1 seed, 30 CPU-s (a smoke run)")
    parser.add_argument("--save", type=output_file, help="write the runs to this JSON file")
    parser.add_argument(
        "--combine",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="report files written by --save as one run (no searches)",
    )
    args = parser.parse_args(argv)
    if args.combine:
        try:
            settings, runs = load_runs(args.combine)
        except Refused as error:
            parser.exit(2, f"{parser.prog}: error: {error}\n")
        print(f"{len(args.combine)} saved files: " + ", ".join(map(str, args.combine)))
        report(runs, settings["budget_s"], args.plot)
        return 0
    if args.test_samples is not None and args.test_samples < 10:
        parser.error(
            f"--test-samples: at least 10 (data.max_test_samples); got {args.test_samples}"
        )
    if args.quick:
        args.seeds, args.budget = 1, 30.0
    _quiet()
    print(f"{machine()}; load average {load_average()} at the start")
    whole = args.test_samples is None or args.test_samples >= MNIST_TEST_IMAGES
    tested = f"all {MNIST_TEST_IMAGES:,}" if whole else f"{args.test_samples:,}"
    print(f"each trial evaluates {tested} MNIST test images (data.max_test_samples)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="search-cost-cache-") as cache:
        jobs = [
            Job(
                s,
                seed,
                args.budget,
                args.data_root,
                args.train_samples,
                args.image_size,
                cache,
                args.inherit_epochs,
                args.test_samples,
            )
            for seed in range(args.first_seed, args.first_seed + args.seeds)
            for s in args.strategies
        ]
        from nascomp.search.errors import ConfigError

        try:
            _train_teacher(jobs[0])
        except ConfigError as error:  # the data are not where --data-root says: a traceback
            parser.exit(2, f"{parser.prog}: error: --data-root {args.data_root}: {error}\n")
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            runs = list(pool.map(run_search, jobs))
    if args.save is not None:
        save_runs(args.save, settings_of(jobs[0]), runs)
        print(f"runs saved: {args.save}")
    report(runs, args.budget, args.plot)
    print(
        f"\ntotal {time.perf_counter() - started:.0f} s wall, load average {load_average()} at "
        f"the end, {args.workers} searches at once"
    )
    return 0


def _train_teacher(job: Job) -> None:
    """Train the shared teacher once, before the searches (each then finds it cached)."""
    os.environ["NASCOMP_CACHE"] = job.cache
    from nascomp.search.experiment import teacher_job
    from nascomp.trainers.teacher import load_or_train_teacher

    load_or_train_teacher(teacher_job(experiment_for(job)))


if __name__ == "__main__":
    sys.exit(main())
