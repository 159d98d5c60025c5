"""The Ray Tune function trainables: a trial's outcome, told to Tune with tune.report.

``trial_fn`` checkpoints after an epoch (the trial's full state, ``trainers.checkpoint``), so a
trial whose worker dies resumes where it was. Its last report carries a final checkpoint with
the result and the compressed model: the MLflow callback logs that model as the run's
artifacts, and a trial restarted after it ended reports the same result again instead of
training twice.

A report is a round trip to the driver (Tune's function trainables wait until the driver has
taken the result) plus a checkpoint written to the storage: about 0.1 s on a busy 2-core
machine, a whole epoch of a small model. So epochs are reported at most every ``every_s``
seconds (``search.checkpoint_every_s``): the epochs in between ride along with the next report
(``EARLIER_KEY``) and the MLflow callback logs each at its own step. A worker that dies loses at
most that much training.
"""

from __future__ import annotations

import json
import pickle
import re
import socket
import sys
import tempfile
import time
import traceback
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from nascomp.search.collector import freeze_imports
from nascomp.search.export import data_recipe, write_artifact
from nascomp.search.tracking.models import stage_onnx_model
from nascomp.search.tune.interrupt import interrupt_requested
from nascomp.search.tune.results import EARLIER_KEY, INFO_PREFIX, STATUS_KEY
from nascomp.spaces.models import ModelFamily, adopt_families
from nascomp.trainers.checkpoint import load_state, save_state
from nascomp.trainers.config import TrialConfig
from nascomp.trainers.data import DataNotFoundError, check_data_root, labels_digest
from nascomp.trainers.nb201_lookup import run_lookup_trial
from nascomp.trainers.trained import TrainedStore
from nascomp.trainers.trial import StateFn, TrialOutcome, run_trial

STATE_FILE = "trial_state.pt"  # an epoch checkpoint: the trial's state after that epoch
FINAL_FILE = "final.json"  # the final checkpoint: the last report, and the model's artifacts
REPORTS_KEY = "reports"  # in an epoch checkpoint's state: every epoch reported so far
STATUS_FAILED = "failed"
NASCOMP_ROOT = Path(__file__).resolve().parents[2]  # the folder of search/, trainers/...
_PACKAGES = frozenset({"site-packages", "dist-packages"})
# Errors another attempt may not repeat: the node's files or devices, or Ray itself. Every
# other exception a trial raises is the trial's own (its config is seeded: from its last
# checkpoint it would raise again), so it ends the trial failed with the reason and the search
# goes on, as a NaN loss (FloatingPointError), running out of memory, the user's builder
# raising for this sampled architecture (UserCodeError), or a model torch-pruning cannot prune
# (PruningError) do.
RETRIED: tuple[type[BaseException], ...] = (OSError, ray.exceptions.RayError)
# A RuntimeError from a GPU's driver or library: the device may be at fault, not the trial.
_DEVICE_FAULT = re.compile(r"\b(CUDA error|cuDNN error|CUBLAS_STATUS|NCCL error|HIP error)")
# A kernel's assert: an index out of range (a label past the classes, an id past an embedding)
# that the CPU raises as IndexError. The trial's own, seeded: it fails again.
_DEVICE_ASSERT = re.compile(r"device-side assert")


def trial_fn(
    config: dict[str, Any],
    teacher_state: dict | None = None,
    every_s: float = 0.0,
    trained_dir: str | None = None,
    families: Mapping[str, ModelFamily] | None = None,
    data_digest: str | None = None,
) -> None:
    """``trial: train``: run_trial, checkpointing after an epoch at most every ``every_s``
    seconds (0: every epoch), then the final metrics. ``trained_dir``: the search's store of
    trained students (``trainers.trained``), used where the search's folder is on this node.
    ``families``: the model families the user's own code registered in the driver.
    ``data_digest``: the driver's :func:`labels_digest` of the user's factory's data, which
    this process must read alike."""
    adopt_families(families or {})
    freeze_imports()  # a worker's imports are no garbage (search/collector.py)
    resume, final = _restored()
    if final is not None:
        tune.report(final, checkpoint=tune.get_checkpoint())
        return
    sent = resume.pop(REPORTS_KEY, []) if resume is not None else []
    epochs = EpochReports(
        every_s, stop_requested=_interrupt_requested(tune.get_context()), sent=sent
    )
    store = trained_store(trained_dir)
    outcome = guarded(
        lambda: run_trial(
            config, teacher_state=teacher_state, checkpoint=epochs, resume=resume, trained=store
        ),
        config,
        data_digest,
    )
    _report_final(config, outcome, epochs.take_held())


