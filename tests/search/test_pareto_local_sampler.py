"""Known answers for the ``pls`` sampler (search/samplers/pareto_local.py) on a 27-point space."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import RandomSampler
from optuna.trial import TrialState

from nascomp.search.front.hypervolume import hypervolume
from nascomp.search.front.pareto import non_dominated_mask
from nascomp.search.samplers.pareto_local import (
    PARENT_ORDERS,
    ParetoLocalSearchSampler,
    RidgeModel,
    _features,
    _gains,
    _reference,
    exchanges,
    neighbours,
    revivals,
)
from nascomp.spaces.nb201 import N_EDGES, NB201_OPS, PathEncoding

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


def test_start_trials_take_every_choice_equally_often() -> None:
    """Balanced start: over 10 start trials a 5-choice parameter takes each choice twice, a
    3-choice one each 3 or 4 times, in an order of its own; a number is drawn at random. A
    start sampler given explicitly is used as it is."""
    sampler = ParetoLocalSearchSampler(seed=3, n_startup_trials=10)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    five = [f"op{i}" for i in range(5)]

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        trial.suggest_categorical("edge0", five)
        trial.suggest_categorical("edge1", five)
        trial.suggest_categorical("bits", [4, 8, 32])
        return trial.suggest_float("lr", 0.0, 1.0), 0.0

    study.optimize(objective, n_trials=10)
    column = {name: [t.params[name] for t in study.trials] for name in ("edge0", "edge1", "bits")}
    assert sorted(column["edge0"]) == sorted(column["edge1"]) == sorted(five * 2)
    assert column["edge0"] != column["edge1"]
    assert sorted(column["bits"].count(b) for b in (4, 8, 32)) == [3, 3, 4]
    assert len({t.params["lr"] for t in study.trials}) == 10

    given = ParetoLocalSearchSampler(seed=3, n_startup_trials=10, startup=RandomSampler(seed=0))
    plain = optuna.create_study(directions=["maximize", "minimize"], sampler=given)
    plain.optimize(objective, n_trials=10)
    reference = optuna.create_study(
        directions=["maximize", "minimize"], sampler=RandomSampler(seed=0)
    )
    reference.optimize(objective, n_trials=10)
    assert [t.params for t in plain.trials] == [t.params for t in reference.trials]


def test_a_sampler_pickled_before_these_settings_resumes_as_it_was() -> None:
    """A resumed search unpickles the sampler Tune saved; one saved by an older nascomp has no
    features, exchanges or balanced start, and carries on without them."""
    study, sampler = _study("model")
    study.optimize(lambda t: _values(_suggest(t)), n_trials=5)
    state = pickle.loads(pickle.dumps(sampler)).__dict__
    newer = ("_features", "_exchanges", "_balanced_start", "_design", "_cost_aware")
    newer += ("_after_training", "_partners", "_partnered", "_start_cost", "_arranged")
    for name in newer:
        del state[name]
    old = ParetoLocalSearchSampler.__new__(ParetoLocalSearchSampler)
    old.__setstate__(state)
    assert (old._features, old._exchanges, old._balanced_start) == (None, False, False)
    assert old._cost_aware is False
    assert (old._after_training, old._start_cost, old._partners) == (None, None, {})
    study.sampler = old
    study.optimize(lambda t: _values(_suggest(t)), n_trials=3)
    assert len({tuple(t.params.values()) for t in study.trials}) == 8


def test_exchanges_swap_two_parameters_with_the_same_choices() -> None:
    space = {
        "a": CategoricalDistribution(["x", "y", "z"]),
        "b": CategoricalDistribution(["x", "y", "z"]),
        "c": CategoricalDistribution(["x", "y", "z"]),
        "d": CategoricalDistribution(["x", "y"]),  # other choices: never exchanged
        "n": IntDistribution(0, 10),
    }
    point = {"a": "x", "b": "y", "c": "x", "d": "y", "n": 3}
    # a and c hold the same value: exchanging them changes nothing, so it is no move
    assert exchanges(point, space) == [
        {"a": "y", "b": "x", "c": "x", "d": "y", "n": 3},
        {"a": "x", "b": "x", "c": "y", "d": "y", "n": 3},
    ]
    assert exchanges({"a": "x", "b": "x", "c": "x", "d": "x", "n": 0}, space) == []


def test_front_with_every_single_move_tried_moves_on_by_an_exchange() -> None:
    """17 points of a 27-point space: the front (0, 0, 0), (2, 0, 0), (2, 1, 0), (2, 1, 2)
    and all their single-parameter neighbours. The front's only untried moves are exchanges,
    so the next point is one of them; without exchanges the search widens to the second rank
    instead."""
    names = ("a", "b", "c")

    def values(p: dict[str, int]) -> tuple[float, float]:
        accuracy = 3.0 * (p["a"] == 2) + 1.0 * (p["b"] == 1) + 0.5 * (p["c"] == 2)
        return accuracy, float(sum(v > 0 for v in p.values()))

    front = [(0, 0, 0), (2, 0, 0), (2, 1, 0), (2, 1, 2)]
    grid = {name: CategoricalDistribution(CHOICES) for name in names}
    tried = set(front)
    for member in front:
        tried |= {
            tuple(c.values()) for c in neighbours(dict(zip(names, member, strict=True)), grid)
        }
    assert len(tried) == 17
    exchanged = {(1, 2, 2), (2, 2, 1), (1, 2, 0)}
    assert (
        exchanged
        == {
            tuple(c.values())
            for m in front
            for c in exchanges(dict(zip(names, m, strict=True)), grid)
        }
        - tried
    )

    def next_move(use_exchanges: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The next point and the parent it was derived from."""
        sampler = ParetoLocalSearchSampler(seed=0, n_startup_trials=0, exchanges=use_exchanges)
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        for point in sorted(tried):
            study.enqueue_trial(dict(zip(names, point, strict=True)))
        study.optimize(
            lambda t: values({n: t.suggest_categorical(n, CHOICES) for n in names}),
            n_trials=len(tried),
        )
        trial = study.ask()
        child = tuple(trial.suggest_categorical(n, CHOICES) for n in names)
        parent = sampler._parents[trial.number]
        return tuple(parent[n] for n in names), child

    parent, child = next_move(True)
    assert parent in front and child in exchanged
    assert (
        sorted(parent) == sorted(child)
        and sum(p != c for p, c in zip(parent, child, strict=True)) == 2
    )
    parent, child = next_move(False)
    assert parent in tried - set(front) and child not in tried
    assert sum(p != c for p, c in zip(parent, child, strict=True)) == 1


