"""The trainers' settings: data, training, the teacher and measurement.

Each is a pydantic section of the experiment file (``extra="forbid"``), validated where it is
declared; the experiment (``nascomp.search.experiment``) composes them, and a trial's
:class:`~nascomp.trainers.config.TrialConfig` carries them as they are.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from types import UnionType
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nascomp.spaces.params import without_nulls
from nascomp.trainers.augment import AugmentConfig
from nascomp.trainers.data import (
    USER_SOURCES,
    DataNotFoundError,
    DataSplits,
    check_data_root,
    load_data,
)
from nascomp.trainers.datasets import DatasetSource, check_source
from nascomp.trainers.stream import StreamedSplits
from nascomp.trainers.tables import content_digest
from nascomp.trainers.user_data import SplitSettings, load_user_data

# The metric names every trial reports: a contract (README, DESIGN.md); objectives,
# constraints and --pick may name any of them.
METRICS = (
    "val_accuracy",
    "test_accuracy",
    # The mean of the classes' recalls: what imbalanced data should be judged by.
    "val_balanced_accuracy",
    "test_balanced_accuracy",
    "params",
    "nonzero_params",
    "size_bytes",
    "macs",
    "latency_ms",
    "latency_batch_ms",
    "train_seconds",
    # The shipped ONNX file: its size, and its top-1 agreement with the evaluated model.
    "onnx_bytes",
    "onnx_agreement",
)
# What each metric can be: a share in [0, 1], any other a count, size or time of at least 0.
# A constraint outside them (val_accuracy >= 1.5) is refused before the search.
METRIC_BOUNDS = {
    name: (0.0, 1.0) if name.endswith(("accuracy", "agreement")) else (0.0, math.inf)
    for name in METRICS
}
# Never 0 on a trial that ended ok: every model has weights and bytes, and takes time to run
# (a constraint ``size_bytes <= 0`` trained a whole search to an empty front).
ABOVE_ZERO = ("params", "size_bytes", "latency_ms", "latency_batch_ms", "onnx_bytes")
OPTIMIZERS = ("sgd", "adam", "adamw")
MAX_SEED = 2**32 - 1  # NumPy's and scikit-learn's seeds are 32-bit


class Section(BaseModel):
    """A section of the experiment file: unknown keys are errors, defaults are validated, and a
    number is a number: not infinite or NaN (``lr: .inf`` trained every trial to NaN), and not
    a YAML boolean (``epochs: true`` read as 1) or a string (``trials: '5'``: quoted, so
    probably not what was meant)."""

    model_config = ConfigDict(
        extra="forbid", strict=False, validate_default=True, allow_inf_nan=False
    )

    @model_validator(mode="before")
    @classmethod
    def _null_is_the_default(cls, data: Any) -> Any:
        # ``KEY: null`` (``--set KEY=null``, which an empty --set value's error suggests) asks
        # for the field's default where the field takes no None itself: it was refused as
        # "Input should be a valid integer; got None" for nearly every field.
        return without_nulls(data, cls.model_fields)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool | str) and field is not None and _numeric(field.annotation):
            finite = "a finite number" if _is_infinite(value) else "a number"
            raise ValueError(f"must be {finite}; got {value!r}{_text_number_hint(value)}")
        # pydantic's lax mode reads 1, 0, 'true', 'off' as booleans: a number or a quoted word
        # where a switch belongs is more likely a slip than a choice
        words = _switch_words(field.annotation) if field is not None else None
        if words is not None and not isinstance(value, bool) and value not in (None, *words):
            allowed = ", ".join(["true", "false", *map(repr, words)]).rsplit(", ", 1)
            raise ValueError(f"must be {' or '.join(allowed)}; got {value!r}")
        return value


def _text_number_hint(value: Any) -> str:
    """Why a string that reads as a number is text: nascomp's YAML reads ``010`` (YAML 1.1's
    octal 8) as a string, quoted or not; anything else was quoted."""
    if not isinstance(value, str) or not _is_number(value):
        return ""
    text = value.strip()
    if re.fullmatch(r"[-+]?0[0-9]+", text):
        return f" (a number with a leading 0 is read as text, quoted or not: write {int(text)})"
    return " (quoted: write it without quotes)"


def _is_infinite(value: Any) -> bool:
    """``'inf'``, ``'-Infinity'``, ``'nan'``: a string that reads as no finite number."""
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _is_number(value: Any) -> bool:
    """A string that reads as a finite number (``'5'``, ``'1e-3'``; not ``'inf'``, which a
    ``--set`` value of inf is, unquoted: infinity is refused whatever its spelling)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str) and math.isfinite(number)


