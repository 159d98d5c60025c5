"""bench/search_cost.py's arithmetic on known answers: the reference front, the hypervolume a
search has reached by a given CPU-second, and when a mean curve first reaches a target."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from search_cost import Run, hv_at, reference_front, seconds_to_reach


def test_hypervolume_by_cpu_second() -> None:
    # (val_accuracy, size_bytes): a finds the two ends of the union's front, b its middle
    # point, late, after a stopped trial; b's first point is dominated.
    a = Run("a", 0, [10.0, 20.0], [(0.9, 100.0), (0.5, 10.0)], 0, 0)
    b = Run("b", 0, [5.0, 8.0, 30.0], [(0.4, 200.0), None, (0.8, 50.0)], 1, 0)
    reference = reference_front([a, b])
    assert reference.ideal.tolist() == [-0.9, 10.0] and reference.nadir.tolist() == [-0.5, 100.0]
    # Normalised: (0, 1), (1, 0) and (0.25, 4/9); reference point 1.1 per objective.
    corners = 1.1 * 0.1 + 0.1 * 1.1 - 0.1 * 0.1  # the two ends alone
    middle = (1.0 - 0.25) * (1.0 - 4 / 9)  # the box the middle point adds
    assert reference.hypervolume == pytest.approx(corners + middle)
    assert hv_at(a, 9.9, reference) == 0.0
    assert hv_at(a, 10.0, reference) == pytest.approx(1.1 * 0.1 / reference.hypervolume)
    assert hv_at(a, 20.0, reference) == pytest.approx(corners / reference.hypervolume)
    # b's dominated first point lies beyond the nadir: clipped, it adds nothing.
    assert hv_at(b, 8.0, reference) == pytest.approx(0.0)
    assert hv_at(b, 30.0, reference) == pytest.approx(0.85 * (1.1 - 4 / 9) / reference.hypervolume)


def test_seconds_to_reach_the_first_crossing() -> None:
    grid = np.array([1.0, 2.0, 3.0, 4.0])
    assert seconds_to_reach(grid, np.array([0.1, 0.5, 0.7, 0.9]), 0.7) == 3.0
    assert seconds_to_reach(grid, np.array([0.1, 0.5, 0.7, 0.9]), 0.95) is None
