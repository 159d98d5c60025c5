"""Multi-objective asynchronous successive halving: a Ray Tune scheduler that ranks by Pareto
dominance, not by one metric.

Rungs sit at ``grace_period * reduction_factor**k`` epochs, below ``max_epochs`` (the training
phase's length). When a trial reports the epoch of a rung, its objectives are recorded there
and it is ranked among every trial recorded at that rung so far: by non-dominated sorting, ties
within a front broken by crowding distance (ends of a front first). It continues when its place
is within the best ``max(1, n // reduction_factor)``, and is stopped otherwise (ASHA's rule,
Li et al. 2020, with the Pareto rank in place of one metric). The first trial at a rung always
continues.

A rung ranks the objectives a trial reports every epoch (accuracy, params, size); those it
measures only at the end (latency) are left out of the ranking, and the run says which.

Trials it stops are marked ``nascomp_status = pruned`` in their last result before Ray hands
that result on, so the searcher tells Optuna PRUNED (never COMPLETE with truncated values),
MLflow tags the run ``nascomp.status=pruned``, and the front never holds them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from nascomp.search.front.pareto import rank_order, to_minimise
from nascomp.search.tune.searcher import STATUS_KEY

PRUNED = "pruned"


def rung_epochs(grace_period: int, reduction_factor: float, max_epochs: int) -> list[int]:
    """Rung milestones: grace * rf**k (rounded, distinct) strictly below ``max_epochs``."""
    rungs: list[int] = []
    epoch = float(grace_period)
    while round(epoch) < max_epochs:
        if not rungs or round(epoch) > rungs[-1]:
            rungs.append(round(epoch))
        epoch *= reduction_factor
    return rungs


def promotes(rung_values: np.ndarray, newcomer: int, reduction_factor: float) -> bool:
    """Does the point ``newcomer`` of ``rung_values`` (minimised, all recorded at this rung)
    keep its place in the best ``max(1, n // reduction_factor)``?"""
    n_keep = max(1, int(rung_values.shape[0] // reduction_factor))
    order = rank_order(rung_values)
    return newcomer in order[:n_keep]


class MultiObjectiveAsha(FIFOScheduler):
    def __init__(
        self,
        objectives: dict[str, str],
        *,
        max_epochs: int,
        grace_period: int = 1,
        reduction_factor: float = 2.0,
        time_attr: str = "epoch",
    ) -> None:
        super().__init__()
        if reduction_factor <= 1:
            raise ValueError(f"reduction_factor must be > 1; got {reduction_factor}")
        self.objectives = dict(objectives)
        self.time_attr = time_attr
        self.reduction_factor = reduction_factor
        self.rungs = rung_epochs(grace_period, reduction_factor, max_epochs)
        # rung epoch -> trial id -> that trial's objective values at the rung, by name
        self.recorded: dict[int, dict[str, dict[str, float]]] = {rung: {} for rung in self.rungs}
        self.stopped: set[str] = set()

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # the objectives are ours; Tune's single metric stays unset (NOTES.md)

    def ranked_objectives(self, result: dict[str, Any]) -> list[str]:
        return [name for name in self.objectives if _is_number(result.get(name))]

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        epoch = result.get(self.time_attr)
        if epoch not in self.recorded or STATUS_KEY in result:
            return TrialScheduler.CONTINUE  # not at a rung, or the trial's final result
        values = {name: float(result[name]) for name in self.ranked_objectives(result)}
        if not values:
            return TrialScheduler.CONTINUE
        decision = self.decide(trial.trial_id, int(epoch), values)
        if decision == TrialScheduler.STOP:
            self.stopped.add(trial.trial_id)
        return decision

    def decide(self, trial_id: str, rung: int, values: dict[str, float]) -> str:
        """Record ``values`` (objective name -> value) at ``rung`` and say whether the trial
        goes on. Pure bookkeeping, so tests drive it without Ray."""
        recorded = self.recorded[rung]
        recorded[trial_id] = dict(values)
        names = list(values)
        # Compare like with like: the trials that reported the same objectives at this rung.
        ids = [tid for tid, seen in recorded.items() if set(seen) == set(names)]
        matrix = np.array([[recorded[tid][m] for m in names] for tid in ids])
        minimised = to_minimise(matrix, [self.objectives[m] for m in names])
        keep = promotes(minimised, ids.index(trial_id), self.reduction_factor)
        return TrialScheduler.CONTINUE if keep else TrialScheduler.STOP

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        # Ray passes a copy here; the searcher and the callbacks read ``trial.last_result``
        # right after this call, so the mark goes there.
        if trial.trial_id in self.stopped and STATUS_KEY not in trial.last_result:
            trial.last_result[STATUS_KEY] = PRUNED
            trial.last_result["nascomp_reason"] = (
                f"stopped at epoch {trial.last_result.get(self.time_attr)} by mo_asha "
                f"(rungs {self.rungs})"
            )

    def debug_string(self) -> str:
        return f"MultiObjectiveAsha: rungs {self.rungs}, {len(self.stopped)} stopped"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
