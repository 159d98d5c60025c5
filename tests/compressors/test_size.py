from __future__ import annotations

import pytest
import torch
from torch import nn

from compressors.quantization import QuantConfig, prepare_qat
from compressors.size import model_size_bytes

# Shared by every case below: conv bias 4, BN weight/bias/mean/var 16, linear bias 3 = 23 floats
# (BN's num_batches_tracked is not deployed).
N_OTHER = 23


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3),  # weight 72 elements, 4 output channels
        nn.BatchNorm2d(4),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),  # weight 12 elements, 3 output channels
    )


def _keep_first(model: nn.Module, n_nonzero: int) -> None:
    with torch.no_grad():
        model[0].weight.view(-1)[n_nonzero:] = 0.0


def test_dense_32_bits() -> None:
    assert model_size_bytes(_model()) == 4 * (72 + 12) + 4 * N_OTHER == 428


def test_dense_16_bits() -> None:
    assert model_size_bytes(_model(), 16) == 2 * (72 + 12) + 2 * N_OTHER == 214


def test_dense_8_bits() -> None:
    # 1 byte per weight + one fp32 scale per output channel (4 + 3).
    assert model_size_bytes(_model(), 8) == (72 + 12) + 4 * 7 + 4 * N_OTHER == 204


def test_default_bits_come_from_prepare_qat() -> None:
    model = prepare_qat(_model(), QuantConfig(bits=8, act_bits=8))
    # As above plus each layer's activation range (min and max, fp32): 2 layers * 8 bytes.
    assert model_size_bytes(model) == 204 + 16


def test_sparse_bitmask() -> None:
    model = _model()
    _keep_first(model, 36)
    # conv at 4 bits: values ceil(4 * 36 / 8) = 18; index list 36 * ceil(log2 72) = 252 bits >
    # bitmask 72 bits = 9 bytes; scales 16. Linear dense: 6 + 12. Others 92.
    assert model_size_bytes(model, 4) == (18 + 9 + 16) + (6 + 12) + 92 == 153


def test_sparse_index_list() -> None:
    model = _model()
    _keep_first(model, 5)
    # conv at 2 bits: values ceil(2 * 5 / 8) = 2; index list 5 * 7 = 35 bits < 72 -> 5 bytes;
    # scales 16. Linear: ceil(2 * 12 / 8) = 3 + 12. Others 92.
    assert model_size_bytes(model, 2) == (2 + 5 + 16) + (3 + 12) + 92 == 130


def test_sparse_at_16_and_32_bits_has_no_scales() -> None:
    model = _model()
    _keep_first(model, 5)
    # 16 bits: 10 value bytes + 5 index bytes; linear 24; others 46.
    assert model_size_bytes(model, 16) == (10 + 5) + 24 + 46 == 85
    # 32 bits: 20 + 5; linear 48; others 92.
    assert model_size_bytes(model, 32) == (20 + 5) + 48 + 92 == 165


def test_bad_bits() -> None:
    with pytest.raises(ValueError, match="weight_bits"):
        model_size_bytes(_model(), 12)
