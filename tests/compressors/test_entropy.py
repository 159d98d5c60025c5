from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nascomp.compressors.entropy import (
    COUNT_LIMIT,
    N_BUCKETS,
    decode_codes,
    density_bucket,
    encode_codes,
    magnitude_bits,
)
from nascomp.compressors.export import load_compressed, round_to_storage, save_compressed
from nascomp.compressors.pruning import PruneConfig, make_pruner
from nascomp.compressors.quantization import QuantConfig, prepare_qat, weight_qmax
from nascomp.compressors.size import model_size_bytes


def _random_codes(rng: np.random.Generator, shape: tuple[int, int], bits: int, density: float):
    qmax = weight_qmax(bits)
    codes = rng.integers(1, qmax + 1, size=shape) * rng.choice([-1, 1], size=shape)
    return np.where(rng.random(shape) < density, codes, 0).astype(np.int64)


def test_density_bucket_known_answers() -> None:
    # ceil-ish log2 of 64 * (kept + 1/2) / (seen + 1): nothing seen -> 1/2 -> 32 -> bucket 6.
    assert density_bucket(0, 0) == 6
    assert density_bucket(0, 100) == 0  # 64 * 0.5 / 101 < 1
    assert density_bucket(1, 1) == 6  # 48
    assert density_bucket(1, 15) == 3  # 64 * 1.5 / 16 = 6
    assert max(density_bucket(k, n) for n in range(50) for k in range(n + 1)) < N_BUCKETS


def test_magnitude_bits() -> None:
    # 2 bits: magnitude is always 1 (nothing to code); 4 bits: 1..7 in 3 decisions.
    assert [magnitude_bits(b) for b in (2, 3, 4, 8)] == [0, 2, 3, 7]


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
def test_round_trip_every_width(bits: int) -> None:
    rng = np.random.default_rng(bits)
    shapes = [(1, 1), (7, 13), (40, 100)]
    layers = [_random_codes(rng, shape, bits, 0.3) for shape in shapes]
    layers[1][:, 0] = weight_qmax(bits)  # extreme codes
    layers[1][:, 1] = -weight_qmax(bits)
    data = encode_codes(layers, [bits] * 3)
    for original, decoded in zip(layers, decode_codes(data, shapes, [bits] * 3), strict=True):
        assert np.array_equal(original, decoded)


def test_round_trip_edge_layers_and_mixed_widths() -> None:
    rng = np.random.default_rng(0)
    layers = [
        np.zeros((5, 9), dtype=np.int64),  # everything pruned
        _random_codes(rng, (6, 6), 3, 1.0),  # nothing pruned
        _random_codes(rng, (30, 200), 8, 0.02),
        np.zeros((0, 4), dtype=np.int64),  # empty
    ]
    bits = [4, 3, 8, 2]
    decoded = decode_codes(encode_codes(layers, bits), [c.shape for c in layers], bits)
    assert all(np.array_equal(a, b) for a, b in zip(layers, decoded, strict=True))


def _ideal_bits_of_one_context(bits_in_order: list[int]) -> float:
    """-log2 of the KT-with-halving model's probabilities, in floating point."""
    zeros = ones = 1
    total = 0.0
    for bit in bits_in_order:
        total -= math.log2((ones if bit else zeros) / (zeros + ones))
        if bit:
            ones += 2
        else:
            zeros += 2
        if zeros + ones > COUNT_LIMIT:
            zeros, ones = (zeros + 1) >> 1, (ones + 1) >> 1
    return total


def test_all_zero_layer_costs_almost_nothing() -> None:
    # 200 x 500 pruned weights: 100,000 keep bits, all 0. The contexts see density bucket 0
    # quickly; with counts capped at 1024 the cost per bit is about -log2(1 - 1/1024), so the
    # stream is a few dozen bytes, not the 12,500 of a bitmask.
    data = encode_codes([np.zeros((200, 500), dtype=np.int64)], [4])
    assert len(data) < 60


