"""What the local-search samplers (``tpe_local``, ``pls``) share: moves, duplicate keys, the
feasibility of finished trials and their objectives turned into "minimise"."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from nascomp.search.compat import optuna as optuna_compat
from nascomp.search.front.pareto import to_minimise

STEP = 0.15  # Gaussian step of a numeric parameter, as a fraction of its range
Constraints = Callable[[FrozenTrial], Sequence[float]]


def numeric_step(value: float, dist: FloatDistribution | IntDistribution, rng: Any) -> Any:
    """``value`` moved by a Gaussian step of :data:`STEP` of the range (in log space for a log
    distribution), rounded to the distribution's step and kept inside it."""
    to_space, from_space = (math.log, math.exp) if dist.log else (float, float)
    low, high = to_space(dist.low), to_space(dist.high)
    moved = from_space(min(high, max(low, to_space(value) + rng.normal(0, STEP * (high - low)))))
    if dist.step is not None:
        moved = dist.low + round((moved - dist.low) / dist.step) * dist.step
    moved = min(dist.high, max(dist.low, moved))
    return round(moved) if isinstance(dist, IntDistribution) else float(moved)


def contains(dist: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` is a valid value of ``dist`` (a parent's value may not be, when the
    space changed on resume)."""
    return optuna_compat.distribution_contains(dist, value)


def key(params: dict[str, Any], names: dict[str, BaseDistribution]) -> tuple:
    """A hashable identity of ``params`` over ``names``: equal keys, same point."""
    return tuple(repr(params.get(name)) for name in sorted(names))


def tried(study: Study, names: dict[str, BaseDistribution]) -> set[tuple]:
    """Keys of every point tried or running (failed trials may be tried again)."""
    trials = study.get_trials(deepcopy=False)
    return {key(t.params, names) for t in trials if t.state != TrialState.FAIL}


def violation(trial: FrozenTrial) -> float:
    """Total constraint violation of a finished trial (0 when feasible or unconstrained)."""
    return float(sum(max(0.0, c) for c in optuna_compat.constraint_values(trial)))


def record_constraints(
    sampler_constraints: Constraints | None,
    delegate: BaseSampler,
    study: Study,
    trial: FrozenTrial,
    state: TrialState,
) -> None:
    """Store the trial's constraint values where Optuna's front and ours read them, unless the
    sampler we delegate to does it itself."""
    if sampler_constraints is None or optuna_compat.has_constraints(delegate):
        return
    optuna_compat.store_constraints(sampler_constraints, study, trial, state)


def minimised(trials: Sequence[FrozenTrial], directions: Sequence[StudyDirection]) -> np.ndarray:
    """The trials' objective values as an (n, m) array, every objective minimised."""
    modes = ["max" if d == StudyDirection.MAXIMIZE else "min" for d in directions]
    return to_minimise(
        np.array([t.values for t in trials], dtype=float).reshape(-1, len(modes)), modes
    )
