"""Storage size of a compressed model: exactly the bytes ``export.save_compressed`` writes.

With ``b`` the weight bit-width, for each convolution / Linear weight, embedding table or
recurrent weight matrix ``W`` with ``C`` output channels (rows), ``n = numel(W)`` and ``k`` its
entries that are nonzero at ``b`` bits (pruned weights are exact zeros; a weight that rounds to
code 0 is not stored either, unless that costs more, below)::

    encoding  = 1                                                 byte
    positions = 0 if k == n, else the smallest of                 bytes
                  bitmask     ceil(n / 8)
                  index list  4 + ceil(k * ceil(log2 n) / 8)       (nnz u32 + absolute indices)
                  Rice gaps   5 + ceil(sum(g_i >> r + 1) / 8) + ceil(k * r / 8)
    values    = ceil(b * k / 8)                                   bytes
    scales    = 4 * C if b < 16 else 0                            bytes  (fp32 per channel)

or, when it costs no more than encoding, positions and values above, every entry stored as if
k == n, its zeros as codes: ``1 + ceil(b * n / 8)`` bytes for those three.

Rice gaps (the "relative index" of Deep Compression, Han et al. 2016, entropy-coded): the gap
``g_i`` of zeros before each kept weight is split into a quotient ``g_i >> r``, written in unary,
and ``r`` low bits; ``r`` is chosen per layer to minimise the bytes (nnz u32 + r u8 in front).
At 5% density this costs about 6 bits per kept weight, against 20 for a bitmask and 19 for
absolute indices into a 400,000-weight layer.

Every other tensor a deployed model needs (biases, BatchNorm weight/bias/running stats,
activation quantizer ranges; not ``num_batches_tracked``) costs ``4 * numel`` bytes, or
``2 * numel`` when ``b == 16``. Each stored piece is rounded up to whole bytes separately, and
the file starts with an ``HEADER_BYTES`` header.

That is the uniform, ``packed`` file (format 2). A model with per-layer widths (mixed
precision), or one saved with ``coding="entropy"``, is a format-3 file: the same header plus one
byte per weight holding its width; non-weight tensors in fp16 only when every weight is 16-bit.
With ``packed`` coding each weight is stored as above at its own width. With ``entropy`` coding
(``compressors.entropy``: Deep Compression's third stage) a weight below 16 bits keeps only its
fp32 per-channel scales in place, and the positions and codes of all such weights go into one
range-coded stream at the end of the file; its size is that stream's length, found by coding it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from nascomp.compressors.entropy import encode_codes
from nascomp.compressors.layers import is_quantized_layer, weight_names
from nascomp.compressors.quantization import (
    VALID_BITS,
    quantize_weight_codes,
    weight_bits_by_layer,
)

# BatchNorm's step counter only matters for training with momentum=None; inference ignores it.
_NOT_DEPLOYED_SUFFIX = "num_batches_tracked"
# magic 4, format version 1, weight bits 1, activation bits 1, layout crc32 4.
HEADER_BYTES = 11
# Position encodings, as the byte in front of each weight in the file.
DENSE, BITMASK, INDEX_LIST, RICE = 0, 1, 2, 3
# How weights below 16 bits are stored: packed codes (format 2, or 3 when widths are mixed) or
# one entropy-coded stream (format 3).
CODINGS = ("packed", "entropy")


@dataclass(frozen=True)
class StoredTensor:
    """One state-dict entry as stored: ``is_weight`` marks a convolution / Linear weight, an
    embedding table, a recurrent weight matrix or an attention input projection
    (``compressors.layers``)."""

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
    weight_ids = {
        id(getattr(m, name))
        for m in model.modules()
        if is_quantized_layer(m)
        for name in weight_names(m)
    }
    return [
        StoredTensor(name, tensor.detach(), id(tensor) in weight_ids)
        for name, tensor in model.state_dict(keep_vars=True).items()
        if not name.endswith(_NOT_DEPLOYED_SUFFIX)
    ]


def float_weights(model: nn.Module) -> dict[str, int]:
    """The matrices and kernels (float tensors of two or more dimensions) a deployed model
    stores that no compressed layer (``compressors.layers``) holds, by name: the weights of
    layers nascomp does not quantize (a bare ``nn.Parameter``, a transposed convolution),
    stored at 32 bits like a bias. Their sizes."""
    return {
        entry.name: entry.tensor.numel()
        for entry in stored_tensors(model)
        if not entry.is_weight and entry.tensor.dim() >= 2 and entry.tensor.is_floating_point()
    }


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


def stored_positions(weight: Tensor, bits: int) -> np.ndarray:
    """Flat mask of the entries written at ``bits``: those that stay nonzero once quantized,
    or every entry, its zeros as codes, when that costs no more. A dense layer in which a few
    weights round to code 0 would otherwise pay a bitmask of n / 8 bytes to save their codes:
    at 8 bits 1.125 bytes a weight where 1 does (a structurally pruned ViT's 8-bit file shrank
    by 9.8%, docs/benchmarks.md)."""
    mask = stored_mask(weight, bits)
    numel, nnz = mask.size, int(mask.sum())
    if nnz < numel:
        sparse = position_code(mask).n_bytes + math.ceil(bits * nnz / 8)
        if 1 + math.ceil(bits * numel / 8) <= sparse:
            return np.ones_like(mask)
    return mask


def weight_bytes(weight: Tensor, bits: int) -> int:
    """Bytes to store one quantized layer's weight at ``bits`` (encoding + positions + values +
    scales)."""
    mask = stored_positions(weight, bits)
    total = position_code(mask).n_bytes + math.ceil(bits * int(mask.sum()) / 8)
    if bits < 16:
        total += 4 * weight.shape[0]
    return total


def dense_bytes(tensor: Tensor, bits: int) -> int:
    """Bytes of a non-weight tensor: fp16 in a 16-bit model, fp32 otherwise."""
    return (2 if bits == 16 else 4) * tensor.numel()


def weight_widths(model: nn.Module, weight_bits: int | None = None) -> list[int]:
    """The width of each stored weight in ``stored_tensors`` order: ``weight_bits`` for every
    one when given, else the width ``prepare_qat`` gave its layer (32 for a float layer)."""
    if weight_bits is not None and weight_bits not in VALID_BITS:
        raise ValueError(f"weight_bits must be one of {VALID_BITS} or None, got {weight_bits!r}")
    by_layer = weight_bits_by_layer(model)
    return [
        weight_bits if weight_bits is not None else by_layer.get(layer_name(entry), 32)
        for entry in stored_tensors(model)
        if entry.is_weight
    ]


def layer_name(entry: StoredTensor) -> str:
    """The module a stored tensor belongs to (``stages.0.conv1`` of ``stages.0.conv1.weight``)."""
    return entry.name.rpartition(".")[0]


def is_layered(widths: list[int], coding: str) -> bool:
    """Whether the artifact is a format-3 file (per-weight widths), not the uniform format 2."""
    if coding not in CODINGS:
        raise ValueError(f"coding must be one of {', '.join(CODINGS)}, got {coding!r}")
    return coding == "entropy" or len(set(widths)) > 1


def dense_storage_bits(widths: list[int]) -> int:
    """Non-weight tensors are fp16 when every weight is 16-bit (a half-precision model)."""
    return 16 if widths and all(bits == 16 for bits in widths) else 32


def entropy_coded(bits: int) -> bool:
    """Weights below 16 bits are integer codes, which the entropy coder takes."""
    return bits < 16


def code_matrix(weight: Tensor, bits: int) -> np.ndarray:
    """A weight's integer codes at ``bits`` as output channel x fan-in (the coder's view)."""
    codes = quantize_weight_codes(weight.detach().cpu().float(), bits)[0]
    return codes.reshape(codes.shape[0], -1).numpy().astype(np.int64)


def entropy_stream(entries: list[StoredTensor], widths: list[int]) -> bytes:
    """The range-coded positions and codes of every weight below 16 bits."""
    weights = [entry for entry in entries if entry.is_weight]
    coded = [(w, bits) for w, bits in zip(weights, widths, strict=True) if entropy_coded(bits)]
    return encode_codes([code_matrix(w.tensor, b) for w, b in coded], [b for _, b in coded])


@torch.no_grad()
def model_size_bytes(
    model: nn.Module, weight_bits: int | None = None, coding: str = "packed"
) -> int:
    """Bytes of ``model``'s compressed artifact at ``weight_bits`` (default: the widths
    ``prepare_qat`` applied, per layer) with ``coding``; ``save_compressed`` writes a file of
    exactly this size."""
    widths = weight_widths(model, weight_bits)
    entries = stored_tensors(model)
    if not is_layered(widths, coding):
        bits = widths[0] if widths else (32 if weight_bits is None else weight_bits)
        return HEADER_BYTES + sum(
            weight_bytes(entry.tensor, bits) if entry.is_weight else dense_bytes(entry.tensor, bits)
            for entry in entries
        )
    dense = dense_storage_bits(widths)
    total = HEADER_BYTES + len(widths)
    weight_iter = iter(widths)
    for entry in entries:
        if not entry.is_weight:
            total += dense_bytes(entry.tensor, dense)
            continue
        bits = next(weight_iter)
        if coding == "entropy" and entropy_coded(bits):
            total += 4 * entry.tensor.shape[0]  # the per-channel scales; the rest is streamed
        else:
            total += weight_bytes(entry.tensor, bits)
    if coding == "entropy":
        total += len(entropy_stream(entries, widths))
    return total
