"""A real compressed artifact whose size is ``size.model_size_bytes`` plus a small header.

File layout (little-endian), no pickle::

    header   magic b"NASC", version u8, weight_bits u8, act_bits u8,
             crc32 u32 of the stored tensors' names and shapes (checks the skeleton)
    per stored tensor, in ``size.stored_tensors`` order:
      other tensor   fp32 (fp16 when weight_bits == 16) raw values
      weight         encoding u8 (0 dense, 1 bitmask, 2 index list; + nnz u32 for a list),
                     [per-channel max|w| fp32 when bits < 16], [positions], values packed at
                     `bits` bits (offset codes ``q + qmax`` when bits < 16, else fp16/fp32)

Shapes are not stored: the skeleton given to ``load_compressed`` supplies them, so a
structurally pruned model needs a skeleton with the pruned shapes (e.g. the pruned model
itself, or a deep copy). Storing max|w| rather than the scale lets the loader rebuild weights
whose fake quantization reproduces the original bit for bit.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from compressors.quantization import (
    VALID_BITS,
    ActivationFakeQuant,
    QuantConfig,
    activation_bits,
    channel_absmax,
    channel_scale,
    prepare_qat,
    quantize_weight_codes,
    quantized_bits,
    weight_qmax,
)
from compressors.size import StoredTensor, index_bits_per_entry, stored_tensors, uses_bitmask

MAGIC = b"NASC"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sBBBI")
_DENSE, _BITMASK, _INDEX_LIST = 0, 1, 2


# ---------------------------------------------------------------- bit packing


def pack_uints(values: np.ndarray, width: int) -> bytes:
    """Pack non-negative ints at ``width`` bits each, least significant bit first."""
    if width == 0 or values.size == 0:
        return b""
    bits = (values.astype(np.int64)[:, None] >> np.arange(width)) & 1
    return np.packbits(bits.astype(np.uint8).reshape(-1), bitorder="little").tobytes()


def unpack_uints(data: bytes, count: int, width: int) -> np.ndarray:
    """Inverse of ``pack_uints``."""
    if width == 0 or count == 0:
        return np.zeros(count, dtype=np.int64)
    bits = np.unpackbits(np.frombuffer(data, np.uint8), count=count * width, bitorder="little")
    return (bits.reshape(count, width).astype(np.int64) << np.arange(width)).sum(axis=1)


def _packed_length(count: int, width: int) -> int:
    return math.ceil(count * width / 8)


# ---------------------------------------------------------------- encoding


def _layout_checksum(entries: list[StoredTensor]) -> int:
    text = ";".join(f"{e.name}:{tuple(e.tensor.shape)}:{int(e.is_weight)}" for e in entries)
    return zlib.crc32(text.encode())


def _float_bytes(tensor: Tensor, bits: int) -> bytes:
    dtype = np.float16 if bits == 16 else np.float32
    return tensor.detach().cpu().float().numpy().astype(dtype).tobytes()


def _encode_positions(mask: np.ndarray) -> bytes:
    numel, nnz = mask.size, int(mask.sum())
    if nnz == numel:
        return bytes([_DENSE])
    if uses_bitmask(numel, nnz):
        return bytes([_BITMASK]) + np.packbits(mask, bitorder="little").tobytes()
    width = index_bits_per_entry(numel)
    return bytes([_INDEX_LIST]) + struct.pack("<I", nnz) + pack_uints(np.flatnonzero(mask), width)


def _encode_weight(weight: Tensor, bits: int) -> bytes:
    weight = weight.detach().cpu().float()
    mask = (weight != 0).numpy().reshape(-1)
    out = _encode_positions(mask)
    if bits >= 16:
        return out + _float_bytes(weight.reshape(-1)[torch.from_numpy(mask)], bits)
    codes, _ = quantize_weight_codes(weight, bits)
    absmax = channel_absmax(weight).reshape(-1)
    offset_codes = codes.reshape(-1).numpy()[mask].astype(np.int64) + weight_qmax(bits)
    return out + absmax.numpy().astype(np.float32).tobytes() + pack_uints(offset_codes, bits)


def save_compressed(model: nn.Module, path: str | Path, weight_bits: int | None = None) -> int:
    """Write ``model`` at ``weight_bits`` (default: its QAT bits) to ``path``; returns bytes."""
    bits = quantized_bits(model) if weight_bits is None else weight_bits
    if bits not in VALID_BITS:
        raise ValueError(f"weight_bits must be one of {VALID_BITS} or None, got {weight_bits!r}")
    prepared_bits = quantized_bits(model)
    if prepared_bits != 32 and prepared_bits != bits:
        raise ValueError(
            f"weight_bits={bits} differs from the {prepared_bits} bits the model was trained at"
        )
    entries = stored_tensors(model)
    header = _HEADER.pack(
        MAGIC, FORMAT_VERSION, bits, activation_bits(model), _layout_checksum(entries)
    )
    payload = b"".join(
        _encode_weight(e.tensor, bits) if e.is_weight else _float_bytes(e.tensor, bits)
        for e in entries
    )
    data = header + payload
    Path(path).write_bytes(data)
    return len(data)


# ---------------------------------------------------------------- decoding


class _Reader:
    """Sequential reads from the artifact, with a clear error on truncation."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, n_bytes: int) -> bytes:
        if self.offset + n_bytes > len(self.data):
            raise ValueError("compressed file is truncated")
        chunk = self.data[self.offset : self.offset + n_bytes]
        self.offset += n_bytes
        return chunk

    def floats(self, count: int, bits: int) -> Tensor:
        dtype = np.float16 if bits == 16 else np.float32
        raw = np.frombuffer(self.take(count * np.dtype(dtype).itemsize), dtype)
        return torch.from_numpy(raw.astype(np.float32))


