"""Ray Tune's OptunaSearch, told about trials that are infeasible, stopped early, or violate the
experiment's constraints, rather than finished."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from optuna import Study
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search.optuna import OptunaSearch

from nascomp.search.compat import ray as ray_compat
from nascomp.search.samplers._common import COST_ATTR, STOPPED_ATTR, scratch_cost, stopped_at
from nascomp.search.samplers.inherit import INHERITED_ATTR
from nascomp.search.tune.results import STATUS_KEY, STOPPED_KEY
from nascomp.spaces.constraints import Constraint, violations

CONSTRAINTS_ATTR = "nascomp_constraints"  # Optuna user attr: one violation per constraint


@dataclass(frozen=True)
class ConstraintsFromAttr:
    """The samplers' ``constraints_func``: reads what the searcher stored on the trial.

    A class, not a closure: Tune pickles the searcher, and with it the sampler and this.
    A trial without the attribute (none finish without it) counts as violating everything.
    """

    n_constraints: int

    def __call__(self, trial: FrozenTrial) -> Sequence[float]:
        stored = trial.user_attrs.get(CONSTRAINTS_ATTR)
        return tuple(stored) if stored is not None else (float("inf"),) * self.n_constraints


class NascompOptunaSearch(OptunaSearch):
    """OptunaSearch that records infeasible architectures as failed Optuna trials, trials the
    scheduler stopped as pruned ones (with what they had reached, for the sampler to learn
    from), and each finished trial's constraint violations and, when it trained from scratch,
    its training seconds (:data:`COST_ATTR`).

    Stock OptunaSearch would tell Optuna "complete" with missing or truncated objective values
    (NOTES.md); an infeasible or stopped point must never reach the front as if it had finished.
    """

    def __init__(self, *args: Any, constraints: Sequence[Constraint] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.constraints = list(constraints)

    def _setup_study(self, mode: str | list[str]) -> None:  # type: ignore[override]
        """Optuna's study, made without its INFO line ("A new study created in memory"): the
        CLI quiets Optuna itself, a search run from Python (``nascomp.run_search``) did not."""
        import logging

        import optuna

        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(max(verbosity, logging.WARNING))
        try:
            super()._setup_study(mode)
        finally:
            optuna.logging.set_verbosity(verbosity)

    def suggest(self, trial_id: str) -> dict | None:  # type: ignore[override]
        """Stock ``suggest``, without Ray's warning that the define-by-run function took more
        than a second ("Ensure that actual computation, training takes place inside Tune's
        train functions"): that function is where ``pls`` chooses the point, and its choice
        takes what it takes (docs/scaling.md); the user wrote no code there to move."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r"Define-by-run function passed in the `space`")
            return super().suggest(trial_id)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        status = (result or {}).get(STATUS_KEY, "ok")
        ot_trial = ray_compat.optuna_trial(self, trial_id)
        if ot_trial is None:
            super().on_trial_complete(trial_id, result=result, error=error)
            return
        if status == "ok" and not error:
            if self.constraints:
                # Set before the tell: the sampler's constraints_func reads it during the tell.
                ot_trial.set_user_attr(CONSTRAINTS_ATTR, violations(self.constraints, result))
            inherited = bool(ot_trial.user_attrs.get(INHERITED_ATTR))
            cost = scratch_cost(result or {}, inherited=inherited)
            if cost is not None:  # what its point costs to train, for pls's cost_aware
                ot_trial.set_user_attr(COST_ATTR, cost)
            super().on_trial_complete(trial_id, result=result, error=error)
            return
        if error:
            super().on_trial_complete(trial_id, result=result, error=error)
            return
        ot_trial.set_user_attr(STATUS_KEY, status)
        reached = _reached(result or {})
        if status == "pruned" and reached is not None:
            # What it had reached, for the sampler's model (pls learns from stopped trials).
            names = self.metric if isinstance(self.metric, list) else [self.metric]
            values = [reached["values"].get(name) for name in names]
            ot_trial.set_user_attr(STOPPED_ATTR, stopped_at(reached["fidelity"], values))
        state = TrialState.PRUNED if status == "pruned" else TrialState.FAIL
        ray_compat.tell(self, trial_id, ot_trial, state)

    @property
    def study(self) -> Study:
        return ray_compat.study(self)


def _reached(result: dict) -> dict | None:
    """The scheduler's :data:`STOPPED_KEY` entry of a result as Tune hands it to a searcher,
    flattened (``nascomp_stopped_at/values/val_accuracy``); None when absent."""
    prefix = f"{STOPPED_KEY}/"
    if f"{prefix}fidelity" not in result:
        return None
    values = {
        key.removeprefix(f"{prefix}values/"): value
        for key, value in result.items()
        if key.startswith(f"{prefix}values/")
    }
    return {"fidelity": result[f"{prefix}fidelity"], "values": values}