@pytest.mark.parametrize("order", PARENT_ORDERS)
def test_no_point_repeats_and_parents_come_from_the_feasible_front(order: str) -> None:
    study, sampler = _study(order)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        params = _suggest(trial)
        parent = sampler._parents.get(trial.number)
        if trial.number >= 3 and parent is not None:
            _check_parent(study, parent, params)
        return _values(params)

    study.optimize(objective, n_trials=N_POINTS)
    points = [tuple(t.params[n] for n in NAMES) for t in study.trials]
    assert len(set(points)) == N_POINTS  # the whole space, each point once


def _check_parent(study: optuna.Study, parent: dict, child: dict) -> None:
    """One parameter changed, or two exchanged; the parent feasible, and on the feasible front
    unless every front member's neighbours have been tried already."""
    changed = [n for n in NAMES if parent[n] != child[n]]
    assert len(changed) == 1 or (
        len(changed) == 2
        and parent[changed[0]] == child[changed[1]]
        and parent[changed[1]] == child[changed[0]]
    )
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


def _primal_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Ridge in the primal, intercept not shrunk: the reference the dual model must match."""
    x = np.c_[x, np.ones(len(x))]
    penalty = alpha * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0
    return x @ np.linalg.solve(x.T @ x + penalty, x.T @ y)


MIXED = {
    "a": CategoricalDistribution(["x", "y", "z"]),
    "b": CategoricalDistribution([1, 2, 3, 4]),
    "n": IntDistribution(0, 10),
    "r": FloatDistribution(1e-3, 1.0, log=True),
}


def _mixed_points(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "a": ["x", "y", "z"][int(rng.integers(3))],
            "b": int(rng.integers(1, 5)),
            "n": int(rng.integers(0, 11)),
            "r": float(np.exp(rng.uniform(np.log(1e-3), 0.0))),
        }
        for _ in range(n)
    ]


def _pair_features(p: dict) -> list[float]:
    """Main features plus the products of every two different parameters' features."""
    blocks = [_features(p, {name: MIXED[name]}) for name in sorted(MIXED)]
    pairs = [u * v for a, b in itertools.combinations(blocks, 2) for u in a for v in b]
    return [*itertools.chain(*blocks), *pairs]


