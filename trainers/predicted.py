"""A trial's final cost measures, predicted from its config alone, before it trains.

Size, parameters and MACs of the shipped model follow from the architecture, the prune
method and ratio and the bit-width, not from what training learns. An early-stopping rule
that ranks a trial at epoch 1 by the dense fp32 size it reports then would judge a model that
will be pruned to 20% and quantized to 4 bits by a size it will never have; it ranks by these
predictions instead (``search/tune/scheduler.py``).

The prediction runs ``run_trial``'s compression steps on the untrained model: build it (same
seed), prune to the final ratio at once, prepare QAT at the sampled bits, round to storage.
Exact for ``params`` and ``macs`` wherever the kept channel counts do not depend on the
weights (no pruning, unstructured pruning, structured pruning with ``scope: layer``), and for
``size_bytes`` without pruning at 16 and 32 bits. Below 16 bits a weight that rounds to code 0
is not stored, and how many do depends on the trained weights (0.2% of the bytes at 8 bits on
a small CNN). With unstructured pruning the bytes that store the kept
weights' positions depend on their pattern (trained vs initial weights); with global
structured pruning which channels go depends on the trained weights; ``nonzero_params``
counts BatchNorm biases that are still zero at initialisation. Measured on digits: within 1%
(unstructured 0.6 at 4 bits: 29,101 predicted, 29,318 bytes shipped) and 2% (global
structured 0.5 at 8 bits: 3,657 vs 3,723 bytes, MACs 15,046 vs 15,646).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from nascomp.compressors.allocation import estimated_budget_bits, group_layer_bits
from nascomp.compressors.export import round_to_storage
from nascomp.compressors.layers import layer_kinds
from nascomp.compressors.measure import count_macs, count_nonzero_params, count_params
from nascomp.compressors.pruning import PruningError, make_pruner
from nascomp.compressors.quantization import QuantizationError, prepare_qat
from nascomp.compressors.size import model_size_bytes
from nascomp.spaces.models import InfeasibleArchitecture, build_model
from nascomp.trainers.config import TrialConfig

# The measures this module predicts (names as run_trial reports them).
PREDICTED_METRICS = ("params", "nonzero_params", "size_bytes", "macs")


def predict_costs(config: Mapping[str, Any] | TrialConfig) -> dict[str, float]:
    """``params``, ``nonzero_params``, ``size_bytes`` and ``macs`` the trial of ``config`` will
    report at its end; empty when the model cannot be built, pruned or quantized (the trial
    will say why).

    Loads the config's data (cached per process) for the input shape and class count only.
    Leaves the caller's random state as it was: the driver's sampler must not see a draw."""
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.from_flat(dict(config))
    data = cfg.data.load(threads=cfg.threads)
    with torch.random.fork_rng(devices=[]), layer_kinds(cfg.quant.layers):
        torch.manual_seed(cfg.seed)
        try:
            model = build_model(cfg.arch, data.input_shape, data.n_classes, data.input_dtype)
        except InfeasibleArchitecture:
            return {}
        if cfg.prune.method != "none" and cfg.prune.ratio > 0:
            example = torch.zeros(2, *data.input_shape, dtype=data.input_dtype)
            try:
                make_pruner(model, cfg.prune, example).update(1.0)
            except PruningError:
                return {}
        try:
            if cfg.quant.mixed == "groups":
                prepare_qat(model, cfg.quant, group_layer_bits(model, cfg.quant))
            elif cfg.quant.mixed == "budget":
                prepare_qat(model, cfg.quant, estimated_budget_bits(model, cfg.quant))
            elif cfg.quant.bits < 32:
                prepare_qat(model, cfg.quant)
        except QuantizationError:
            return {}
        round_to_storage(model)
        return {
            "params": float(count_params(model)),
            "nonzero_params": float(count_nonzero_params(model)),
            "size_bytes": float(model_size_bytes(model, coding=cfg.measure.coding)),
            "macs": float(count_macs(model, data.input_shape, data.input_dtype)),
        }


@dataclass
class TrainMacs:
    """Multiply-accumulates per example of the model a flat trial config trains (its dense
    student): ``pls``'s prior for what a start trial costs (``search.cost_aware``), before any
    trial has recorded its seconds. Training a model on CPU costs about its MACs per example;
    the teacher's logits are computed once per search.

    Cached per architecture (with the layer kinds and the data, all a model's MACs follow
    from): pruning, bits and distillation do not change it. ``None`` when the model cannot be
    built (the trial would fail at once). A plain dataclass: Tune pickles the sampler that
    holds it."""

    _cache: dict[str, float | None] = field(default_factory=dict, repr=False)

    def __call__(self, config: Mapping[str, Any]) -> float | None:
        try:
            cfg = TrialConfig.from_flat(dict(config))
        except ValueError:
            return None
        # Not trained_key: a distillation temperature, a float, made every start point its
        # own entry (the quickstart's arranged start: 59 models built for 128 look-ups, 42
        # when keyed by architecture)
        key = json.dumps(
            [cfg.arch, cfg.quant.layers, cfg.data.model_dump(mode="json")],
            sort_keys=True,
            default=str,
        )
        if key not in self._cache:
            self._cache[key] = _dense_macs(cfg)
        return self._cache[key]


def _dense_macs(cfg: TrialConfig) -> float | None:
    # One thread: the driver asks this while its trials train on every core, where torch's
    # threads waited on each other; 18 models of the quickstart's space took 4.7 s with 2
    # threads and 0.24 s with 1 (the 2-core VM, load average 3.7; the counts are the same)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _counted(cfg)
    finally:
        torch.set_num_threads(threads)


def _counted(cfg: TrialConfig) -> float | None:
    with torch.random.fork_rng(devices=[]), layer_kinds(cfg.quant.layers):
        torch.manual_seed(cfg.seed)
        try:
            data = cfg.data.load(threads=cfg.threads)  # cached per process
            model = build_model(cfg.arch, data.input_shape, data.n_classes, data.input_dtype)
            return float(count_macs(model, data.input_shape, data.input_dtype))
        except Exception:  # a prior only: the trial itself says what is wrong with its model
            return None
