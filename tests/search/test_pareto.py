"""Pareto fronts, non-dominated sorting, crowding distance and the knee: known answers."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from nascomp.search.front.pareto import (
    RunningFront,
    crowding_distance,
    front_order,
    knee_index,
    non_dominated_mask,
    non_dominated_sort,
    rank_order,
    to_minimise,
)


def test_to_minimise_flips_max_objectives() -> None:
    values = np.array([[0.9, 100.0]])
    np.testing.assert_array_equal(to_minimise(values, ["max", "min"]), [[-0.9, 100.0]])
    with pytest.raises(ValueError, match="must be"):
        to_minimise(values, ["max"])


def test_front_two_objectives_with_ties_and_duplicates() -> None:
    values = np.array(
        [
            [1.0, 5.0],  # front
            [2.0, 3.0],  # front
            [2.0, 3.0],  # duplicate of a front point: also front
            [2.0, 4.0],  # tie in the first objective, worse second: dominated
            [4.0, 1.0],  # front
            [4.0, 4.0],  # dominated
        ]
    )
    np.testing.assert_array_equal(non_dominated_mask(values), [1, 1, 1, 0, 1, 0])
    np.testing.assert_array_equal(non_dominated_sort(values), [0, 0, 0, 1, 0, 2])


def test_front_one_objective_is_the_minimum_and_its_ties() -> None:
    values = np.array([[3.0], [1.0], [2.0], [1.0]])
    np.testing.assert_array_equal(non_dominated_mask(values), [0, 1, 0, 1])
    np.testing.assert_array_equal(non_dominated_sort(values), [2, 0, 1, 0])


def test_front_three_objectives() -> None:
    values = np.array(
        [
            [1.0, 1.0, 9.0],
            [1.0, 9.0, 1.0],
            [9.0, 1.0, 1.0],
            [2.0, 2.0, 9.0],  # dominated by the first only
            [5.0, 5.0, 5.0],  # better than none in all three: front
        ]
    )
    np.testing.assert_array_equal(non_dominated_mask(values), [1, 1, 1, 0, 1])


def test_front_order_respects_modes_and_sorts_by_first_objective() -> None:
    values = np.array([[0.9, 300.0], [0.95, 900.0], [0.8, 100.0], [0.85, 400.0]])
    assert front_order(values, ["max", "min"]) == [1, 0, 2]


@pytest.mark.parametrize("seed", range(5))
def test_front_agrees_with_optuna(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = np.round(rng.random((80, 3)), 1)
    study = optuna.create_study(directions=["minimize"] * 3)
    for row in values:
        study.add_trial(optuna.trial.create_trial(values=list(row), params={}, distributions={}))
    expected = sorted(t.number for t in study.best_trials)
    assert sorted(np.flatnonzero(non_dominated_mask(values))) == expected


def test_crowding_distance_known_answer() -> None:
    front = np.array([[0.0, 4.0], [1.0, 3.5], [3.0, 1.0], [4.0, 0.0]])
    # Gaps between neighbours over each range of 4: the second point (3-0)/4 + (4-1)/4 = 1.5,
    # the third (4-1)/4 + (3.5-0)/4 = 1.625; the ends are infinite.
    np.testing.assert_allclose(crowding_distance(front), [np.inf, 1.5, 1.625, np.inf])
    assert np.all(np.isinf(crowding_distance(front[:2])))


def test_rank_order_front_first_then_least_crowded() -> None:
    values = np.array(
        [
            [5.0, 5.0],  # second front
            [1.0, 3.5],  # front, middle, crowding 1.5
            [0.0, 4.0],  # front, end
            [3.0, 1.0],  # front, middle, crowding 1.625
            [4.0, 0.0],  # front, end
        ]
    )
    assert list(rank_order(values)) == [2, 4, 3, 1, 0]


def test_knee_of_a_convex_front() -> None:
    # The line through (0, 10) and (10, 0); (2, 2) bulges farthest towards the ideal point.
    front = np.array([[0.0, 10.0], [2.0, 2.0], [5.0, 1.0], [10.0, 0.0]])
    assert knee_index(front) == 1


def test_knee_is_scale_free() -> None:
    front = np.array([[0.0, 10.0], [2.0, 2.0], [5.0, 1.0], [10.0, 0.0]])
    assert knee_index(front * [1.0, 1e6]) == 1


def test_knee_three_objectives() -> None:
    front = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.2, 0.2, 0.2]])
    assert knee_index(front) == 3


def test_knee_of_degenerate_fronts_is_nearest_the_ideal() -> None:
    assert knee_index(np.array([[3.0, 4.0]])) == 0
    # Two points: both lie on the line through the extremes; the tie goes to the one nearer
    # the ideal after normalisation (both at distance 1), so input order decides.
    assert knee_index(np.array([[0.0, 1.0], [1.0, 0.0]])) == 0
    # Two points in 3-D cannot span a plane: normalised they are (0, 0, 1) and (1, 1, 0).
    assert knee_index(np.array([[0.0, 0.0, 1.0], [0.5, 0.5, 0.0]])) == 0
    with pytest.raises(ValueError, match="empty"):
        knee_index(np.empty((0, 2)))


def _brute_force_ranks(values: np.ndarray) -> np.ndarray:
    """Fronts by definition: peel the points no remaining point dominates, all pairs."""
    ranks = np.full(len(values), -1)
    remaining = list(range(len(values)))
    rank = 0
    while remaining:
        front = [
            i
            for i in remaining
            if not any(
                np.all(values[j] <= values[i]) and np.any(values[j] < values[i]) for j in remaining
            )
        ]
        ranks[front] = rank
        remaining = [i for i in remaining if i not in front]
        rank += 1
    return ranks


@pytest.mark.parametrize("seed", range(8))
def test_sort_and_mask_agree_with_the_definition_on_random_sets(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Sizes on both sides of the pairwise / one-pass switch (_SMALL points).
    n, d = int(rng.integers(1, 300)), int(rng.integers(1, 4))
    # Few distinct levels: many ties and duplicates, the cases that go wrong.
    values = rng.integers(0, 6, size=(n, d)).astype(float)
    expected = _brute_force_ranks(values)
    assert np.array_equal(non_dominated_sort(values), expected)
    assert np.array_equal(non_dominated_mask(values), expected == 0)


def test_sort_of_nothing_and_of_one_point() -> None:
    assert non_dominated_sort(np.zeros((0, 3))).shape == (0,)
    assert non_dominated_mask(np.zeros((0, 2))).shape == (0,)
    assert non_dominated_sort(np.array([[1.0, 2.0]])).tolist() == [0]


def test_both_sorts_give_the_peeled_fronts() -> None:
    """Up to _MATRIX_SORT points the fronts are peeled off the dominance matrix, beyond it
    found by binary-search insertion: both give the same ranks, on a set past the switch."""
    from nascomp.search.front import pareto

    values = np.random.default_rng(0).integers(0, 12, size=(pareto._MATRIX_SORT + 300, 3))
    values = values.astype(float)
    ranks = non_dominated_sort(values)  # insertion
    assert np.array_equal(pareto._peeled(values), ranks)
    assert ranks.max() > 5


@pytest.mark.parametrize("seed", range(6))
def test_running_front_is_the_front_of_every_point_added(seed: int) -> None:
    """After each add, the running front's keys are the points non_dominated_mask keeps of
    all added so far, in front_order's order (ties and duplicates included)."""
    rng = np.random.default_rng(seed)
    d = int(rng.integers(1, 4))
    values = rng.integers(0, 6, size=(int(rng.integers(1, 200)), d)).astype(float)
    running = RunningFront(d)
    for n, point in enumerate(values, start=1):
        on_front = running.add(f"t{n - 1}", point)
        expected = [f"t{i}" for i in front_order(values[:n], ["min"] * d)]
        assert running.order() == expected
        assert on_front == (f"t{n - 1}" in expected)


def test_running_front_known_answer() -> None:
    running = RunningFront(2)
    assert running.order() == []
    assert running.add("a", [2.0, 2.0])
    assert not running.add("b", [3.0, 3.0])  # dominated by a
    assert running.add("c", [1.0, 4.0])
    assert running.add("d", [2.0, 2.0])  # a's duplicate: neither dominates the other
    assert running.order() == ["c", "a", "d"]
    assert running.add("e", [1.0, 1.0])  # dominates all of them
    assert running.order() == ["e"]
