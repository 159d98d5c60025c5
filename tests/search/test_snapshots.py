"""Tune's experiment snapshot: every second while it is cheap, at most 5% of the driver's time
once it is not. Taken every second whatever its size, a 1,276-trial search's driver wrote
56 GB of 49 MB snapshots, and its CPU per trial rose from 0.1 to 0.8 s (a soak test)."""

from __future__ import annotations

from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

from nascomp.search.compat.ray import snapshots_every
from nascomp.search.driver import SNAPSHOT_FLOOR_S


def test_the_snapshot_period_starts_at_the_floor_and_grows_with_its_cost() -> None:
    snapshots_every(SNAPSHOT_FLOOR_S)
    auto = _ExperimentCheckpointManager(storage=None, checkpoint_period="auto")
    assert auto._checkpoint_period == 1.0  # Ray's own "auto" starts at 10 s
    auto._update_auto_checkpoint_time(time_taken=0.02)
    assert auto._checkpoint_period == 1.0
    auto._update_auto_checkpoint_time(time_taken=0.5)  # a large snapshot: 5% of the time
    assert auto._checkpoint_period == 9.5
    # a period the user gives (TUNE_GLOBAL_CHECKPOINT_S=3) is theirs
    fixed = _ExperimentCheckpointManager(storage=None, checkpoint_period=3)
    fixed._update_auto_checkpoint_time(time_taken=0.5)
    assert fixed._checkpoint_period == 3.0