def trained_store(folder: str | None) -> TrainedStore | None:
    """The store in ``folder``, or None when there is none or the search's result folder
    that holds it is not on this node (a worker of a cluster without shared storage: its
    trials train, and nothing is written outside the search's folder)."""
    if folder is None or not Path(folder).parent.is_dir():
        return None
    return TrainedStore(folder)


def _interrupt_requested(context: Any) -> Callable[[], bool]:
    """Whether the driver saw Ctrl-C (``search.tune.interrupt``), where the search's folder is
    on this node; never, where it is not (remote storage)."""
    storage = context.get_storage()
    if storage.storage_filesystem.type_name != "local":
        return lambda: False
    return interrupt_requested(storage.experiment_fs_path)


class EpochReports:
    """The trial's ``checkpoint`` callback: an epoch's metrics and state go to Tune when
    ``every_s`` seconds have passed since the last report (or the trial began), or when
    ``stop_requested()`` (Ctrl-C: Tune stops a trial at its next report); otherwise the
    metrics are held and ride along with the next report, the state is dropped.

    Each state sent carries every epoch's metrics so far (``REPORTS_KEY``). A worker can die
    after its checkpoint reached the storage and before the driver took the report that came
    with it; the retry resumes from that checkpoint, so those epochs would never be logged.
    A resumed trial passes them as ``sent``: they ride along with its next report again, and
    the MLflow callback logs each epoch of a trial once."""

    def __init__(
        self,
        every_s: float,
        clock: Callable[[], float] = time.monotonic,
        send: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
        stop_requested: Callable[[], bool] = lambda: False,
        sent: list[dict[str, Any]] | None = None,
    ) -> None:
        self.every_s = every_s
        self._clock = clock
        self._send = send or _report_epoch
        self._stop_requested = stop_requested
        self._last = clock()
        self._all: list[dict[str, Any]] = list(sent or [])
        self._held: list[dict[str, Any]] = list(sent or [])

    def __call__(self, metrics: dict[str, Any], make_state: StateFn) -> None:
        self._all.append(metrics)
        waiting = self.every_s > 0 and self._clock() - self._last < self.every_s
        if waiting and not self._stop_requested():
            self._held.append(metrics)
            return  # the state is never made: a copy of the model and optimizer
        state = make_state()
        self._send({**metrics, **self.take_held()}, {**state, REPORTS_KEY: list(self._all)})
        self._last = self._clock()

    def take_held(self) -> dict[str, str]:
        """The held epochs as a report's ``EARLIER_KEY`` (none when there are none)."""
        held, self._held = self._held, []
        return {EARLIER_KEY: json.dumps(held)} if held else {}


def guarded(
    run: Callable[[], TrialOutcome], config: dict[str, Any], data_digest: str | None = None
) -> TrialOutcome:
    """``run()``, with the trial's own failures (NaN loss, out of memory, an error in the
    model's code) as a failed outcome with the reason and where it was raised; errors another
    attempt may not repeat (``retried``) propagate, so Tune restarts the trial from its last
    checkpoint, and a data root missing on this node names the node. With ``data_digest``,
    data that this process reads otherwise than the driver fail the trial."""
    try:
        # The driver checked the data root on its own node; this may be another one.
        check_data_root(config["data.name"], config.get("data.root"))
        if data_digest is not None:
            check_same_data(config, data_digest)
        return run()
    except DataNotFoundError as exc:
        # Fails the attempt, so Tune may retry it on another node; the message says where.
        raise DataNotFoundError(f"on node {node_name()}: {exc}") from None
    except Exception as exc:
        if retried(exc):
            raise
        return failed_outcome(exc)


