"""Uniform against per-group against budget-allocated weight widths, on the same search budget.

    python bench/mixed_precision.py                         # 3 seeds x 12 trials per mode
    python bench/mixed_precision.py --seeds 2 --trials 4 --max-train 1000   # a smoke run
    # the seeds on two cores, then one table over both:
    python bench/mixed_precision.py --seeds 2 --json a.json &
    python bench/mixed_precision.py --seeds 2 --first-seed 2 --json b.json
    python bench/mixed_precision.py --combine a.json b.json

Each mode is one setting of the quickstart experiment (``spaces/quickstart.yaml``) on
Fashion-MNIST: ``space.quant.mixed: none`` (one width per trial), ``groups`` (a width per stem,
stage and head) and ``budget`` (one searched average, widths allocated per layer after
training); all three choose widths from the same ``bits`` list, and everything else (the
architecture and pruning space, the sampler, the trials, the seeds) is the same. Objectives are
``val_accuracy`` (max) and ``size_bytes`` (min); the table gives each mode's hypervolume, mean
and standard deviation over the seeds, normalised over all runs together (ideal 0, nadir 1 of
every point any run found, reference 1.1 per objective, ``search/front/hypervolume.py``).

What runs is what ``nascomp search`` runs per trial (the experiment file, ``DefineByRun``, the
configured sampler and ``trainers.run_trial``), without Ray: trials one after another in this
process, so the comparison costs no scheduling noise. Distillation is off (no teacher to train)
and the training set is cut to ``--max-train`` images to keep the run within an hour here; most of
a trial's time is its evaluations on the validation split (``--val-fraction`` of the training
images, 6,000 at the default 0.1). ``--json`` is rewritten after every search (whole: a
temporary file, renamed), so a run cut short keeps what it finished; it records the settings
and ``--combine`` refuses files whose settings differ or that hold the same mode and seed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna
import torch

from nascomp.search.driver import trial_base
from nascomp.search.experiment import Experiment, load_experiment
from nascomp.search.front.hypervolume import NORMALISED_REF, hypervolume, normalise
from nascomp.search.front.pareto import to_minimise
from nascomp.search.samplers import make_sampler
from nascomp.search.samplers.space import DefineByRun
from nascomp.trainers.trial import run_trial

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import at_least, output_file, write_whole

QUICKSTART = Path(__file__).resolve().parents[1] / "spaces" / "quickstart.yaml"
MODES = ("none", "groups", "budget")
BITS = "[2, 3, 4, 6, 8]"
DIRECTIONS = ["max", "min"]


def data_root() -> str:
    return os.environ.get("NASCOMP_DATA_ROOT", str(Path(__file__).parents[2] / "shared/data"))


def experiment_for(mode: str, seed: int, args: argparse.Namespace) -> Experiment:
    overrides = [
        "data.name=fashion_mnist",
        f"data.root={data_root()}",
        f"data.max_train_samples={args.max_train}",
        f"data.val_fraction={args.val_fraction}",
        "objectives={val_accuracy: max, size_bytes: min}",
        f"search.seed={seed}",
        f"search.trials={args.trials}",
        f"train.epochs={args.epochs}",
        "train.prune_epochs=1",
        "train.qat_epochs=1",
        "space.distill.enabled=false",
        f"space.quant.bits={BITS}",
        f"space.quant.mixed={mode}",
        "measure.n_warmup=1",
        "measure.n_repeat=2",
        "measure.latency_batch_size=8",
        f"measure.coding={args.coding}",
    ]
    return load_experiment(QUICKSTART, overrides)


def search(mode: str, seed: int, args: argparse.Namespace) -> list[dict]:
    """One search: each trial's sampled values, metrics and chosen widths."""
    experiment = experiment_for(mode, seed, args)
    space = DefineByRun(experiment.space.params(), trial_base(experiment))
    sampler = make_sampler(experiment.search, features=experiment.space.features())
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    rows: list[dict] = []
    for _ in range(args.trials):
        trial = study.ask()
        config = space.config(trial)
        outcome = run_trial(config)
        if outcome.status != "ok":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        values = (outcome.metrics["val_accuracy"], outcome.metrics["size_bytes"])
        study.tell(trial, values)
        rows.append(
            {
                "mode": mode,
                "seed": seed,
                "val_accuracy": values[0],
                "size_bytes": values[1],
                "layer_bits": outcome.info.get("layer_bits"),
                "params": trial.params,
            }
        )
        print(f"  {mode} seed {seed}: acc {values[0]:.4f} size {values[1]:,.0f}", flush=True)
    return rows


def hypervolumes(rows: list[dict]) -> dict[tuple[str, int], float]:
    """Each run's hypervolume, normalised over every point of every run."""
    values = to_minimise(np.array([[r["val_accuracy"], r["size_bytes"]] for r in rows]), DIRECTIONS)
    ideal, nadir = values.min(axis=0), values.max(axis=0)
    ref = np.full(2, NORMALISED_REF)
    out = {}
    for key in sorted({(r["mode"], r["seed"]) for r in rows}):
        picked = [i for i, r in enumerate(rows) if (r["mode"], r["seed"]) == key]
        out[key] = hypervolume(normalise(values[picked], ideal, nadir), ref)
    return out


