"""What the local-search samplers (``tpe_local``, ``pls``) share: moves, duplicate keys, the
feasibility of finished trials and their objectives turned into "minimise"."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from nascomp.search.compat import optuna as optuna_compat
from nascomp.search.front.pareto import to_minimise

STEP = 0.15  # Gaussian step of a numeric parameter, as a fraction of its range
Constraints = Callable[[FrozenTrial], Sequence[float]]
# User attribute of a trial stopped early (PRUNED): what it had reached when it was stopped,
# ``{"fidelity": the fraction of its training done, "values": its objectives then, in the
# study's order, None where not measured yet}``. ``pls``'s model learns from it; a stopped
# trial is never on a front.
STOPPED_ATTR = "nascomp.stopped_at"
# User attribute of a finished trial that trained every epoch from scratch: the seconds its
# training took (``train_seconds``). ``pls`` with ``cost_aware`` learns from these what a point
# costs to train; a trial that reused a trained student or inherited weights ran fewer epochs
# than its point would from scratch, so it records none.
COST_ATTR = "nascomp.cost_s"


def scratch_cost(metrics: dict[str, Any], inherited: bool) -> float | None:
    """The :data:`COST_ATTR` of a trial that finished with ``metrics``: its ``train_seconds``
    when it trained from scratch (no ``reused_epochs``, not ``inherited``), else None."""
    if inherited or metrics.get("reused_epochs", 0):
        return None
    return seconds(metrics.get("train_seconds"))


def seconds(value: Any) -> float | None:
    """``value`` as a duration: a finite positive number, else None."""
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


def stopped_at(fidelity: float, values: Sequence[float | None]) -> dict[str, Any]:
    """The :data:`STOPPED_ATTR` of a trial stopped at ``fidelity`` (in (0, 1)) of its training
    with objective ``values`` (study order)."""
    if not 0.0 < fidelity < 1.0:
        raise ValueError(f"a stopped trial's fidelity is in (0, 1), not {fidelity!r}")
    return {
        "fidelity": float(fidelity),
        "values": [None if v is None or not math.isfinite(v) else float(v) for v in values],
    }


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


def perturb(value: Any, dist: BaseDistribution, rng: np.random.Generator) -> Any:
    """One random move of ``value``: another choice of a categorical, a numeric step of a
    number (:func:`numeric_step`)."""
    if isinstance(dist, CategoricalDistribution):
        others = [choice for choice in dist.choices if choice != value]
        return others[int(rng.integers(len(others)))] if others else value
    if isinstance(dist, FloatDistribution | IntDistribution):
        return numeric_step(value, dist, rng)
    raise TypeError(f"cannot perturb a {type(dist).__name__}")


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


class ParentSampler(BaseSampler):
    """What both local searches do around a trial's parent (the front member whose neighbour
    the trial is, chosen in ``sample_relative``): each remaining parameter takes the parent's
    value, moved with probability 1 / its number of parameters, or a random draw when the
    parent had no valid value for it. Before a trial has a parent, the ``first`` sampler
    (warm-up or start design) serves it.

    Subclasses set ``_rng``, ``_random``, ``_parents`` (trial number -> parent params) and
    ``_constraints_func``, and name their first sampler.
    """

    _rng: np.random.Generator
    _random: RandomSampler
    _parents: dict[int, Any]
    _constraints_func: Constraints | None

    def _first(self) -> BaseSampler:
        raise NotImplementedError

    def _without_parent(
        self, study: Study, trial: FrozenTrial, name: str, dist: BaseDistribution
    ) -> Any:
        return self._first().sample_independent(study, trial, name, dist)

    def reseed_rng(self) -> None:
        self._rng = np.random.default_rng()
        self._random.reseed_rng()
        self._first().reseed_rng()

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        parent = self._parents.get(trial.number)
        if parent is None:
            return self._without_parent(study, trial, param_name, param_distribution)
        value = parent.get(param_name)
        if param_name not in parent or not contains(param_distribution, value):
            return self._random.sample_independent(study, trial, param_name, param_distribution)
        if self._rng.random() < 1.0 / len(parent):
            return perturb(value, param_distribution, self._rng)
        return value

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._parents.pop(trial.number, None)
        record_constraints(self._constraints_func, self._first(), study, trial, state)
        self._first().after_trial(study, trial, state, values)
