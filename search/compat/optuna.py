"""Optuna internals nascomp relies on (tested with the optuna range in pyproject.toml)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState


def distribution_contains(dist: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` lies in ``dist``. Optuna checks this only privately
    (``BaseDistribution._contains``); a public equivalent would repeat each distribution's
    rules (step grids, log ranges, categorical equality)."""
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def constraint_values(trial: FrozenTrial) -> Sequence[float]:
    """The constraint values Optuna stored for a finished trial. Optuna's samplers keep them in
    a system attribute whose key is private (``_CONSTRAINTS_KEY``); its own front code reads
    them there, so ours must too to agree with it."""
    from optuna.samplers._base import _CONSTRAINTS_KEY

    return trial.system_attrs.get(_CONSTRAINTS_KEY) or ()


def has_constraints(sampler: BaseSampler) -> bool:
    """Whether ``sampler`` was given a ``constraints_func`` (and so stores the values itself).
    Optuna's samplers keep it as a private attribute and expose no accessor."""
    return getattr(sampler, "_constraints_func", None) is not None


def store_constraints(
    constraints_func: Callable[[FrozenTrial], Sequence[float]],
    study: Study,
    trial: FrozenTrial,
    state: TrialState,
) -> None:
    """Evaluate and store a trial's constraints the way Optuna's samplers do in
    ``after_trial``; Optuna exports no public helper for a custom sampler to do the same."""
    from optuna.samplers._base import _process_constraints_after_trial

    _process_constraints_after_trial(constraints_func, study, trial, state)


def reference_hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Optuna's own exact hypervolume: the tests' independent oracle for ours. Optuna only
    exposes it per study (``optuna.visualization``), not for an array of points."""
    from optuna._hypervolume import compute_hypervolume

    return float(compute_hypervolume(points, reference))


def fast_non_domination_rank(values: np.ndarray) -> np.ndarray:
    """Optuna's non-dominated sorting: the baseline ``bench/sampler_scaling.py`` times ours
    against. Not public in any form."""
    from optuna.study._multi_objective import _fast_non_domination_rank

    return _fast_non_domination_rank(values)
