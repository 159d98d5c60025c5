from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nascomp.compressors.quantization import QuantConfig, prepare_qat
from nascomp.compressors.size import (
    BITMASK,
    DENSE,
    HEADER_BYTES,
    INDEX_LIST,
    RICE,
    PositionCode,
    model_size_bytes,
    position_code,
)
from tests.compressors.conftest import two_layer_model as _model

# Shared by every case below: conv bias 4, BN weight/bias/mean/var 16, linear bias 3 = 23 floats
# (BN's num_batches_tracked is not deployed).
N_OTHER = 23
# Header plus one encoding byte per weight (two weights).
FIXED = HEADER_BYTES + 2


def _keep(model: nn.Module, positions: list[int]) -> None:
    with torch.no_grad():
        keep = torch.zeros(72, dtype=torch.bool)
        keep[positions] = True
        model[0].weight.view(-1)[~keep] = 0.0


def test_dense_32_bits() -> None:
    assert model_size_bytes(_model()) == 4 * (72 + 12) + 4 * N_OTHER + FIXED == 441


def test_dense_16_bits() -> None:
    assert model_size_bytes(_model(), 16) == 2 * (72 + 12) + 2 * N_OTHER + FIXED == 227


def test_dense_8_bits() -> None:
    # 1 byte per weight + one fp32 scale per output channel (4 + 3).
    assert model_size_bytes(_model(), 8) == (72 + 12) + 4 * 7 + 4 * N_OTHER + FIXED == 217


def test_default_bits_come_from_prepare_qat() -> None:
    model = prepare_qat(_model(), QuantConfig(bits=8, act_bits=8))
    # As above plus each layer's activation range (min and max, fp32): 2 layers * 8 bytes.
    assert model_size_bytes(model) == 217 + 16


def test_sparse_bitmask() -> None:
    model = _model()
    _keep(model, list(range(36)))
    # conv at 4 bits: values ceil(4 * 36 / 8) = 18; bitmask 9 bytes beats an index list
    # (4 + 32) and Rice gaps (4 + 1 + 5); scales 16. Linear dense: 6 + 12. Others 92.
    assert model_size_bytes(model, 4) == (18 + 9 + 16) + (6 + 12) + 92 + FIXED == 166


def test_sparse_index_list() -> None:
    model = _model()
    _keep(model, [40])
    # One weight at 2 bits: value 1 byte; index list nnz 4 + 7 bits = 5 bytes (bitmask 9, Rice
    # 4 + 1 + 1 unary + 1 remainder = 7); scales 16. Linear: ceil(2 * 12 / 8) = 3 + 12.
    assert model_size_bytes(model, 2) == (1 + 5 + 16) + (3 + 12) + 92 + FIXED == 142


def test_sparse_rice_at_16_and_32_bits_has_no_scales() -> None:
    model = _model()
    _keep(model, list(range(5)))
    # Five leading weights: Rice gaps are all 0 -> nnz 4 + r 1 + 5 unary bits (1 byte) = 6.
    # 16 bits: 10 value bytes + 6; linear 24; others 46.
    assert model_size_bytes(model, 16) == (10 + 6) + 24 + 46 + FIXED == 99
    # 32 bits: 20 + 6; linear 48; others 92.
    assert model_size_bytes(model, 32) == (20 + 6) + 48 + 92 + FIXED == 179


def test_weights_that_round_to_zero_are_not_stored_where_that_saves_bytes() -> None:
    model = _model()
    with torch.no_grad():
        # Output channels 0 and 1 (weights 0..35): all but their first round to code 0 at 4 bits.
        model[0].weight[0].view(-1)[1:] *= 1e-3
        model[0].weight[1].view(-1)[1:] *= 1e-3
    # conv: 38 stored weights -> bitmask 9 (+1 encoding) + values ceil(4 * 38 / 8) = 19 +
    # scales 16, against 1 + 36 for every code; linear dense 1 + 6 + 12; others 92; header 11.
    assert model_size_bytes(model, 4) == (10 + 19 + 16) + 19 + 92 + HEADER_BYTES == 167


def test_a_few_zero_codes_are_stored_rather_than_their_positions() -> None:
    """17 of 72 weights round to code 0: a bitmask (1 + 9) and 55 codes (28) cost 38 bytes,
    all 72 codes 1 + 36: the layer is stored dense (a structurally pruned ViT's 8-bit file
    was 12% over its codes, 10% over its int8 ONNX file)."""
    model = _model()
    with torch.no_grad():
        model[0].weight[0].view(-1)[1:] *= 1e-3
    assert model_size_bytes(model, 4) == (37 + 16) + 19 + 92 + HEADER_BYTES == 175


def test_position_code_known_answers() -> None:
    assert position_code(np.ones(10, dtype=bool)) == PositionCode(DENSE, 1)
    assert position_code(np.zeros(100, dtype=bool)) == PositionCode(INDEX_LIST, 5)
    half = np.arange(16) % 2 == 0
    assert position_code(half) == PositionCode(BITMASK, 3)
    # Every 20th of 1000 (gaps of 19): bitmask 126, index list 1 + 4 + ceil(50 * 10 / 8) = 68,
    # Rice r=3: quotient 2 -> 150 unary bits (19 bytes) + 150 remainder bits (19) + 6 = 44,
    # tied with r=4 (13 + 25 + 6); the smaller r is kept.
    sparse = np.arange(1000) % 20 == 19
    assert position_code(sparse) == PositionCode(RICE, 44, 3)


def test_bad_bits() -> None:
    with pytest.raises(ValueError, match="weight_bits"):
        model_size_bytes(_model(), 12)
