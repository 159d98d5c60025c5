"""Per-layer weight widths: prepare_qat's layer_bits and the format-3 artifact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from nascomp.compressors.export import load_compressed, save_compressed
from nascomp.compressors.pruning import PruneConfig, make_pruner
from nascomp.compressors.quantization import (
    ActivationFakeQuant,
    QuantConfig,
    prepare_qat,
    quantized_bits,
    weight_bits_by_layer,
)
from nascomp.compressors.size import HEADER_BYTES, model_size_bytes, weight_widths
from tests.compressors.conftest import two_layer_model as _small


def test_layer_bits_set_each_layer() -> None:
    model = prepare_qat(_small(), QuantConfig(bits=8, act_bits=8), {"4": 4})
    assert weight_bits_by_layer(model) == {"0": 8, "4": 4}
    assert weight_widths(model) == [8, 4]
    with pytest.raises(ValueError, match="mixed weight bit-widths"):
        quantized_bits(model)
    # A layer left at 32 bits among quantized ones keeps float inputs.
    model = prepare_qat(_small(), QuantConfig(bits=32, act_bits=8), {"0": 4})
    assert weight_bits_by_layer(model) == {"0": 4, "4": 32}
    assert isinstance(model[0].input_quant, ActivationFakeQuant)
    assert isinstance(model[4].input_quant, nn.Identity)


def test_layer_bits_all_float_is_a_no_op() -> None:
    model = _small()
    assert prepare_qat(model, QuantConfig(bits=32), {"0": 32}) is model
    assert weight_bits_by_layer(model) == {}


def test_bad_layer_bits_name_the_problem() -> None:
    with pytest.raises(ValueError, match="'1', not a Conv1d / Conv2d / Conv3d / Linear"):
        prepare_qat(_small(), QuantConfig(bits=8), {"1": 4})
    with pytest.raises(ValueError, match=r"layer_bits\['0'\] must be one of"):
        prepare_qat(_small(), QuantConfig(bits=8), {"0": 9})


def test_mixed_packed_size_known_answer() -> None:
    model = prepare_qat(_small(), QuantConfig(bits=8, act_bits=8), {"0": 4})
    # Format 3: header + one width byte per weight (2). Conv at 4 bits: encoding 1 + values
    # ceil(4 * 72 / 8) = 36 + scales 4 * 4 = 53. Linear at 8 bits: 1 + 12 + 4 * 3 = 25. Other
    # tensors fp32: conv bias 4, BN 16, linear bias 3 = 23 floats = 92, plus two activation
    # ranges (min, max) = 16.
    assert model_size_bytes(model) == HEADER_BYTES + 2 + 53 + 25 + 92 + 16 == 199


def _quant_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "weight_bits")]


def _mixed_model(make_residual_cnn: type[nn.Module]) -> tuple[nn.Module, dict[str, int]]:
    torch.manual_seed(0)
    model = make_residual_cnn(width=32)
    make_pruner(model, PruneConfig("unstructured", 0.7), torch.zeros(1, 1, 8, 8)).update(1)
    widths = {"stem.0": 8, "blocks.0.conv1": 2, "blocks.1.conv2": 16, "head": 32}
    prepare_qat(model, QuantConfig(bits=4, act_bits=8), widths)
    model.train()
    model(torch.randn(32, 1, 8, 8))
    return model.eval(), widths


@pytest.mark.parametrize("coding", ["packed", "entropy"])
def test_mixed_artifact_round_trips_bit_exactly(
    make_residual_cnn: type[nn.Module], tmp_path: Path, coding: str
) -> None:
    model, widths = _mixed_model(make_residual_cnn)
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        expected = model(x)
    path = tmp_path / "mixed.nasc"
    n_bytes = save_compressed(model, path, coding=coding)
    assert n_bytes == path.stat().st_size == model_size_bytes(model, coding=coding)
    torch.manual_seed(3)
    restored = load_compressed(path, make_residual_cnn(width=32)).eval()
    assert weight_bits_by_layer(restored) == weight_bits_by_layer(model)
    assert {name: weight_bits_by_layer(restored)[name] for name in widths} == widths
    with torch.no_grad():
        assert torch.equal(restored(x), expected)
    # What the model computes with is exact: each layer's fake-quantized weight, and every
    # other stored tensor (the raw float weights behind the codes are not stored).
    for (name, layer), twin in zip(
        _quant_layers(model), (m for _, m in _quant_layers(restored)), strict=True
    ):
        assert torch.equal(twin.quantized_weight(), layer.quantized_weight()), name
    layer_weights = {f"{name}.weight" for name, _ in _quant_layers(model)}
    for name, tensor in model.state_dict().items():
        if name not in layer_weights and not name.endswith("num_batches_tracked"):
            assert torch.equal(restored.state_dict()[name], tensor), name
    assert save_compressed(restored, tmp_path / "again.nasc", coding=coding) == n_bytes
    assert (tmp_path / "again.nasc").read_bytes() == path.read_bytes()


def test_mixed_artifact_checks_a_prepared_skeleton(
    make_residual_cnn: type[nn.Module], tmp_path: Path
) -> None:
    model, widths = _mixed_model(make_residual_cnn)
    save_compressed(model, tmp_path / "m")
    same = prepare_qat(make_residual_cnn(width=32), QuantConfig(bits=4, act_bits=8), widths)
    load_compressed(tmp_path / "m", same)
    other = prepare_qat(make_residual_cnn(width=32), QuantConfig(bits=4, act_bits=8))
    with pytest.raises(ValueError, match="prepared at widths"):
        load_compressed(tmp_path / "m", other)
    with pytest.raises(ValueError, match="weight_bits=4 differs"):
        save_compressed(model, tmp_path / "x", weight_bits=4)


def test_a_model_without_weights_keeps_its_storage_width(tmp_path: Path) -> None:
    # No Conv2d / Linear: the width comes from the header alone (fp16 at 16 bits).
    model = nn.Sequential(nn.BatchNorm1d(3)).eval()
    with torch.no_grad():
        model[0].running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
    n_bytes = save_compressed(model, tmp_path / "bn", weight_bits=16)
    assert n_bytes == HEADER_BYTES + 2 * 4 * 3 == model_size_bytes(model, 16)
    restored = load_compressed(tmp_path / "bn", nn.Sequential(nn.BatchNorm1d(3)))
    assert torch.equal(restored[0].running_mean, model[0].running_mean)