def failed_outcome(exc: Exception) -> TrialOutcome:
    """The trial's own failure ``exc`` (being handled) as its outcome: failed, with the
    reason and where it was raised; the frames go to the worker's log."""
    traceback.print_exc(file=sys.stderr)
    return TrialOutcome(status=STATUS_FAILED, reason=failure_reason(exc))


# This process's digest of the data it read, by the loaded splits (cached per process): the
# object itself is held weakly, as an id alone may be a freed object's.
_DIGESTS: dict[int, tuple[weakref.ref, str]] = {}


def check_same_data(config: dict[str, Any], data_digest: str) -> None:
    """Refuse a user's factory that gave this process other splits than the driver: each
    process calls it, and a split or shuffle drawn without a seed put the test samples of one
    into the training data of another, and ranked trials on different validation sets (a
    helper's sweep, unsaid until an export's accuracies differed)."""
    trial = TrialConfig.from_flat(config)
    data = trial.data.load(threads=trial.threads)  # cached: the trial reads the same
    held, seen = _DIGESTS.get(id(data), (None, None))
    if held is None or held() is not data:
        seen = labels_digest(data)
        _DIGESTS[id(data)] = (weakref.ref(data), seen)
    if seen != data_digest:
        raise ValueError(
            f"data.factory {trial.data.factory}: it gave this worker other splits than the "
            "driver (the labels of train, val or test differ): every process calls it, so a "
            "split or shuffle drawn without a seed differs in each; seed it (e.g. "
            "np.random.default_rng(0), or random_state=0)"
        )


def retried(exc: BaseException) -> bool:
    """Whether another attempt of the trial may not fail the same way."""
    if isinstance(exc, torch.OutOfMemoryError):
        return False  # a RuntimeError, and the same trial on the same device runs out again
    if isinstance(exc, RETRIED):
        return True
    if not isinstance(exc, RuntimeError) or _DEVICE_ASSERT.search(str(exc)):
        return False
    return _DEVICE_FAULT.search(str(exc)) is not None


def failure_reason(exc: BaseException) -> str:
    """``Type: message`` on one line, then where it was raised: the innermost frame of the
    user's code or of nascomp (not of torch or another library), and the innermost one when
    that is elsewhere, e.g. ``IndexError: Target 8 is out of bounds. (in train_epoch,
    trainers/loop.py:123; raised in cross_entropy, torch/nn/functional.py:3458)``."""
    message = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return text
    own = [f for f in frames if not _library_file(f.filename)]
    places = []
    if own and own[-1] is not frames[-1]:
        places.append(f"in {own[-1].name}, {_short(own[-1].filename)}:{own[-1].lineno}")
    last = frames[-1]
    places.append(
        f"{'raised in' if places else 'in'} {last.name}, {_short(last.filename)}:{last.lineno}"
    )
    return f"{text} ({'; '.join(places)})"


def _library_file(filename: str) -> bool:
    """A file of an installed library other than nascomp, or of Python itself."""
    path = Path(filename)
    inner = _inside(path, NASCOMP_ROOT)
    if inner and _PACKAGES.isdisjoint(inner):
        return False  # nascomp's own (a virtual environment inside its folder is not)
    return not _PACKAGES.isdisjoint(path.parts) or Path(sys.base_prefix) in path.parents


def _short(filename: str) -> str:
    """A frame's file as a person reads it: relative to nascomp's folder or to the
    ``site-packages`` that holds it, else the whole path (the user's own code)."""
    path = Path(filename)
    if _library_file(filename):
        parts = path.parts
        marks = [i for i, part in enumerate(parts) if part in _PACKAGES]
        return str(Path(*parts[marks[-1] + 1 :])) if marks else str(path)
    inner = _inside(path, NASCOMP_ROOT)
    return str(Path(*inner)) if inner else str(path)


def _inside(path: Path, root: Path) -> tuple[str, ...]:
    """``path``'s parts below ``root``; empty when it is not below it."""
    try:
        return path.relative_to(root).parts
    except ValueError:
        return ()


def lookup_trial_fn(config: dict[str, Any]) -> None:
    """``trial: nb201_lookup``: one report, the final one."""
    freeze_imports()
    tune.report(_final(lookup_outcome(config)))


