"""A trial's config: one flat dict of dotted keys, exactly what MLflow logs as params.

The search samples the ``arch.*``, ``prune.*``, ``quant.*`` and ``distill.*`` keys; everything
else (data, training, teacher, measurement, seed, threads, device) is fixed by the experiment
and added by ``nascomp.search.experiment.trial_constants``. ``reproduce`` reads the same dict
back from MLflow (exactly: ``nascomp.search.tracking.params``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nascomp.compressors.layers import LEGACY as LEGACY_LAYERS
from nascomp.compressors.pruning import LEGACY_EMPTIED, PruneConfig
from nascomp.compressors.quantization import QuantConfig
from nascomp.spaces.models import describe_arch
from nascomp.spaces.space import arch_from_flat
from nascomp.trainers.settings import TrainConfig, TrainingSections


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
        if "quant.layers" not in flat:
            # Logged before the key existed: Conv2d and Linear alone were compressed
            # (compressors.layers), and the trial reproduces so.
            flat = {**flat, "quant.layers": LEGACY_LAYERS}
        method = flat.get("prune.method")
        if method in LEGACY_EMPTIED and "prune.emptied" not in flat:
            # Logged before the key existed: what the target would have emptied was left
            # whole (structured) or zeroed (unstructured; compressors.pruning.EMPTIED_GROUPS),
            # and the trial reproduces so.
            flat = {**flat, "prune.emptied": LEGACY_EMPTIED[method]}
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


def describe_trial(flat: dict[str, Any]) -> str:
    """One line naming a trial's model: its family's own description, then the compression,
    e.g. ``cnn plain s1x2 c16 k3 | prune unstructured 0.57 | 4 bit | no KD``, and the file it
    started from with its training epochs, if any (``| from trained/89df....pt +1 ep``)."""
    arch = describe_arch(arch_from_flat(flat))
    if flat.get("trial") == "nb201_lookup":
        return f"{arch} | NAS-Bench-201 {flat.get('nb201.dataset')} lookup"
    method = flat.get("prune.method", "none")
    prune = (
        f"prune {method} {float(flat.get('prune.ratio', 0)):.2f}"
        if method != "none"
        else "no prune"
    )
    if method != "none" and flat.get("prune.scope", "global") == "layer":
        prune += " per layer"  # searched scopes gave front rows that read alike
    bits = f"{flat.get('quant.bits', 32)} bit"
    act_bits = int(flat.get("quant.act_bits", 8))
    if act_bits != 8 and (
        flat.get("quant.mixed", "none") != "none" or int(flat.get("quant.bits", 32)) < 16
    ):
        # quantized activations, not at the default width: searched, rows read alike
        bits_suffix = " float act" if act_bits == 32 else f" act {act_bits}"
    else:
        bits_suffix = ""
    if flat.get("quant.mixed", "none") == "budget":
        bits = f"{float(flat['quant.budget']):.2f} bit budget"
    elif flat.get("quant.mixed", "none") == "groups":
        bits = "bits " + " ".join(
            f"{key.removeprefix('quant.group_bits.')}={value}"
            for key, value in sorted(flat.items())
            if key.startswith("quant.group_bits.")
        )
    bits += bits_suffix
    distill = "no KD"
    if flat.get("distill.enabled"):
        alpha = float(flat.get("distill.alpha", 0.5))
        hint = bool(flat.get("distill.features"))
        # alpha and the hint where they differ from the defaults: trials that search them
        # otherwise read alike on the front
        distill = f"KD T={_short(float(flat['distill.temperature']))}"
        distill += (f" a={alpha:.2f}" if alpha != 0.5 else "") + (" + hint" if hint else "")
        if alpha == 0.0:  # the teacher's soft targets weigh nothing: cross-entropy
            distill = "KD feature hint alone (alpha 0)" if hint else "no KD (alpha 0)"
    text = f"{arch} | {prune} | {bits} | {distill}"
    init = flat.get("train.init")
    if init:  # the user's checkpoint, or (search.inherit_epochs) the parent's trained student
        where = Path(init)
        text += f" | from {where.parent.name}/{where.name} +{flat.get('train.epochs')} ep"
    return text


def _short(value: float) -> str:
    """One decimal, or two significant digits where one decimal is more than 5% off: a
    temperature of 0.01 read ``KD T=0.0``."""
    text = f"{value:.1f}"
    if value and abs(float(text) - value) > 0.05 * abs(value):
        text = f"{value:.2g}"
    return text


def planned_epochs(flat: dict[str, Any]) -> int:
    """Epochs a trial of this flat config runs: training, then pruning's fine-tuning when it
    prunes, then quantization-aware fine-tuning below 32 bits (as ``run_trial`` schedules)."""
    if flat.get("trial") == "nb201_lookup":
        return 0  # a table lookup trains nothing
    defaults = TrainConfig()
    prunes = flat.get("prune.method", "none") != "none" and float(flat.get("prune.ratio", 0)) > 0
    return (
        int(flat.get("train.epochs", defaults.epochs))
        + (int(flat.get("train.prune_epochs", defaults.prune_epochs)) if prunes else 0)
        + (
            int(flat.get("train.qat_epochs", defaults.qat_epochs))
            if flat.get("quant.bits", 32) < 32 or flat.get("quant.mixed", "none") != "none"
            else 0
        )
    )