def _decode_positions(reader: _Reader, numel: int) -> np.ndarray:
    encoding = reader.take(1)[0]
    if encoding == _DENSE:
        return np.ones(numel, dtype=bool)
    if encoding == _BITMASK:
        packed = np.frombuffer(reader.take(_packed_length(numel, 1)), np.uint8)
        return np.unpackbits(packed, count=numel, bitorder="little").astype(bool)
    if encoding != _INDEX_LIST:
        raise ValueError(f"unknown weight encoding {encoding} in compressed file")
    (nnz,) = struct.unpack("<I", reader.take(4))
    width = index_bits_per_entry(numel)
    mask = np.zeros(numel, dtype=bool)
    mask[unpack_uints(reader.take(_packed_length(nnz, width)), nnz, width)] = True
    return mask


def _dequantize(codes: Tensor, absmax: Tensor, bits: int) -> Tensor:
    """Weights whose fake quantization equals the original's exactly. ``qmax * scale`` can
    differ from max|w| in the last bit, so the channel maximum is restored as ``±max|w|``
    itself: the re-derived scale is then identical by construction, not by luck of rounding."""
    scale = channel_scale(absmax, bits)
    weight = codes * scale
    at_max = codes.abs() == weight_qmax(bits)
    return torch.where(at_max, torch.sign(codes) * absmax, weight)


def _decode_weight(reader: _Reader, shape: torch.Size, bits: int) -> Tensor:
    numel = math.prod(shape)
    mask = torch.from_numpy(_decode_positions(reader, numel))
    nnz = int(mask.sum())
    flat = torch.zeros(numel)
    if bits >= 16:
        flat[mask] = reader.floats(nnz, bits)
        return flat.reshape(shape)
    absmax = reader.floats(shape[0], 32).reshape(-1, *([1] * (len(shape) - 1)))
    offset_codes = unpack_uints(reader.take(_packed_length(nnz, bits)), nnz, bits)
    flat[mask] = torch.from_numpy(offset_codes - weight_qmax(bits)).float()
    return _dequantize(flat.reshape(shape), absmax, bits)


def _prepare_skeleton(skeleton: nn.Module, bits: int, act_bits: int) -> None:
    prepared_bits = quantized_bits(skeleton)
    if prepared_bits == 32 and bits < 32:
        prepare_qat(skeleton, QuantConfig(bits=bits, act_bits=act_bits))
    elif prepared_bits != bits and prepared_bits != 32:
        raise ValueError(f"model_skeleton is prepared at {prepared_bits} bits, file has {bits}")


def load_compressed(path: str | Path, model_skeleton: nn.Module) -> nn.Module:
    """Restore a ``save_compressed`` file into ``model_skeleton`` (same architecture and
    shapes), preparing it for QAT at the file's bits when needed; returns the skeleton."""
    reader = _Reader(Path(path).read_bytes())
    magic, version, bits, act_bits, checksum = _HEADER.unpack(reader.take(_HEADER.size))
    if magic != MAGIC or version != FORMAT_VERSION:
        raise ValueError(f"{path} is not a nascomp compressed file (version {FORMAT_VERSION})")
    _prepare_skeleton(model_skeleton, bits, act_bits)
    entries = stored_tensors(model_skeleton)
    if _layout_checksum(entries) != checksum:
        raise ValueError("model_skeleton's tensors (names/shapes) do not match the file")
    with torch.no_grad():
        for entry in entries:
            shape = entry.tensor.shape
            if entry.is_weight:
                value = _decode_weight(reader, shape, bits)
            else:
                value = reader.floats(entry.tensor.numel(), bits).reshape(shape)
            entry.tensor.copy_(value)
    for module in model_skeleton.modules():
        if isinstance(module, ActivationFakeQuant):
            module.sync_observed()
    if reader.offset != len(reader.data):
        raise ValueError("compressed file has trailing bytes")
    return model_skeleton
