from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from nascomp.compressors.allocation import (
    allocate_bits,
    average_bits,
    budget_layer_bits,
    group_layer_bits,
    measure_sensitivity,
)
from nascomp.compressors.quantization import QuantConfig, fake_quantize_weight

# Layer A: 100 weights, sensitive; layer B: 300 weights, robust.
TOY = {"A": {2: 10.0, 4: 1.0, 8: 0.0}, "B": {2: 1.0, 4: 0.5, 8: 0.0}}
TOY_WEIGHTS = {"A": 100, "B": 300}


def test_toy_table_known_answers() -> None:
    # 3 bits on average = 1,200 bits: A4 + B2 (400 + 600) costs 2; every cheaper pair is over.
    assert allocate_bits(TOY, TOY_WEIGHTS, 3.0) == {"A": 4, "B": 2}
    # 4 bits = 1,600: A8 + B2 (1,400) costs 1 and beats the uniform A4 + B4 (1.5).
    assert allocate_bits(TOY, TOY_WEIGHTS, 4.0) == {"A": 8, "B": 2}
    # 8 bits: everything at 8, cost 0.
    assert allocate_bits(TOY, TOY_WEIGHTS, 8.0) == {"A": 8, "B": 8}
    # 2 bits: only the narrowest fits.
    assert allocate_bits(TOY, TOY_WEIGHTS, 2.0) == {"A": 2, "B": 2}


def test_ties_keep_the_fewer_bits() -> None:
    flat = {"A": {4: 0.0, 8: 0.0}}
    assert allocate_bits(flat, {"A": 10}, 8.0) == {"A": 4}


def test_budget_is_not_lost_to_float_rounding() -> None:
    # 19 weights at 3 + 4/19 bits may hold 61 bits, but the float product is 60.99999999999999.
    budget = 3 + 4 / 19
    assert math.floor(budget * 19) == 60
    table = {"A": {3: 1.0, 7: 0.0}, "B": {3: 0.0}}
    # A (1 weight) at 7 + B (18) at 3 = 61 bits: allowed.
    assert allocate_bits(table, {"A": 1, "B": 18}, budget) == {"A": 7, "B": 3}


def _brute_force(table: dict, n_weights: dict, budget: float) -> float:
    layers = list(table)
    capacity = budget * sum(n_weights.values()) + 1e-9
    best = np.inf
    for widths in itertools.product(*(sorted(table[layer]) for layer in layers)):
        n_bits = sum(n_weights[layer] * w for layer, w in zip(layers, widths, strict=True))
        if n_bits <= capacity:
            cost = sum(table[layer][w] for layer, w in zip(layers, widths, strict=True))
            best = min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(20))
def test_matches_brute_force_on_random_tables(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_layers = int(rng.integers(1, 7))
    widths = [2, 3, 4, 6, 8, 16]
    table, n_weights = {}, {}
    for index in range(n_layers):
        chosen = sorted(rng.choice(widths, size=int(rng.integers(1, 5)), replace=False).tolist())
        # Sensitivity falls with width (as measured ones do), with noise that can break that.
        table[f"l{index}"] = {w: float(rng.exponential(10.0 / w)) for w in chosen}
        n_weights[f"l{index}"] = int(rng.integers(1, 2000))
    narrowest = average_bits({k: min(v) for k, v in table.items()}, n_weights)
    widest = average_bits({k: max(v) for k, v in table.items()}, n_weights)
    budget = float(rng.uniform(narrowest, widest + 0.5))
    allocation = allocate_bits(table, n_weights, budget)
    assert average_bits(allocation, n_weights) <= budget + 1e-9
    cost = sum(table[layer][w] for layer, w in allocation.items())
    assert cost == pytest.approx(_brute_force(table, n_weights, budget), abs=1e-12)


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"budget=1\.5 bits is below the narrowest"):
        allocate_bits(TOY, TOY_WEIGHTS, 1.5)
    with pytest.raises(ValueError, match="same layers"):
        allocate_bits(TOY, {"A": 100}, 4.0)
    with pytest.raises(ValueError, match=r"width 9 not in"):
        allocate_bits({"A": {9: 0.0}}, {"A": 1}, 9.0)
    with pytest.raises(ValueError, match="not a finite number"):
        allocate_bits({"A": {4: float("nan")}}, {"A": 1}, 9.0)


