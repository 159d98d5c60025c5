"""The Ray Tune function trainables: a trial's outcome, told to Tune with tune.report.

``trial_fn`` checkpoints every epoch (the trial's full state, ``trainers.checkpoint``), so a
trial whose worker dies resumes where it was. Its last report carries a final checkpoint with
the result and the compressed model: the MLflow callback logs that model as the run's
artifacts, and a trial restarted after it ended reports the same result again instead of
training twice.
"""

from __future__ import annotations

import json
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from search.export import write_artifact
from search.searcher import INFO_PREFIX, STATUS_KEY
from trainers.checkpoint import load_state, save_state
from trainers.config import TrialConfig
from trainers.data import DataNotFoundError, check_data_root
from trainers.nb201_lookup import run_lookup_trial
from trainers.trial import TrialOutcome, run_trial

STATE_FILE = "trial_state.pt"  # an epoch checkpoint: the trial's state after that epoch
FINAL_FILE = "final.json"  # the final checkpoint: the last report, and the model's artifacts
STATUS_FAILED = "failed"
# Failures of the trial itself, not of its worker: retrying would fail the same way.
TRIAL_FAILURES: tuple[type[BaseException], ...] = (
    FloatingPointError,
    torch.OutOfMemoryError,
    MemoryError,
)


def trial_fn(config: dict[str, Any], teacher_state: dict | None = None) -> None:
    """``trial: train``: run_trial, checkpointing every epoch, then the final metrics."""
    resume, final = _restored()
    if final is not None:
        tune.report(final, checkpoint=tune.get_checkpoint())
        return
    outcome = guarded(
        lambda: run_trial(
            config, teacher_state=teacher_state, checkpoint=_report_epoch, resume=resume
        ),
        config,
    )
    _report_final(config, outcome)


def guarded(run: Callable[[], TrialOutcome], config: dict[str, Any]) -> TrialOutcome:
    """``run()``, with the trial's own failures (NaN loss, out of memory) as a failed outcome
    with the reason, and a data root missing on this node as an error naming the node."""
    try:
        # The driver checked the data root on its own node; this may be another one.
        check_data_root(config["data.name"], config.get("data.root"))
        return run()
    except DataNotFoundError as exc:
        # Fails the attempt, so Tune may retry it on another node; the message says where.
        raise DataNotFoundError(f"on node {node_name()}: {exc}") from None
    except TRIAL_FAILURES as exc:
        return TrialOutcome(status=STATUS_FAILED, reason=f"{type(exc).__name__}: {exc}")


def lookup_trial_fn(config: dict[str, Any]) -> None:
    """``trial: nb201_lookup``: one report, the final one."""
    tune.report(_final(run_lookup_trial(config)))


def _restored() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(epoch state to resume from, final result already reached) of a restarted trial.

    Tune hands back the checkpoint its last experiment snapshot knew; a driver killed between
    snapshots may have missed newer ones. Those are in the trial's folder too, so the newest
    is taken: a trial that had ended reports its result again, one that was training goes on
    from its last epoch.
    """
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None, None
    folders = [Path(checkpoint.path)]
    if Path(checkpoint.path).is_dir():  # storage on this node's file system
        folders += sorted(Path(checkpoint.path).parent.glob("checkpoint_*"))
    finals = [folder / FINAL_FILE for folder in folders if (folder / FINAL_FILE).is_file()]
    if finals:
        return None, json.loads(finals[0].read_text())
    states = [folder / STATE_FILE for folder in folders if (folder / STATE_FILE).is_file()]
    if not states:
        with checkpoint.as_directory() as folder:  # remote storage: the snapshot's one
            return load_state(Path(folder) / STATE_FILE), None
    return max((load_state(path) for path in states), key=lambda state: state["epoch"]), None


def _report_epoch(metrics: dict[str, Any], state: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        save_state(Path(folder) / STATE_FILE, state)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def _report_final(config: dict[str, Any], outcome: TrialOutcome) -> None:
    final = _final(outcome)
    with tempfile.TemporaryDirectory() as folder:
        if outcome.model is not None:
            data = TrialConfig.from_flat(dict(config)).data.load()  # cached in this process
            write_artifact(outcome.model.cpu(), data.train_x[:1].cpu(), config, Path(folder))
        (Path(folder) / FINAL_FILE).write_text(json.dumps(final))
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(folder))


def _final(outcome: TrialOutcome) -> dict[str, Any]:
    final: dict[str, Any] = {**outcome.metrics, STATUS_KEY: outcome.status}
    if outcome.reason:
        final["nascomp_reason"] = outcome.reason
    final.update({f"{INFO_PREFIX}{key}": value for key, value in outcome.info.items()})
    final["nascomp_node_id"] = ray.get_runtime_context().get_node_id()
    return final


def node_name(get_ip: Callable[[], str] = ray.util.get_node_ip_address) -> str:
    """This worker's node as a person finds it: address, host name, Ray node id."""
    node_id = ray.get_runtime_context().get_node_id() or "?"
    return f"{get_ip()} ({socket.gethostname()}, Ray node {node_id[:12]})"