def test_coder_is_within_a_few_bytes_of_the_model_entropy() -> None:
    # One row of i.i.d. bits with one context in use per (bucket, left) pair is hard to follow
    # by hand; a single column has a constant row bucket (6: nothing seen in its row) and no
    # left neighbour, so its context is (column bucket, above). Check the coded size against
    # the floating-point entropy of exactly that model, computed independently.
    rng = np.random.default_rng(1)
    column = (rng.random(3000) < 0.2).astype(np.int64)
    data = encode_codes([column[:, None]], [2])  # 2 bits: magnitude costs nothing
    contexts: dict[tuple[int, int], list[int]] = {}
    signs: list[int] = []
    kept = 0
    for row, bit in enumerate(column.tolist()):
        above = int(column[row - 1]) if row else 0
        contexts.setdefault((density_bucket(kept, row), above), []).append(bit)
        kept += bit
        if bit:
            signs.append(0)  # codes are +1
    ideal = sum(_ideal_bits_of_one_context(b) for b in contexts.values())
    ideal += _ideal_bits_of_one_context(signs)
    assert abs(8 * len(data) - ideal) <= 8 * 6  # the flush adds at most 5 bytes
    assert ideal < 0.8 * 3000  # and the model is worth it: H(0.2) = 0.72 bits per position


def test_truncated_and_padded_streams_are_rejected() -> None:
    rng = np.random.default_rng(2)
    layers = [_random_codes(rng, (20, 50), 4, 0.3)]
    data = encode_codes(layers, [4])
    with pytest.raises(ValueError, match="truncated"):
        decode_codes(data[:-3], [(20, 50)], [4])
    with pytest.raises(ValueError, match="trailing"):
        decode_codes(data + b"\0", [(20, 50)], [4])


def test_bad_codes_are_rejected() -> None:
    with pytest.raises(ValueError, match="exceed"):
        encode_codes([np.full((2, 2), 8)], [4])
    with pytest.raises(ValueError, match="2-D"):
        encode_codes([np.zeros(4, dtype=np.int64)], [4])
    with pytest.raises(ValueError, match=r"2\.\.8"):
        encode_codes([np.zeros((2, 2), dtype=np.int64)], [16])


def _sparse_qat_model(make_residual_cnn: type[nn.Module], bits: int) -> nn.Module:
    torch.manual_seed(0)
    model = make_residual_cnn(width=32)
    make_pruner(model, PruneConfig("unstructured", 0.9), torch.zeros(1, 1, 8, 8)).update(1)
    prepare_qat(model, QuantConfig(bits=bits, act_bits=8))
    model.train()
    model(torch.randn(32, 1, 8, 8))
    return model.eval()


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_entropy_coded_artifact_round_trips_and_is_measured(
    make_residual_cnn: type[nn.Module], tmp_path: Path, bits: int
) -> None:
    model = round_to_storage(_sparse_qat_model(make_residual_cnn, bits))  # fp16 at 16 bits
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        expected = model(x)
    path = tmp_path / "model.nasc"
    n_bytes = save_compressed(model, path, coding="entropy")
    assert n_bytes == path.stat().st_size == model_size_bytes(model, coding="entropy")
    packed = model_size_bytes(model)
    if bits < 16:
        assert n_bytes < packed  # 90% sparse: the context model beats Rice gaps and packing
    else:
        # Float weights are not entropy coded: the file is the packed one plus a width byte per
        # weight (the format-3 table) and an empty stream's five flush bytes.
        n_weights = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
        assert n_bytes == packed + n_weights + 5
    torch.manual_seed(7)
    restored = load_compressed(path, make_residual_cnn(width=32)).eval()
    with torch.no_grad():
        assert torch.equal(restored(x), expected)
    # The loaded model saves to the same bytes: the round trip is exact.
    assert save_compressed(restored, tmp_path / "again.nasc", coding="entropy") == n_bytes
    assert (tmp_path / "again.nasc").read_bytes() == path.read_bytes()


def test_entropy_file_rejects_truncation_and_bad_coding(
    make_residual_cnn: type[nn.Module], tmp_path: Path
) -> None:
    model = _sparse_qat_model(make_residual_cnn, 4)
    save_compressed(model, tmp_path / "m", coding="entropy")
    data = (tmp_path / "m").read_bytes()
    (tmp_path / "t").write_bytes(data[:-2])
    with pytest.raises(ValueError, match="truncated"):
        load_compressed(tmp_path / "t", make_residual_cnn(width=32))
    with pytest.raises(ValueError, match="coding must be one of packed, entropy"):
        save_compressed(model, tmp_path / "x", coding="huffman")
    with pytest.raises(ValueError, match="coding must be one of packed, entropy"):
        model_size_bytes(model, coding="zip")
