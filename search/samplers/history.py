"""What ``pls`` reads from a study's trials on every ask, kept up to date trial by trial.

A suggestion needs the keys of every point tried, the finished trials with their objectives
(minimised) and constraint violations, the Pareto front of the feasible ones, and the model's
features of each. Recomputed from all trials on every ask, these cost ~250 ms at 10,000 trials
(bench/sampler_scaling.py); kept here, an ask reads only the trials that finished since the last
one (and the few still running), and a new trial updates the front against its members only.

A trial's params and values never change once it has finished, so what is recorded of a
finished trial stays true; a trial still running is read again on every ask. The record is for
one study and one search space (the enumerated parameters and their distributions): either
changing starts it afresh.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from nascomp.search.front.pareto import to_minimise
from nascomp.search.samplers import _common as common

Params = dict[str, Any]
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class TrialHistory:
    """The finished trials of one study over one search space, in trial-number order.

    ``update`` reads what changed; then ``tried()`` is every point tried or running (failed
    trials may be tried again), ``done`` the complete trials that hold every parameter of the
    space with ``values`` (minimised) and ``violations``, ``feasible_front`` the positions in
    ``done`` of the non-dominated feasible ones, ``functions()`` the canonical form of every
    point tried or running (with ``canonical``), and ``stopped()`` what the trials stopped
    early had reached (:data:`~nascomp.search.samplers._common.STOPPED_ATTR`), and ``costs()``
    what the complete trials that trained from scratch took
    (:data:`~nascomp.search.samplers._common.COST_ATTR`).
    """

    def __init__(self) -> None:
        self._identity: tuple | None = None

    def update(
        self,
        study: Study,
        space: dict[str, BaseDistribution],
        canonical: Callable[[Params], Params] | None = None,
    ) -> None:
        identity = (
            id(study._storage),
            study._study_id,
            # the distributions too: the model's features of a point depend on the choices
            tuple(sorted(space.items())),
            tuple(study.directions),
            canonical,
        )
        if identity != self._identity:
            self._reset(identity, space, study, canonical)
        trials = study.get_trials(deepcopy=False)
        get: Callable[[int], FrozenTrial] = trials.__getitem__
        if trials and trials[-1].number != len(trials) - 1:  # not numbered by position
            get = {t.number: t for t in trials}.__getitem__
        fresh = [t.number for t in trials[self._count :] if t.number not in self._read]
        self._count = len(trials)
        still_open: list[int] = []
        self._running_keys, self._running_functions = set(), set()
        for number in [*self._open, *fresh]:
            trial = get(number)
            self._read.add(number)
            if trial.state in _FINISHED:
                self._record(trial)
                continue
            still_open.append(number)
            self._running_keys.add(common.key(trial.params, self._space))
            if self._canonical is not None and set(self._space) <= set(trial.params):
                self._running_functions.add(self._function(trial.params))
        self._open = still_open

    def tried(self) -> set[tuple]:
        return self._tried | self._running_keys

    def functions(self) -> set[tuple]:
        return self._functions | self._running_functions

    @property
    def values(self) -> np.ndarray:
        """(len(done), n objectives), minimised; a view: do not write to it."""
        return self._values[: len(self.done)]

    @property
    def violations(self) -> np.ndarray:
        return self._violations[: len(self.done)]

    @property
    def feasible_front(self) -> list[int]:
        return sorted(self._front)

    def stopped(self, last: int | None = None) -> tuple[list[Params], np.ndarray, np.ndarray]:
        """The trials stopped early that said what they had reached (the ``last`` most recent,
        or all), holding every parameter of the space: their points, their objectives then
        ((n, n objectives), minimised, NaN where not measured) and the fraction of their
        training they had done."""
        start = 0 if last is None else max(0, len(self._stopped_points) - last)
        n = len(self._stopped_points) - start
        values = np.array(self._stopped_values[start:], dtype=float).reshape(
            n, len(self._directions)
        )
        return self._stopped_points[start:], values, np.array(self._stopped_fidelity[start:])

    def costs(self, last: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The complete trials that recorded what training from scratch cost them (the ``last``
        most recent, or all): their positions in ``done`` and the log of their seconds."""
        start = 0 if last is None else max(0, len(self._cost_positions) - last)
        positions = np.array(self._cost_positions[start:], dtype=int)
        return positions, np.log(np.array(self._costs[start:], dtype=float))

    def point(self, position: int) -> Params:
        """The space's parameters of ``done[position]``."""
        return self._points[position]

    def rows(
        self,
        name: str,
        positions: np.ndarray,
        make: Callable[[list[Params]], list[np.ndarray]],
    ) -> list[np.ndarray]:
        """``make``'s arrays (one row per point each, e.g. a model's feature blocks) of
        ``done[positions]``, with ``make`` run once per trial: the same ``make`` for the same
        ``name`` on every call while the study and space stay the same."""
        arrays, count = self._rows.get(name, ([], 0))
        if count < len(self.done):
            new = make(self._points[count:])
            if arrays:
                new = [np.concatenate(pair) for pair in zip(arrays, new, strict=True)]
            arrays, count = new, len(self.done)
            self._rows[name] = arrays, count
        return [array[positions] for array in arrays]

    def stopped_rows(
        self,
        name: str,
        make: Callable[[list[Params], np.ndarray], list[np.ndarray]],
        last: int | None = None,
    ) -> list[np.ndarray]:
        """``make``'s arrays (one row per point each) of the stopped trials' points and
        fidelities, the ``last`` most recent (or all) as :meth:`stopped` gives them, with
        ``make`` run once per trial: the same ``make`` for the same ``name`` on every call
        while the study and space stay the same."""
        arrays, count = self._stopped_cache.get(name, ([], 0))
        total = len(self._stopped_points)
        if count < total:
            new = make(self._stopped_points[count:], np.array(self._stopped_fidelity[count:]))
            if arrays:
                new = [np.concatenate(pair) for pair in zip(arrays, new, strict=True)]
            arrays, count = new, total
            self._stopped_cache[name] = arrays, count
        start = 0 if last is None else max(0, total - last)
        return [array[start:] for array in arrays]

    # ------------------------------------------------------------------ internals
    def _reset(
        self,
        identity: tuple,
        space: dict[str, BaseDistribution],
        study: Study,
        canonical: Callable[[Params], Params] | None,
    ) -> None:
        self._identity = identity
        self._space = dict(space)
        self._directions = list(study.directions)
        self._modes = ["max" if d == StudyDirection.MAXIMIZE else "min" for d in self._directions]
        self._canonical = canonical
        self._count = 0  # trials in the study when last read
        self._read: set[int] = set()  # numbers of the trials read at least once
        self._open: list[int] = []  # of those, the ones not finished when last read
        self._tried: set[tuple] = set()
        self._functions: set[tuple] = set()
        self._running_keys: set[tuple] = set()
        self._running_functions: set[tuple] = set()
        self.done: list[FrozenTrial] = []
        self._points: list[Params] = []
        # grown by doubling: a new trial costs O(1), not a copy of every earlier one
        self._values = np.zeros((16, len(self._directions)))
        self._violations = np.zeros(16)
        self._front: set[int] = set()
        self._stopped_points: list[Params] = []
        self._stopped_values: list[list[float]] = []
        self._stopped_fidelity: list[float] = []
        self._cost_positions: list[int] = []
        self._costs: list[float] = []
        self._rows: dict[str, tuple[list[np.ndarray], int]] = {}
        self._stopped_cache: dict[str, tuple[list[np.ndarray], int]] = {}
        self.memo: dict[tuple, Any] = {}  # what a sampler derives from a trial's params alone

    def _function(self, params: Params) -> tuple:
        assert self._canonical is not None
        point = {name: params[name] for name in self._space}
        return common.key(self._canonical(point), self._space)

    def _record(self, trial: FrozenTrial) -> None:
        if trial.state == TrialState.FAIL:
            return
        self._tried.add(common.key(trial.params, self._space))
        holds_space = set(self._space) <= set(trial.params)
        if self._canonical is not None and holds_space:
            self._functions.add(self._function(trial.params))
        if trial.state == TrialState.PRUNED and holds_space:
            self._record_stopped(trial)
        if trial.state != TrialState.COMPLETE or not holds_space:
            return
        position = len(self.done)
        self.done.append(trial)
        self._points.append({name: trial.params[name] for name in self._space})
        minimised = common.minimised([trial], self._directions)[0]
        violation = common.violation(trial)
        if position == len(self._violations):
            self._values = np.concatenate([self._values, np.zeros_like(self._values)])
            self._violations = np.concatenate([self._violations, np.zeros_like(self._violations)])
        self._values[position] = minimised
        self._violations[position] = violation
        if violation <= 0.0:
            self._add_to_front(position, minimised)
        cost = common.seconds(trial.user_attrs.get(common.COST_ATTR))
        if cost is not None:
            self._cost_positions.append(position)
            self._costs.append(cost)

    def _record_stopped(self, trial: FrozenTrial) -> None:
        reached = trial.user_attrs.get(common.STOPPED_ATTR)
        if not isinstance(reached, dict) or len(reached.get("values", ())) != len(self._directions):
            return  # stopped without saying what it had reached (or by another search)
        values = np.array([math.nan if v is None else v for v in reached["values"]], dtype=float)
        self._stopped_points.append({name: trial.params[name] for name in self._space})
        self._stopped_values.append(to_minimise(values[None, :], self._modes)[0].tolist())
        self._stopped_fidelity.append(float(reached["fidelity"]))

    def _add_to_front(self, position: int, point: np.ndarray) -> None:
        """The feasible front with ``point`` offered: kept out when a member dominates it, else
        in, and the members it dominates out (equal points dominate neither way)."""
        if self._front:
            members = np.fromiter(self._front, dtype=int)
            front = self._values[members]
            if np.any(np.all(front <= point, axis=1) & np.any(front < point, axis=1)):
                return
            beaten = np.all(point <= front, axis=1) & np.any(point < front, axis=1)
            self._front.difference_update(members[beaten].tolist())
        self._front.add(position)
