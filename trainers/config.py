"""A trial's config: one flat dict of dotted keys, exactly what MLflow logs as params.

The search samples the ``arch.*``, ``prune.*``, ``quant.*`` and ``distill.*`` keys; everything
else (data, training, teacher, measurement, seed, threads, device) is fixed by the experiment
and added by :func:`trial_constants`. ``reproduce`` reads the same dict back from MLflow.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from spaces.config import DataConfig, Experiment, MeasureConfig, TeacherConfig, TrainConfig
from spaces.space import arch_from_flat


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PruneSettings(_Section):
    method: str = "none"
    ratio: float = 0.0
    importance: str = "l1"
    scope: str = "global"


class QuantSettings(_Section):
    bits: int = 32
    act_bits: int = 8


class DistillSettings(_Section):
    enabled: bool = False
    temperature: float = 4.0
    alpha: float = 0.5
    # FitNets hint on the feature before global pooling (or the classifier's input).
    features: bool = False
    feature_weight: float = Field(1.0, gt=0.0)


class TrialConfig(_Section):
    arch: dict[str, Any]
    prune: PruneSettings = Field(default_factory=PruneSettings)
    quant: QuantSettings = Field(default_factory=QuantSettings)
    distill: DistillSettings = Field(default_factory=DistillSettings)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    measure: MeasureConfig = Field(default_factory=MeasureConfig)
    seed: int = 0
    threads: int = Field(1, ge=1)
    device: str = "cpu"

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> TrialConfig:
        nested = unflatten({k: v for k, v in flat.items() if not k.startswith("arch.")})
        nested["arch"] = arch_from_flat(flat)
        return cls.model_validate(nested)


def trial_constants(experiment: Experiment) -> dict[str, Any]:
    """The fixed part of every trial's flat config, taken from the experiment."""
    fixed = {
        "data": experiment.data.model_dump(),
        "train": experiment.train.model_dump(),
        "measure": experiment.measure.model_dump(),
        "seed": experiment.search.seed,
        # Equal thread counts make a reproduced run bit-identical to the searched one on CPU.
        "threads": max(1, int(experiment.resources.cpus_per_trial)),
        "device": "cuda" if experiment.resources.gpus_per_trial > 0 else "cpu",
    }
    if experiment.space.distillation_possible():
        fixed["teacher"] = experiment.teacher.model_dump()
    return flatten(fixed)


def teacher_key(config: TrialConfig) -> str:
    """Cache key of the teacher: everything its weights depend on."""
    teacher = config.teacher.model_dump()
    if config.teacher.checkpoint:
        teacher["checkpoint"] = _file_digest(Path(config.teacher.checkpoint))
    payload = {
        "teacher": teacher,
        "data": config.data.model_dump(),
        "augment": config.train.augment.model_dump(),
        "seed": config.seed,
        "threads": config.threads,
        "device": config.device,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def flatten(nested: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def decode_param(text: str) -> Any:
    """Undo MLflow's str() of a param value: ints, floats, bools and None come back typed."""
    literals = {"None": None, "True": True, "False": False}
    if text in literals:
        return literals[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text.startswith("[") or text.startswith("{"):
        try:
            return json.loads(text.replace("'", '"'))
        except json.JSONDecodeError:
            return text
    return text
