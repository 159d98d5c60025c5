"""The trainers' settings: data, training, the teacher and measurement.

Each is a pydantic section of the experiment file (``extra="forbid"``), validated where it is
declared; the experiment (``nascomp.search.experiment``) composes them, and a trial's
:class:`~nascomp.trainers.config.TrialConfig` carries them as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nascomp.trainers.augment import AugmentConfig
from nascomp.trainers.data import DataNotFoundError, DataSplits, check_data_root, load_data

# The metric names every trial reports: a contract (README, DESIGN.md); objectives,
# constraints and --pick may name any of them.
METRICS = (
    "val_accuracy",
    "test_accuracy",
    "params",
    "nonzero_params",
    "size_bytes",
    "macs",
    "latency_ms",
    "latency_batch_ms",
    "train_seconds",
)
OPTIMIZERS = ("sgd", "adam", "adamw")


class Section(BaseModel):
    """A section of the experiment file: unknown keys are errors, defaults are validated."""

    model_config = ConfigDict(extra="forbid", strict=False, validate_default=True)


class DataConfig(Section):
    name: Literal["digits", "mnist", "fashion_mnist", "imagefolder"] = "digits"
    root: str | None = None
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    split_seed: int = 0
    max_train_samples: int | None = Field(None, ge=10)
    image_size: int | None = Field(None, ge=4)

    def load(self) -> DataSplits:
        """The dataset's splits as in-memory tensors (cached per process by these fields)."""
        # The fields are exactly load_data's keyword arguments.
        return load_data(**self.model_dump())

    @model_validator(mode="after")
    def _root_holds_dataset(self) -> DataConfig:
        if self.name != "digits" and self.root is None:
            raise ValueError(f"data.root is required for dataset {self.name!r}")
        if self.root is not None:
            self.root = str(Path(self.root).expanduser().resolve())
        try:
            check_data_root(self.name, self.root)
        except DataNotFoundError as exc:
            raise ValueError(str(exc)) from None
        return self


class AugmentSettings(Section):
    """Batched on-device augmentation of training batches (trainers/augment.py); off by default."""

    padding: int = Field(0, ge=0, description="zero padding before a random crop; 0: no crop")
    flip: bool = Field(False, description="random left-right flip (wrong for digits)")

    def enabled(self) -> bool:
        return self.padding > 0 or self.flip

    def augmentation(self) -> AugmentConfig | None:
        return AugmentConfig(self.padding, self.flip) if self.enabled() else None


class TrainConfig(Section):
    epochs: int = Field(10, ge=1)
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

    def augmentation(self) -> AugmentConfig | None:
        return self.augment.augmentation()


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

    @field_validator("arch")
    @classmethod
    def _known_family(cls, arch: dict[str, Any]) -> dict[str, Any]:
        from nascomp.spaces.models import model_names

        family = arch.get("family")
        if family not in model_names():
            raise ValueError(f"family must be one of {', '.join(model_names())}; got {family!r}")
        return arch

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_exists(cls, path: str | None) -> str | None:
        if path is None:
            return None
        resolved = Path(path).expanduser().resolve()
        if not resolved.is_file():
            raise ValueError(f"teacher checkpoint {str(resolved)!r} does not exist")
        return str(resolved)


class MeasureConfig(Section):
    latency_batch_size: int = Field(64, ge=1)
    n_warmup: int = Field(5, ge=0)
    n_repeat: int = Field(20, ge=1)


class TrainingSections(Section):
    """The sections a trial trains and measures by: the experiment file has them, and a trial's
    config carries them as they are (``TrialConfig``)."""

    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    measure: MeasureConfig = Field(default_factory=MeasureConfig)
