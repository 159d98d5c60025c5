"""Pareto fronts as pure numpy over an (n_points, n_objectives) array.

Objectives are turned into "minimise" once (:func:`to_minimise`); everything after that assumes
smaller is better. A point dominates another when it is no worse in every objective and better
in at least one; equal points do not dominate each other, so duplicates share a front.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def to_minimise(values: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(modes):
        raise ValueError(f"values must be (n_points, {len(modes)}); got shape {values.shape}")
    signs = np.array([-1.0 if mode == "max" else 1.0 for mode in modes])
    return values * signs


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


# Up to this many points, comparing all pairs at once is faster than a Python-level pass (the
# hypervolume recursion asks for thousands of fronts of a few points each).
_SMALL = 128


def _pairwise_non_dominated(values: np.ndarray) -> np.ndarray:
    no_worse = np.all(values[:, None, :] <= values[None, :, :], axis=2)  # [i, j]: i <= j everywhere
    better = np.any(values[:, None, :] < values[None, :, :], axis=2)
    return ~(no_worse & better).any(axis=0)  # [i, j] of the product: i dominates j


def _dominated_by_any(front: np.ndarray, point: np.ndarray) -> bool:
    return bool(np.any(np.all(front <= point, axis=1) & np.any(front < point, axis=1)))


def non_dominated_mask(values: np.ndarray) -> np.ndarray:
    """True for points no other point dominates (values already minimised).

    In lexicographic order a point can only be dominated by an earlier one, and (dominance
    being transitive) then by an earlier point of the front: one pass, each point checked
    against the front so far, O(n * front size) instead of all n^2 pairs.
    """
    values = np.asarray(values, dtype=float)
    if values.shape[0] <= _SMALL:
        return _pairwise_non_dominated(values)
    mask = np.zeros(values.shape[0], dtype=bool)
    front: list[int] = []
    for i in _lexicographic(values):
        if not front or not _dominated_by_any(values[front], values[i]):
            front.append(int(i))
    mask[front] = True
    return mask


class RunningFront:
    """The non-dominated set of points added one at a time (values minimised), each point with
    a key (a trial id).

    The set after each :meth:`add` is what :func:`non_dominated_mask` gives over every point
    added so far: a point some earlier point dominates is dominated by a member of the front
    (dominance is transitive), so the new point is checked against the front alone, and a
    point off the front never comes back. So a search's driver keeps its running front in
    O(front) per ended trial instead of O(n) over all of them (``bench/driver_front.py``).
    """

    def __init__(self, n_objectives: int) -> None:
        self.keys: list[Any] = []
        self.values = np.zeros((0, n_objectives))

    def add(self, key: Any, point: Sequence[float] | np.ndarray) -> bool:
        """Add a point; True when it is on the front afterwards."""
        point = np.asarray(point, dtype=float)
        if len(self.keys) and _dominated_by_any(self.values, point):
            return False
        stays = ~(np.all(point <= self.values, axis=1) & np.any(point < self.values, axis=1))
        self.keys = [k for k, kept in zip(self.keys, stays, strict=True) if kept] + [key]
        self.values = np.vstack([self.values[stays], point])
        return True

    def order(self) -> list[Any]:
        """The front's keys, best first by the first objective (then the next ones), as
        :func:`front_order` orders them."""
        keys = tuple(self.values[:, k] for k in reversed(range(self.values.shape[1])))
        return [self.keys[i] for i in np.lexsort(keys)] if self.keys else []


def non_dominated_sort(values: np.ndarray) -> np.ndarray:
    """Front index (0 = Pareto front) of every point.

    Efficient non-dominated sort with binary search (Zhang et al., 2015): points in
    lexicographic order each go to the first front with no member dominating them; if a front
    dominates a point, so does every earlier front, hence the binary search. The fronts are
    the ones peeling would give, in O(n log(fronts)) front checks rather than one n^2 pass per
    front (120 s for 10,000 points and 84 fronts; docs/scaling.md).
    """
    values = np.asarray(values, dtype=float)
    if values.shape[0] <= _MATRIX_SORT:
        return _peeled(values)
    ranks = np.full(values.shape[0], -1, dtype=int)
    fronts: list[list[int]] = []
    for i in _lexicographic(values):
        low, high = 0, len(fronts)
        while low < high:
            middle = (low + high) // 2
            if _dominated_by_any(values[fronts[middle]], values[i]):
                low = middle + 1
            else:
                high = middle
        if low == len(fronts):
            fronts.append([])
        fronts[low].append(int(i))
        ranks[i] = low
    return ranks


# Up to this many points, peeling fronts off the full dominance matrix (n^2 booleans, built in
# one numpy pass) beats the binary-search insertion above: 6 ms against 40 ms for 1,060 random
# points of 3 objectives, the size of ``pls``'s window, which it sorts on every ask.
_MATRIX_SORT = 2_000


def _peeled(values: np.ndarray) -> np.ndarray:
    """Front index of every point by peeling: count each point's dominators, take those with
    none as the next front, remove what they dominate from the counts, repeat."""
    n_points = values.shape[0]
    ranks = np.full(n_points, -1, dtype=int)
    if n_points == 0:
        return ranks
    no_worse = np.ones((n_points, n_points), dtype=bool)
    better = np.zeros((n_points, n_points), dtype=bool)
    for k in range(values.shape[1]):  # one objective at a time keeps the temporaries n^2
        column = values[:, k]
        no_worse &= column[:, None] <= column[None, :]
        better |= column[:, None] < column[None, :]
    dominates = no_worse & better  # [i, j]: i dominates j
    counts = dominates.sum(axis=0)
    current = np.flatnonzero(counts == 0)
    rank = 0
    while current.size:
        ranks[current] = rank
        counts = counts - dominates[current].sum(axis=0)
        counts[ranks >= 0] = -1
        current = np.flatnonzero(counts == 0)
        rank += 1
    return ranks


def _lexicographic(values: np.ndarray) -> np.ndarray:
    """Indices sorted by the first objective, ties by the next ones."""
    if values.shape[0] == 0:
        return np.zeros(0, dtype=int)
    return np.lexsort(values.T[::-1])


def front_order(values: np.ndarray, modes: Sequence[str]) -> list[int]:
    """Indices of the Pareto front, best first by the first objective (then the next ones)."""
    minimised = to_minimise(values, modes)
    front = np.flatnonzero(non_dominated_mask(minimised))
    keys = tuple(minimised[front, k] for k in reversed(range(minimised.shape[1])))
    return [int(i) for i in front[np.lexsort(keys)]]


def crowding_distance(values: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance of each point within its set (values already minimised).

    Per objective, the points are sorted and each gets the normalised gap between its two
    neighbours; the extremes get infinity so the ends of a front are always kept. Summed over
    objectives. Sets of one or two points are all extremes.
    """
    values = np.asarray(values, dtype=float)
    n_points, n_objectives = values.shape
    distance = np.zeros(n_points)
    if n_points <= 2:
        return np.full(n_points, np.inf)
    for k in range(n_objectives):
        order = np.argsort(values[:, k], kind="stable")
        column = values[order, k]
        span = column[-1] - column[0]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (column[2:] - column[:-2]) / span
    return distance


