"""Which trial checkpoints to delete, so that a killed driver can always resume.

Tune's own retention (``CheckpointConfig(num_to_keep=1)``) deletes a trial's older checkpoint
as soon as a newer one is reported, while Tune's experiment snapshot, saved every second or
so, may still name the older one: a driver killed in between cannot resume that trial ("could
not recover from checkpoint as it does not exist on storage anymore"). So Tune keeps every
checkpoint, and this callback deletes, at each snapshot, the checkpoints older than those the
snapshot before the previous one named. A snapshot is complete on disk before the next one
starts (and the floor two snapshots back covers one still being copied to storage), so the
checkpoint any snapshot names still exists, and a trial holds at most the checkpoints of the
last few seconds besides it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ray.tune import Callback

_PREFIX = "checkpoint_"


class CheckpointRetention(Callback):
    def __init__(self, keep_snapshots: int = 2) -> None:
        self.trials: dict[str, Any] = {}
        self.keep_snapshots = keep_snapshots
        # trial id -> checkpoint index named by each of the last snapshots, oldest first
        self.named: list[dict[str, int]] = []

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.trials[trial.trial_id] = trial

    def get_state(self) -> dict | None:
        # Tune calls this while it saves each experiment snapshot.
        oldest = self.named[0] if len(self.named) == self.keep_snapshots else {}
        now: dict[str, int] = {}
        for trial_id, trial in list(self.trials.items()):
            folder, latest = latest_checkpoint(trial)
            floor = oldest.get(trial_id)
            if folder is not None and floor is not None:
                delete_older(folder, floor)
            if latest is not None:
                now[trial_id] = latest
            if trial.status in ("TERMINATED", "ERROR") and floor == latest:
                del self.trials[trial_id]  # nothing more will come
        self.named = [*self.named, now][-self.keep_snapshots :]
        return None  # nothing to save: the state is the checkpoints on disk


def checkpoint_index(path: Path) -> int | None:
    name = path.name
    if not name.startswith(_PREFIX) or not name[len(_PREFIX) :].isdigit():
        return None
    return int(name[len(_PREFIX) :])


def latest_checkpoint(trial: Any) -> tuple[Path | None, int | None]:
    """(the trial's folder, the index of its latest checkpoint), on local storage."""
    checkpoint = getattr(trial, "checkpoint", None)
    path = Path(checkpoint.path) if checkpoint is not None else None
    if path is None or not path.is_dir():
        return None, None  # none yet, or remote storage: Tune's keep-all applies
    return path.parent, checkpoint_index(path)


def delete_older(folder: Path, floor: int) -> list[Path]:
    """Delete the trial's checkpoint folders numbered below ``floor``; return them."""
    gone = []
    for path in folder.glob(f"{_PREFIX}*"):
        index = checkpoint_index(path)
        if index is not None and index < floor and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            gone.append(path)
    return sorted(gone)