def test_ridge_model_matches_the_primal_solution() -> None:
    """Additive: the dual fit is ridge on one-hot + scaled numbers. Pairwise: it is ridge on
    those plus all cross-parameter products, each group with its own penalty (built
    explicitly here by scaling the features, so one penalty of 1 applies)."""
    points = _mixed_points(40)
    y = np.random.default_rng(1).normal(size=(40, 2))
    additive = RidgeModel(MIXED, alpha=0.1).fit(points, y).predict(points)
    x = np.array([_features(p, MIXED) for p in points])
    assert np.allclose(additive, _primal_ridge(x, y, 0.1), atol=1e-9)

    width = x.shape[1]
    full = np.array([_pair_features(p) for p in points])
    scaled = np.c_[full[:, :width] / np.sqrt(0.1), full[:, width:] / np.sqrt(3.0)]
    pairwise = RidgeModel(MIXED, alpha=0.1, pair_alpha=3.0).fit(points, y).predict(points)
    assert np.allclose(pairwise, _primal_ridge(scaled, y, 1.0), atol=1e-8)
    assert not np.allclose(pairwise, additive, atol=1e-3)


@pytest.mark.parametrize("pair_alpha", [None, 3.0])
def test_the_kernel_added_up_in_place_is_the_stacked_sum_bit_for_bit(pair_alpha) -> None:
    """``_kernel`` adds each block's inner products in place; the model's suggestions stay
    the same point for point only if that equals summing the stacked blocks exactly."""
    rng = np.random.default_rng(0)
    model = RidgeModel(MIXED, alpha=0.1, pair_alpha=pair_alpha)
    for n_blocks in (1, 2, 6, 9, 13):
        widths = rng.integers(1, 7, size=n_blocks)
        left = [rng.integers(0, 2, size=(300, w)) * rng.random(w) for w in widths]
        right = [rng.integers(0, 2, size=(200, w)) * rng.random(w) for w in widths]
        stacked = model._combine([a @ b.T for a, b in zip(left, right, strict=True)])
        assert np.array_equal(model._kernel(left, right), stacked), n_blocks


def test_features_are_extra_blocks_of_the_model() -> None:
    """A ``features`` block enters the fit like a parameter's one-hot: the additive dual fit is
    primal ridge on the parameters' features plus the block's columns."""

    def both_low(trials: list[dict]) -> list[np.ndarray]:
        return [np.array([[float(t["a"] == "x" and t["b"] == 1), t["n"] / 10] for t in trials])]

    points = _mixed_points(40)
    y = np.random.default_rng(2).normal(size=(40, 2))
    model = RidgeModel(MIXED, alpha=0.1, features=both_low).fit(points, y)
    x = np.c_[np.array([_features(p, MIXED) for p in points]), both_low(points)[0]]
    assert np.allclose(model.predict(points), _primal_ridge(x, y, 0.1), atol=1e-9)
    plain = RidgeModel(MIXED, alpha=0.1).fit(points, y).predict(points)
    assert not np.allclose(model.predict(points), plain, atol=1e-3)


