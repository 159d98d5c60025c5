"""bench/overhead.py's split of a run's wall time at its trials' finishing times, on known
answers: the first round, the steady rounds, the end, and the gap between two runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from overhead import Phases, phases, report


def test_phases_split_at_the_first_round_and_the_last_result() -> None:
    # 2 slots; finishing times out of order: the first round ends at the 2nd result (3.0),
    # the 3 later trials take 8.0 - 3.0 = 5.0 s, i.e. 5.0 * 2 / 3 s per trial and slot.
    run = phases(10.0, [3.0, 2.0, 5.0, 6.0, 8.0], concurrent=2)
    assert run == Phases(first_round=3.0, steady=5.0, end=2.0, per_trial=pytest.approx(10 / 3))
    assert run.wall == pytest.approx(10.0)


def test_phases_with_no_later_trials_is_all_first_round() -> None:
    assert phases(4.0, [1.5, 3.0], concurrent=4) == Phases(3.0, 0.0, 1.0, 0.0)
    assert phases(4.0, [3.5], concurrent=1) == Phases(3.5, 0.0, 0.5, 0.0)


def test_phases_refuses_a_run_without_results() -> None:
    with pytest.raises(ValueError, match="no finished trial"):
        phases(4.0, [], concurrent=2)


def test_report_splits_the_gap_per_pair() -> None:
    ours = [Phases(9.0, 20.0, 1.0, 1.25, 0.9), Phases(11.0, 24.0, 1.0, 1.5, 0.95)]
    plain = [Phases(5.0, 19.0, 1.0, 1.1875, 0.8), Phases(5.0, 20.0, 1.0, 1.25, 0.85)]
    text = report(ours, plain, n_trials=34, concurrent=2)
    # the trials' training alone, per pair: 0.9 - 0.8 and 0.95 - 0.85
    assert "of it, training alone (median train_seconds) 0.100 [0.100, 0.100] (n=2)" in text
    # gaps: first round 4 and 6, steady 1 and 4, end 0 and 0; walls 30/25 and 36/26
    assert "first round 5.000 [4.000, 6.000] (n=2)" in text
    assert "steady      2.500 [1.000, 4.000] (n=2)" in text
    assert "end         0.000 [0.000, 0.000] (n=2)" in text
    ratio = (30 / 25 + 36 / 26) / 2
    assert f"wall-time ratio nascomp / plain: {ratio:.3f} [1.200, {36 / 26:.3f}] (n=2)" in text
    # (30 - 25) * 2 / 34 and (36 - 26) * 2 / 34
    assert f"{(5 * 2 / 34 + 10 * 2 / 34) / 2:.3f} [{10 / 34:.3f}, {20 / 34:.3f}] (n=2)" in text
