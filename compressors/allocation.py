"""Mixed precision: each layer's sensitivity to each weight width, and the exact allocation.

Criterion, :func:`measure_sensitivity`, when one layer alone has its weights quantized at a
width (the rest float), on a few training batches:

- ``kl`` (the default since issue 15's Deep Compression runs): the mean KL divergence of the
  quantized model's class distribution from the float model's. It measures how far the
  quantized layer moves the model's outputs, which is what fine-tuning must then recover; it is
  never negative and grows with the error a width adds.
- ``loss`` (what configs written before ``quant.sensitivity`` existed use): the increase of the
  cross-entropy against the labels. On a model fitted to its training batches the loss is
  near zero, so the increase is noise-sized and can even be negative: on LeNet-5 pruned to 94%
  it ranked conv2 at 2 bits no worse than at 4 (docs/benchmarks.md).

Both are measured, not estimated: a Hessian trace (HAWQ) approximates the loss increase to second
order and needs Hutchinson iterations of backward passes; for the models a search trains here
the direct measurement costs one forward pass per (layer, width) on ~1,000 images, which is
less. Summing per-layer costs assumes they add up, as HAWQ and HAQ do too.

Mechanism, :func:`allocate_bits`: minimise the summed sensitivity subject to an average weight
width of at most ``budget`` bits (weighted by each layer's weight count), exactly. It is a
multiple-choice knapsack solved by dynamic programming over the layers, keeping only the
Pareto front of (bits used, sensitivity) states: a state that uses more bits for no less
sensitivity can never be part of an optimum. Exact for any table; the front holds at most one
state per distinct bit total, and in practice a few hundred.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nascomp.compressors.distillation import kl_sum
from nascomp.compressors.layers import is_quantized_layer, weight_names
from nascomp.compressors.quantization import (
    SENSITIVITY_CRITERIA,
    VALID_BITS,
    QuantConfig,
    fake_quantize_weight,
)

# Slack on the bit capacity so that a budget written in decimal (3.3 bits) is not lost to the
# float's binary rounding when multiplied by a weight count.
_CAPACITY_SLACK = 1e-9


@dataclass(frozen=True)
class _State:
    n_bits: int
    cost: float
    parent: _State | None
    width: int


def allocate_bits(
    sensitivity: Mapping[str, Mapping[int, float]],
    n_weights: Mapping[str, int],
    budget: float,
) -> dict[str, int]:
    """The width per layer minimising the total sensitivity with
    ``sum(n_weights[l] * width[l]) <= budget * sum(n_weights)``; ties keep the fewer bits.

    ``sensitivity[layer][width]``: the cost of ``layer`` at ``width``; every width listed is a
    choice for that layer. Raises ValueError when even the narrowest widths exceed the budget.
    """
    layers = list(sensitivity)
    if set(layers) != set(n_weights):
        raise ValueError("sensitivity and n_weights must name the same layers")
    for layer in layers:
        _check_row(layer, sensitivity[layer], n_weights[layer])
    total = sum(n_weights.values())
    capacity = math.floor(budget * total + _CAPACITY_SLACK)
    narrowest = sum(n_weights[layer] * min(sensitivity[layer]) for layer in layers)
    if narrowest > capacity:
        raise ValueError(
            f"budget={budget} bits is below the narrowest allocation "
            f"({narrowest / max(total, 1):.3f} bits on average)"
        )
    front = [_State(0, 0.0, None, 0)]
    for layer in layers:
        front = _extend(front, sensitivity[layer], n_weights[layer], capacity)
    best = min(front, key=lambda state: (state.cost, state.n_bits))
    widths: list[int] = []
    state: _State | None = best
    while state is not None and state.parent is not None:
        widths.append(state.width)
        state = state.parent
    return dict(zip(layers, reversed(widths), strict=True))


def _check_row(layer: str, row: Mapping[int, float], n_weights: int) -> None:
    if not row:
        raise ValueError(f"sensitivity[{layer!r}] lists no width")
    for width, cost in row.items():
        if isinstance(width, bool) or width not in VALID_BITS:
            raise ValueError(f"sensitivity[{layer!r}] width {width!r} not in {VALID_BITS}")
        if not math.isfinite(cost):
            raise ValueError(f"sensitivity[{layer!r}][{width}] is {cost}, not a finite number")
    if isinstance(n_weights, bool) or not isinstance(n_weights, int) or n_weights < 0:
        raise ValueError(f"n_weights[{layer!r}] must be a count >= 0, got {n_weights!r}")


def _extend(
    front: list[_State], row: Mapping[int, float], n_weights: int, capacity: int
) -> list[_State]:
    """Every state of ``front`` with each width of one more layer, back to a Pareto front."""
    candidates = [
        _State(state.n_bits + n_weights * width, state.cost + cost, state, width)
        for state in front
        for width, cost in sorted(row.items())
        if state.n_bits + n_weights * width <= capacity
    ]
    candidates.sort(key=lambda state: (state.n_bits, state.cost))
    pareto: list[_State] = []
    for state in candidates:
        if not pareto or state.cost < pareto[-1].cost:
            pareto.append(state)
    return pareto


def average_bits(widths: Mapping[str, int], n_weights: Mapping[str, int]) -> float:
    """The weight-count-weighted average width of an allocation."""
    total = sum(n_weights[layer] for layer in widths)
    return sum(widths[layer] * n_weights[layer] for layer in widths) / max(total, 1)


def kept_weights(layer: nn.Module) -> int:
    """The nonzero entries of a quantized layer's weights (all of a recurrent layer's)."""
    return sum(int(getattr(layer, attr).count_nonzero()) for attr in weight_names(layer))


def quantizable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The quantized layers of a float model (``compressors.layers``: convolutions, Linear,
    Embedding, recurrent and attention layers), by module name (what widths apply to)."""
    return {name: module for name, module in model.named_modules() if is_quantized_layer(module)}