def test_pairwise_model_learns_an_interaction_the_additive_one_cannot() -> None:
    """y = [u == v] on a 3 x 3 grid: no additive function fits it (its best fit predicts 1/3
    everywhere); with interactions and a small penalty the fit is near exact."""
    space = {"u": CategoricalDistribution([0, 1, 2]), "v": CategoricalDistribution([0, 1, 2])}
    grid = [{"u": u, "v": v} for u in range(3) for v in range(3)]
    y = np.array([[float(p["u"] == p["v"])] for p in grid])
    additive = RidgeModel(space, alpha=1e-6).fit(grid, y).predict(grid)
    assert np.allclose(additive, 1 / 3, atol=1e-4)
    pairwise = RidgeModel(space, alpha=1e-6, pair_alpha=1e-6).fit(grid, y).predict(grid)
    assert np.allclose(pairwise, y, atol=1e-4)


def test_posterior_std_is_the_gaussian_process_one() -> None:
    """Against universal kriging written out (GP with kernel K, noise 1 and a flat prior on
    the intercept; scale ``y' M y / n``): the std is smaller at an often-seen point than at a
    rarely seen one, and largest at a choice never seen."""
    space = {"u": CategoricalDistribution([0, 1, 2])}
    train = [{"u": 0}] * 6 + [{"u": 1}]
    y = np.array([0.0, 0.2, 0.1, 0.0, 0.3, 0.2, 1.0])
    model = RidgeModel(space, alpha=1.0).fit(train, y[:, None])
    mean, std = model.predict_std([{"u": 0}, {"u": 1}, {"u": 2}])
    one_hot = np.eye(3)
    x, x_new = one_hot[[0] * 6 + [1]], one_hot
    sigma_inv = np.linalg.inv(x @ x.T + np.eye(7))
    ones = np.ones(7)
    precision = ones @ sigma_inv @ ones
    intercept = ones @ sigma_inv @ y / precision
    cross = x_new @ x.T
    expected_mean = cross @ sigma_inv @ (y - intercept) + intercept
    variance = (
        np.sum(x_new * x_new, axis=1)
        - np.sum((cross @ sigma_inv) * cross, axis=1)
        + (1 - cross @ sigma_inv @ ones) ** 2 / precision
    )
    m = sigma_inv - np.outer(sigma_inv @ ones, ones @ sigma_inv) / precision
    scale = y @ m @ y / 7
    assert np.allclose(mean[:, 0], expected_mean)
    assert np.allclose(std[:, 0], np.sqrt(scale * variance))
    assert std[0, 0] < std[1, 0] < std[2, 0]


class _DeadWhenAIsZero:
    """Features of a space where ``c`` has no effect when ``a`` is 0 (like an edge after a
    ``none``): no extra blocks, and the canonical form sets ``c`` to 0 there."""

    params = ("a", "c")

    def __call__(self, trials: list[dict]) -> list[np.ndarray]:
        return []

    def canonical(self, params: dict) -> dict:
        return {**params, "c": 0} if params["a"] == 0 else dict(params)


def _search_with_dead_c(seed: int, features: _DeadWhenAIsZero) -> tuple[optuna.Study, list[int]]:
    """A whole search of the 27 points; the numbers of the trials the local search proposed."""
    sampler = ParetoLocalSearchSampler(seed=seed, n_startup_trials=3, features=features)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    proposed: list[int] = []

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        params = _suggest(trial)
        if trial.number in sampler._parents:
            proposed.append(trial.number)
        return _values(features.canonical(params))

    study.optimize(objective, n_trials=N_POINTS)
    return study, proposed


def test_a_function_already_tried_is_not_tried_again() -> None:
    """With a = 0, c does nothing: (0, b, 0), (0, b, 1), (0, b, 2) are one function. No point
    the local search proposes repeats the function of an earlier trial, unless it is the
    cheaper form of one tried only in a dearer form; and every function gets tried."""
    features = _DeadWhenAIsZero()
    for seed in range(5):
        study, proposed = _search_with_dead_c(seed, features)
        seen: set[tuple] = set()
        for trial in study.trials:
            point = tuple(trial.params[n] for n in NAMES)
            function = tuple(features.canonical(trial.params)[n] for n in NAMES)
            if trial.number in proposed and function in seen:
                assert point == function and point not in {
                    tuple(t.params[n] for n in NAMES) for t in study.trials[: trial.number]
                }
            seen.add(function)
        assert len(proposed) >= 15
        assert len(seen) == 21  # 27 points, 21 functions (3 x 3 with a > 0, 3 with a = 0)


