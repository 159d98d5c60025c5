"""The Ray Tune function trainables: a trial's outcome, told to Tune with tune.report."""

from __future__ import annotations

from typing import Any

import ray
from ray import tune

from search.searcher import INFO_PREFIX, STATUS_KEY
from trainers.nb201_lookup import run_lookup_trial
from trainers.trial import TrialOutcome, run_trial


def trial_fn(config: dict[str, Any], teacher_state: dict | None = None) -> None:
    """``trial: train``: run_trial, reporting every epoch, then the final metrics."""
    tune.report(_final(run_trial(config, teacher_state=teacher_state, report=tune.report)))


def lookup_trial_fn(config: dict[str, Any]) -> None:
    """``trial: nb201_lookup``: one report, the final one."""
    tune.report(_final(run_lookup_trial(config)))


def _final(outcome: TrialOutcome) -> dict[str, Any]:
    final: dict[str, Any] = {**outcome.metrics, STATUS_KEY: outcome.status}
    if outcome.reason:
        final["nascomp_reason"] = outcome.reason
    final.update({f"{INFO_PREFIX}{key}": value for key, value in outcome.info.items()})
    final["nascomp_node_id"] = ray.get_runtime_context().get_node_id()
    return final