@torch.no_grad()
def measure_sensitivity(
    model: nn.Module,
    widths: Sequence[int],
    batches: Sequence[tuple[Tensor, Tensor]],
    criterion: str = "kl",
) -> dict[str, dict[int, float]]:
    """The cost on ``batches`` (inputs, labels) of each quantizable layer (convolution, Linear,
    Embedding, recurrent, attention) alone having its weights quantized at each width of ``widths``
    (``criterion``: see the module's docstring); a float model in, unchanged. 32 bits costs 0
    by definition."""
    for width in widths:
        if isinstance(width, bool) or width not in VALID_BITS:
            raise ValueError(f"widths must be in {VALID_BITS}, got {width!r}")
    if criterion not in SENSITIVITY_CRITERIA:
        raise ValueError(f"criterion must be one of {SENSITIVITY_CRITERIA}, got {criterion!r}")
    was_training = model.training
    model.eval()
    if criterion == "kl":
        # The float model's log-probabilities, once: every quantized variant is compared to them.
        targets = [F.log_softmax(model(inputs), dim=1) for inputs, _ in batches]

        def cost() -> float:
            return _kl(model, batches, targets)

    else:
        reference = _loss(model, batches)

        def cost() -> float:
            return _loss(model, batches) - reference

    table: dict[str, dict[int, float]] = {}
    for name, layer in quantizable_layers(model).items():
        weights = [getattr(layer, attr) for attr in weight_names(layer)]
        originals = [weight.detach().clone() for weight in weights]
        row: dict[int, float] = {}
        for width in widths:
            if width == 32:
                row[width] = 0.0
                continue
            for weight, original in zip(weights, originals, strict=True):
                weight.copy_(fake_quantize_weight(original, width))
            row[width] = cost()
        for weight, original in zip(weights, originals, strict=True):
            weight.copy_(original)
        table[name] = row
    model.train(was_training)
    return table


def _kl(
    model: nn.Module, batches: Sequence[tuple[Tensor, Tensor]], targets: Sequence[Tensor]
) -> float:
    """Mean KL(float || quantized) per sample over ``batches``."""
    total, count = 0.0, 0
    for (inputs, _), target in zip(batches, targets, strict=True):
        log_probs = F.log_softmax(model(inputs), dim=1)
        total += kl_sum(log_probs, target).item()
        count += inputs.shape[0]
    return total / max(count, 1)


def _loss(model: nn.Module, batches: Sequence[tuple[Tensor, Tensor]]) -> float:
    total, count = 0.0, 0
    for inputs, labels in batches:
        total += F.cross_entropy(model(inputs), labels, reduction="sum").item()
        count += labels.numel()
    return total / max(count, 1)


def group_layer_bits(model: nn.Module, config: QuantConfig) -> dict[str, int]:
    """``mixed="groups"``: each quantizable layer takes the width of the group whose globs
    (``fnmatch`` over module names) it matches, else ``config.bits``. A layer matching two
    groups is an error; a group matching no layer is not (the architecture may lack it)."""
    widths: dict[str, int] = {}
    for name in quantizable_layers(model):
        matched = sorted(
            group
            for group in config.group_bits
            if any(fnmatch.fnmatchcase(name, glob) for glob in config.groups[group])
        )
        if len(matched) > 1:
            raise ValueError(f"layer {name!r} matches quant groups {matched}; make them disjoint")
        widths[name] = config.group_bits[matched[0]] if matched else config.bits
    return widths


def budget_layer_bits(
    model: nn.Module, config: QuantConfig, batches: Sequence[tuple[Tensor, Tensor]]
) -> dict[str, int]:
    """``mixed="budget"``: the exact allocation among ``config.widths`` with at most
    ``config.budget`` bits per kept (nonzero) weight on average, from the sensitivity of the
    float model (trained and pruned) measured on ``batches``."""
    assert config.budget is not None
    table = measure_sensitivity(model, config.widths, batches, config.sensitivity)
    layers = quantizable_layers(model)
    kept = {name: kept_weights(layers[name]) for name in table}
    return allocate_bits(table, kept, config.budget)


def estimated_budget_bits(model: nn.Module, config: QuantConfig) -> dict[str, int]:
    """Before training, a budget allocation is unknown: the widest allowed width within the
    budget, for every layer (what a cost prediction can use)."""
    assert config.budget is not None
    width = max(w for w in config.widths if w <= config.budget)
    return dict.fromkeys(quantizable_layers(model), width)
