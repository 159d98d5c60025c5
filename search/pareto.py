"""Pareto fronts as pure numpy over an (n_points, n_objectives) array.

Objectives are turned into "minimise" once (:func:`to_minimise`); everything after that assumes
smaller is better. A point dominates another when it is no worse in every objective and better
in at least one; equal points do not dominate each other, so duplicates share a front.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def to_minimise(values: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(modes):
        raise ValueError(f"values must be (n_points, {len(modes)}); got shape {values.shape}")
    signs = np.array([-1.0 if mode == "max" else 1.0 for mode in modes])
    return values * signs


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def non_dominated_mask(values: np.ndarray) -> np.ndarray:
    """True for points no other point dominates (values already minimised)."""
    values = np.asarray(values, dtype=float)
    n = values.shape[0]
    if n == 0:
        return np.zeros(0, dtype=bool)
    no_worse = np.all(values[:, None, :] <= values[None, :, :], axis=2)  # [i, j]: i <= j everywhere
    better = np.any(values[:, None, :] < values[None, :, :], axis=2)
    dominated_by = no_worse & better  # [i, j]: i dominates j
    return ~dominated_by.any(axis=0)


def non_dominated_sort(values: np.ndarray) -> np.ndarray:
    """Front index (0 = Pareto front) of every point, by peeling fronts off in turn."""
    values = np.asarray(values, dtype=float)
    ranks = np.full(values.shape[0], -1, dtype=int)
    remaining = np.arange(values.shape[0])
    rank = 0
    while remaining.size:
        mask = non_dominated_mask(values[remaining])
        ranks[remaining[mask]] = rank
        remaining = remaining[~mask]
        rank += 1
    return ranks


def front_order(values: np.ndarray, modes: Sequence[str]) -> list[int]:
    """Indices of the Pareto front, best first by the first objective (then the next ones)."""
    minimised = to_minimise(values, modes)
    front = np.flatnonzero(non_dominated_mask(minimised))
    keys = tuple(minimised[front, k] for k in reversed(range(minimised.shape[1])))
    return [int(i) for i in front[np.lexsort(keys)]]
