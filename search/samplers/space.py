"""The one place where nascomp's space becomes Optuna distributions (define-by-run)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from nascomp.search.samplers.inherit import Inheritance
from nascomp.spaces.params import Param, on_grid


def suggest(trial: optuna.Trial, params: list[Param]) -> dict[str, Any]:
    """Sample every active parameter on ``trial``; return the fixed ones as constants.

    A conditional parameter is asked for only when its condition holds, so Optuna's history of
    the temperature is made of distilled trials alone.
    """
    chosen: dict[str, Any] = {}
    constants: dict[str, Any] = {}
    for param in params:
        if not param.is_active(chosen):
            continue
        if param.kind == "fixed":
            value = param.value
            constants[param.name] = value
        elif param.kind == "choice":
            value = trial.suggest_categorical(param.name, list(param.choices))
        elif param.kind == "int":
            step = int(param.step or 1)
            value = trial.suggest_int(
                param.name, int(param.low), int(param.high), step=step, log=param.log
            )
        else:
            value = trial.suggest_float(
                param.name, param.low, param.high, step=param.step, log=param.log
            )
            if param.step:
                # Optuna's grid is low + k * step in floats (0.30000000000000004): the trial
                # gets the value as the user wrote its grid. The returned constants override
                # Optuna's own record in the trial's config (OptunaSearch merges them last).
                assert param.low is not None
                snapped = on_grid(value, param.low, param.step)
                if snapped != value:
                    constants[param.name] = value = snapped
        chosen[param.name] = value
    return constants


def with_fixed(params: list[Param], point: dict[str, Any]) -> dict[str, Any]:
    """``point`` (a sampler's values) with the fixed parameters active under it: the flat
    keys :func:`suggest` and a trial that drew ``point`` would hold."""
    chosen: dict[str, Any] = {}
    for param in params:
        if not param.is_active(chosen):
            continue
        if param.kind == "fixed":
            chosen[param.name] = param.value
        elif param.name in point:
            chosen[param.name] = point[param.name]
    return chosen


@dataclass(frozen=True)
class PointCost:
    """A sampler's point scored by ``cost`` of the flat config a trial that drew it would run
    (the space's fixed parameters and the search's constants added): ``pls``'s ``start_cost``.
    A class, for the same pickling as :class:`DefineByRun`."""

    params: list[Param]
    constants: dict[str, Any]
    cost: Callable[[dict[str, Any]], float | None]

    def __call__(self, point: dict[str, Any]) -> float | None:
        return self.cost({**with_fixed(self.params, point), **self.constants})


@dataclass(frozen=True)
class DefineByRun:
    """The ``space`` callable for Ray's OptunaSearch: samples, then adds the trial's constants
    (and, with ``inherit``, the keys a move's trial takes from its parent: ``inherit.py``).

    A class, not a closure: Tune pickles the searcher (and so this) into its experiment state.
    """

    params: list[Param]
    constants: dict[str, Any]
    inherit: Inheritance | None = None

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        constants = {**suggest(trial, self.params), **self.constants}
        if self.inherit is not None:
            constants.update(self.inherit(trial, {**trial.params, **constants}))
        return constants

    def config(self, trial: optuna.Trial) -> dict[str, Any]:
        """The trial's whole flat config, as Ray's OptunaSearch assembles it: the sampled
        values (Optuna's record of them) plus what :meth:`__call__` returns."""
        constants = self(trial)
        return {**trial.params, **constants}
