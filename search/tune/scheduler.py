"""Multi-objective asynchronous successive halving: a Ray Tune scheduler that ranks by Pareto
dominance, not by one metric.

Rungs sit at ``grace_period * reduction_factor**k`` epochs, below ``max_epochs`` (the training
phase's length). When a trial reports the epoch of a rung, its objectives are recorded there
and it is judged among every trial recorded at that rung so far (itself included, ``n`` in
all). It continues when any of these holds, and is stopped otherwise:

1. the rung holds fewer than ``reduction_factor`` trials: ASHA promotes the best ``1/eta`` of a
   rung, which names nobody until the rung holds ``eta`` trials (Li et al. 2020). Without
   this, the second trial at a rung of two was stopped whenever the first dominated it;
2. it is non-dominated at the rung: a point of the rung's own front may be on the final one,
   and stopping it can only lose a part of the front;
3. fewer than ``max(1, n // reduction_factor)`` trials of the rung are strictly better placed
   (a lower front, or the same front with a strictly larger crowding distance). Ties go to the
   newcomer: equal crowding distances (infinite at the ends of a front) used to be broken by
   arrival order, against it.

What a rung ranks: the objectives that follow from the configuration alone (``size_bytes``,
``params``, ``nonzero_params``, ``macs``) by their predicted final values
(``trainers.predicted``): a trial to be pruned to 20% and quantized to 4 bits is judged by the
size it will ship at, not by the dense fp32 size it reports at epoch 1. Accuracy by its value
at the rung. Those measured only at the end (latency) are left out, and the run says which.

Like with like: a trial that trains fewer epochs than ``max_epochs`` (its config's
``train.epochs``: a move that inherits its parent's weights, ``search.inherit_epochs``) is
judged only among the trials of its own length, at that length's own rungs. An inherited trial
at its epoch 1 starts from trained weights; judged against trials at their first epoch from
scratch, it would stop them, and a 2-epoch trial's last epoch is not a 4-epoch trial's rung.

A trial that reuses an earlier trial's trained student (``search.reuse_training``) replays
that phase's epochs: they are not judged again (their training is paid for, and the trial that
trained them was judged on the same figures).

Trials it stops are marked ``nascomp_status = pruned`` in their last result before Ray hands
that result on, so the searcher tells Optuna PRUNED (never COMPLETE with truncated values),
MLflow tags the run ``nascomp.status=pruned``, and the front never holds them. The same result
carries what the stopping rung saw (``nascomp_stopped_at``: the fraction of training done and
the objectives it ranked), which the searcher keeps on the Optuna trial for ``pls``'s model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from nascomp.search.front.pareto import crowding_distance, non_dominated_sort, to_minimise
from nascomp.search.tune.results import STATUS_KEY, STOPPED_KEY
from nascomp.trainers.predicted import PREDICTED_METRICS
from nascomp.trainers.trained import REPLAYED_KEY

PRUNED = "pruned"
# A trial's config -> its predicted final cost measures (``trainers.predicted.predict_costs``).
Predict = Callable[[dict[str, Any]], dict[str, float]]


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
    """Does the point ``newcomer`` of ``rung_values`` (minimised, one row per trial recorded
    at this rung, itself included) go on? The rule of the module docstring."""
    values = np.asarray(rung_values, dtype=float)
    n_recorded = values.shape[0]
    if n_recorded < reduction_factor:
        return True  # too few at the rung for its best 1/eta to name anyone
    fronts = non_dominated_sort(values)
    if fronts[newcomer] == 0:
        return True  # on the rung's own front
    crowding = np.zeros(n_recorded)
    for front in np.unique(fronts):
        members = np.flatnonzero(fronts == front)
        crowding[members] = crowding_distance(values[members])
    same_front = fronts == fronts[newcomer]
    better = (fronts < fronts[newcomer]) | (same_front & (crowding > crowding[newcomer]))
    n_keep = max(1, int(n_recorded // reduction_factor))
    return int(better.sum()) < n_keep


class MultiObjectiveAsha(FIFOScheduler):
    def __init__(
        self,
        objectives: dict[str, str],
        *,
        max_epochs: int,
        grace_period: int = 1,
        reduction_factor: float = 2.0,
        time_attr: str = "epoch",
        predict: Predict | None = None,
    ) -> None:
        super().__init__()
        if reduction_factor <= 1:
            raise ValueError(f"reduction_factor must be > 1; got {reduction_factor}")
        self.objectives = dict(objectives)
        self.time_attr = time_attr
        self.grace_period = grace_period
        self.reduction_factor = reduction_factor
        self.rungs = rung_epochs(grace_period, reduction_factor, max_epochs)
        self.max_epochs = max_epochs
        # trial length (train epochs) -> rung epoch -> trial id -> its objective values there
        self.tables: dict[int | None, dict[int, dict[str, dict[str, float]]]] = {
            max_epochs: {rung: {} for rung in self.rungs}
        }
        self.stopped: dict[str, int | None] = {}  # trial id -> the rung epoch that stopped it
        # Final cost measures from the config (None: rank what the trial reports), per trial.
        self.predict = predict
        self.predicted: dict[str, dict[str, float]] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # the objectives are ours; Tune's single metric stays unset (NOTES.md)

    @property
    def recorded(self) -> dict[int, dict[str, dict[str, float]]]:
        """The rungs of the trials that train ``max_epochs``: rung epoch -> trial id -> values."""
        return self.tables[self.max_epochs]

    def length_of(self, config: dict[str, Any]) -> int | None:
        """The train epochs of a trial with this flat ``config``: its ``train.epochs`` when
        fewer than ``max_epochs`` (an inheriting trial), else ``max_epochs``."""
        epochs = config.get("train.epochs")
        shorter = isinstance(epochs, int) and self.max_epochs and 0 < epochs < self.max_epochs
        return int(epochs) if shorter else self.max_epochs

    def rungs_for(self, length: int | None) -> dict[int, dict[str, dict[str, float]]]:
        """The rungs of the trials that train ``length`` epochs (made on first use)."""
        if length not in self.tables:
            assert length is not None
            rungs = rung_epochs(self.grace_period, self.reduction_factor, length)
            self.tables[length] = {rung: {} for rung in rungs}
        return self.tables[length]

    def ranked_objectives(self, result: dict[str, Any]) -> list[str]:
        return [name for name in self.objectives if _is_number(result.get(name))]

    def rung_values(self, trial: Any, result: dict) -> dict[str, float]:
        """The objectives a rung ranks ``trial`` by: predicted final values where its config
        decides them, else the values reported now (the objectives it reports at all)."""
        if self.predict is not None and trial.trial_id not in self.predicted:
            self.predicted[trial.trial_id] = self.predict(trial.config)  # once per trial
        predicted = self.predicted.get(trial.trial_id, {})
        values = {}
        for name in self.objectives:
            if name in PREDICTED_METRICS and name in predicted:
                values[name] = float(predicted[name])
            elif _is_number(result.get(name)):
                values[name] = float(result[name])
        return values

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        epoch = result.get(self.time_attr)
        length = self.length_of(trial.config)
        if epoch not in self.rungs_for(length) or STATUS_KEY in result:
            return TrialScheduler.CONTINUE  # not at a rung, or the trial's final result
        if result.get(REPLAYED_KEY):
            # An epoch of a reused trained student: its training is paid for, and the trial
            # that trained it was judged at this rung on the same figures.
            return TrialScheduler.CONTINUE
        values = self.rung_values(trial, result)
        if not values:
            return TrialScheduler.CONTINUE
        return self.decide(trial.trial_id, int(epoch), values, length)

    def decide(
        self, trial_id: str, rung: int, values: dict[str, float], length: int | None = None
    ) -> str:
        """Record ``values`` (objective name -> value) at ``rung`` among the trials that train
        ``length`` epochs (``max_epochs`` when None) and say whether the trial goes on. Pure
        bookkeeping, so tests drive it without Ray."""
        length = self.max_epochs if length is None else length
        recorded = self.rungs_for(length)[rung]
        recorded[trial_id] = dict(values)
        names = list(values)
        # Compare like with like: the trials that reported the same objectives at this rung.
        ids = [tid for tid, seen in recorded.items() if set(seen) == set(names)]
        matrix = np.array([[recorded[tid][m] for m in names] for tid in ids])
        minimised = to_minimise(matrix, [self.objectives[m] for m in names])
        if promotes(minimised, ids.index(trial_id), self.reduction_factor):
            return TrialScheduler.CONTINUE
        self.stopped[trial_id] = rung
        return TrialScheduler.STOP

    def __setstate__(self, state: dict[str, Any]) -> None:
        # One pickled by an older nascomp (a search resumed after an upgrade) kept the stopped
        # trials as a set, without their rungs, and no max_epochs: those say nothing reached.
        # One from before trials of other lengths had rungs of their own kept one table.
        if isinstance(state.get("stopped"), set):
            state["stopped"] = dict.fromkeys(state["stopped"])
        state.setdefault("max_epochs", None)
        if "tables" not in state:
            recorded = state.pop("recorded")
            state["tables"] = {state["max_epochs"]: recorded}
            state["grace_period"] = min(recorded, default=1)
        self.__dict__.update(state)

    def reached(self, trial_id: str) -> dict[str, Any] | None:
        """What a stopped trial had reached: the fraction of its training done and the
        objectives its rung ranked it by (:data:`STOPPED_KEY`); None when not known."""
        rung = self.stopped.get(trial_id)
        if rung is None or not self.max_epochs:
            return None
        # The one length whose rung recorded it (a trial has one length).
        length, values = next(
            (length, rungs[rung][trial_id])
            for length, rungs in self.tables.items()
            if trial_id in rungs.get(rung, {})
        )
        return {"fidelity": rung / length, "values": dict(values)}

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        # Ray passes a copy here; the searcher and the callbacks read ``trial.last_result``
        # right after this call, so the mark goes there.
        if trial.trial_id in self.stopped and STATUS_KEY not in trial.last_result:
            trial.last_result[STATUS_KEY] = PRUNED
            reached = self.reached(trial.trial_id)
            if reached is not None:
                trial.last_result[STOPPED_KEY] = reached
            trial.last_result["nascomp_reason"] = (
                f"stopped at epoch {trial.last_result.get(self.time_attr)} by mo_asha "
                f"(rungs {list(self.rungs_for(self.length_of(trial.config)))})"
            )

    def debug_string(self) -> str:
        return f"MultiObjectiveAsha: rungs {self.rungs}, {len(self.stopped)} stopped"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
