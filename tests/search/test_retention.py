"""Checkpoint retention (search/tune/retention.py): what a snapshot named survives the next one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nascomp.search.tune.retention import CheckpointRetention, checkpoint_index, delete_older


@dataclass
class _Checkpoint:
    path: str


@dataclass
class _Trial:
    trial_id: str
    checkpoint: _Checkpoint | None
    status: str = "RUNNING"


def _report(folder: Path, index: int) -> _Checkpoint:
    path = folder / f"checkpoint_{index:06d}"
    path.mkdir(parents=True)
    (path / "trial_state.pt").write_bytes(b"x")
    return _Checkpoint(str(path))


def _left(folder: Path) -> list[int]:
    return sorted(i for p in folder.iterdir() if (i := checkpoint_index(p)) is not None)


def test_a_snapshot_never_loses_the_checkpoint_the_previous_one_named(tmp_path: Path) -> None:
    folder = tmp_path / "trial_a"
    retention = CheckpointRetention()
    trial = _Trial("a", _report(folder, 1))
    retention.on_trial_start(0, [], trial)
    assert retention.get_state() is None  # snapshot 1 names checkpoint 1
    for index in (2, 3, 4):
        trial.checkpoint = _report(folder, index)
    retention.get_state()  # snapshot 2 names 4
    trial.checkpoint = _report(folder, 5)
    retention.get_state()  # snapshot 3 names 5; what snapshot 1 named (1) must survive it
    assert _left(folder) == [1, 2, 3, 4, 5]
    trial.checkpoint = _report(folder, 6)
    retention.get_state()  # snapshot 4: below what snapshot 2 named (4) goes
    assert _left(folder) == [4, 5, 6]
    trial.status = "TERMINATED"
    retention.get_state()
    retention.get_state()
    assert _left(folder) == [6]
    assert "a" not in retention.trials  # ended and cleaned: no longer visited


def test_no_checkpoint_yet_and_foreign_folders_are_left_alone(tmp_path: Path) -> None:
    retention = CheckpointRetention()
    retention.on_trial_start(0, [], _Trial("b", None))
    assert retention.get_state() is None
    (tmp_path / "checkpoint_000001").mkdir()
    (tmp_path / "checkpoint_tmp").mkdir()
    (tmp_path / "other").mkdir()
    assert delete_older(tmp_path, 2) == [tmp_path / "checkpoint_000001"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_tmp", "other"]