def test_a_front_member_with_dead_ops_gets_its_cheaper_form_tried() -> None:
    """Every point but (0, 1, 0) and (0, 1, 1) tried; (0, 1, 2) computes the same function as
    both, is on the front and costs more. Its untried neighbours are those two, a known
    function, so only the rule for a member's cheaper form proposes (0, 1, 0)."""
    features = _DeadWhenAIsZero()
    sampler = ParetoLocalSearchSampler(seed=0, n_startup_trials=0, features=features)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    twin = {"a": 0, "b": 1, "c": 0}
    for point in itertools.product(CHOICES, repeat=3):
        params = dict(zip(NAMES, point, strict=True))
        if params["a"] != 0 or params["b"] != 1 or params["c"] == 2:
            accuracy = 0.0 if params["a"] == 0 and params["b"] == 1 else -1.0 - sum(point)
            study.enqueue_trial(params)
            study.optimize(lambda t, a=accuracy: (a, float(sum(_suggest(t).values()))), n_trials=1)
    assert {"a": 0, "b": 1, "c": 2} in [t.params for t in study.best_trials]
    trial = study.ask()
    assert _suggest(trial) == twin
    assert sampler._parents[trial.number] == {"a": 0, "b": 1, "c": 2}


def test_revivals_make_a_path_cut_twice_live() -> None:
    """From the cell whose only live edge is the direct skip 3<-0, single moves on any other
    edge change nothing, and the paths 0-1-3 and 0-2-3 each need ops on two edges: the
    revivals are exactly those, 4 x 4 live ops each (0-1-2-3 needs three)."""
    names = tuple(f"arch.edge{i}" for i in range(N_EDGES))
    space = {name: CategoricalDistribution(NB201_OPS) for name in names}
    cell = dict(zip(names, ["none"] * 3 + ["skip_connect", "none", "none"], strict=True))
    found = revivals(cell, space, PathEncoding(names).canonical)
    live = [op for op in NB201_OPS if op != "none"]
    expected = [
        {**cell, names[first]: a, names[second]: b}
        for first, second in ((0, 4), (1, 5))
        for a in live
        for b in live
    ]
    assert sorted(map(str, found)) == sorted(map(str, expected))
    # a cell with every path live has no dead edge to start from
    full = dict.fromkeys(names, "nor_conv_3x3")
    assert revivals(full, space, PathEncoding(names).canonical) == []


def test_gains_are_exact_hypervolume_gains_or_the_miss_distance() -> None:
    front = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    points = np.array([[0.25, 0.25], [0.5, 0.5], [0.6, 0.6], [-0.1, 1.2]])
    # (0.25, 0.25) adds the boxes [0.25, 0.5) x [0.25, 1.0) and [0.5, 1.0) x [0.25, 0.5); the
    # others add nothing: a front member itself (0), a point 0.1 behind (0.5, 0.5) in both
    # objectives (-0.1), one beyond the reference 1.1 (0.2 behind (0, 1): -0.2)
    expected = [0.25 * 0.75 + 0.5 * 0.25, 0.0, -0.1, -0.2]
    assert np.allclose(_gains(front, points, np.full(2, 1.1)), expected)
    # The sampler's reference moves out to 10% beyond the worst candidate, (1.1, 1.3) here, so
    # (-0.1, 1.2), non-dominated, adds [-0.1, 0) x [1.2, 1.3); the others' gains are unchanged.
    assert np.allclose(_reference(points), [1.1, 1.3])
    expected[3] = 0.1 * 0.1
    assert np.allclose(_gains(front, points, _reference(points)), expected)
    rng = np.random.default_rng(3)
    for n_objectives in (2, 3):
        for _ in range(20):
            front = rng.uniform(0.0, 1.2, size=(int(rng.integers(1, 7)), n_objectives))
            points = rng.uniform(-0.2, 1.3, size=(15, n_objectives))
            ref = rng.uniform(1.0, 1.5, size=n_objectives)
            base = hypervolume(front, ref)
            added = np.array([hypervolume(np.vstack([front, p]), ref) - base for p in points])
            miss = -np.min(np.max(points[:, None] - front[None], axis=2), axis=1)
            assert np.allclose(_gains(front, points, ref), np.where(added > 0, added, miss))
            # With the sampler's reference, every point that no member of a front (non-dominated,
            # within [0, 1] where the trials span it) weakly dominates adds.
            front = front.clip(0.0, 1.0)
            front = front[non_dominated_mask(front)]
            gains = _gains(front, points, _reference(points))
            dominated = np.any(np.all(points[:, None] >= front[None], axis=2), axis=1)
            assert np.all(gains[~dominated] > 0) and np.all(gains[dominated] <= 0)