def _switch_words(annotation: Any) -> tuple[Any, ...] | None:
    """For a ``bool`` field (optional or not, or with literal alternatives: ``bool |
    Literal["auto"]``) the alternatives (``("auto",)``); None for any other field."""
    if annotation is bool:
        return ()
    if get_origin(annotation) not in (Union, UnionType):
        return None
    members = [a for a in get_args(annotation) if a is not type(None)]
    if bool not in members or not all(a is bool or get_origin(a) is Literal for a in members):
        return None
    return tuple(word for a in members if a is not bool for word in get_args(a))


def _numeric(annotation: Any) -> bool:
    """An ``int`` or ``float`` field, optional or not (a bool field, or a union that takes
    other things too, is not)."""
    if annotation in (int, float):
        return True
    members = [a for a in get_args(annotation) if a is not type(None)]
    return (
        get_origin(annotation) in (Union, UnionType)
        and bool(members)
        and all(a in (int, float) for a in members)
    )


class DataConfig(Section):
    """``data``: a built-in dataset, the user's own factory (``custom``), a torchvision
    dataset class (``torchvision``) or a CSV file of rows (``csv``); how it is split; and when
    it is streamed."""

    name: Literal[
        "digits", "mnist", "fashion_mnist", "imagefolder", "custom", "torchvision", "csv"
    ] = "digits"
    root: str | None = None
    factory: str | None = Field(
        None, description="custom: 'package.module:function' returning (train, test) datasets"
    )
    dataset: str | None = Field(None, description="torchvision: a torchvision.datasets class")
    options: dict[str, Any] | None = Field(
        None,
        description="custom, torchvision: keyword arguments of the factory or class; "
        "csv: target, features, sep",
    )
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    split_seed: int = Field(0, ge=0, le=MAX_SEED)
    max_train_samples: int | None = Field(None, ge=10)
    max_test_samples: int | None = Field(
        None, ge=10, description="evaluate trials on a stratified subset of the test split"
    )
    image_size: int | None = Field(None, ge=4)
    layout: Literal["auto", "channels_first"] = Field(
        "auto",
        description="custom, torchvision: auto reads a 2-D input as an (H, W) image; "
        "channels_first as (C, L) channels, as given",
    )
    stream: bool | Literal["auto"] = Field(
        "auto", description="custom, torchvision: read through a DataLoader; auto: over budget"
    )
    memory_budget_mb: int | None = Field(
        None, ge=1, description="auto streaming's budget; default: a share of the machine's RAM"
    )

    # Fields that change how data is read, never what a trial computes (kept out of cache keys).
    READING_FIELDS: ClassVar[tuple[str, ...]] = ("stream", "memory_budget_mb")
    USER_FIELDS: ClassVar[tuple[str, ...]] = ("factory", "dataset", "options")

    def load(self, *, threads: int = 1) -> DataSplits | StreamedSplits:
        """The dataset's splits, cached per process by these fields: in-memory tensors, or, for
        a user dataset over the memory budget, streamed splits. ``threads``: the CPUs of the
        trial (the reading pass's loader workers, and the default budget's share)."""
        if self.name not in USER_SOURCES:
            exclude = {*self.READING_FIELDS, *self.USER_FIELDS, "layout"}
            return load_data(**self.model_dump(exclude=exclude))
        return load_user_data(
            self.source(),
            SplitSettings(
                self.val_fraction,
                self.split_seed,
                self.max_train_samples,
                self.image_size,
                self.layout,
                self.max_test_samples,
            ),
            stream=self.stream,
            memory_budget_mb=self.memory_budget_mb,
            threads=threads,
        )

    def source(self) -> DatasetSource:
        options = tuple(sorted((self.options or {}).items()))
        return DatasetSource(self.name, self.root, self.factory, self.dataset, options)

    def identity(self) -> dict[str, Any]:
        """What a trial's results depend on: every field but the reading ones; the user's
        fields only when set, so the built-in datasets' cache keys stay as they were."""
        dumped = self.model_dump(exclude=set(self.READING_FIELDS))
        for name in self.USER_FIELDS:
            if dumped[name] is None:
                del dumped[name]
        if dumped["layout"] == "auto":  # as every dataset was read before the field existed
            del dumped["layout"]
        if dumped["max_test_samples"] is None:  # likewise: the whole test split
            del dumped["max_test_samples"]
        if self.name == "csv":  # the files themselves: one edited in place is other data
            dumped["content"] = content_digest(self.root)
        return dumped

    @model_validator(mode="after")
    def _root_holds_dataset(self) -> DataConfig:
        builtin = self.name not in USER_SOURCES
        if builtin and self.name != "digits" and self.root is None:
            holds = {
                "mnist": "MNIST/raw/ (the IDX files)",
                "fashion_mnist": "FashionMNIST/raw/ (the IDX files)",
                "imagefolder": "a folder per class, or train/ (and val/, test/) of them",
            }.get(self.name, "the dataset's files")
            raise ValueError(
                f"data.root is required for dataset {self.name!r}: the folder that holds {holds}"
            )
        if self.name == "digits" and self.root is not None:
            # it was ignored without a word: a user who set it meant another dataset
            raise ValueError(
                "data.root is not read for dataset 'digits' (bundled with scikit-learn); leave "
                "it out, or set data.name to the dataset under it"
            )
        if self.root is not None:
            # Absolute: a Ray worker may run in another folder (runtime_env's working_dir).
            self.root = str(Path(self.root).expanduser().resolve())
        self._fields_fit_name()
        try:
            check_data_root(self.name, self.root)
            if not builtin:
                check_source(self.source())
        except DataNotFoundError as exc:
            raise ValueError(str(exc)) from None
        return self

    def _fields_fit_name(self) -> None:
        wanted = {"custom": "factory", "torchvision": "dataset"}.get(self.name)
        for name in self.USER_FIELDS:
            value = getattr(self, name)
            if name == wanted and value is None:
                raise ValueError(f"data.{name} is required with name: {self.name}")
            reads_options = name == "options" and self.name in USER_SOURCES
            if value is not None and name != wanted and not reads_options:
                allowed = "name: custom" if name == "factory" else "name: torchvision"
                if name == "options":
                    allowed = "name: custom, torchvision or csv"
                raise ValueError(f"data.{name} is only read with {allowed}, not {self.name!r}")
        given_twice = self.root is not None and "root" in (self.options or {})
        if self.name in ("custom", "torchvision") and given_twice:  # data.root won, unsaid
            raise ValueError(
                "data.options.root: data.root is passed as root= too; give one of them"
            )
        if self.name not in ("custom", "torchvision") and self.layout != "auto":
            # csv too: its rows became one-channel signals, every column normalised by one
            # mean and std, and the export lost the columns' names
            holds = "rows of features (F,)" if self.name == "csv" else "(C, H, W) images"
            raise ValueError(
                f"data.layout: {self.layout!r} is for custom and torchvision datasets; "
                f"{self.name!r} holds {holds} (leave data.layout: auto)"
            )
        if self.name not in USER_SOURCES and self.stream is True:
            raise ValueError(
                "data.stream: true is for custom, torchvision and csv datasets; the built-in "
                "ones are read into memory"
            )
        if self.name not in USER_SOURCES and self.memory_budget_mb is not None:
            raise ValueError(
                "data.memory_budget_mb is for custom, torchvision and csv datasets (when to "
                "stream them); the built-in ones are read into memory"
            )


