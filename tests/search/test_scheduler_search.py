"""mo_asha on a real (tiny) search: the front holds only fully trained trials, stopped trials
reach Optuna as PRUNED (with what they had reached) and MLflow as pruned, and the search
spends fewer epochs."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from nascomp.search.driver import run_search
from nascomp.search.samplers._common import STOPPED_ATTR
from tests.search.conftest import tiny_experiment

pytestmark = pytest.mark.e2e
EPOCHS = 4


def test_mo_asha_prunes_and_front_is_fully_trained(workdir: Path) -> None:
    experiment = tiny_experiment(
        workdir,
        "search.trials=8",
        f"train.epochs={EPOCHS}",
        # Training only, so every trial's full length is EPOCHS and rungs (1, 2) compare
        # trials in the same phase.
        "space.prune.method=none",
        "space.quant.bits=32",
        "space.distill.enabled=false",
        "objectives={val_accuracy: max, size_bytes: min}",
        "search.scheduler=mo_asha",
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