def test_the_front_grows_past_the_most_expensive_trial() -> None:
    """Accuracy x - y/2 and cost x, x in 0..4 and y in {0, 1}; tried: x = 0, 1, 2 at y = 0
    (the front) and x = 0, 2 at y = 1. The untried neighbours of the front are (3, 0), which
    extends it but costs 50% beyond the trials' range, and (1, 1), which misses it. With a
    fixed reference 1.1, (3, 0) would add nothing and (1, 1), the nearer miss, would come next."""
    space = {"x": IntDistribution(0, 4), "y": CategoricalDistribution((0, 1))}
    sampler = ParetoLocalSearchSampler(seed=0, n_startup_trials=0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    for x, y in [(0, 0), (1, 0), (2, 0), (0, 1), (2, 1)]:
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": x, "y": y}, distributions=space, values=[x - y / 2, x]
            )
        )
    assert study.ask(space).params == {"x": 3, "y": 0}


def test_window_keeps_the_whole_front_and_the_most_recent_others() -> None:
    # 12 trials; the front (minimising both) is trials 0, 1 and 2; max_history 4 keeps them
    # and the 4 most recent, whatever their rank.
    values = [(0.0, 9.0), (1.0, 5.0), (9.0, 0.0)] + [(5.0 + i, 6.0 + i) for i in range(9)]
    space = {"x": IntDistribution(0, 20)}
    study = optuna.create_study(directions=["minimize", "minimize"])
    for i, v in enumerate(values):
        study.add_trial(
            optuna.trial.create_trial(values=list(v), params={"x": i}, distributions=space)
        )
    sampler = ParetoLocalSearchSampler(seed=0, max_history=4)
    ranks = sampler._ranks(sampler._read(study, space))
    assert sorted(np.concatenate(ranks).tolist()) == [0, 1, 2, 8, 9, 10, 11]
    assert ranks[0].tolist() == [0, 1, 2]
    unlimited = ParetoLocalSearchSampler(seed=0, max_history=None)
    assert sorted(np.concatenate(unlimited._ranks(unlimited._read(study, space)))) == list(
        range(12)
    )
    with pytest.raises(ValueError, match="max_history"):
        ParetoLocalSearchSampler(max_history=0)


@pytest.mark.parametrize("pair_alpha", [None, 3.0])
def test_primal_and_dual_fits_agree(pair_alpha: float | None) -> None:
    """The model is solved in the primal when it has fewer features than points: the same
    predictions and posterior standard deviations as the dual."""
    points, new = _mixed_points(60), _mixed_points(30, seed=1)
    y = np.random.default_rng(4).normal(size=(60, 2))
    fits = {
        solver: RidgeModel(MIXED, pair_alpha=pair_alpha, solver=solver).fit(points, y)
        for solver in ("primal", "dual")
    }
    (mean_p, std_p), (mean_d, std_d) = (fits[s].predict_std(new) for s in ("primal", "dual"))
    assert np.allclose(mean_p, mean_d, atol=1e-9) and np.allclose(std_p, std_d, atol=1e-9)
    assert np.allclose(fits["primal"].predict(new), mean_d, atol=1e-9)
    assert np.all(std_d > 0)
    auto = RidgeModel(MIXED, pair_alpha=pair_alpha)
    width = auto.design(auto.blocks(points)).shape[1] - 1  # less the intercept's column
    assert auto.primal(auto.blocks(points)) == (width < 60)
    with pytest.raises(ValueError, match="solver"):
        RidgeModel(MIXED, solver="cholesky")