def print_tables(rows: list[dict], modes: list[str]) -> None:
    """Each mode's hypervolume over the seeds, then each mode against the first, seed by seed:
    the seeds' spread is shared by all modes (the same start design and data), so the paired
    difference resolves what the means cannot."""
    volumes = hypervolumes(rows)
    seeds = sorted({seed for _, seed in volumes})
    print(f"\n| mode | HV mean ± std | per seed | trials ({len(seeds)} seeds) |")
    print("|---|---|---|---|")
    for mode in modes:
        runs = [volumes[(mode, seed)] for seed in seeds if (mode, seed) in volumes]
        per_seed = ", ".join(f"{v:.4f}" for v in runs)
        n_trials = sum(r["mode"] == mode for r in rows)
        print(f"| {mode} | {np.mean(runs):.4f} ± {np.std(runs):.4f} | {per_seed} | {n_trials} |")
    first = modes[0]
    for mode in modes[1:]:
        paired = [s for s in seeds if (mode, s) in volumes and (first, s) in volumes]
        diffs = np.array([volumes[(mode, s)] - volumes[(first, s)] for s in paired])
        if not len(diffs):
            continue
        wins = int((diffs > 0).sum())
        print(
            f"{mode} - {first}: {diffs.mean():+.4f} ± {diffs.std():.4f} over {len(diffs)} seeds "
            f"({wins} higher, {int((diffs < 0).sum())} lower)"
        )


# What the searches of files combined must share: the work each trial does, the data.
SETTINGS = ("trials", "epochs", "max_train", "val_fraction", "coding", "data_root")


class Refused(ValueError):
    """A --combine file that cannot be reported with the others (one line)."""


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "trials": args.trials,
        "epochs": args.epochs,
        "max_train": args.max_train,
        "val_fraction": args.val_fraction,
        "coding": args.coding,
        "data_root": data_root(),
    }


def write_rows(path: Path, settings: dict[str, Any], rows: list[dict]) -> None:
    """``rows`` and their settings to ``path``, whole or not at all (a run cut short during the
    write kept a truncated file)."""
    document = {"bench": "mixed_precision", "settings": settings, "rows": rows}
    write_whole(path, json.dumps(document, indent=2, default=str))


def load_rows(paths: list[Path]) -> list[dict]:
    """The rows of several --json files; Refused where one is not such a file, their settings
    differ, or two hold the same (mode, seed): each search's trials were pooled with another's
    into one run (the same file twice, or halves run without --first-seed), silently."""
    rows: list[dict] = []
    settings: dict[str, Any] | None = None
    where: dict[tuple[str, int], Path] = {}
    for path in paths:
        try:
            document = json.loads(path.read_text())
            if document.get("bench") != "mixed_precision":
                raise ValueError(f"written by {document.get('bench')!r}")
            own, loaded = document["settings"], document["rows"]
            if not isinstance(own, dict):
                raise ValueError(f"its settings are {own!r}")
            keys = {(str(r["mode"]), int(r["seed"])) for r in loaded}
            for r in loaded:
                float(r["val_accuracy"]), float(r["size_bytes"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise Refused(f"{path}: not a file written by --json ({error})") from None
        if settings is None:
            settings, first = own, path
        for name in SETTINGS:
            if own.get(name) != settings.get(name):
                raise Refused(
                    f"{path}: {name} is {own.get(name)!r}, but {settings.get(name)!r} in "
                    f"{first}; only runs made with the same settings are combined"
                )
        for key in sorted(keys):
            if key in where:
                raise Refused(
                    f"{path}: {key[0]} seed {key[1]} is also in {where[key]}; combine files of "
                    "different seeds (--first-seed)"
                )
            where[key] = path
        rows.extend(loaded)
    if not rows:
        raise Refused("--combine: no trials in the files given")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seeds",
        type=at_least(1),
        default=3,
        help="searches per mode, one per seed (default %(default)s)",
    )
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="search.seed of the first search; the others count up from it (default %(default)s)",
    )
    parser.add_argument("--trials", type=at_least(1), default=12, help="trials per search")
    parser.add_argument("--epochs", type=at_least(1), default=3, help="training epochs per trial")
    parser.add_argument("--max-train", type=int, default=5000, help="training images")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="data.val_fraction")
    parser.add_argument(
        "--modes",
        nargs="+",
        default=list(MODES),
        choices=MODES,
        help="space.quant.mixed settings to compare (default: all three)",
    )
    parser.add_argument(
        "--coding",
        default="packed",
        choices=["packed", "entropy"],
        help="measure.coding: the coding of the file whose size is size_bytes "
        "(default %(default)s)",
    )
    parser.add_argument("--json", type=output_file, help="also write every trial here")
    parser.add_argument(
        "--combine",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="run nothing: one table over the trials these --json files hold",
    )
    args = parser.parse_args(argv)
    if args.combine:
        try:
            rows = load_rows(args.combine)
        except Refused as error:
            parser.exit(2, f"{parser.prog}: error: {error}\n")
        # the modes the files hold (a mode in none of them printed as nan)
        held = [m for m in args.modes if any(r["mode"] == m for r in rows)]
        if not held:
            parser.error(f"--modes: the files hold none of {', '.join(args.modes)}")
        print_tables(rows, held)
        return 0
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)

    started = time.perf_counter()
    rows: list[dict] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for mode in args.modes:  # interleaved: machine drift spreads over the modes
            rows.extend(search(mode, seed, args))
            if args.json:
                write_rows(args.json, settings_of(args), rows)
    print_tables(rows, args.modes)
    print(f"\ntotal {time.perf_counter() - started:.0f} s, load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