def lookup_outcome(config: dict[str, Any]) -> TrialOutcome:
    """A lookup that raises (a cell the table lacks, a value that is no number) ends failed
    with the reason, as a trained trial does: it was retried as if its worker had died, each
    attempt a page of traceback. Errors of the node (``retried``) still propagate."""
    try:
        return run_lookup_trial(config)
    except Exception as exc:
        if retried(exc):
            raise
        return failed_outcome(exc)


def _restored() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(epoch state to resume from, final result already reached) of a restarted trial.

    Tune hands back the checkpoint its last experiment snapshot knew, and a driver killed
    between snapshots may have missed newer ones; a trial the snapshot held as pending or just
    started gets none at all (and a new folder), though it may have trained and logged epochs.
    So the trial's checkpoints are looked up in every folder of the trial in the storage, and
    the newest is taken: a trial that had ended reports its result again, one that was
    training goes on from its last epoch.
    """
    checkpoint = tune.get_checkpoint()
    folders = _stored_checkpoints(tune.get_context())
    if checkpoint is not None and Path(checkpoint.path).is_dir():
        folders = list(dict.fromkeys([*folders, Path(checkpoint.path)]))
    resume, final = newest(folders)
    if resume is None and final is None and checkpoint is not None:
        with checkpoint.as_directory() as folder:  # remote storage: the snapshot's one
            resume, final = newest([Path(folder)])
    return resume, final


def newest(folders: list[Path]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(newest epoch state, final result) among checkpoint ``folders``; a final one wins.

    A file that does not read back whole is passed over: Tune copies a checkpoint into the
    storage file by file, and a kill can stop it half-way."""
    states = []
    for folder in folders:
        try:
            if (folder / FINAL_FILE).is_file():
                return None, json.loads((folder / FINAL_FILE).read_text())
            if (folder / STATE_FILE).is_file():
                states.append(load_state(folder / STATE_FILE))
        except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
            print(f"nascomp: passing over checkpoint {folder}: {exc}", file=sys.stderr)
    if not states:
        return None, None
    return max(states, key=lambda state: state["epoch"]), None


def trial_dirname(trial: Any) -> str:
    """A trial's folder (Tune's ``trial_dirname_creator``): found again from its id alone."""
    return f"trial_{trial.trial_id}"


def trial_checkpoints(experiment: Path, trial_id: str) -> list[Path]:
    """Every checkpoint folder of trial ``trial_id`` under the experiment folder: in
    ``trial_<id>``, in ``trial_<id>_<suffix>`` (Tune's name when a restored trial's folder
    exists already), and in ``trial_fn_<id>_...`` (Tune's default names, older searches)."""
    if not experiment.is_dir():
        return []
    mine = (f"trial_{trial_id}_", f"trial_fn_{trial_id}_")
    trials = [
        path
        for path in experiment.iterdir()
        if path.is_dir() and (path.name == f"trial_{trial_id}" or path.name.startswith(mine))
    ]
    return sorted(c for path in trials for c in path.glob("checkpoint_*") if c.is_dir())


def _stored_checkpoints(context: Any) -> list[Path]:
    storage = context.get_storage()
    if storage.storage_filesystem.type_name != "local":
        return []  # remote storage: Tune's own checkpoint only
    return trial_checkpoints(Path(storage.experiment_fs_path), context.get_trial_id())


def _report_epoch(report: dict[str, Any], state: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        save_state(Path(folder) / STATE_FILE, state)
        tune.report(report, checkpoint=tune.Checkpoint.from_directory(folder))


def _report_final(
    config: dict[str, Any], outcome: TrialOutcome, held: dict[str, str] | None = None
) -> None:
    final = {**_final(outcome), **(held or {})}
    with tempfile.TemporaryDirectory() as folder:
        if outcome.model is not None:
            trial = TrialConfig.from_flat(dict(config))
            data = trial.data.load(threads=trial.threads)  # cached in this process
            example = data.train.head(1).cpu()
            # how its inputs were made, as export ships it (the data may change since)
            recipe = data_recipe(data, example, config)
            write_artifact(outcome.model.cpu(), example, config, Path(folder), recipe)
            if outcome.onnx is not None:  # the driver makes it an MLflow model pyfunc serves
                stage_onnx_model(outcome.onnx, Path(folder), example.numpy())
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