def test_history_read_trial_by_trial_equals_a_read_from_scratch() -> None:
    """TrialHistory, updated after every trial, holds what one read of the finished study
    gives: tried keys, the complete trials, their minimised values and the feasible front."""
    from nascomp.search.samplers import _common as common
    from nascomp.search.samplers.history import TrialHistory

    space = {name: CategoricalDistribution(CHOICES) for name in NAMES}
    sampler = ParetoLocalSearchSampler(seed=3, n_startup_trials=4, constraints_func=_constraints)
    incremental = TrialHistory()
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
    for i in range(40):
        trial = study.ask()
        p = _suggest(trial)
        if i % 7 == 3:
            study.tell(trial, state=TrialState.FAIL)
        else:
            accuracy, cost = _values(p)
            study.tell(trial, [accuracy, cost, float(i % 4)])
        incremental.update(study, space)
    study.enqueue_trial({"a": 0, "b": 0, "c": 0})  # feasible
    running = study.ask()  # tried, not finished
    _suggest(running)
    incremental.update(study, space)
    fresh = TrialHistory()
    fresh.update(study, space)
    for history in (incremental, fresh):
        assert history.tried() == common.tried(study, space)
        complete = study.get_trials(states=(TrialState.COMPLETE,))
        assert [t.number for t in history.done] == [t.number for t in complete]
        values = common.minimised(complete, study.directions)
        assert np.array_equal(history.values, values)
        feasible = np.array([common.violation(t) <= 0 for t in complete])
        expected = np.flatnonzero(feasible)[non_dominated_mask(values[feasible])]
        assert history.feasible_front == expected.tolist()
    # a running trial that finishes joins on the next read: here it dominates every trial
    study.tell(running, [9.0, 0.0, 0.0])
    incremental.update(study, space)
    assert incremental.done[-1].number == running.number
    assert incremental.feasible_front == [len(incremental.done) - 1]


def test_suggestions_are_those_of_a_sampler_that_reads_the_study_afresh() -> None:
    """The sampler keeps what it read of the study between asks; a copy of it that has read
    nothing (its history dropped, as on unpickling) suggests exactly the same points."""
    sampler = ParetoLocalSearchSampler(seed=5, n_startup_trials=6, constraints_func=_constraints)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    for _ in range(20):
        trial = study.ask()
        twin = pickle.loads(pickle.dumps(sampler))  # same rng state, no history
        assert twin._history is None
        expected = twin.sample_relative(
            study, trial, sampler.infer_relative_search_space(study, trial)
        )
        twin_pending = dict(twin._pending)
        params = _suggest(trial)
        if expected:
            assert params == expected
            assert sampler._pending[trial.number] == twin_pending[trial.number]
        study.tell(trial, list(_values(params)))


def test_history_starts_afresh_when_the_space_changes() -> None:
    """The model's features of a point depend on the distributions, not only on the names: a
    history read under other choices for the same parameter starts over."""
    from nascomp.search.samplers.history import TrialHistory

    study = optuna.create_study(directions=["maximize", "minimize"])
    narrow = {"a": CategoricalDistribution((0, 1))}
    for a in (0, 1):
        study.add_trial(
            optuna.trial.create_trial(params={"a": a}, distributions=narrow, values=[a, a])
        )
    history = TrialHistory()
    history.update(study, narrow)
    model = RidgeModel(narrow)
    assert history.rows("blocks", np.arange(2), model.blocks)[0].shape == (2, 2)
    wide = {"a": CategoricalDistribution((0, 1, 2))}
    history.update(study, wide)
    model = RidgeModel(wide)
    assert history.rows("blocks", np.arange(2), model.blocks)[0].shape == (2, 3)
