"""A trial's config: one flat dict of dotted keys, exactly what MLflow logs as params.

The search samples the ``arch.*``, ``prune.*``, ``quant.*`` and ``distill.*`` keys; everything
else (data, training, teacher, measurement, seed, threads, device) is fixed by the experiment
and added by ``nascomp.search.experiment.trial_constants``. ``reproduce`` reads the same dict
back from MLflow (exactly: ``nascomp.search.tracking.params``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nascomp.compressors.pruning import PruneConfig
from nascomp.compressors.quantization import QuantConfig
from nascomp.spaces.space import arch_from_flat
from nascomp.trainers.settings import TrainingSections


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DistillSettings(_Section):
    enabled: bool = False
    temperature: float = 4.0
    alpha: float = 0.5
    # FitNets hint on the feature before global pooling (or the classifier's input).
    features: bool = False
    feature_weight: float = Field(1.0, gt=0.0)


class TrialConfig(TrainingSections):
    arch: dict[str, Any]
    # The compressors' own configs, validated by them: one definition of each setting.
    prune: PruneConfig = Field(default_factory=PruneConfig)
    quant: QuantConfig = Field(default_factory=QuantConfig)
    distill: DistillSettings = Field(default_factory=DistillSettings)
    seed: int = 0
    threads: int = Field(1, ge=1)
    device: str = "cpu"

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> TrialConfig:
        nested = unflatten({k: v for k, v in flat.items() if not k.startswith("arch.")})
        nested["arch"] = arch_from_flat(flat)
        return cls.model_validate(nested)


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
