"""search.reuse_training in a real search: trials that only compress an already trained
architecture otherwise start from it, say so, and reproduce exactly from scratch."""

from __future__ import annotations

from pathlib import Path

from nascomp.search.driver import run_search
from nascomp.search.reproduce import reproduce
from nascomp.search.tracking.store import Tracker
from nascomp.trainers.trained import TRAINED_DIR
from tests.search.conftest import tiny_experiment

# One architecture, no distillation: every trial's train phase is the same, only the
# compression differs, so all trials after the first find the trained student.
ONE_ARCH = [
    "search.trials=3",
    "search.concurrent=1",
    "search.sampler=random",
    "space.arch.n_stages=1",
    "space.arch.blocks_per_stage=1",
    "space.arch.base_channels=8",
    "space.arch.kernel_size=3",
    "space.arch.block=plain",
    "space.distill.enabled=false",
    "space.prune.method=unstructured",
    "space.quant.bits=[4, 8]",
]
# Timings differ between any two runs; the rest of a reproduction must be equal.
TIMINGS = {"train_seconds", "latency_ms", "latency_batch_ms", "reused_epochs"}


def test_trials_start_from_the_trained_student_and_reproduce_exactly(workdir: Path) -> None:
    experiment = tiny_experiment(workdir, *ONE_ARCH)
    summary = run_search(experiment, echo=lambda _: None)

    # The first trial trained the student; the two after it started from it.
    trials = sorted(summary.trials, key=lambda t: t.metrics["reused_epochs"])
    assert [t.status for t in trials] == ["ok"] * 3
    assert [t.metrics["reused_epochs"] for t in trials] == [0.0, 2.0, 2.0]
    assert "nascomp.trained_from" not in trials[0].tags
    assert trials[1].tags["nascomp.trained_from"] == trials[2].tags["nascomp.trained_from"]
    assert len(list((summary.folder / TRAINED_DIR).glob("*.pt"))) == 1

    tracker = Tracker(experiment.tracking.uri, experiment.tracking.experiment)
    reproduction = reproduce(tracker, trials[2].run_id)
    again = reproduction.outcome.metrics
    assert again.get("reused_epochs") is None  # reproduce trains from scratch
    assert reproduction.reuse_note() == (
        "the search reused 2 epochs an earlier trial had trained, bit for bit: its "
        "train_seconds count them as that trial measured them; this run trained them again"
    )
    assert reproduction.differing_accuracies() == []
    # A run logged before a metric existed: no difference to warn of; a changed one is.
    del reproduction.source.metrics["val_balanced_accuracy"]
    reproduction.source.metrics["test_accuracy"] += 0.5
    assert reproduction.differing_accuracies() == ["test_accuracy"]
    assert reproduce(tracker, trials[0].run_id).reuse_note() == ""  # it trained them itself
    reproduction.source.metrics["reused_epochs"] = 1.0  # one epoch is one epoch, not "1 epochs"
    assert reproduction.reuse_note().startswith("the search reused 1 epoch an earlier trial ")
    searched = trials[2].metrics
    for name, value in again.items():
        if name not in TIMINGS:
            assert searched[name] == value, name


def test_reuse_training_off_trains_every_trial(workdir: Path) -> None:
    experiment = tiny_experiment(
        workdir, *ONE_ARCH, "search.trials=2", "search.reuse_training=false"
    )
    summary = run_search(experiment, echo=lambda _: None)
    assert all("reused_epochs" not in t.metrics for t in summary.trials)
    assert not (summary.folder / TRAINED_DIR).exists()
