"""Exact hypervolume of a set of points, all objectives minimised (see ``pareto.to_minimise``).

The hypervolume of a set is the volume of the region that at least one point dominates and
that is bounded by the reference point ``ref``: the union of the boxes ``[p, ref]``. Points that
are not strictly better than ``ref`` in every objective add nothing and are ignored.

Dispatch by dimension, as Optuna does: one objective is a length, two a sweep over the sorted
front (exact, O(n log n)), three or more the WFG recursion (While, Bradstreet and Barone 2012:
each point's exclusive volume is its box minus the hypervolume of the later points limited to
its box), exact and fast enough for fronts of a few hundred points.

Reference point rules (:func:`search_reference` for a running search,
:func:`normalise` + ``ref = 1.1`` for the benchmark) are documented where they are defined.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nascomp.search.front.pareto import RunningFront, non_dominated_mask, to_minimise

# Reference point of the normalised space used by the benchmark: 10% beyond the nadir, so the
# extreme points of the front still add volume (at ref = 1.0 they would add none).
NORMALISED_REF = 1.1


def hypervolume(points: np.ndarray, ref: Sequence[float] | np.ndarray) -> float:
    """Exact hypervolume dominated by ``points`` (n, m), bounded by ``ref`` (m,)."""
    points = np.asarray(points, dtype=float)
    ref = np.asarray(ref, dtype=float)
    if points.ndim != 2 or ref.shape != (points.shape[1],):
        raise ValueError(f"points must be (n, {ref.size}) for a reference of {ref.size} values")
    inside = points[np.all(points < ref, axis=1)]
    if inside.shape[0] == 0:
        return 0.0
    return _hv(_front_unique(inside), ref)


def _front_unique(points: np.ndarray) -> np.ndarray:
    # Duplicates and dominated points add no volume; dropping them keeps the recursion small.
    front = np.unique(points[non_dominated_mask(points)], axis=0)
    return front


def _hv(front: np.ndarray, ref: np.ndarray) -> float:
    n_objectives = front.shape[1]
    if n_objectives == 1:
        return float(ref[0] - front[:, 0].min())
    if n_objectives == 2:
        return _hv_2d(front, ref)
    return _hv_wfg(front, ref)


def _hv_2d(front: np.ndarray, ref: np.ndarray) -> float:
    """Sweep along the first objective; on a 2-D front the second one then falls."""
    ordered = front[np.argsort(front[:, 0], kind="stable")]
    widths = np.diff(np.append(ordered[:, 0], ref[0]))
    heights = ref[1] - np.minimum.accumulate(ordered[:, 1])
    return float(np.sum(widths * heights))


def _hv_wfg(front: np.ndarray, ref: np.ndarray) -> float:
    # Worst-first by the first objective keeps the limited sets (later points) small.
    ordered = front[np.argsort(-front[:, 0], kind="stable")]
    total = 0.0
    for i, point in enumerate(ordered):
        box = float(np.prod(ref - point))
        later = ordered[i + 1 :]
        if later.shape[0] == 0:
            total += box
            continue
        limited = np.maximum(later, point)  # the part of each later box inside this point's box
        total += box - _hv(_front_unique(limited), ref)
    return total


def contributions(points: np.ndarray, ref: Sequence[float] | np.ndarray) -> np.ndarray:
    """Each point's exclusive hypervolume: what the set loses without it (0 for duplicates)."""
    points = np.asarray(points, dtype=float)
    total = hypervolume(points, ref)
    keep = np.ones(points.shape[0], dtype=bool)
    out = np.zeros(points.shape[0])
    for i in range(points.shape[0]):
        keep[i] = False
        out[i] = total - hypervolume(points[keep], ref)
        keep[i] = True
    return out


# Largest grid (cells) :func:`gains_3d` builds; beyond it (fronts of over ~160 points) the
# caller computes one hypervolume per point instead.
MAX_GAIN_GRID = 4_000_000


def gains_3d(front: np.ndarray, points: np.ndarray, ref: np.ndarray) -> np.ndarray | None:
    """Per row of ``points`` (n, 3), the hypervolume it alone would add to ``front`` (k, 3),
    all at once; None when the grid would exceed :data:`MAX_GAIN_GRID` cells.

    The front's coordinates (plus the reference and the lowest coordinate of either set) cut
    the box below ``ref`` into a grid of cells, each wholly dominated by the front or not. A
    point adds the volume of the undominated cells inside its box ``[p, ref]``, and since a
    box's overlap with a cell is a product of one overlap per axis, that volume is a trilinear
    interpolation of the suffix sums of the undominated volume, at the point's place in the
    grid. One grid, then O(1) per point: a 60-point front and 2,000 points take about 5 ms,
    against about 1 ms per point for one WFG hypervolume each.
    """
    front = np.asarray(front, dtype=float)
    points = np.asarray(points, dtype=float)
    ref = np.asarray(ref, dtype=float)
    front = front[np.all(front < ref, axis=1)]
    if len(points) == 0:
        return np.zeros(0)
    low = np.minimum(points.min(axis=0), front.min(axis=0) if len(front) else ref)
    axes = [np.unique(np.r_[low[k], front[:, k], ref[k]]) for k in range(3)]
    shape = tuple(len(axis) - 1 for axis in axes)  # cells per axis
    if int(np.prod(shape)) > MAX_GAIN_GRID:
        return None
    # A cell is dominated when some front point is no worse than its lower corner: mark each
    # point's own cell, then carry the marks up every axis.
    dominated = np.zeros(shape, dtype=bool)
    if len(front):
        corner = [np.searchsorted(axes[a], front[:, a]) for a in range(3)]
        dominated[corner[0], corner[1], corner[2]] = True
        for a in range(3):
            np.logical_or.accumulate(dominated, axis=a, out=dominated)
    lengths = [np.diff(axis) for axis in axes]
    volume = lengths[0][:, None, None] * lengths[1][None, :, None] * lengths[2][None, None, :]
    volume[dominated] = 0.0
    suffix = np.zeros(tuple(n + 1 for n in shape))
    for a in range(3):  # suffix sums: cumulative sums of the flipped grid, flipped back
        volume = np.flip(np.cumsum(np.flip(volume, axis=a), axis=a), axis=a)
    suffix[:-1, :-1, :-1] = volume
    inside = np.all(points < ref, axis=1)
    cell = np.zeros((len(points), 3), dtype=int)
    part = np.zeros((len(points), 3))  # the share of its cell's length the box covers, per axis
    for a in range(3):
        column = np.minimum(points[:, a], ref[a])
        index = np.clip(np.searchsorted(axes[a], column, side="right") - 1, 0, shape[a] - 1)
        cell[:, a] = index
        part[:, a] = (axes[a][index + 1] - column) / lengths[a][index]
    gain = np.zeros(len(points))
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                weight = np.ones(len(points))
                for a, d in enumerate((dx, dy, dz)):
                    weight *= part[:, a] if d == 0 else 1.0 - part[:, a]
                gain += weight * suffix[cell[:, 0] + dx, cell[:, 1] + dy, cell[:, 2] + dz]
    return np.where(inside, np.maximum(gain, 0.0), 0.0)


