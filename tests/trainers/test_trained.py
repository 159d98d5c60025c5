"""Train-phase reuse: a trial that starts from another's trained state ends bit-identical to
one that trains again, and only trials whose train phase is the same share a state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from nascomp.search.experiment import load_experiment, trial_constants
from nascomp.trainers.checkpoint import STATE_FORMAT
from nascomp.trainers.config import TrialConfig
from nascomp.trainers.teacher import TeacherJob, load_or_train_teacher
from nascomp.trainers.trained import REPLAYED_KEY, TrainedStore, trained_key
from nascomp.trainers.trial import TrialOutcome, run_trial
from tests.trainers.configs import SMALL_CNN, fast

UNSTRUCTURED = {
    "prune.method": "unstructured",
    "prune.ratio": 0.6,
    "prune.importance": "l1",
    "prune.scope": "global",
}
STRUCTURED = {
    "prune.method": "structured",
    "prune.ratio": 0.4,
    "prune.importance": "l1",
    "prune.scope": "layer",
}
# Timings differ between any two runs; everything else must be equal to the bit.
TIMINGS = {"train_seconds", "latency_ms", "latency_batch_ms", "reused_epochs"}


def config(**sampled: Any) -> dict[str, Any]:
    constants = trial_constants(load_experiment(None, fast(2)))
    return {**constants, **SMALL_CNN, "distill.enabled": False, **sampled}


def run(flat: dict[str, Any], store: TrainedStore | None = None, **kw: Any) -> tuple:
    reports: list[dict] = []
    outcome = run_trial(flat, report=reports.append, trained=store, **kw)
    assert outcome.status == "ok", outcome.reason
    return outcome, reports


def _figures(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != REPLAYED_KEY}


def assert_same_trial(a: tuple[TrialOutcome, list], b: tuple[TrialOutcome, list]) -> None:
    (outcome_a, reports_a), (outcome_b, reports_b) = a, b
    # every epoch's loss, accuracies and sizes (a reused phase's epochs say they are replayed)
    assert [_figures(r) for r in reports_a] == [_figures(r) for r in reports_b]
    assert {k: v for k, v in outcome_a.metrics.items() if k not in TIMINGS} == {
        k: v for k, v in outcome_b.metrics.items() if k not in TIMINGS
    }
    state_a, state_b = outcome_a.model.state_dict(), outcome_b.model.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name
    assert outcome_a.onnx == outcome_b.onnx


def test_key_ignores_the_compressors_and_nothing_else() -> None:
    base = TrialConfig.from_flat(config())
    compressed = TrialConfig.from_flat(
        config(**STRUCTURED, **{"quant.bits": 4, "train.finetune_lr_scale": 0.5})
    )
    assert trained_key(base) == trained_key(compressed)
    for change in (
        {"arch.base_channels": 16},
        {"seed": 1},
        {"train.lr": 0.01},
        {"train.epochs": 3},
        {"distill.enabled": True},
        {"data.max_train_samples": 500},
    ):
        assert trained_key(TrialConfig.from_flat(config(**change))) != trained_key(base), change


def test_a_reused_start_ends_exactly_as_training_again(tmp_path: Path) -> None:
    store = TrainedStore(tmp_path)
    first, _ = run(config(**STRUCTURED, **{"quant.bits": 8}), store)
    assert first.metrics["reused_epochs"] == 0.0 and "trained_from" not in first.info
    assert len(list(tmp_path.glob("*.pt"))) == 1

    other = config(**UNSTRUCTURED, **{"quant.bits": 4})
    reused = run(other, store)
    assert reused[0].metrics["reused_epochs"] == 2.0
    assert reused[0].info["trained_from"] == trained_key(TrialConfig.from_flat(other))
    assert [r["phase"] for r in reused[1]] == ["train", "train", "prune", "quant"]
    assert [REPLAYED_KEY in r for r in reused[1]] == [True, True, False, False]
    again = run(other)
    assert_same_trial(reused, again)
    assert len(list(tmp_path.glob("*.pt"))) == 1  # nothing new to keep
    # the reused training's seconds count: what the model cost, not what this trial spent
    phase = store.load(TrialConfig.from_flat(other))
    assert phase is not None and 0 < phase.state["train_seconds"] < first.metrics["train_seconds"]
    assert reused[0].metrics["train_seconds"] > phase.state["train_seconds"]


def test_distilled_trials_with_a_feature_hint_reuse_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NASCOMP_CACHE", str(tmp_path / "cache"))
    distilled = {
        "distill.enabled": True,
        "distill.temperature": 3.0,
        "distill.alpha": 0.7,
        "distill.features": True,
    }
    flat = config(**distilled)
    teacher, _ = load_or_train_teacher(TeacherJob.of_trial(TrialConfig.from_flat(flat)))
    store = TrainedStore(tmp_path / "trained")
    run(flat, store, teacher_state=teacher)
    other = config(**distilled, **UNSTRUCTURED, **{"quant.bits": 8})
    reused = run(other, store, teacher_state=teacher)
    assert reused[0].metrics["reused_epochs"] == 2.0
    assert_same_trial(reused, run(other, teacher_state=teacher))
    # A different temperature is a different train phase: no reuse.
    warmer = {**other, "distill.temperature": 5.0}
    assert run(warmer, store, teacher_state=teacher)[0].metrics["reused_epochs"] == 0.0


def test_a_reused_trial_checkpoints_its_own_resumable_state(tmp_path: Path) -> None:
    store = TrainedStore(tmp_path)
    run(config(), store)
    other = config(**UNSTRUCTURED, **{"quant.bits": 4})
    states: list[tuple[dict, dict]] = []
    outcome = run_trial(other, trained=store, checkpoint=lambda m, s: states.append((m, s())))
    assert [m["epoch"] for m, _ in states] == [1, 2, 3, 4]
    # The replayed epochs hand on the state after the phase, as this trial's own.
    _, after_training = states[1]
    resumed = run_trial(other, resume=after_training)
    assert resumed.metrics["val_accuracy"] == outcome.metrics["val_accuracy"]
    assert resumed.metrics["size_bytes"] == outcome.metrics["size_bytes"]


def test_an_unreadable_entry_trains_again(tmp_path: Path) -> None:
    store = TrainedStore(tmp_path)
    flat = config(**{"quant.bits": 8})
    store.path(trained_key(TrialConfig.from_flat(flat))).write_bytes(b"not a state")
    outcome, reports = run(flat, store)
    assert outcome.metrics["reused_epochs"] == 0.0
    assert [r["epoch"] for r in reports] == [1, 2, 3]
    assert store.load(TrialConfig.from_flat(flat)) is not None  # mended


def test_a_store_that_cannot_be_written_costs_only_the_reuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the store's folder should be")
    outcome, _ = run(config(), TrainedStore(blocked / "trained"))
    assert outcome.metrics["reused_epochs"] == 0.0
    assert "trained student not kept" in capsys.readouterr().err


def test_an_entry_that_reads_is_never_replaced(tmp_path: Path) -> None:
    """Two trials that trained the same phase at once: the second's save replaced the first's
    file (same weights, other epoch seconds), whose SHA-256 an inheriting child had taken
    (a helper's sweep): the child, and its reproduce, refused the changed file."""
    store = TrainedStore(tmp_path)
    trial = TrialConfig.from_flat(config())
    path = store.path(trained_key(trial))
    state = {"format": STATE_FORMAT, "w": torch.ones(2)}
    epochs = [{"epoch": e + 1, "train_seconds": 1.0} for e in range(trial.train.epochs)]
    store.save(trial, state, epochs)
    first = path.read_bytes()
    store.save(trial, state, [{**e, "train_seconds": 2.0} for e in epochs])
    assert path.read_bytes() == first
    kept = store.load(trial)
    assert kept is not None and kept.epochs == epochs
    # One that does not read (damaged, or of other epochs) is mended.
    path.write_bytes(b"damaged")
    store.save(trial, state, epochs)
    assert store.load(trial) is not None
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no partial file left
