"""Storage size of a compressed model: exactly the bytes ``export.save_compressed`` writes.

With ``b`` the weight bit-width, for each Conv2d / Linear weight ``W`` with ``C`` output
channels, ``n = numel(W)`` and ``k`` its entries that are nonzero at ``b`` bits (pruned weights
are exact zeros; a weight that rounds to code 0 is not stored either)::

    encoding  = 1                                                 byte
    positions = 0 if k == n, else the smallest of                 bytes
                  bitmask     ceil(n / 8)
                  index list  4 + ceil(k * ceil(log2 n) / 8)       (nnz u32 + absolute indices)
                  Rice gaps   5 + ceil(sum(g_i >> r + 1) / 8) + ceil(k * r / 8)
    values    = ceil(b * k / 8)                                   bytes
    scales    = 4 * C if b < 16 else 0                            bytes  (fp32 per channel)

Rice gaps (the "relative index" of Deep Compression, Han et al. 2016, entropy-coded): the gap
``g_i`` of zeros before each kept weight is split into a quotient ``g_i >> r``, written in unary,
and ``r`` low bits; ``r`` is chosen per layer to minimise the bytes (nnz u32 + r u8 in front).
At 5% density this costs about 6 bits per kept weight, against 20 for a bitmask and 19 for
absolute indices into a 400,000-weight layer.

Every other tensor a deployed model needs (biases, BatchNorm weight/bias/running stats,
activation quantizer ranges; not ``num_batches_tracked``) costs ``4 * numel`` bytes, or
``2 * numel`` when ``b == 16``. Each stored piece is rounded up to whole bytes separately, and
the file starts with an ``HEADER_BYTES`` header.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from nascomp.compressors.quantization import VALID_BITS, quantize_weight_codes, quantized_bits

# BatchNorm's step counter only matters for training with momentum=None; inference ignores it.
_NOT_DEPLOYED_SUFFIX = "num_batches_tracked"
# magic 4, format version 1, weight bits 1, activation bits 1, layout crc32 4.
HEADER_BYTES = 11
# Position encodings, as the byte in front of each weight in the file.
DENSE, BITMASK, INDEX_LIST, RICE = 0, 1, 2, 3


@dataclass(frozen=True)
class StoredTensor:
    """One state-dict entry as stored: ``is_weight`` marks a Conv2d / Linear weight."""

    name: str
    tensor: Tensor
    is_weight: bool


@dataclass(frozen=True)
class PositionCode:
    """How a weight's nonzero positions are stored: ``kind`` (DENSE, BITMASK, INDEX_LIST or
    RICE), the bytes that costs including the encoding byte, and the Rice parameter."""

    kind: int
    n_bytes: int
    rice_bits: int = 0


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


def rice_gaps(positions: np.ndarray) -> np.ndarray:
    """Zeros skipped before each kept position (``positions`` sorted ascending)."""
    positions = positions.astype(np.int64)
    return np.diff(positions, prepend=-1) - 1


def rice_payload_bytes(gaps: np.ndarray, rice_bits: int) -> tuple[int, int]:
    """(unary quotient bytes, packed remainder bytes) of ``gaps`` at parameter ``rice_bits``."""
    n_unary_bits = int((gaps >> rice_bits).sum()) + gaps.size
    return math.ceil(n_unary_bits / 8), math.ceil(gaps.size * rice_bits / 8)


def position_code(mask: np.ndarray) -> PositionCode:
    """The cheapest encoding of a flat boolean keep-mask (ties keep the simpler encoding)."""
    numel, nnz = mask.size, int(mask.sum())
    if nnz == numel:
        return PositionCode(DENSE, 1)
    candidates = [
        PositionCode(BITMASK, 1 + math.ceil(numel / 8)),
        PositionCode(INDEX_LIST, 1 + 4 + math.ceil(nnz * index_bits_per_entry(numel) / 8)),
    ]
    gaps = rice_gaps(np.flatnonzero(mask))
    for rice_bits in range(index_bits_per_entry(numel) + 1):
        n_bytes = 1 + 4 + 1 + sum(rice_payload_bytes(gaps, rice_bits))
        candidates.append(PositionCode(RICE, n_bytes, rice_bits))
    return min(candidates, key=lambda code: code.n_bytes)  # min keeps the first of equals


def stored_mask(weight: Tensor, bits: int) -> np.ndarray:
    """Flat mask of the entries stored at ``bits``: those that stay nonzero once quantized
    (a small weight that rounds to code 0, or underflows fp16, costs nothing)."""
    weight = weight.detach().cpu().float()
    if bits < 16:
        weight = quantize_weight_codes(weight, bits)[0]
    elif bits == 16:
        weight = weight.half()
    return (weight != 0).reshape(-1).numpy()


def weight_bytes(weight: Tensor, bits: int) -> int:
    """Bytes to store one Conv2d / Linear weight at ``bits`` (encoding + positions + values +
    scales)."""
    mask = stored_mask(weight, bits)
    total = position_code(mask).n_bytes + math.ceil(bits * int(mask.sum()) / 8)
    if bits < 16:
        total += 4 * weight.shape[0]
    return total


def dense_bytes(tensor: Tensor, bits: int) -> int:
    """Bytes of a non-weight tensor: fp16 in a 16-bit model, fp32 otherwise."""
    return (2 if bits == 16 else 4) * tensor.numel()


@torch.no_grad()
def model_size_bytes(model: nn.Module, weight_bits: int | None = None) -> int:
    """Bytes of ``model``'s compressed artifact at ``weight_bits`` (default: the bits
    ``prepare_qat`` applied); ``save_compressed`` writes a file of exactly this size."""
    bits = quantized_bits(model) if weight_bits is None else weight_bits
    if bits not in VALID_BITS:
        raise ValueError(f"weight_bits must be one of {VALID_BITS} or None, got {weight_bits!r}")
    return HEADER_BYTES + sum(
        weight_bytes(entry.tensor, bits) if entry.is_weight else dense_bytes(entry.tensor, bits)
        for entry in stored_tensors(model)
    )
