"""Hypervolume: exact known answers, and agreement with Optuna's own implementation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nascomp.search.compat.optuna import reference_hypervolume
from nascomp.search.front.hypervolume import (
    contributions,
    gains_3d,
    hypervolume,
    normalise,
    search_reference,
    search_scale,
)


@pytest.mark.parametrize("n", [1, 2, 5, 10, 50])
def test_staircase_2d(n: int) -> None:
    # Points (i, n-1-i) with ref (n, n): column i is n - (n-1-i) high -> sum = n*n - n*(n-1)/2.
    points = np.array([[i, n - 1 - i] for i in range(n)], dtype=float)
    assert hypervolume(points, [n, n]) == n * n - n * (n - 1) // 2


@pytest.mark.parametrize("n", [2, 4, 7])
def test_staircase_3d(n: int) -> None:
    # The 3-D staircase {x+y+z = n-1} with ref (n, n, n): the number of unit cubes (a,b,c) in
    # [0,n)^3 with a+b+c >= n-1, i.e. all minus those strictly below the diagonal plane.
    points = np.array([[a, b, n - 1 - a - b] for a in range(n) for b in range(n - a)], dtype=float)
    below = sum(1 for a in range(n) for b in range(n) for c in range(n) if a + b + c < n - 1)
    assert hypervolume(points, [n, n, n]) == n**3 - below


def test_one_objective_is_a_length() -> None:
    assert hypervolume(np.array([[3.0], [1.0], [2.0]]), [5.0]) == 4.0


def test_single_point_is_its_box() -> None:
    assert hypervolume(np.array([[1.0, 2.0, 3.0]]), [2.0, 4.0, 7.0]) == 1 * 2 * 4


def test_duplicates_ties_and_dominated_points_add_nothing() -> None:
    front = np.array([[0.0, 2.0], [1.0, 1.0], [2.0, 0.0]])
    base = hypervolume(front, [3, 3])
    assert base == 6.0
    noisy = np.vstack([front, front, [[1.0, 2.0], [2.0, 2.0], [1.0, 1.0]]])
    assert hypervolume(noisy, [3, 3]) == base
    # A tie in one objective: (1, 1) and (1, 2): only the better counts.
    assert hypervolume(np.array([[1.0, 1.0], [1.0, 2.0]]), [3, 3]) == 4.0


def test_points_outside_the_reference_are_ignored() -> None:
    points = np.array([[1.0, 1.0], [4.0, 0.0], [3.0, 0.5]])  # 2nd beyond, 3rd on the bound
    assert hypervolume(points, [3, 3]) == 4.0
    assert hypervolume(np.empty((0, 2)), [1, 1]) == 0.0


def test_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="points must be"):
        hypervolume(np.ones((3, 2)), [1.0, 1.0, 1.0])


@pytest.mark.parametrize("n_objectives", [2, 3, 4, 5])
@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_optuna_on_random_sets(n_objectives: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_points = 60 if n_objectives <= 3 else 25
    points = rng.random((n_points, n_objectives))
    if seed % 2:  # rounded values create ties and duplicates
        points = np.round(points, 1)
    ref = np.full(n_objectives, 1.1)
    expected = reference_hypervolume(points, ref)
    assert hypervolume(points, ref) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_contributions_known_answer() -> None:
    front = np.array([[0.0, 2.0], [1.0, 1.0], [2.0, 0.0], [1.0, 1.0]])
    # Each end owns a 1x1 box; the duplicated middle point is not lost when one copy goes.
    np.testing.assert_allclose(contributions(front, [3, 3]), [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(contributions(front[:3], [3, 3]), [1.0, 1.0, 1.0])


def test_normalise_maps_ideal_and_nadir() -> None:
    points = np.array([[2.0, 10.0, 5.0], [4.0, 30.0, 5.0]])
    unit = normalise(points, points.min(axis=0), points.max(axis=0))
    np.testing.assert_allclose(unit, [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])


def test_search_reference_moves_outward_so_the_curve_never_falls() -> None:
    rng = np.random.default_rng(0)
    points = rng.random((40, 2)) * [1.0, 1000.0]
    scale = search_scale(points[0], ["val_accuracy", "size_bytes"])
    assert scale[0] == 1.0 and scale[1] == points[0, 1]
    curve = []
    for n in range(1, len(points) + 1):
        seen = points[:n] / scale
        curve.append(hypervolume(seen, search_reference(seen)))
    assert 0 < curve[0] < 1e-5  # one point: its box under the margin's floor alone
    assert all(b >= a for a, b in itertools.pairwise(curve))
    assert curve[-1] > 0


@pytest.mark.parametrize("seed", range(6))
def test_gains_3d_are_the_exact_hypervolume_each_point_adds(seed: int) -> None:
    """One grid for all points gives, per point, HV(front + point) - HV(front): on grids of few
    levels (ties with the front, points on the front, duplicates) and on random sets, with
    points beyond the reference (they add 0) and below every front point."""
    rng = np.random.default_rng(seed)
    ref = np.full(3, 1.1)
    if seed % 2:
        front, points = rng.integers(0, 5, (12, 3)) / 4.0, rng.integers(0, 6, (40, 3)) / 4.0
    else:
        front, points = rng.random((25, 3)), rng.uniform(-0.2, 1.3, (40, 3))
    base = hypervolume(front, ref)
    expected = [hypervolume(np.vstack([front, p]), ref) - base for p in points]
    assert np.allclose(gains_3d(front, points, ref), expected, atol=1e-12)
    # an empty front: each point adds its own box
    boxes = [hypervolume(p[None], ref) for p in points]
    assert np.allclose(gains_3d(np.zeros((0, 3)), points, ref), boxes, atol=1e-12)


def test_gains_3d_known_answer_and_grid_limit() -> None:
    # front (0.5, 0.5, 0.5) in [0, 1]^3: the origin adds 1 - 1/8, a point behind it 0, and
    # (0, 0, 0.75) its box 0.25 less the 0.5 x 0.5 x 0.25 the front covers of it
    front, ref = np.array([[0.5, 0.5, 0.5]]), np.ones(3)
    points = np.array([[0.0, 0.0, 0.0], [0.6, 0.6, 0.6], [0.0, 0.0, 0.75]])
    assert np.allclose(gains_3d(front, points, ref), [0.875, 0.0, 0.1875])
    big = np.random.default_rng(0).random((400, 3))  # 401^3 cells: over the limit
    assert gains_3d(big, points, ref) is None
