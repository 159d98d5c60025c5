"""The Python API: what ``import nascomp`` offers notebooks and scripts.

    import nascomp
    summary = nascomp.run_search("experiment.yaml", overrides=["search.trials=8"])
    for record in summary.front:
        print(record.run_id, record.metrics["val_accuracy"])
    model = nascomp.load_exported("model/")   # after `nascomp reproduce --export model/`

Errors are those of :mod:`nascomp.search.errors` (a bad experiment is a ``ConfigError`` whose
message names the field and what is allowed), raised, not printed.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nascomp.search import experiment as _experiment
from nascomp.search.driver import SearchSummary
from nascomp.search.experiment import Experiment
from nascomp.search.export import load_exported
from nascomp.search.tune.head import starting_local_ray

ExperimentSource = str | Path | Mapping[str, Any] | Experiment | None


def load_experiment(
    experiment: ExperimentSource = None, overrides: Sequence[str] = ()
) -> Experiment:
    """A validated :class:`Experiment` from a YAML path, a mapping shaped like the YAML file,
    an ``Experiment`` (returned as it is, or revalidated with ``overrides``) or None (the
    built-in quickstart). ``overrides`` are ``--set`` items: ``"search.trials=8"``."""
    if isinstance(overrides, str | bytes):
        raise _experiment.ConfigError(
            f"overrides: expected a list of KEY.PATH=VALUE strings; got the string {overrides!r}"
            " (write [...] around it)"
        )
    if isinstance(experiment, Experiment):
        if not overrides:
            return experiment
        experiment = experiment.model_dump(mode="json")
    if isinstance(experiment, Mapping):
        raw = copy.deepcopy(dict(experiment))
        for item in overrides:
            _experiment.apply_override(raw, item)
        return _experiment.validate_experiment(raw)
    if experiment is not None and not isinstance(experiment, str | Path):
        raise _experiment.ConfigError(
            f"experiment: expected a YAML path, a mapping or an Experiment; "
            f"got {type(experiment).__name__}"
        )
    return _experiment.load_experiment(experiment, list(overrides))


def run_search(
    experiment: ExperimentSource = None,
    *,
    overrides: Sequence[str] = (),
    address: str | None = None,
    resume: str | None = None,
    echo: Callable[[str], Any] = print,
) -> SearchSummary:
    """Run a whole search (as ``nascomp search`` does) and return its summary: every trial's
    record and the Pareto front, read back from MLflow. ``address`` is a Ray cluster
    (``auto``, ``HOST:PORT``), ``resume`` a result folder or ``latest``; ``echo`` receives the
    progress lines (``lambda line: None`` silences them)."""
    checked = load_experiment(experiment, overrides)
    # MLflow's INFO lines ("Creating initial MLflow database tables...") are not the search's:
    # its logger reads this at import, and is set here where a notebook imported it already.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    mlflow_log = logging.getLogger("mlflow")
    level = mlflow_log.level
    mlflow_log.setLevel(max(level, logging.WARNING))
    try:
        with starting_local_ray(address) as local_ray:  # comes up while the driver imports
            from nascomp.search.driver import run_search as drive

            summary = drive(checked, address=address, echo=echo, resume=resume, local_ray=local_ray)
    finally:
        mlflow_log.setLevel(level)
    echo(summary_line(summary, checked))
    return summary


def summary_line(summary: SearchSummary, experiment: Experiment) -> str:
    """The search's end in one line, as ``nascomp search`` says it: the trials by status,
    the front's size (or why it is empty, and the commonest failure) and its search id."""
    from collections import Counter

    from nascomp.search.front.selection import empty_front_reason

    counts = ", ".join(
        f"{summary.count(status)} {status}"
        for status in ("ok", "infeasible", "pruned", "failed")
        if summary.count(status)
    )
    head = (
        f"{len(summary.trials)} trials in {summary.wall_seconds:.0f} s ({counts or 'none ended'})"
    )
    if summary.front:
        return f"{head}; front of {len(summary.front)} models, search {summary.search_run_id}"
    why = empty_front_reason(summary.trials, summary.objectives, experiment.constraints)
    failed = Counter(
        t.tags.get("nascomp.reason", "") for t in summary.trials if t.status == "failed"
    )
    common = f"; most failed with: {failed.most_common(1)[0][0]}" if failed else ""
    return f"{head}; the front is empty: {why}{common}"


__all__ = ["Experiment", "SearchSummary", "load_experiment", "load_exported", "run_search"]
