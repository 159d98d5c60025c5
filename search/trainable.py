"""The Ray Tune function trainable: run_trial with tune.report as its reporter."""

from __future__ import annotations

from typing import Any

import ray
from ray import tune

from search.searcher import INFO_PREFIX, STATUS_KEY
from trainers.trial import run_trial


def trial_fn(config: dict[str, Any], teacher_state: dict | None = None) -> None:
    outcome = run_trial(config, teacher_state=teacher_state, report=tune.report)
    final: dict[str, Any] = {**outcome.metrics, STATUS_KEY: outcome.status}
    if outcome.reason:
        final["nascomp_reason"] = outcome.reason
    final.update({f"{INFO_PREFIX}{key}": value for key, value in outcome.info.items()})
    final["nascomp_node_id"] = ray.get_runtime_context().get_node_id()
    tune.report(final)