def normalise(points: np.ndarray, ideal: np.ndarray, nadir: np.ndarray) -> np.ndarray:
    """Map minimised ``points`` so that ``ideal`` -> 0 and ``nadir`` -> 1 per objective.

    A zero range (one distinct value) maps that objective to 0, so it adds a constant factor
    rather than a division by zero.
    """
    span = np.asarray(nadir, dtype=float) - np.asarray(ideal, dtype=float)
    span = np.where(span > 0, span, 1.0)
    return (np.asarray(points, dtype=float) - ideal) / span


def search_reference(points: np.ndarray) -> np.ndarray:
    """Reference point for a running search's ``hypervolume`` metric (values minimised).

    Rule: per objective, the worst value seen so far plus 10% of the range seen so far, or of
    1% of the largest magnitude seen when the range is narrower (``reference_of``). The worst
    value can only get worse, the range only wider and the largest magnitude only larger as
    trials finish, so the reference only moves outward and the logged curve never falls: it
    rises when the front improves and when the search widens the explored range.
    """
    points = np.asarray(points, dtype=float)
    return reference_of(points.min(axis=0), points.max(axis=0))


def reference_of(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``search_reference`` from the lowest and highest value seen per objective. The floor on
    the margin keeps an objective every trial ties on (``onnx_agreement`` 1.0 at 32 bits, a
    saturated accuracy) from flattening the volume to 0: with the range alone the reference
    sat on that value and no point was strictly better than it. Such an objective now scales
    the volume by a constant."""
    magnitude = np.maximum(np.abs(low), np.abs(high))
    floor = 0.01 * np.where(magnitude > 0, magnitude, 1.0)
    return high + 0.1 * np.maximum(high - low, floor)


def search_scale(first_point: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Per-objective divisors making the search's hypervolume unit-free and readable.

    Accuracies are fractions already (scale 1); any other metric is divided by the absolute
    value of the first feasible trial's value (1 when that is 0). Constant per search, so it
    keeps :func:`search_reference`'s never-falling curve.
    """
    scale = np.ones(len(names))
    for k, name in enumerate(names):
        if not name.endswith("accuracy") and abs(first_point[k]) > 0:
            scale[k] = abs(first_point[k])
    return scale


class HypervolumeHistory:
    """The running hypervolume of the feasible finished trials, one value per ended trial.

    Reference rule (:func:`search_reference`, :func:`search_scale`): objectives minimised,
    divided by a fixed per-search scale (1 for accuracies, else the first feasible trial's
    value), reference = worst value seen + 10% of the range seen (with a floor); so the curve
    never falls.

    Kept incrementally: the volume of all points is the volume of their front
    (:class:`RunningFront`) under the same reference, and the reference needs only the lowest
    and highest value seen per objective. A trial off the front that widens neither leaves the
    value as it was; any other is one hypervolume of the front. Recomputing over every point
    after each trial took 50 to 65 ms at 1,200 trials, growing with the search
    (``bench/driver_front.py``).
    """

    def __init__(self, objectives: dict[str, str]) -> None:
        self.names = list(objectives)
        self.modes = list(objectives.values())
        self.front = RunningFront(len(self.names))
        self.scale: Any = None
        self.low: Any = None
        self.high: Any = None
        self.value = 0.0
        self.n_ended = 0

    def add(self, result: dict | None) -> float:
        """Count one ended trial (``result`` None when it is not a feasible finished one)."""
        self.n_ended += 1
        if result is None or not all(is_number(result.get(m)) for m in self.names):
            return self.value
        minimised = to_minimise(np.array([[float(result[m]) for m in self.names]]), self.modes)
        if self.scale is None:
            self.scale = search_scale(minimised[0], self.names)
        point = minimised[0] / self.scale
        if self.low is None:
            self.low, self.high = point.copy(), point.copy()
        low, high = np.minimum(self.low, point), np.maximum(self.high, point)
        widened = not (np.array_equal(low, self.low) and np.array_equal(high, self.high))
        self.low, self.high = low, high
        on_front = self.front.add(None, point)  # no key: the volume alone is wanted
        if on_front or widened:
            self.value = hypervolume(self.front.values, reference_of(low, high))
        return self.value


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
