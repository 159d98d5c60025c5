"""Re-run a logged trial from its exact logged config, compare, log and export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nascomp.search.export import export_model
from nascomp.search.tracking.store import Tracker, TrialRecord
from nascomp.trainers.config import TrialConfig
from nascomp.trainers.teacher import TeacherJob, load_or_train_teacher
from nascomp.trainers.trial import TrialOutcome, run_trial


@dataclass
class Reproduction:
    source: TrialRecord
    outcome: TrialOutcome
    model_uri: str
    exported: dict[str, Path]
    registered: Any = None  # the Model Registry version, with --register

    def comparison(self) -> list[tuple[str, float | None, float | None]]:
        names = [
            m for m in self.outcome.metrics if m in self.source.metrics or m.endswith("accuracy")
        ]
        return [(m, self.source.metrics.get(m), self.outcome.metrics.get(m)) for m in names]


def reproduce(
    tracker: Tracker, run_id: str, export_dir: Path | None = None, register: str | None = None
) -> Reproduction:
    """Re-run trial ``run_id`` from its exact config, log it as a new run (its PyTorch and
    ONNX models), export it to ``export_dir`` and register its ONNX model as ``register``."""
    source = tracker.trial_record(run_id)
    if source.status != "ok":
        raise ValueError(
            f"run {run_id} is not a finished trial (status {source.status!r}); nothing to reproduce"
        )
    flat = tracker.trial_config(source)
    config = TrialConfig.from_flat(flat)
    if config.distill.enabled:
        teacher_state = load_or_train_teacher(TeacherJob.of_trial(config))[0]
    else:
        teacher_state = None
    outcome = run_trial(config, teacher_state=teacher_state)
    if outcome.model is None:
        raise RuntimeError(
            f"run {run_id} did not produce a model ({outcome.status}: {outcome.reason})"
        )
    example = config.data.load(threads=config.threads).test.head(1).to(config.device)
    if register and outcome.onnx is None:
        raise ValueError(f"--register: the model has no ONNX form ({outcome.info.get('onnx')})")
    run_id_again, model_uri = tracker.log_reproduction(
        source, flat, outcome.metrics, outcome.model, example.cpu(), onnx=outcome.onnx
    )
    exported = (
        export_model(outcome.model, example, flat, export_dir, onnx=outcome.onnx)
        if export_dir
        else {}
    )
    registered = None
    if register:
        registered = tracker.register_onnx(run_id_again, register, source)
    return Reproduction(
        source=source,
        outcome=outcome,
        model_uri=model_uri,
        exported=exported,
        registered=registered,
    )
