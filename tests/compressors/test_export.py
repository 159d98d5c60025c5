from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nascomp.compressors.export import (
    _decode_positions,
    _encode_positions,
    _Reader,
    load_compressed,
    pack_uints,
    save_compressed,
    unpack_uints,
)
from nascomp.compressors.pruning import PruneConfig, make_pruner
from nascomp.compressors.quantization import QuantConfig, prepare_qat
from nascomp.compressors.size import (
    BITMASK,
    INDEX_LIST,
    RICE,
    index_bits_per_entry,
    model_size_bytes,
    position_code,
)


def _trained_like(model_cls: type[nn.Module], bits: int, sparsity: float) -> nn.Module:
    """A QAT ResidualCNN with pruned weights and observed activation ranges, in eval mode."""
    torch.manual_seed(0)
    model = model_cls(width=32)
    if sparsity:
        make_pruner(model, PruneConfig("unstructured", sparsity), torch.zeros(1, 1, 8, 8)).update(1)
    prepare_qat(model, QuantConfig(bits=bits, act_bits=8))
    model.train()
    model(torch.randn(32, 1, 8, 8))  # sets activation ranges and BN statistics
    return model.eval()


def test_pack_known_answer() -> None:
    # LSB first: 1 -> bits 1,0; 2 -> 0,1; 3 -> 1,1; stream 100111 -> 0b00111001 = 57.
    assert pack_uints(np.array([1, 2, 3]), 2) == bytes([57])
    values = np.array([0, 5, 127, 64, 1, 99, 126])
    assert np.array_equal(unpack_uints(pack_uints(values, 7), 7, 7), values)
    assert index_bits_per_entry(72) == 7 and index_bits_per_entry(64) == 6


@pytest.mark.parametrize(("bits", "sparsity"), [(2, 0.0), (4, 0.5), (8, 0.0), (8, 0.97), (32, 0.6)])
def test_round_trip_is_exact_and_size_matches(
    make_residual_cnn: type[nn.Module], tmp_path: Path, bits: int, sparsity: float
) -> None:
    model = _trained_like(make_residual_cnn, bits, sparsity)
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        expected = model(x)
    path = tmp_path / "model.nasc"
    n_bytes = save_compressed(model, path)
    assert n_bytes == path.stat().st_size
    # The size formula is the file's size, header included.
    assert n_bytes == model_size_bytes(model)
    torch.manual_seed(123)  # a skeleton with different weights: loading must overwrite all
    restored = load_compressed(path, make_residual_cnn(width=32)).eval()
    with torch.no_grad():
        assert torch.equal(restored(x), expected)


@pytest.mark.parametrize(("density", "kind"), [(0.0, INDEX_LIST), (0.05, RICE), (0.5, BITMASK)])
def test_positions_round_trip_in_every_encoding(density: float, kind: int) -> None:
    rng = np.random.default_rng(0)
    for numel in (1, 7, 5000):
        mask = rng.random(numel) < density
        mask[0] = mask[-1] = True  # first and last positions are the edge cases of gaps
        data = _encode_positions(mask)
        assert len(data) == position_code(mask).n_bytes
        reader = _Reader(data + b"tail")
        assert np.array_equal(_decode_positions(reader, numel), mask)
        assert reader.offset == len(data)
        if numel == 5000:
            assert data[0] == kind
    empty = np.zeros(9, dtype=bool)
    assert np.array_equal(_decode_positions(_Reader(_encode_positions(empty)), 9), empty)


def test_sixteen_bits_round_trip_to_fp16_precision(
    make_residual_cnn: type[nn.Module], tmp_path: Path
) -> None:
    model = _trained_like(make_residual_cnn, 16, 0.5)
    x = torch.randn(8, 1, 8, 8)
    save_compressed(model, tmp_path / "m16")
    restored = load_compressed(tmp_path / "m16", make_residual_cnn(width=32)).eval()
    # Weights are fp16 in both; biases and BN are fp16 in the file only (size formula).
    assert torch.equal(restored.head.quantized_weight(), model.head.quantized_weight())
    with torch.no_grad():
        assert torch.allclose(restored(x), model(x), atol=1e-3, rtol=1e-3)


def test_float_model_saved_at_low_bits(make_residual_cnn: type[nn.Module], tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = make_residual_cnn(width=32).eval()
    save_compressed(model, tmp_path / "ptq", 4)
    restored = load_compressed(tmp_path / "ptq", make_residual_cnn(width=32)).eval()
    reference = prepare_qat(copy.deepcopy(model), QuantConfig(bits=4, act_bits=32)).eval()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(restored(x), reference(x))


def test_structurally_pruned_model_needs_pruned_skeleton(
    make_residual_cnn: type[nn.Module], tmp_path: Path
) -> None:
    def pruned(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        model = make_residual_cnn(width=32)
        config = PruneConfig("structured", 0.5, scope="layer")
        make_pruner(model, config, torch.zeros(1, 1, 8, 8)).update(1.0)
        return model

    model = prepare_qat(pruned(0), QuantConfig(bits=4)).eval()
    save_compressed(model, tmp_path / "p")
    with pytest.raises(ValueError, match="do not match"):
        load_compressed(tmp_path / "p", make_residual_cnn(width=32))
    restored = load_compressed(tmp_path / "p", pruned(1)).eval()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(restored(x), model(x))


def test_bad_inputs(make_residual_cnn: type[nn.Module], tmp_path: Path) -> None:
    model = _trained_like(make_residual_cnn, 4, 0.0)
    with pytest.raises(ValueError, match="weight_bits"):
        save_compressed(model, tmp_path / "x", 8)
    save_compressed(model, tmp_path / "x")
    with pytest.raises(ValueError, match="prepared at 8 bits"):
        load_compressed(
            tmp_path / "x", prepare_qat(make_residual_cnn(width=32), QuantConfig(bits=8))
        )
    (tmp_path / "y").write_bytes((tmp_path / "x").read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        load_compressed(tmp_path / "y", make_residual_cnn(width=32))
    (tmp_path / "z").write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="not a nascomp"):
        load_compressed(tmp_path / "z", make_residual_cnn(width=32))


def test_a_layer_stored_with_its_zero_codes_loads_back_exactly(tmp_path: Path) -> None:
    """17 of the conv's 72 weights round to code 0 at 4 bits: writing all 72 codes is cheaper
    than a bitmask and 55 codes, and the file still restores every weight."""
    from tests.compressors.conftest import two_layer_model

    model = prepare_qat(two_layer_model(), QuantConfig(bits=4, act_bits=32))
    with torch.no_grad():
        model[0].weight[0].view(-1)[1:] *= 1e-3
    path = tmp_path / "model.nasc"
    n_bytes = save_compressed(model, path)
    assert n_bytes == path.stat().st_size == model_size_bytes(model)
    skeleton = prepare_qat(two_layer_model(), QuantConfig(bits=4, act_bits=32))
    restored = load_compressed(path, skeleton)
    x = torch.randn(4, 2, 5, 5)
    with torch.no_grad():
        assert torch.equal(restored.eval()(x), model.eval()(x))