def test_measure_sensitivity_known_answers() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        # Every weight of the first layer is +-0.5 per row: on the grid of any width (the
        # channel max is the largest level), so quantizing it changes nothing.
        model[0].weight.copy_(0.5 * torch.sign(torch.randn(8, 4)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(64, 4)
    y = torch.randint(0, 3, (64,))
    table = measure_sensitivity(model, [2, 4, 32], [(x[:32], y[:32]), (x[32:], y[32:])])
    assert set(table) == {"0", "2"}
    assert table["0"] == {2: 0.0, 4: 0.0, 32: 0.0}
    assert table["2"][32] == 0.0
    assert table["2"][2] != 0.0  # random weights are off the 3-level grid
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name])  # the model is left as it was
    with pytest.raises(ValueError, match="widths must be in"):
        measure_sensitivity(model, [1], [(x, y)])


def test_kl_sensitivity_is_the_output_distributions_divergence() -> None:
    """``kl``: for each (layer, width), the mean over samples of KL(float || quantized) of the
    softmax outputs, computed here independently; 0 where the weights sit on the grid, never
    negative, and larger at fewer bits on random weights."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        model[0].weight.copy_(0.5 * torch.sign(torch.randn(8, 4)))  # on every grid
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    table = measure_sensitivity(model, [2, 4, 8, 32], [(x[:40], y[:40]), (x[40:], y[40:])], "kl")
    assert table["0"] == {2: 0.0, 4: 0.0, 8: 0.0, 32: 0.0}
    assert table["2"][32] == 0.0
    assert table["2"][2] > table["2"][4] > table["2"][8] > 0.0

    with torch.no_grad():
        p = torch.softmax(model(x).double(), dim=1)
        quantized = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        quantized.load_state_dict(model.state_dict())
        quantized[2].weight.copy_(fake_quantize_weight(model[2].weight, 4))
        q = torch.softmax(quantized(x).double(), dim=1)
    expected = float((p * (p.log() - q.log())).sum(dim=1).mean())
    assert table["2"][4] == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError, match="criterion must be one of"):
        measure_sensitivity(model, [4], [(x, y)], "hessian")


def _two_layers() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def test_group_layer_bits_match_globs_and_fall_back_to_bits() -> None:
    config = QuantConfig(bits=8, mixed="groups", groups={"first": ("0",)}, group_bits={"first": 2})
    assert group_layer_bits(_two_layers(), config) == {"0": 2, "2": 8}
    overlapping = QuantConfig(
        mixed="groups", groups={"a": ("*",), "b": ("2",)}, group_bits={"a": 4, "b": 8}
    )
    with pytest.raises(ValueError, match=r"layer '2' matches quant groups \['a', 'b'\]"):
        group_layer_bits(_two_layers(), overlapping)


def test_budget_layer_bits_spend_the_budget_where_it_matters() -> None:
    torch.manual_seed(0)
    model = _two_layers()
    with torch.no_grad():
        model[0].weight.copy_(0.5 * torch.sign(torch.randn(8, 4)))  # exact at any width
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    config = QuantConfig(mixed="budget", budget=5.0, widths=(2, 8))
    # 32 weights insensitive + 24 sensitive: 2 bits for the first and 8 for the second is
    # (64 + 192) / 56 = 4.57 bits, within 5. The same under either criterion.
    assert config.sensitivity == "loss"  # what a config that does not say means
    assert budget_layer_bits(model, config, [(x, y)]) == {"0": 2, "2": 8}
    kl = QuantConfig(mixed="budget", budget=5.0, widths=(2, 8), sensitivity="kl")
    assert budget_layer_bits(model, kl, [(x, y)]) == {"0": 2, "2": 8}
    with pytest.raises(ValueError, match="sensitivity must be one of kl, loss"):
        QuantConfig(mixed="budget", budget=5.0, widths=(2, 8), sensitivity="hessian")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mixed": "all"}, "mixed must be one of none, groups, budget, got 'all'"),
        ({"group_bits": {"a": 9}, "groups": {"a": ("*",)}}, "group_bits.a must be one of"),
        ({"group_bits": {"a": 4}}, r"group_bits names groups \['a'\] that have no globs"),
        ({"mixed": "budget", "budget": 3.0}, "widths must list bit-widths"),
        ({"mixed": "budget", "widths": (4, 8), "budget": 3.0}, "budget must be a number >= "),
    ],
)
def test_quant_config_rejects_bad_mixed_settings(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        QuantConfig(**fields)
