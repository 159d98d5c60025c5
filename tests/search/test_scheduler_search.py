"""mo_asha on a real (tiny) search: the front holds only fully trained trials, stopped trials
reach Optuna as PRUNED (with what they had reached) and MLflow as pruned, and the search
spends fewer epochs; with weight inheritance, the inheriting trials are judged at rungs of their
own."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from nascomp.search.driver import run_search
from nascomp.search.samplers._common import STOPPED_ATTR
from nascomp.search.samplers.inherit import INHERITED_ATTR
from tests.search.conftest import tiny_experiment

pytestmark = pytest.mark.e2e
EPOCHS = 4
# mo_asha on train epochs 1 and 2 of 4, ranking accuracy and the predicted final size.
RUNGS = [
    f"train.epochs={EPOCHS}",
    "space.distill.enabled=false",
    "objectives={val_accuracy: max, size_bytes: min}",
    "search.scheduler=mo_asha",
]


def test_mo_asha_prunes_and_front_is_fully_trained(workdir: Path) -> None:
    experiment = tiny_experiment(
        workdir,
        "search.trials=8",
        *RUNGS,
        # Training only, so every trial's full length is EPOCHS and rungs (1, 2) compare
        # trials in the same phase.
        "space.prune.method=none",
        "space.quant.bits=32",
    )
    lines: list[str] = []
    summary = run_search(experiment, echo=lines.append)
    # Sized in trials, the search says that the epochs saved buy no more trials.
    assert any(line.startswith("note: stopped trials count in search.trials (8)") for line in lines)

    pruned = [t for t in summary.trials if t.status == "pruned"]
    finished = [t for t in summary.trials if t.status == "ok"]
    assert pruned and finished and len(pruned) + len(finished) == 8
    # Optuna heard "pruned", never "complete with truncated values".
    study = summary.searcher.study
    assert len(study.get_trials(states=[TrialState.PRUNED])) == len(pruned)
    # Each keeps what its rung saw, for pls's model: its accuracy then and its final size
    # (the study's order), at a quarter or half of its training (rungs at epochs 1 and 2 of 4).
    for trial in study.get_trials(states=[TrialState.PRUNED]):
        reached = trial.user_attrs[STOPPED_ATTR]
        assert reached["fidelity"] in (1 / EPOCHS, 2 / EPOCHS)
        accuracy, size = reached["values"]
        assert 0.0 <= accuracy <= 1.0 and size > 0
    assert len(study.get_trials(states=[TrialState.COMPLETE])) == len(finished)
    # The front holds fully trained trials only.
    assert summary.front
    assert all(t.status == "ok" and t.metrics["epochs"] == EPOCHS for t in summary.front)
    # Fewer epochs than the same trials run to the end (what FIFO would spend on them).
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    epochs = {t.run_id: _epochs_run(client, t.run_id) for t in summary.trials}
    assert sum(epochs.values()) < EPOCHS * len(summary.trials)
    assert all(epochs[t.run_id] < EPOCHS for t in pruned)
    assert all(epochs[t.run_id] == EPOCHS for t in finished)
    assert all(client.get_run(t.run_id).data.tags["nascomp.status"] == "pruned" for t in pruned)


def _epochs_run(client: MlflowClient, run_id: str) -> int:
    # The training loss is reported once per epoch, at step = epoch.
    return max(m.step for m in client.get_metric_history(run_id, "loss"))


def test_inheriting_trials_have_rungs_of_their_own(workdir: Path) -> None:
    """mo_asha with search.inherit_epochs 2 of 4, as a user runs it: moves that inherit train 2
    epochs and can be stopped only at their own rung (epoch 1 of 2), the others at epochs 1
    and 2 of 4; the front holds trials that trained their whole length, inherited ones too."""
    experiment = tiny_experiment(workdir, "search.trials=24", *RUNGS, "search.inherit_epochs=2")
    lines: list[str] = []
    summary = run_search(experiment, echo=lines.append)
    assert "mo_asha: trials that inherit weights train 2 epochs, rungs at [1]" in lines
    study = summary.searcher.study
    inherited = [t for t in study.trials if t.user_attrs.get(INHERITED_ATTR)]
    assert inherited, "no move inherited its parent's weights"
    for trial in study.get_trials(states=[TrialState.PRUNED]):
        fidelity = trial.user_attrs[STOPPED_ATTR]["fidelity"]
        if trial.user_attrs.get(INHERITED_ATTR):
            assert fidelity == 1 / 2  # epoch 1 of its 2
        else:
            assert fidelity in (1 / EPOCHS, 2 / EPOCHS)
    assert summary.front and all(t.status == "ok" for t in summary.front)
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    for trial in summary.trials:
        length = int(trial.params["train.epochs"])
        assert length in (2, EPOCHS)
        ran = _epochs_run(client, trial.run_id)
        # Every epoch, pruning's and QAT's too, reports the loss: a finished trial ran at least
        # its training, a stopped one at most to its last rung (half its length here).
        assert ran >= length if trial.status == "ok" else ran <= length // 2, trial.params
    # A front model that inherited, exported once the result folder's weights are gone (a
    # clean-up, another machine): the run's files hold its model, the start is not read.
    from nascomp.search.export_run import export_trial
    from nascomp.search.tracking.store import Tracker

    started = [
        t
        for t in summary.trials
        if t.status == "ok" and t.params.get("train.init") not in (None, "", "None")
    ]
    assert started, "no inheriting trial ended ok"
    (summary.folder / "trained").rename(workdir / "trained-elsewhere")
    tracker = Tracker(f"sqlite:///{workdir / 'mlflow.db'}", "nascomp")
    notes: list[str] = []
    done = export_trial(tracker, started[0].run_id, workdir / "export", echo=notes.append)
    assert (workdir / "export" / "model.onnx").is_file()
    assert done.differing() == [] and "val_accuracy" in done.evaluated
    from nascomp.search.export import load_exported

    assert isinstance(load_exported(workdir / "export"), torch.nn.Module)  # the folder alone
    assert any("which is gone: the export does not need it" in note for note in notes), notes
