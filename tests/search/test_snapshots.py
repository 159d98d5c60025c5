"""Tune's experiment snapshot: every second while it is cheap, at most 5% of the driver's time
once it is not. Taken every second whatever its size, a 1,276-trial search's driver wrote
56 GB of 49 MB snapshots, and its CPU per trial rose from 0.1 to 0.8 s (a soak test)."""

from __future__ import annotations

import os
import time
from pathlib import Path

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


def test_a_resumed_search_keeps_only_its_own_snapshot(tmp_path: Path) -> None:
    """Each resume left the earlier drivers' snapshot files behind (as large as the snapshot).
    Once the resumed driver's fit returns, the files of earlier names go; nothing goes when
    the newest file is not this driver's (written before it started)."""
    from nascomp.search.compat.ray import drop_earlier_snapshots

    names = [
        f"{kind}-2026-12-05_{stamp}.{suffix}"
        for stamp in ("16-21-28", "16-27-50", "17-02-11")
        for kind, suffix in (
            ("experiment_state", "json"),
            ("searcher-state", "pkl"),
            ("search_gen_state", "json"),
        )
    ]
    for name in names:
        (tmp_path / name).write_text("{}")
    (tmp_path / "trial_0001").mkdir()
    newest = [name for name in names if "17-02-11" in name]
    for name in names:  # the earlier ones written before this driver started
        if name not in newest:
            os.utime(tmp_path / name, (1_000, 1_000))
    assert drop_earlier_snapshots(tmp_path, since=time.time() + 60) == []  # none of them its own
    removed = drop_earlier_snapshots(tmp_path, since=2_000)
    assert sorted(path.name for path in removed) == sorted(set(names) - set(newest))
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([*newest, "trial_0001"])


def test_a_snapshot_cut_short_is_named_before_the_resume_changes_anything(
    tmp_path: Path,
) -> None:
    """Tune logs a snapshot that does not read and restores no trials: the resume started the
    search over, deleted the MLflow runs of its finished trials and the intact earlier
    snapshot (a helper's sweep). Each kind of file is read as Tune picks it, the newest."""
    import json
    import pickle

    from nascomp.search.compat.ray import snapshot_problem

    pickled = pickle.dumps({"counter": 4, "finished": False, "trials": list(range(50))})
    files = {
        "experiment_state-2026-01-01_00-00-00.json": b"{cut",  # older: Tune reads the newest
        "experiment_state-2026-01-02_00-00-00.json": json.dumps({"trials": [1, 2]}).encode(),
        "searcher-state-2026-01-02_00-00-00.pkl": pickled,
        "search_gen_state-2026-01-02_00-00-00.json": pickled,
        "tuner.pkl": pickled,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    assert snapshot_problem(tmp_path) is None
    for name in list(files)[1:]:
        path = tmp_path / name
        path.write_bytes(files[name][:-7])
        problem = snapshot_problem(tmp_path)
        assert problem is not None and problem.startswith(
            f"{path} does not read as Ray Tune's snapshot ("
        ), problem
        path.write_bytes(files[name])
    assert snapshot_problem(tmp_path / "empty") is None  # no snapshot yet: nothing to read
