"""The distillation teacher: trained once, cached on disk by a hash of everything it depends on."""

from __future__ import annotations

import hashlib
import inspect
import json
import marshal
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from nascomp.spaces.models import InfeasibleArchitecture, build_model, model_family
from nascomp.spaces.userfn import module_file, source_files
from nascomp.trainers.checkpoint import cpu_state_dict, write_atomically
from nascomp.trainers.config import TrialConfig
from nascomp.trainers.data import release_device_copies
from nascomp.trainers.init import checked_digest, file_digest, load_state_file
from nascomp.trainers.listing import listing_digest
from nascomp.trainers.loop import (
    accuracy,
    balanced_weights,
    make_optimizer,
    predict_logits,
    train_epoch,
)
from nascomp.trainers.seeding import seed_everything
from nascomp.trainers.settings import AugmentSettings, DataConfig, TeacherConfig
from nascomp.trainers.split import Split, TensorSplit
from nascomp.trainers.stream import Data, StreamedSplit, for_trial

StateDict = dict[str, Tensor]
_LOGITS: dict[tuple[str, int], Tensor] = {}


@dataclass(frozen=True)
class TeacherJob:
    """Everything the teacher's weights depend on, and nothing more: the search trains it from
    the experiment before any trial, a trial finds it again from its own config."""

    teacher: TeacherConfig
    data: DataConfig
    augment: AugmentSettings  # the teacher sees the batches the students see
    momentum: float
    seed: int
    threads: int
    device: str
    class_weight: str = "none"  # train.class_weight: the teacher learns what the students do

    @classmethod
    def of_trial(cls, config: TrialConfig) -> TeacherJob:
        return cls(
            teacher=config.teacher,
            data=config.data,
            augment=config.train.augment,
            momentum=config.train.momentum,
            seed=config.seed,
            threads=config.threads,
            device=config.device,
            class_weight=config.train.class_weight,
        )

    def key(self) -> str:
        """Cache key of the teacher's weights."""
        teacher = self.teacher.model_dump(exclude={"checkpoint_sha256"})  # keys stay as were
        if self.teacher.checkpoint:
            teacher["checkpoint"] = file_digest(self.teacher.checkpoint)
        payload = {
            "teacher": teacher,
            # How the data are read (streamed or not) changes no result: not in the key; nor
            # does the test split, which the teacher never reads (data.max_test_samples).
            "data": {k: v for k, v in self.data.identity().items() if k != "max_test_samples"},
            "augment": self.augment.model_dump(),
            "seed": self.seed,
            "threads": self.threads,
            "device": self.device,
        }
        if self.teacher.optimizer == "sgd":
            # Only SGD reads the momentum; keys of other teachers stay as they were.
            payload["momentum"] = self.momentum
        if self.class_weight != "none":  # keys of unweighted teachers stay as they were
            payload["class_weight"] = self.class_weight
        if self.data.name in ("custom", "torchvision"):
            # A factory's float64 samples were squared as they were read until 2026-12-06: a
            # teacher cached then learnt other inputs than these (built-in sets: uint8, CSV:
            # float32, never affected, their keys unchanged).
            payload["reading"] = 2
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """Where teachers are cached: ``$NASCOMP_CACHE``, or ``~/.cache/nascomp`` when it is unset
    or empty (empty was the working folder). A file at it or above it is a ValueError in one
    line: the teacher trained, then saving it failed with a traceback."""
    folder = Path(os.environ.get("NASCOMP_CACHE") or Path.home() / ".cache" / "nascomp")
    folder = folder.expanduser()
    resolved = folder.resolve()
    existing = next((p for p in (resolved, *resolved.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(
            f"NASCOMP_CACHE: {existing} is a file; give a folder for nascomp's cache (unset, "
            "it is ~/.cache/nascomp)"
        )
    return folder


def cache_unwritable() -> str | None:
    """Why the teacher cache (:func:`cache_dir`) cannot be written here, or None: a read-only
    file system (a read-only home), or a folder this user may not write. Only writing needs
    it: a teacher cached there already is read all the same."""
    resolved = cache_dir().resolve()
    existing = next(p for p in (resolved, *resolved.parents) if p.exists())
    if os.access(existing, os.W_OK):
        return None
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        return f"{existing} is on a read-only file system"
    return f"{existing} is not writable by this user"


def teacher_path(job: TeacherJob) -> Path:
    """Where the teacher of ``job`` is cached: its key and, where the user's code builds the
    teacher or reads the data, that code's source files and the files under a custom data
    root (``user_inputs``), so an edited builder, factory or data file trains a new teacher."""
    extra = user_inputs(job)
    key = job.key()
    if extra:
        payload = json.dumps({"key": key, **extra}, sort_keys=True).encode()
        key = hashlib.sha256(payload).hexdigest()[:16]
    return cache_dir() / "teachers" / f"{key}.pt"


# torchvision's readers of a folder the user lays out (the others read official files).
USERS_FOLDER_CLASSES = ("ImageFolder", "DatasetFolder")


def user_inputs(job: TeacherJob) -> dict[str, Any]:
    """What of the user's, besides the config, the teacher's weights depend on: the SHA-256
    of the source file of the teacher's builder (``custom`` or a plugin's family) and of the
    data factory, with the user's modules each imports (``source_files``), and the size and
    modification time of each file under a custom factory's or an image folder's
    ``data.root`` (torchvision's ImageFolder's too). Empty for nascomp's
    own families and bundled or official datasets (their keys stay as they were). Data a
    factory reads from elsewhere, or makes from the environment, is not seen."""
    builder = _builder_source(job.teacher.arch)
    sources = [builder] if isinstance(builder, Path) else []
    arch = job.teacher.arch
    if arch.get("family") == "custom" and isinstance(arch.get("builder"), str):
        sources += source_files(arch["builder"])  # with the user's modules it imports
    if job.data.name == "custom" and job.data.factory:
        sources += source_files(job.data.factory)
    found: dict[str, Any] = {}
    code = {str(path): file_digest(path) for path in sorted({p for p in sources if p})}
    if isinstance(builder, str):  # a family's builder with no file: its compiled code
        code["(builder without a source file)"] = builder
    if code:
        found["code"] = code
    folder = job.data.name in ("custom", "imagefolder") or (
        job.data.name == "torchvision" and job.data.dataset in USERS_FOLDER_CLASSES
    )
    if folder and job.data.root is not None:
        # an image folder too: images added or replaced are other data
        found["files"] = listing_digest(Path(job.data.root))
    return found


def _builder_source(arch: Mapping[str, Any]) -> Path | str | None:
    """The source file of the teacher's builder (the user's or a plugin's), or, for a family
    defined in code with no file (``python -``, where the source file is '<stdin>'), the
    SHA-256 of its compiled code; None for nascomp's own families."""
    family = arch.get("family")
    builder = arch.get("builder")
    if family == "custom" and isinstance(builder, str):
        return module_file(builder)
    registered = model_family(family)
    if registered is None or registered.build.__module__.startswith("nascomp."):
        return None
    try:
        source = inspect.getsourcefile(registered.build)
    except TypeError:
        return None
    if source and Path(source).is_file():
        return Path(source)
    code = getattr(registered.build, "__code__", None)  # hashing '<stdin>' raised
    return hashlib.sha256(marshal.dumps(code)).hexdigest() if code is not None else None


def load_or_train_teacher(
    job: TeacherJob, report: Callable[[dict[str, float]], None] | None = None
) -> tuple[StateDict, dict[str, float]]:
    """The teacher's weights and facts about it (accuracy, training time, whether cached).
    When it is trained, ``report`` gets each epoch's figures (see :func:`train_teacher`)."""
    if job.teacher.checkpoint:
        state = load_teacher_checkpoint(job.teacher.checkpoint, job.teacher.checkpoint_sha256)
        # Scored as a trained teacher is: an untrained or misfit file (another input
        # normalisation) distilled its noise into every student, unsaid.
        data = for_trial(job.data.load(threads=job.threads), "cpu", job.threads)
        with torch.random.fork_rng(devices=[]):  # building draws weights: not the caller's
            model = build_teacher(job.teacher, data, state)
        facts = {"teacher_val_accuracy": accuracy(model.eval(), data.val)}
        return state, {**facts, "teacher_cached": 1.0, "teacher_train_seconds": 0.0}
    path = teacher_path(job)
    for entry in (path, path.with_suffix(".json")):
        if entry.exists() and not entry.is_file():  # found before the teacher trains
            raise ValueError(
                f"teacher cache: {entry} is in the way of the teacher's file and is not a "
                "file; move it (NASCOMP_CACHE picks another cache)"
            )
    cached = _cached_teacher(path)
    if cached is not None:
        state, facts = cached
        return state, {**facts, "teacher_cached": 1.0, "teacher_train_seconds": 0.0}
    state, facts = train_teacher(job, report)
    cache_teacher(job, state, facts)
    return state, {**facts, "teacher_cached": 0.0}


def has_teacher(job: TeacherJob) -> bool:
    """Whether ``job``'s teacher is at hand without training: a checkpoint, or cached here."""
    return bool(job.teacher.checkpoint) or _cached_teacher(teacher_path(job)) is not None


def cache_teacher(job: TeacherJob, state: StateDict, facts: dict[str, float]) -> None:
    """Keep ``job``'s trained teacher in this machine's cache. The cache's folder is the
    user's alone (a teacher holds what it learnt of their data); each file is written whole
    under a name no one can guess, then moved into place."""
    path = teacher_path(job)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomically(
            path.with_suffix(".json"), lambda file: file.write(json.dumps(facts).encode())
        )
        write_atomically(path, lambda file: torch.save(state, file))
    except OSError:
        # The search said so before the teacher trained (cache_unwritable); a disk that filled
        # since costs the cache, not the trained teacher (it was a traceback that lost it).
        return


def _cached_teacher(path: Path) -> tuple[StateDict, dict[str, float]] | None:
    """The cached teacher at ``path`` and its facts; None when there is none, or when its
    files cannot be read as a teacher's (cut short, or not tensors: never unpickled), which
    is then trained again and replaced."""
    if not path.is_file():
        return None
    try:
        facts = json.loads(path.with_suffix(".json").read_text())
        state = load_state_file(path)
    except (OSError, ValueError):
        return None
    if not isinstance(facts, dict) or not all(isinstance(v, (int, float)) for v in facts.values()):
        return None
    return state, {k: float(v) for k, v in facts.items()}


def load_teacher_checkpoint(path: str, sha256: str | None = None) -> StateDict:
    """The user's trained teacher weights (``teacher.checkpoint``): see ``load_state_file``;
    a ValueError naming the field when the file's bytes are not those the config recorded."""
    if Path(path).is_file():  # a missing one is load_state_file's to name
        consequence = "the students would not learn from the same teacher"
        checked_digest(path, sha256, "teacher.checkpoint", consequence)
    return load_state_file(path)


def train_teacher(
    job: TeacherJob, report: Callable[[dict[str, float]], None] | None = None
) -> tuple[StateDict, dict[str, float]]:
    """Train the teacher; ``report`` gets, after each epoch, ``epoch``, ``epochs``, ``loss``,
    ``train_accuracy`` and ``seconds`` (since training started)."""
    torch.set_num_threads(job.threads)
    data = for_trial(job.data.load(threads=job.threads), job.device, job.threads)
    seed_everything(job.seed)
    model = build_teacher(job.teacher, data).to(job.device)
    teacher = job.teacher
    optimizer = make_optimizer(model, teacher.optimizer, teacher.lr, 0.0, job.momentum)
    generator = torch.Generator().manual_seed(job.seed)
    started = time.perf_counter()
    for epoch in range(1, teacher.epochs + 1):
        try:
            stats = train_epoch(
                model,
                data.train,
                optimizer=optimizer,
                batch_size=teacher.batch_size,
                generator=generator,
                augment=job.augment.augmentation(),  # the teacher sees what the students see
                class_weight=(
                    balanced_weights(data.train.labels, data.n_classes)
                    if job.class_weight == "balanced"
                    else None
                ),
            )
        except FloatingPointError as exc:  # a trial's outcome for a student; a traceback here
            raise ValueError(
                f"teacher: {exc} in epoch {epoch} of {teacher.epochs} (teacher.lr "
                f"{teacher.lr:g}, teacher.optimizer {teacher.optimizer}): lower teacher.lr"
            ) from None
        except Exception as exc:  # the user's model (sparse gradients, a bad id): a traceback
            raise ValueError(_failed(teacher, f"training epoch {epoch}", exc)) from None
        if report is not None:
            report(
                {
                    "epoch": float(epoch),
                    "epochs": float(teacher.epochs),
                    "loss": stats.loss,
                    "train_accuracy": stats.train_accuracy,
                    "seconds": time.perf_counter() - started,
                }
            )
    seconds = time.perf_counter() - started
    try:
        val = accuracy(model, data.val)
    except Exception as exc:
        raise ValueError(_failed(teacher, "its evaluation on the validation split", exc)) from None
    state = cpu_state_dict(model)
    if torch.device(job.device).type != "cpu":  # the process goes on without the GPU
        del model, optimizer, data
        release_device_copies()
    return state, {"teacher_val_accuracy": val, "teacher_train_seconds": seconds}


def _failed(teacher: TeacherConfig, during: str, exc: Exception) -> str:
    """One line for the teacher's model failing ``during`` its training: the user's builder
    named where it is theirs."""
    arch = teacher.arch
    whose = f" ({arch['builder']})" if arch.get("builder") else ""
    first = (str(exc).splitlines() or [""])[0]
    return (
        f"teacher.arch: model family {arch.get('family')!r}{whose} failed in {during}: "
        f"{type(exc).__name__}: {first}"
    )


def build_teacher(teacher: TeacherConfig, data: Data, state: StateDict | None = None) -> nn.Module:
    try:
        model = build_model(teacher.arch, data.input_shape, data.n_classes, data.input_dtype)
    except ValueError as exc:  # a plain one names no field: it is the experiment's teacher.arch
        # An architecture the input cannot take is a trial's outcome for a student; for the
        # one teacher it is the experiment's error, named by its field.
        plain = type(exc) is ValueError or isinstance(exc, InfeasibleArchitecture)
        if not plain or str(exc).startswith("teacher."):
            raise
        raise ValueError(f"teacher.arch: {exc}") from None
    if state is not None:
        model.load_state_dict(state)
    return model


def teacher_logits(job: TeacherJob, data: Data, state: StateDict) -> Tensor:
    """Logits of the teacher on the whole training split, computed once per worker process.

    A streamed split gets them the same way, in one streamed pass, and keeps them in memory:
    they are K floats a sample (40 bytes for 10 classes, against 12 KB for a 3x32x32 float
    input), and one pass costs less than running the teacher on every batch of every epoch."""
    key = (job.key(), _identity(data.train))
    if key not in _LOGITS:
        # Building the teacher draws its initial weights (overwritten by ``state``) from the
        # global RNG, the trial's own; only the worker's first trial builds it, so that trial
        # would draw its dropout masks and batches differently from a trial of the same config
        # that finds the logits cached (a reproduction, or the same trial on another worker).
        with torch.random.fork_rng(devices=[]):
            teacher = build_teacher(job.teacher, data, state)
        teacher = teacher.to(job.device)
        _LOGITS[key] = predict_logits(teacher, data.train)
    return _LOGITS[key]


def _identity(split: Split) -> int:
    """The id of what a split reads (the same for every view of the same data)."""
    if isinstance(split, TensorSplit):
        return id(split.x)
    assert isinstance(split, StreamedSplit)
    return id(split.inputs)