class AugmentSettings(Section):
    """Batched on-device augmentation of training batches (trainers/augment.py); off by default."""

    padding: int = Field(0, ge=0, description="zero padding before a random crop; 0: no crop")
    flip: bool = Field(False, description="random left-right flip (wrong for digits)")

    def enabled(self) -> bool:
        return self.padding > 0 or self.flip

    def augmentation(self) -> AugmentConfig | None:
        return AugmentConfig(self.padding, self.flip) if self.enabled() else None


def existing_file(path: str | None, what: str) -> str | None:
    """``path`` made absolute (trials may run in another folder); a ValueError saying
    ``what`` is missing when no file is there."""
    if path is None:
        return None
    if not str(path).strip():  # Path("") is the working folder: "is a folder" named that
        raise ValueError(f"{what}: the path is empty; give the file's path, or null for none")
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        missing = "is a folder, not a file" if resolved.is_dir() else "does not exist"
        raise ValueError(f"{what} {str(resolved)!r} {missing}")
    return str(resolved)


class TrainConfig(Section):
    # 0 with `init` alone: the user's trained weights, compressed without training first
    epochs: int = Field(10, ge=0)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(3e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    prune_epochs: int = Field(3, ge=0, description="fine-tuning epochs over which pruning ramps up")
    qat_epochs: int = Field(2, ge=0, description="quantization-aware fine-tuning epochs")
    finetune_lr_scale: float = Field(
        0.3, gt=0.0, le=1.0, description="fine-tuning learning rate = lr * this"
    )
    augment: AugmentSettings = Field(default_factory=AugmentSettings)
    class_weight: Literal["none", "balanced"] = Field(
        "none",
        description="balanced: each class's samples weigh n / (K * n_class) in the loss "
        "(scikit-learn's class_weight='balanced'), the teacher's too; for imbalanced classes",
    )
    init: str | None = Field(
        None,
        description="a checkpoint of trained weights every trial starts from (trainers/init.py)",
    )
    # Filled in from the file when the experiment is read: trials and reproduce check it.
    init_sha256: str | None = None
    init_match: Literal["exact", "slice"] = Field(
        "exact",
        description="exact: tensors of the same name and shape load; slice: also the common "
        "part of a tensor of the same name in another shape (leading channels, kernel centre)",
    )

    def augmentation(self) -> AugmentConfig | None:
        return self.augment.augmentation()

    @field_validator("init")
    @classmethod
    def _init_exists(cls, path: str | None) -> str | None:
        return existing_file(path, "checkpoint")

    @model_validator(mode="after")
    def _init_digest(self) -> TrainConfig:
        from nascomp.trainers.init import file_digest

        if self.epochs == 0 and self.init is None:
            raise ValueError(
                "train.epochs: 0 trains nothing, which only a model that starts trained can "
                "take: give train.init (a checkpoint of your trained weights) or epochs >= 1"
            )
        if self.init is None:
            if self.init_sha256 is not None:
                raise ValueError("init_sha256 goes with init (it is filled in from the file)")
        elif self.init_sha256 is None:
            self.init_sha256 = file_digest(self.init)
        return self


class TeacherConfig(Section):
    arch: dict[str, Any] = Field(
        default_factory=lambda: {
            "family": "cnn",
            "n_stages": 2,
            "blocks_per_stage": 2,
            "base_channels": 32,
            "block": "residual",
        }
    )
    epochs: int = Field(15, ge=1)
    lr: float = Field(3e-3, gt=0.0)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    batch_size: int = Field(64, ge=1)
    checkpoint: str | None = None
    # Filled in from the file when the experiment is read: trials and reproduce check it (a
    # checkpoint overwritten after the search reproduced other models, unsaid).
    checkpoint_sha256: str | None = None

    @model_validator(mode="after")
    def _checkpoint_digest(self) -> TeacherConfig:
        from nascomp.trainers.init import file_digest

        if self.checkpoint is None:
            if self.checkpoint_sha256 is not None:
                raise ValueError(
                    "checkpoint_sha256 goes with checkpoint (it is filled in from the file)"
                )
        elif self.checkpoint_sha256 is None:
            self.checkpoint_sha256 = file_digest(self.checkpoint)
        return self

    @field_validator("arch")
    @classmethod
    def _known_family(cls, arch: dict[str, Any]) -> dict[str, Any]:
        from nascomp.spaces.models import check_fields, model_names, plugin_error

        # KEY: null is the key's default, as in space.arch: left out (it reached the builder
        # as None, a custom builder's TypeError or a built-in family's "must be an int")
        given, arch = arch, {key: value for key, value in arch.items() if value is not None}
        family = arch.get("family")
        if (failed := plugin_error(family)) is not None:
            raise ValueError(failed)
        if family is None:  # `family:custom` is a key of value null: read before they went
            glued = next((key for key in given if ":" in str(key)), None)
            hint = (
                f" (a key {glued!r}: YAML needs a space after the colon, family: ...)"
                if glued is not None
                else ""
            )
            raise ValueError(f"family: missing; give one of {', '.join(model_names())}{hint}")
        if family not in model_names():
            raise ValueError(f"family must be one of {', '.join(model_names())}; got {family!r}")
        for key, value in arch.items():
            if not _finite(value):
                raise ValueError(f"{key}: must be a finite number; got {value!r}")
            if _is_range_spec(value):
                # A range is searched in space.arch; here it would reach the builder raw, or a
                # built-in family's check only once the search had started. (A list is a
                # value: mlp's hidden widths, torchvision's replace_stride_with_dilation.)
                raise ValueError(
                    f"{key}: the teacher is one model: give one value, not a range (got "
                    f"{value!r}; ranges are searched in space.arch)"
                )
        # What a built-in family's config refuses whatever the data (a list of choices where
        # one number goes): refused here, not once the search has started.
        check_fields(arch)
        return arch

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_exists(cls, path: str | None) -> str | None:
        return existing_file(path, "teacher checkpoint")


def _finite(value: Any) -> bool:
    """No NaN or infinity in a value, a list's items or a mapping's values."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_finite(item) for item in value)
    if isinstance(value, dict):
        return all(_finite(item) for item in value.values())
    return True


def _is_range_spec(value: Any) -> bool:
    """A ``{low, high}`` mapping (with ``log`` or ``step``, if any): a range of the space."""
    from nascomp.spaces.params import RANGE_KEYS

    return isinstance(value, dict) and {"low", "high"} <= set(value) <= RANGE_KEYS


RUNTIMES = ("auto", "onnxruntime", "torch")


class MeasureConfig(Section):
    latency_batch_size: int = Field(64, ge=1)
    n_warmup: int = Field(5, ge=0)
    n_repeat: int = Field(20, ge=1)
    runtime: Literal["auto", "onnxruntime", "torch"] = Field(
        "auto",
        description="what latency is timed on: onnxruntime (the shipped ONNX file), torch "
        "(PyTorch's own form); auto: onnxruntime on CPU trials, torch on GPU trials",
    )
    coding: Literal["packed", "entropy"] = Field(
        "packed",
        description="how the artifact (and so size_bytes) stores weights below 16 bits: packed "
        "codes, or entropy-coded positions and codes (Deep Compression's third stage)",
    )

    def resolved_runtime(self, device: str) -> str:
        """The runtime a trial on ``device`` is timed on. ONNX Runtime's CPU package is the
        one installed; a GPU trial is timed in PyTorch on its GPU."""
        if self.runtime != "auto":
            return self.runtime
        return "torch" if str(device).startswith("cuda") else "onnxruntime"


class TrainingSections(Section):
    """The sections a trial trains and measures by: the experiment file has them, and a trial's
    config carries them as they are (``TrialConfig``)."""

    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    measure: MeasureConfig = Field(default_factory=MeasureConfig)
