"""One short trial's config for the tests of a user's data and model: 3 epochs, 1 of pruning,
1 of QAT, a quick latency measure, and the sampled point every such test starts from
(structured pruning to half the channels, 8-bit weights and activations, no distillation)."""

from __future__ import annotations

from typing import Any

from nascomp.search.experiment import load_experiment, trial_constants

_TRAINING = [
    "train.epochs=3",
    "train.prune_epochs=1",
    "train.qat_epochs=1",
    "measure.n_warmup=1",
    "measure.n_repeat=2",
    "measure.latency_batch_size=8",
]

_SAMPLED = {
    "prune.method": "structured",
    "prune.ratio": 0.5,
    "prune.importance": "l2",
    "prune.scope": "global",
    "quant.bits": 8,
    "quant.act_bits": 8,
    "quant.layers": "all",  # as the space writes it in every trial's config
    "distill.enabled": False,
}


def short_trial(data: list[str], **sampled: Any) -> dict[str, Any]:
    """The flat config of a trial on ``data`` (``data.*=...`` overrides) at ``sampled`` (the
    architecture and anything that differs from the common point)."""
    flat = trial_constants(load_experiment(None, [*data, *_TRAINING]))
    flat.update(_SAMPLED)
    flat.update(sampled)
    return flat
