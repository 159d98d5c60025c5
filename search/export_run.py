"""Export a trial's model as the search trained it, from its MLflow artifacts: no training.

Every finished trial logs ``model.nascomp`` and ``skeleton.json`` (the compressed model, which
``load_exported`` rebuilds exactly), ``preprocess.json`` (how its inputs were made, which the
export ships even where the data changed since) and ``onnx_model/`` (the file its latency was
timed on).
``nascomp reproduce --export`` trains the trial again to get them, as long as the trial took;
``nascomp export`` rebuilds the model from those files instead, evaluates it on the trial's
own splits to show it is the model the run logged (the accuracies match exactly on the CPU),
measures what the file to ship scores, and writes the same export folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nascomp.compressors.onnx_export import OnnxModule
from nascomp.search.about import version
from nascomp.search.export import ARTIFACT, PREPROCESS, SKELETON, data_recipe, load_exported
from nascomp.search.reproduce import (
    LoggedTrial,
    export_with_data,
    logged_onnx_form,
    read_trial,
    shipped_accuracies,
)
from nascomp.search.tracking.models import ONNX_MODEL_DIR
from nascomp.search.tracking.store import SOURCE_TAG, ArtifactMissing, Tracker
from nascomp.spaces.models import ENTRY_POINT_GROUP, model_family
from nascomp.spaces.space import arch_from_flat
from nascomp.spaces.userfn import UserCodeError
from nascomp.trainers.config import describe_trial
from nascomp.trainers.listing import code_files_digest, code_paths
from nascomp.trainers.loop import (
    predicted_classes,
    split_accuracy,
    split_balanced_accuracy,
    top1_agreement,
)
from nascomp.trainers.split import Split


@dataclass
class TrialExport:
    trial: LoggedTrial
    exported: dict[str, Path]
    # the accuracies and onnx_agreement as the rebuilt model scores them here
    evaluated: dict[str, float]
    # val_accuracy and test_accuracy of model.onnx in ONNX Runtime; empty without a file
    shipped: dict[str, float]
    fp16_agreement: float | None = None
    registered: Any = None  # the Model Registry version, with register
    # preprocess.json is the one the trial logged (True), or made from today's data (False:
    # the trial, logged by an older nascomp, holds none)
    recipe_logged: bool = False
    # the fields of preprocess.json today's data would give otherwise (the trial's is shipped)
    recipe_changed: tuple[str, ...] = ()

    def comparison(self) -> list[tuple[str, float | None, float | None]]:
        logged = self.trial.source.metrics
        return [(name, logged.get(name), value) for name, value in self.evaluated.items()]

    def differing(self) -> list[str]:
        """The accuracies the rebuilt model gives otherwise than the run logged them."""
        return [
            name
            for name, logged, again in self.comparison()
            if name.endswith("accuracy") and logged is not None and logged != again
        ]


def export_trial(
    tracker: Tracker,
    run_id: str,
    out_dir: Path,
    fp16: bool = False,
    echo: Callable[[str], Any] | None = None,
    register: str | None = None,
) -> TrialExport:
    """Write trial ``run_id``'s model, rebuilt from its run's artifacts, to ``out_dir`` (the
    files of ``reproduce --export``; with ``fp16``, ``model.fp16.onnx`` too), after evaluating
    it on the trial's validation and test splits; with ``register``, register the exported
    model.onnx in the Model Registry as a new version of that name."""
    trial = read_trial(tracker, run_id, "export", echo)
    flat, config = trial.flat, trial.config
    with tempfile.TemporaryDirectory(prefix="nascomp-export-") as scratch:
        folder = Path(scratch)
        onnx = _download(tracker, trial, folder)
        if register and onnx is None:  # before anything is written
            why = trial.source.tags.get("nascomp.onnx", "the trial logged none")
            raise ValueError(f"--register: run {run_id} has no ONNX file to register ({why})")
        with _threads(config.threads):
            model = _load(folder, trial)
            file = _session(onnx, trial, config.threads) if onnx is not None else None
            data = config.data.load(threads=config.threads)
            _check_same_inputs(folder, trial, data)
            logged = _logged_recipe(folder, trial)
            today = data_recipe(data, data.test.head(1), flat)
            evaluated = _accuracies(model, data.val, "val") | _accuracies(model, data.test, "test")
            shipped: dict[str, float] = {}
            if file is not None:
                evaluated["onnx_agreement"] = top1_agreement(model, file, data.val)
                shipped = shipped_accuracies(file, data.val, data.test)
    source = trial.source
    provenance = {
        "nascomp": version(),
        "trial_run_id": source.run_id,
        "exported_from": "the trial's MLflow artifacts (model.nascomp, skeleton.json, "
        f"{'preprocess.json, ' if logged is not None else ''}onnx_model): the model as the "
        "search trained it, not trained again",
        "tracking_uri": tracker.shown_uri,
        "experiment_id": source.experiment_id,
        "model": describe_trial(flat),
        "model_onnx_form": logged_onnx_form(source.tags) if onnx is not None else "",
        "metrics": dict(source.metrics),
        # the user's code the model is built by, as load_exported compares it
        "code_files": code_files_digest(code_paths(flat)),
        # The rebuilt model's accuracies on the trial's splits (the CPU), and the shipped
        # file's in ONNX Runtime: what a deployment of model.onnx scores.
        "evaluated": evaluated,
        "model_onnx_accuracy": shipped,
    }
    exported, fp16_agreement = export_with_data(
        model,
        data.test.head(1),
        flat,
        out_dir,
        data,
        onnx,
        fp16,
        provenance,
        recipe=logged if logged is not None else today,  # today's made once, not again
    )
    if onnx is None and echo is not None:
        why = source.tags.get("nascomp.onnx", "no ONNX file: the trial logged none")
        echo(f"note: {why}; so no model.onnx in the export, its other files are written")
    registered = None
    if register:
        recipe = exported.get("preprocess")
        registered = tracker.register_shipped(
            source,
            register,
            exported["onnx"].read_bytes(),
            data.test.head(1).cpu(),
            json.loads(recipe.read_text()) if recipe is not None else None,
        )
    today = today or {}
    changed = (
        tuple(k for k in sorted({*logged, *today}) if logged.get(k) != today.get(k))
        if logged is not None
        else ()
    )
    return TrialExport(
        trial,
        exported,
        evaluated,
        shipped,
        fp16_agreement,
        registered,
        recipe_logged=logged is not None,
        recipe_changed=changed,
    )


def _logged_recipe(folder: Path, trial: LoggedTrial) -> dict[str, Any] | None:
    """The preprocess.json the trial logged (``_download`` fetched it), None where it logged
    none; one that is not a JSON object is a one-line ValueError, as a damaged skeleton is."""
    path = folder / PREPROCESS
    if not path.is_file():
        return None
    try:
        recipe = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        recipe = exc
    if not isinstance(recipe, dict):
        run_id = trial.source.run_id
        raise ValueError(
            f"run {run_id}: its {PREPROCESS} is not a JSON object: the run's artifacts were "
            f"changed or damaged; {_again(run_id)}"
        )
    return recipe


def _download(tracker: Tracker, trial: LoggedTrial, folder: Path) -> bytes | None:
    """Fetch the run's model files into ``folder``; return its ONNX file's bytes (None when
    no exporter took the model: the trial was timed in PyTorch). A run without the model
    files, or whose skeleton names another model than its config, is a ValueError."""
    run_id = trial.source.run_id
    again = _again(run_id)
    listed = {item.path for item in tracker.client.list_artifacts(run_id)}
    missing = [name for name in (ARTIFACT, SKELETON) if name not in listed]
    reproduced = trial.source.tags.get(SOURCE_TAG)
    if missing and reproduced:
        raise ValueError(
            f"run {run_id} is a reproduction of trial run {reproduced}, whose files an export "
            f"reads (a reproduction logs none): `nascomp export {reproduced} --to DIR`"
        )
    if missing:
        raise ValueError(
            f"run {run_id} holds no {' or '.join(missing)} (its artifacts deleted, or logged by "
            f"an older nascomp): {again} and exports it"
        )
    for name in (ARTIFACT, SKELETON):
        _fetch(tracker, run_id, name, folder, again)
    if PREPROCESS in listed:  # how the trial's inputs were made (an older nascomp logged none)
        _fetch(tracker, run_id, PREPROCESS, folder, again)
    # load_exported imports and calls the builder the skeleton names (trust_code): the one
    # this trial's config names, which reproduce would run too, and no other.
    try:
        skeleton = json.loads((folder / SKELETON).read_text())
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(
            f"run {run_id}: its {SKELETON} is not JSON ({exc}): the run's artifacts were "
            f"changed or damaged; {again}"
        ) from None
    expected = json.loads(json.dumps(arch_from_flat(trial.flat), default=str))
    if not isinstance(skeleton, dict) or skeleton.get("arch") != expected:
        raise ValueError(
            f"run {run_id}: its {SKELETON} names another model than its config "
            f"({describe_trial(trial.flat)}): the run's artifacts were changed; {again}"
        )
    if ONNX_MODEL_DIR not in listed:
        if "onnx_bytes" in trial.source.metrics:  # the trial logged one: it was deleted since
            raise ValueError(
                f"run {run_id} logged an ONNX file ({ONNX_MODEL_DIR}/model.onnx) that is gone "
                f"now: the run's artifacts were changed or deleted; {again}"
            )
        return None
    return _fetch(tracker, run_id, f"{ONNX_MODEL_DIR}/model.onnx", folder, again).read_bytes()


def _again(run_id: str) -> str:
    """How to get a model whose logged files an export cannot read."""
    return f"`nascomp reproduce {run_id} --export DIR` trains the model again"


def _fetch(tracker: Tracker, run_id: str, name: str, folder: Path, again: str) -> Path:
    """Artifact ``name`` of the run in ``folder``; one that is gone is a one-line ValueError
    that says how to get the model anyway."""
    try:
        return tracker.download(run_id, name, folder)
    except ArtifactMissing as exc:
        raise ValueError(f"{exc}: the run's artifacts were changed or deleted; {again}") from None


def _session(onnx: bytes, trial: LoggedTrial, threads: int) -> OnnxModule:
    """The run's ONNX file in ONNX Runtime; one that does not load (cut short, changed) is a
    one-line ValueError naming the run, as a damaged model.nascomp is (it was a traceback)."""
    run_id = trial.source.run_id
    try:
        return OnnxModule(onnx, threads=threads)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(
            f"run {run_id}: its {ONNX_MODEL_DIR}/model.onnx does not load in ONNX Runtime "
            f"({first}): the run's artifacts were changed or damaged; {_again(run_id)}"
        ) from None


def _check_same_inputs(folder: Path, trial: LoggedTrial, data: Any) -> None:
    """The data read now must give the inputs and classes the run's model was built for (its
    skeleton's): a user's factory or folder whose inputs changed shape since the search was
    an ONNX Runtime traceback, and one with another number of classes scored the model on
    labels it never had (a helper's sweep)."""
    skeleton = json.loads((folder / SKELETON).read_text())
    built = (tuple(skeleton.get("input_shape") or ()), skeleton.get("n_classes"))
    now = (tuple(data.input_shape), data.n_classes)
    if None in built or not built[0] or built == now:
        return
    run_id = trial.source.run_id
    raise ValueError(
        f"run {run_id}: its model takes inputs of shape {built[0]} and gives {built[1]} "
        f"classes; its data read now give inputs of shape {now[0]} and {now[1]} classes (the "
        f"data or the code that reads it changed since the search): `nascomp reproduce {run_id} "
        "--export DIR` trains the model again on them"
    )


def _load(folder: Path, trial: LoggedTrial) -> nn.Module:
    """The run's model, rebuilt by its builder and filled from its compressed file; files that
    do not load (damaged, or a builder whose code changed since the search and builds another
    model) are a one-line ValueError naming the run."""
    run_id = trial.source.run_id
    try:
        return load_exported(folder, trust_code=True)
    except UserCodeError:
        raise  # the user's builder failed: its own line names it
    except Exception as exc:
        # the files by name: the folder they were fetched into is gone once this returns
        text = (str(exc).splitlines() or [""])[0].replace(f"{folder}{os.sep}", "")
        cause = f"{type(exc).__name__}: {text[:200]}"
        family = _family_of(folder)
        if family is not None and model_family(family) is None:  # not damage: unknown here
            raise ValueError(
                f"run {run_id}: its model family {family!r} is not known to this process: a "
                "family registered with @nascomp.register_model in the script that ran the "
                f"search is known there alone; name its module in the {ENTRY_POINT_GROUP!r} "
                "entry point of your package, so every command knows it, or rebuild the model "
                "in a script that registers it (nascomp.load_exported on the run's artifacts)"
            ) from None
        if not trial.code_changed:
            raise ValueError(
                f"run {run_id}: its {ARTIFACT} and {SKELETON} do not load ({cause}): the run's "
                f"artifacts were changed or damaged; {_again(run_id)}"
            ) from None
        raise ValueError(
            f"run {run_id}: its model files do not fit what {', '.join(trial.code_changed)} "
            f"builds now (its source changed since the search ran it: {cause}); restore that "
            f"code, or `nascomp reproduce {run_id} --export DIR` trains the model the code "
            "builds now"
        ) from None


def _family_of(folder: Path) -> str | None:
    """The model family ``folder``'s skeleton names, if it can be read."""
    try:
        arch = json.loads((folder / SKELETON).read_text()).get("arch")
    except (OSError, ValueError, AttributeError):
        return None
    family = arch.get("family") if isinstance(arch, dict) else None
    return family if isinstance(family, str) else None


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """torch's thread count of the trial, as it evaluated (the sums' order, and so the last
    bits of the logits, follow it); the caller's count back after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _accuracies(model: nn.Module, split: Split, role: str) -> dict[str, float]:
    classes = predicted_classes(model, split)
    return {
        f"{role}_accuracy": split_accuracy(classes, split),
        f"{role}_balanced_accuracy": split_balanced_accuracy(classes, split),
    }
