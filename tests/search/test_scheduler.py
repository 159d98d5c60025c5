"""mo_asha's rule on hand-made rungs: exact continue/stop answers (values minimised)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from ray.tune.schedulers import TrialScheduler

from nascomp.search.tune.scheduler import MultiObjectiveAsha, promotes, rung_epochs

# Front 0: A, B. Front 1: C and N at its ends (infinite crowding), M in its middle. Front 2: F.
A, B = (0.0, 10.0), (10.0, 0.0)
C, M, N = (1.0, 11.0), (5.0, 10.5), (11.0, 1.0)
F = (12.0, 12.0)


def rung(*points: tuple[float, float]) -> np.ndarray:
    return np.array(points, dtype=float)


@pytest.mark.parametrize(
    ("points", "reduction_factor", "expected"),
    [
        ([A], 2.0, True),  # alone at the rung
        ([A, C], 3.0, True),  # dominated, but 2 < eta = 3 trials recorded: too few to judge
        ([A, C], 2.0, False),  # dominated by the one other: the best 1 of 2 is A
        # Non-dominated: goes on although the best 1 of 2 "places" would be the other (the old
        # rule broke the infinite-crowding tie by arrival order and stopped it).
        ([A, B], 2.0, True),
        ([A, A], 2.0, True),  # a copy of a front member is on the front too
        ([A, B, C, M, F, N], 2.0, True),  # keep 3; only A and B are strictly better
        ([A, B, C, N, F, M], 2.0, False),  # keep 3; A, B and both ends C, N are better
        ([A, B, C, M, N, F], 2.0, False),  # the last front
        ([A, B, C, M, N, F], 1.5, False),  # keep 4 of 6; five are better
        ([A, B, C, M, F, N], 3.0, False),  # keep 2 of 6; A and B are better
    ],
)
def test_known_answers(points: list, reduction_factor: float, expected: bool) -> None:
    assert promotes(rung(*points), len(points) - 1, reduction_factor) is expected


def test_rung_epochs() -> None:
    assert rung_epochs(1, 2.0, 4) == [1, 2]
    assert rung_epochs(1, 2.0, 10) == [1, 2, 4, 8]
    assert rung_epochs(2, 3.0, 6) == [2]
    assert rung_epochs(1, 2.0, 1) == []


def _trial(trial_id: str, size: float) -> Any:
    # What the scheduler reads of a Tune trial: its id and its config.
    return SimpleNamespace(trial_id=trial_id, config={"predicted_size": size})


def _scheduler(predict: bool) -> MultiObjectiveAsha:
    return MultiObjectiveAsha(
        {"val_accuracy": "max", "size_bytes": "min"},
        max_epochs=4,
        predict=(lambda config: {"size_bytes": config["predicted_size"]}) if predict else None,
    )


@pytest.mark.parametrize(("predict", "second"), [(False, "CONTINUE"), (True, "STOP")])
def test_rungs_rank_the_predicted_final_size(predict: bool, second: str) -> None:
    """Reported at epoch 1, T2 is smaller (dense sizes 500 vs 1000): a trade-off, both go on.
    Predicted final sizes (100 vs 200: T1 will be compressed harder) make T1 dominate T2."""
    scheduler = _scheduler(predict)
    first = scheduler.on_trial_result(
        None, _trial("t1", 100.0), {"epoch": 1, "val_accuracy": 0.9, "size_bytes": 1000.0}
    )
    decision = scheduler.on_trial_result(
        None, _trial("t2", 200.0), {"epoch": 1, "val_accuracy": 0.8, "size_bytes": 500.0}
    )
    assert first == TrialScheduler.CONTINUE
    assert decision == getattr(TrialScheduler, second)
    assert scheduler.stopped == ({"t2": 1} if second == "STOP" else {})
    if second == "STOP":  # what the rung saw, handed on with the trial's last result
        assert scheduler.reached("t2") == {
            "fidelity": 0.25,
            "values": {"val_accuracy": 0.8, "size_bytes": 200.0},
        }
        trial = _trial("t2", 200.0)
        trial.last_result = {"epoch": 1}
        scheduler.on_trial_complete(None, trial, {})
        assert trial.last_result["nascomp_status"] == "pruned"
        assert trial.last_result["nascomp_stopped_at"] == scheduler.reached("t2")


def test_a_scheduler_pickled_by_an_older_nascomp_still_stops_trials() -> None:
    """It kept the stopped trials as a set, had no max_epochs and one table of rungs: it goes
    on stopping, and says nothing of what its trials reached."""
    old = _scheduler(predict=True)
    state = dict(old.__dict__, stopped={"t0"}, recorded={1: {}, 2: {}})
    for newer in ("max_epochs", "tables", "grace_period"):
        del state[newer]
    restored = MultiObjectiveAsha.__new__(MultiObjectiveAsha)
    restored.__setstate__(state)
    assert restored.reached("t0") is None
    restored.on_trial_result(None, _trial("t1", 100.0), {"epoch": 1, "val_accuracy": 0.9})
    decision = restored.on_trial_result(
        None, _trial("t2", 200.0), {"epoch": 1, "val_accuracy": 0.8}
    )
    assert decision == TrialScheduler.STOP and restored.reached("t2") is None
    trial = _trial("t2", 200.0)
    trial.last_result = {"epoch": 1}
    restored.on_trial_complete(None, trial, {})
    assert trial.last_result["nascomp_status"] == "pruned"
    assert "nascomp_stopped_at" not in trial.last_result


def test_off_rung_and_final_results_always_continue() -> None:
    scheduler = _scheduler(predict=False)
    scheduler.on_trial_result(None, _trial("t1", 0), {"epoch": 1, "val_accuracy": 0.9})
    worse = {"val_accuracy": 0.1}
    assert scheduler.on_trial_result(None, _trial("t2", 0), {"epoch": 3, **worse}) == "CONTINUE"
    final = {"epoch": 1, "nascomp_status": "ok", **worse}
    assert scheduler.on_trial_result(None, _trial("t3", 0), final) == "CONTINUE"


def test_a_reused_students_replayed_epochs_are_not_judged_again() -> None:
    """A trial that reuses a trained student replays its source's epochs: judged on them, it
    was stopped (its training already paid for) and the rung counted that phase twice."""
    scheduler = _scheduler(predict=False)
    scheduler.on_trial_result(None, _trial("source", 0), {"epoch": 1, "val_accuracy": 0.9})
    replay = {"epoch": 1, "val_accuracy": 0.1, "nascomp_replayed": 1}
    assert scheduler.on_trial_result(None, _trial("reuser", 0), replay) == "CONTINUE"
    assert set(scheduler.recorded[1]) == {"source"} and scheduler.stopped == {}
    replay.pop("nascomp_replayed")  # the same figures trained: judged, and stopped
    assert scheduler.on_trial_result(None, _trial("trained", 0), replay) == "STOP"


def _result(epoch: int, accuracy: float) -> dict[str, Any]:
    return {"epoch": epoch, "val_accuracy": accuracy}


def test_trials_that_train_fewer_epochs_have_rungs_of_their_own() -> None:
    """Inheriting trials (train.epochs 2 of 4) are judged only among themselves, at rung 1:
    started from trained weights, they would otherwise stop the trials trained from scratch."""
    scheduler = _scheduler(predict=True)

    def inherited(trial_id: str, size: float) -> Any:
        return SimpleNamespace(
            trial_id=trial_id, config={"predicted_size": size, "train.epochs": 2}
        )

    assert scheduler.rungs_for(2) == {1: {}}
    assert scheduler.on_trial_result(None, _trial("s1", 100.0), _result(1, 0.3)) == "CONTINUE"
    # Far better than both scratch trials at epoch 1 (it had trained before).
    assert scheduler.on_trial_result(None, inherited("i1", 50.0), _result(1, 0.9)) == "CONTINUE"
    # Among the scratch trials a trade-off with s1, so it goes on; with i1 at its rung it
    # would be on the second front with s1, with one trial above it of the 1 kept of 3: stopped.
    assert scheduler.on_trial_result(None, _trial("s2", 90.0), _result(1, 0.25)) == "CONTINUE"
    assert set(scheduler.recorded[1]) == {"s1", "s2"}
    # Dominated by i1 among the inheriting trials: stopped at their rung 1.
    assert scheduler.on_trial_result(None, inherited("i2", 60.0), _result(1, 0.8)) == "STOP"
    # Epoch 2 is a rung of the 4-epoch trials only; i1's epoch 2 is its last.
    assert scheduler.on_trial_result(None, inherited("i1", 50.0), _result(2, 0.1)) == "CONTINUE"
    assert set(scheduler.recorded[2]) == set()
    assert scheduler.reached("i2") == {
        "fidelity": 0.5,  # one epoch of its two
        "values": {"val_accuracy": 0.8, "size_bytes": 60.0},
    }
    trial = inherited("i2", 60.0)
    trial.last_result = {"epoch": 1}
    scheduler.on_trial_complete(None, trial, {})
    assert trial.last_result["nascomp_reason"] == "stopped at epoch 1 by mo_asha (rungs [1])"


def test_a_trial_as_long_as_max_epochs_or_longer_shares_the_main_rungs() -> None:
    scheduler = _scheduler(predict=False)
    assert scheduler.length_of({"train.epochs": 4}) == 4
    assert scheduler.length_of({"train.epochs": 6}) == 4  # its rungs below 4 are the same
    assert scheduler.length_of({}) == 4
    assert scheduler.length_of({"train.epochs": 1}) == 1
    assert scheduler.rungs_for(1) == {}  # too short for any rung: never stopped
