"""Tune's experiment snapshot: every second while it is cheap, at most 5% of the driver's time
once it is not. Taken every second whatever its size, a 1,276-trial search's driver wrote
56 GB of 49 MB snapshots, and its CPU per trial rose from 0.1 to 0.8 s (a soak test)."""

from __future__ import annotations

import pytest
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


def test_no_result_analysis_within_the_block_and_ray_still_builds_it_there() -> None:
    """Tune's result analysis (every trial's result.json read into pandas: 5.5 s on restore and
    2.0 s at the end of a 1,276-trial search) is skipped while the driver restores and fits,
    and is Tune's own again after. The hooks are where this Ray calls them: a Ray that moved
    them would bring the cost back silently, so this fails instead."""
    import inspect

    from ray.tune.analysis.experiment_analysis import ExperimentAnalysis
    from ray.tune.impl import tuner_internal

    from nascomp.search.compat.ray import without_result_analysis

    restore = inspect.getsource(tuner_internal.TunerInternal._restore_from_path_or_uri)
    assert "ExperimentAnalysis(" in restore and "except Exception" in restore
    assert "self._fetch_trial_dataframes()" in inspect.getsource(ExperimentAnalysis.__init__)
    frames = ExperimentAnalysis._fetch_trial_dataframes
    with without_result_analysis():
        with pytest.raises(RuntimeError, match="no result analysis"):
            tuner_internal.ExperimentAnalysis(experiment_checkpoint_path="/nowhere")
        assert ExperimentAnalysis._fetch_trial_dataframes(None) == {}
    assert tuner_internal.ExperimentAnalysis is ExperimentAnalysis
    assert ExperimentAnalysis._fetch_trial_dataframes is frames
