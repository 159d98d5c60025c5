"""Re-run a logged trial from its exact logged config, compare, log and export."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from nascomp.compressors.onnx_export import OnnxModule, fp16_onnx
from nascomp.search.about import version
from nascomp.search.epoch_lines import TeacherEpochs, TrialEpochs
from nascomp.search.errors import one_line
from nascomp.search.export import data_recipe, export_model, with_metadata
from nascomp.search.tracking.params import CONFIG_ARTIFACT
from nascomp.search.tracking.store import Tracker, TrialRecord
from nascomp.trainers.config import TrialConfig, describe_trial, planned_epochs
from nascomp.trainers.listing import code_files_digest, code_paths, data_files_digest
from nascomp.trainers.loop import predict_logits, split_accuracy, top1_agreement
from nascomp.trainers.split import Split
from nascomp.trainers.teacher import TeacherJob, load_or_train_teacher
from nascomp.trainers.trial import TrialOutcome, run_trial


def logged_onnx_form(tags: dict[str, str]) -> str:
    """The form of the trial's ONNX file (``onnxruntime int8-qdq``) as its run's tags give it.
    Trials logged before ``nascomp.onnx_form`` was recorded: their ``latency_form`` where
    latency was timed on that file, else "" (not known: a torch-timed trial's latency_form
    names PyTorch's form, not the file's)."""
    if form := tags.get("nascomp.onnx_form"):
        return form
    timed = tags.get("nascomp.latency_form", "")
    return timed if timed.startswith("onnxruntime") else ""


@dataclass
class Reproduction:
    source: TrialRecord
    outcome: TrialOutcome
    model_uri: str
    exported: dict[str, Path]
    registered: Any = None  # the Model Registry version, with --register
    # With --fp16: top-1 agreement of model.fp16.onnx with the evaluated model (validation split)
    fp16_agreement: float | None = None
    # With an export: val_accuracy and test_accuracy of model.onnx in ONNX Runtime
    shipped: dict[str, float] = field(default_factory=dict)
    # Whether the files under data.root differ from what the search read; None: not known
    data_changed: bool | None = None
    data_root: str | None = None
    # The user's builders and factories whose source differs from what the search ran
    code_changed: list[str] = field(default_factory=list)

    def comparison(self) -> list[tuple[str, float | None, float | None]]:
        names = [
            m for m in self.outcome.metrics if m in self.source.metrics or m.endswith("accuracy")
        ]
        return [(m, self.source.metrics.get(m), self.outcome.metrics.get(m)) for m in names]

    def differing_accuracies(self) -> list[str]:
        """The accuracies the reproduction gives otherwise than the run logged them; a metric
        the run predates (nascomp added it later) is none."""
        return [
            name
            for name, logged, again in self.comparison()
            if name.endswith("accuracy") and logged is not None and logged != again
        ]

    def onnx_note(self) -> str:
        """Why ``onnx_bytes`` (and with it the file's agreement and latency) may differ though
        the model repeats: the ONNX file is built again, by this nascomp and its onnx, and a
        newer one builds some forms otherwise (a helper's upgrade sweep: the same int8 trial's
        file 169,539 bytes then, 169,352 now). Names the forms where they differ. Empty where
        the file's size repeats or either is not known."""
        then, now = self.source.metrics.get("onnx_bytes"), self.outcome.metrics.get("onnx_bytes")
        if then is None or now is None or then == now:
            return ""
        was, now = logged_onnx_form(self.source.tags), self.outcome.info.get("onnx_form", "")
        changed = f", now {now} (then {was})" if was and now and was != now else ""
        return (
            f"the ONNX file is built again, by this nascomp{changed}: a file of another size "
            "than the search's, so onnx_bytes, onnx_agreement and an ONNX Runtime latency "
            "compare different files"
        )

    def reuse_note(self) -> str:
        """Why ``train_seconds`` may differ more than timings do: the search started the trial
        from an earlier trial's trained student (``search.reuse_training``), whose seconds, as
        that trial measured them, it counts; a reproduction trains it itself. Empty
        otherwise."""
        reused = self.source.metrics.get("reused_epochs") or 0
        if not reused or self.outcome.metrics.get("reused_epochs"):
            return ""
        return (
            f"the search reused {reused:g} epoch{'' if reused == 1 else 's'} an earlier trial "
            "had trained, bit for bit: "
            "its train_seconds count them as that trial measured them; this run trained them "
            "again"
        )


@dataclass
class LoggedTrial:
    """A finished trial as the search ran it: its run, flat config, and what changed since."""

    source: TrialRecord
    flat: dict[str, Any]
    config: TrialConfig
    # The user's builders and factories whose source differs from what the search ran
    code_changed: list[str]
    # Whether the files under data.root differ from what the search read; None: not known
    data_changed: bool | None


def unfinished_trial(record: TrialRecord, verb: str) -> str | None:
    """Why ``verb`` (reproduce, export) has nothing to rebuild of ``record``, if so."""
    if record.status == "ok":
        return None
    return (
        f"run {record.run_id} is not a finished trial (status {record.status!r}); nothing to {verb}"
    )


def missing_device(run_id: str, device: str) -> str | None:
    """Why trial ``run_id``, trained on ``device``, cannot be reproduced on this machine, if
    so: a GPU trial needs a CUDA GPU here (its config names the device, as the search gave it);
    ``nascomp export`` rebuilds its model on the CPU without training."""
    if not str(device).startswith("cuda") or torch.cuda.is_available():
        return None
    return (
        f"run {run_id} trained on a CUDA GPU (resources.gpus_per_trial) and this machine has "
        f"none: reproduce it where one is, or `nascomp export {run_id} --to DIR` writes its "
        "model without training"
    )


def read_trial(
    tracker: Tracker, run_id: str, verb: str, echo: Callable[[str], Any] | None = None
) -> LoggedTrial:
    """Trial ``run_id``'s record and exact config, for the command ``verb`` (reproduce,
    export) that rebuilds its model; a run that is no finished trial, or whose config names
    code that does not import here, is a one-line ValueError. ``echo`` gets a note when the
    config is rebuilt from the run's rounded params."""
    source = tracker.trial_record(run_id)
    if unfinished := unfinished_trial(source, verb):
        raise ValueError(unfinished)
    logged = tracker.logged_config(source)
    flat = logged if logged is not None else dict(source.params)
    if logged is None and echo is not None:  # it was rebuilt unsaid, floats rounded
        echo(
            f"note: run {run_id} holds no {CONFIG_ARTIFACT} (its artifacts deleted, or logged "
            "before nascomp wrote one): its config is rebuilt from its MLflow params, whose "
            "numbers are rounded (15 significant digits) and types guessed, so what it "
            "rebuilds may differ from the trial"
        )
    checked = flat
    start = flat.get("train.init")
    if verb == "export" and start and not Path(str(start)).expanduser().is_file():
        # The weights the trial started from (a parent's, with inherit_epochs, kept in the
        # result folder) are not read: the run's files hold the model it trained. A cleaned
        # result folder, or another machine, refused the export.
        checked = {**flat, "train.init": None, "train.init_sha256": None}
        if echo is not None:
            echo(
                f"note: run {run_id} started from {start}, which is gone: the export does not "
                "need it (the run's files hold the trained model); `nascomp reproduce` would"
            )
    try:
        config = TrialConfig.from_flat(checked)
    except ValidationError as exc:
        line = one_line(exc)
        if "is not importable" in line:  # the user's module, next to the experiment file
            line += f"; run `nascomp {verb}` where the search ran, or install the module"
        raise ValueError(f"run {run_id}: {line}") from None
    searched_code = tracker.search_code_files(source)
    now_code = code_files_digest(code_paths(flat))
    code_changed = [p for p, sha in now_code.items() if searched_code.get(p, sha) != sha]
    searched = tracker.search_data_files(source)
    now = data_files_digest(config.data.name, config.data.root)
    data_changed = None if searched is None else now != searched
    return LoggedTrial(source, flat, config, code_changed, data_changed)


def reproduce(
    tracker: Tracker,
    run_id: str,
    export_dir: Path | None = None,
    register: str | None = None,
    fp16: bool = False,
    echo: Callable[[str], Any] | None = None,
) -> Reproduction:
    """Re-run trial ``run_id`` from its exact config, log it as a new run (its PyTorch and
    ONNX models), export it to ``export_dir`` (with ``fp16``, ``model.fp16.onnx`` too, and its
    agreement with the evaluated model) and register its ONNX model as ``register``. With
    ``echo``, the teacher's epochs (when it is not cached) and the trial's go to it as they end:
    a reproduction trains for as long as the trial did."""
    if fp16 and export_dir is None:
        raise ValueError("--fp16 writes model.fp16.onnx into the --export folder: give --export")
    trial = read_trial(tracker, run_id, "reproduce", echo)
    source, flat, config = trial.source, trial.flat, trial.config
    if missing := missing_device(source.run_id, config.device):
        raise ValueError(missing)
    # before anything trains: the reproduction is logged next to its trial
    tracker.check_experiment_active(source.experiment_id or None)
    teacher_state = None
    if config.distill.enabled:
        lines = TeacherEpochs(echo) if echo is not None else None
        teacher_state = load_or_train_teacher(TeacherJob.of_trial(config), lines)[0]
    report = TrialEpochs(planned_epochs(flat), echo) if echo is not None else None
    outcome = run_trial(config, teacher_state=teacher_state, report=report)
    if outcome.model is None:
        raise RuntimeError(
            f"run {run_id} did not produce a model ({outcome.status}: {outcome.reason})"
        )
    # Logged, exported and compared on the CPU, as the search's own trials are: a GPU
    # trial's model pickled with CUDA storages loads nowhere else, its TorchScript trace would
    # hold the GPU, and the fp16 agreement fed it the CPU's data (a traceback after the run
    # was logged and the folder written).
    model = outcome.model.cpu()
    data = config.data.load(threads=config.threads)
    example = data.test.head(1)
    if register and outcome.onnx is None:
        raise ValueError(f"--register: the model has no ONNX form ({outcome.info.get('onnx')})")
    recipe = data_recipe(data, example, flat)
    # The logged (and registered) ONNX model is the exported file: the recipe and the trial
    # in its metadata, so a team that takes it from the registry knows how to feed it.
    onnx = with_metadata(outcome.onnx, recipe, source.run_id) if outcome.onnx else None
    # Made before the run is logged: a model whose fp16 form ONNX Runtime cannot open is one
    # line and no run (it was a FINISHED run and a logged model, then the error).
    fp16_form = fp16_onnx(model, example) if fp16 and export_dir else None
    run_id_again, model_uri = tracker.log_reproduction(
        source,
        flat,
        outcome.metrics,
        model,
        example,
        onnx=onnx,
        info=outcome.info,
        preprocess=recipe,
    )
    provenance = {
        "nascomp": version(),
        "trial_run_id": source.run_id,
        "reproduction_run_id": run_id_again,
        "tracking_uri": tracker.shown_uri,
        "experiment_id": source.experiment_id,
        "model": describe_trial(flat),
        # model.onnx's form: int8 QDQ, or float32 holding the rounded weights
        "model_onnx_form": outcome.info.get("onnx_form", "") if onnx is not None else "",
        "metrics": dict(outcome.metrics),
        # the user's code the model is built by, as load_exported compares it
        "code_files": code_files_digest(code_paths(flat)),
    }
    shipped = (
        shipped_accuracies(OnnxModule(onnx, threads=config.threads), data.val, data.test)
        if onnx is not None and export_dir is not None
        else {}
    )
    if shipped:
        provenance["model_onnx_accuracy"] = shipped
    exported: dict[str, Path] = {}
    fp16_agreement = None
    if export_dir:
        exported, fp16_agreement = export_with_data(
            model, example, flat, export_dir, data, onnx, fp16, provenance, fp16_form
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
        fp16_agreement=fp16_agreement,
        shipped=shipped,
        data_changed=trial.data_changed,
        code_changed=trial.code_changed,
        data_root=config.data.root,
    )


def export_with_data(
    model: nn.Module,
    example: torch.Tensor,
    flat: dict[str, Any],
    out_dir: Path,
    data: Any,
    onnx: bytes | None,
    fp16: bool,
    provenance: dict[str, Any],
    fp16_form: bytes | None = None,
    recipe: dict[str, Any] | None = None,
) -> tuple[dict[str, Path], float | None]:
    """``export_model`` with what ``data`` (the trial's loaded data) says of the inputs and
    outputs (``recipe``, the trial's logged preprocess.json, instead where given); the files
    written and, with ``fp16``, model.fp16.onnx's top-1 agreement with ``model`` on the
    validation split."""
    exported = export_model(
        model,
        example,
        flat,
        out_dir,
        onnx=onnx,
        fp16=fp16,
        normalise=data.normalise,
        classes=data.classes,
        features=data.feature_names,
        categories=data.categories,
        provenance=provenance,
        fp16_form=fp16_form,
        recipe=recipe,
    )
    agreement = None
    if "onnx_fp16" in exported:
        agreement = onnx_agreement(model, exported["onnx_fp16"], data.val)
    return exported, agreement


def shipped_accuracies(file: OnnxModule, val: Split, test: Split) -> dict[str, float]:
    """``val_accuracy`` and ``test_accuracy`` of an ONNX file in ONNX Runtime on the CPU:
    what a deployment of the file scores, which differs from the evaluated model's where its
    int8 activations round otherwise (``onnx_agreement`` below 1)."""
    return {
        f"{role}_accuracy": split_accuracy(
            predict_logits(file, split, device="cpu").argmax(1), split
        )
        for role, split in (("val", val), ("test", test))
    }


def onnx_agreement(model: nn.Module, onnx_file: Path, split: Split) -> float:
    """Top-1 agreement of an ONNX file (run in ONNX Runtime on the CPU) with ``model`` on
    ``split``."""
    shipped = OnnxModule(onnx_file.read_bytes(), threads=torch.get_num_threads())
    return top1_agreement(model, shipped, split)
