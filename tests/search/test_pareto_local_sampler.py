"""Known answers for the ``pls`` sampler (search/pareto_local_sampler.py) on a 27-point space."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from search.pareto import non_dominated_mask
from search.pareto_local_sampler import PARENT_ORDERS, ParetoLocalSearchSampler, neighbours

CHOICES = (0, 1, 2)
NAMES = ("a", "b", "c")
N_POINTS = len(CHOICES) ** len(NAMES)


def _suggest(trial: optuna.Trial) -> dict[str, int]:
    return {name: trial.suggest_categorical(name, CHOICES) for name in NAMES}


def _values(p: dict[str, int]) -> tuple[float, float]:
    """(accuracy to maximise, cost to minimise): a trade-off with interactions."""
    return 2 * p["a"] + p["b"] * (p["c"] == 1) - 0.5 * p["c"], p["a"] + p["b"] + p["c"]


def _infeasible(p: dict[str, int]) -> bool:
    return p["a"] == 2 and p["b"] == 2


def _constraints(trial: optuna.trial.FrozenTrial) -> list[float]:
    return [1.0 if _infeasible(trial.params) else -1.0]


def _study(order: str, seed: int = 0) -> tuple[optuna.Study, ParetoLocalSearchSampler]:
    sampler = ParetoLocalSearchSampler(
        seed=seed, n_startup_trials=3, parent_order=order, constraints_func=_constraints
    )
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    return study, sampler


def test_neighbours_are_exact_and_complete() -> None:
    space = {
        "a": CategoricalDistribution(["x", "y", "z"]),
        "n": IntDistribution(0, 10),
        "r": FloatDistribution(0.0, 1.0),
    }
    found = neighbours({"a": "x", "n": 5, "r": 0.0}, space)
    assert found == [
        {"a": "y", "n": 5, "r": 0.0},
        {"a": "z", "n": 5, "r": 0.0},
        *({"a": "x", "n": n, "r": 0.0} for n in (3, 4, 6, 7)),
        *({"a": "x", "n": 5, "r": r} for r in (0.1, 0.25)),  # -10% and -25% clip to 0: dropped
    ]
    grid = {name: CategoricalDistribution(CHOICES) for name in NAMES}
    assert len(neighbours(dict.fromkeys(NAMES, 0), grid)) == len(NAMES) * (len(CHOICES) - 1)


@pytest.mark.parametrize("order", PARENT_ORDERS)
def test_no_point_repeats_and_parents_come_from_the_feasible_front(order: str) -> None:
    study, sampler = _study(order)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        params = _suggest(trial)
        parent = sampler._parents.get(trial._trial_id)
        if trial.number >= 3 and parent is not None:
            _check_parent(study, parent, params)
        return _values(params)

    study.optimize(objective, n_trials=N_POINTS)
    points = [tuple(t.params[n] for n in NAMES) for t in study.trials]
    assert len(set(points)) == N_POINTS  # the whole space, each point once


def _check_parent(study: optuna.Study, parent: dict, child: dict) -> None:
    """One parameter changed; the parent feasible, and on the feasible front unless every
    front member's neighbours have been tried already."""
    assert sum(parent[n] != child[n] for n in NAMES) == 1
    assert not _infeasible(parent)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    feasible = [t for t in done if not _infeasible(t.params)]
    minimised = [(-t.values[0], t.values[1]) for t in feasible]
    front = [
        t.params for t, keep in zip(feasible, non_dominated_mask(minimised), strict=True) if keep
    ]
    if parent in front:
        return
    tried = {tuple(t.params[n] for n in NAMES) for t in study.trials if t.params}
    grid = {name: CategoricalDistribution(CHOICES) for name in NAMES}
    for member in front:
        assert all(tuple(p[n] for n in NAMES) in tried for p in neighbours(member, grid))


def test_concurrent_asks_never_get_the_same_point() -> None:
    study, _ = _study("model")
    study.optimize(lambda t: _values(_suggest(t)), n_trials=6)
    running = [study.ask() for _ in range(8)]
    for trial in running:
        _suggest(trial)
    points = [tuple(t.params[n] for n in NAMES) for t in study.trials]
    assert len(set(points)) == len(points) == 14


@pytest.mark.parametrize("order", ["model", "crowding"])
def test_seeded_runs_are_identical(order: str) -> None:
    runs = []
    for _ in range(2):
        study, _ = _study(order, seed=7)
        study.optimize(lambda t: _values(_suggest(t)), n_trials=15)
        runs.append([t.params for t in study.trials])
    assert runs[0] == runs[1]