def rank_order(values: np.ndarray) -> np.ndarray:
    """Indices of all points, best first: by front (non-dominated sort), then within a front
    by crowding distance, largest first (the NSGA-II survival order). Ties keep input order."""
    values = np.asarray(values, dtype=float)
    fronts = non_dominated_sort(values)
    crowding = np.zeros(values.shape[0])
    for front in np.unique(fronts):
        members = np.flatnonzero(fronts == front)
        crowding[members] = crowding_distance(values[members])
    return np.lexsort((np.arange(values.shape[0]), -crowding, fronts))


def knee_index(front: np.ndarray) -> int:
    """The knee of a front (values already minimised): the point farthest from the hyperplane
    through the front's extremes, on the side of the ideal point, after normalising each
    objective to [0, 1] over the front.

    The extremes are the best point of each objective; in 2-D the hyperplane is the line
    joining the two ends, the textbook knee. When the extremes do not span a hyperplane (fewer
    distinct extremes than objectives, e.g. two points in 3-D) or several points are equally
    far, the point nearest the ideal point (Euclidean, normalised) decides.
    """
    front = np.asarray(front, dtype=float)
    if front.shape[0] == 0:
        raise ValueError("the front is empty: nothing to pick")
    low, high = front.min(axis=0), front.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    unit = (front - low) / span
    to_ideal = np.linalg.norm(unit, axis=1)
    extremes = unit[np.argmin(unit, axis=0)]
    if np.linalg.matrix_rank(extremes) < front.shape[1]:
        return int(np.argmin(to_ideal))
    normal = np.linalg.solve(extremes, np.ones(front.shape[1]))
    gap = (1.0 - unit @ normal) / np.linalg.norm(normal)
    best = np.flatnonzero(np.isclose(gap, gap.max(), rtol=0, atol=1e-12))
    return int(best[np.argmin(to_ideal[best])])
