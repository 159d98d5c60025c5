"""Storage size of a compressed model, as a formula (``export.save_compressed`` writes exactly
these payloads, plus a small header).

With ``b`` the weight bit-width, for each Conv2d / Linear weight ``W`` with ``C`` output
channels, ``n = numel(W)`` and ``k = nnz(W)`` (pruned weights are exact zeros)::

    values  = ceil(b * k / 8)                                    bytes
    index   = 0 if k == n else ceil(min(n, k * ceil(log2 n)) / 8) bytes  (bitmask or index list)
    scales  = 4 * C if b < 16 else 0                             bytes  (fp32 per channel)

Every other tensor a deployed model needs (biases, BatchNorm weight/bias/running stats,
activation quantizer ranges; not ``num_batches_tracked``) costs ``4 * numel`` bytes, or
``2 * numel`` when ``b == 16``. Each stored tensor (values, index, scales, others) is rounded
up to whole bytes separately.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from compressors.quantization import VALID_BITS, quantized_bits

# BatchNorm's step counter only matters for training with momentum=None; inference ignores it.
_NOT_DEPLOYED_SUFFIX = "num_batches_tracked"


@dataclass(frozen=True)
class StoredTensor:
    """One state-dict entry as stored: ``is_weight`` marks a Conv2d / Linear weight."""

    name: str
    tensor: Tensor
    is_weight: bool


def stored_tensors(model: nn.Module) -> list[StoredTensor]:
    """The state-dict entries a deployed model needs, in state-dict order."""
    weight_ids = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    return [
        StoredTensor(name, tensor.detach(), id(tensor) in weight_ids)
        for name, tensor in model.state_dict(keep_vars=True).items()
        if not name.endswith(_NOT_DEPLOYED_SUFFIX)
    ]


def index_bits_per_entry(numel: int) -> int:
    """ceil(log2(numel)): bits to address one element of a tensor of ``numel`` elements."""
    return (numel - 1).bit_length()


def uses_bitmask(numel: int, nnz: int) -> bool:
    """Whether a sparse tensor's positions are cheaper as a bitmask than as an index list."""
    return numel <= nnz * index_bits_per_entry(numel)


def weight_bytes(weight: Tensor, bits: int) -> int:
    """Bytes to store one Conv2d / Linear weight at ``bits`` (values + index + scales)."""
    numel = weight.numel()
    nnz = int(weight.count_nonzero())
    total = math.ceil(bits * nnz / 8)
    if nnz < numel:
        total += math.ceil(min(numel, nnz * index_bits_per_entry(numel)) / 8)
    if bits < 16:
        total += 4 * weight.shape[0]
    return total


def dense_bytes(tensor: Tensor, bits: int) -> int:
    """Bytes of a non-weight tensor: fp16 in a 16-bit model, fp32 otherwise."""
    return (2 if bits == 16 else 4) * tensor.numel()


def model_size_bytes(model: nn.Module, weight_bits: int | None = None) -> int:
    """Storage of ``model`` at ``weight_bits`` (default: the bits ``prepare_qat`` applied)."""
    bits = quantized_bits(model) if weight_bits is None else weight_bits
    if bits not in VALID_BITS:
        raise ValueError(f"weight_bits must be one of {VALID_BITS} or None, got {weight_bits!r}")
    return sum(
        weight_bytes(entry.tensor, bits) if entry.is_weight else dense_bytes(entry.tensor, bits)
        for entry in stored_tensors(model)
    )
