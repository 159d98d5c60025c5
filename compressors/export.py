"""A real compressed artifact of exactly ``size.model_size_bytes`` bytes.

File layout (little-endian), no pickle::

    header   magic b"NASC", version u8, weight_bits u8, act_bits u8,
             crc32 u32 of the stored tensors' names and shapes (checks the skeleton)
    per stored tensor, in ``size.stored_tensors`` order:
      other tensor   fp32 (fp16 when weight_bits == 16) raw values
      weight         encoding u8 (0 dense, 1 bitmask, 2 index list, 3 Rice gaps),
                     positions (bitmask | nnz u32 + indices | nnz u32 + r u8 + unary
                     quotients + r-bit remainders), [per-channel max|w| fp32 when bits < 16],
                     values packed at `bits` bits (offset codes ``q + qmax`` when bits < 16,
                     else fp16/fp32)

Format 3 (``size.is_layered``: per-layer widths, or ``coding="entropy"``): the header's third
byte is the coding (0 packed, 1 entropy), then one u8 width per weight in stored order, then the
records above with non-weight tensors in fp16 only when every weight is 16-bit; a weight is
stored at its own width. With entropy coding a weight below 16 bits keeps only its per-channel
max|w| (fp32) in place, and the positions and codes of all of them follow the last record as
one range-coded stream (``compressors.entropy``) running to the end of the file.

Shapes are not stored: the skeleton given to ``load_compressed`` supplies them, so a
structurally pruned model needs a skeleton with the pruned shapes (e.g. the pruned model
itself, or a deep copy). Storing max|w| rather than the scale lets the loader rebuild weights
whose fake quantization reproduces the original bit for bit.
"""

from __future__ import annotations

import copy
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from nascomp.compressors.entropy import decode_codes
from nascomp.compressors.layers import CONV_LAYERS, active_layer_kinds, is_conv, is_quantized_layer
from nascomp.compressors.quantization import (
    VALID_BITS,
    ActivationFakeQuant,
    QuantConfig,
    activation_bits,
    channel_absmax,
    channel_scale,
    prepare_qat,
    quantize_weight_codes,
    weight_bits_by_layer,
    weight_qmax,
)
from nascomp.compressors.size import (
    BITMASK,
    CODINGS,
    DENSE,
    HEADER_BYTES,
    INDEX_LIST,
    RICE,
    StoredTensor,
    dense_storage_bits,
    entropy_coded,
    entropy_stream,
    index_bits_per_entry,
    is_layered,
    layer_name,
    position_code,
    rice_gaps,
    stored_positions,
    stored_tensors,
    weight_widths,
)

MAGIC = b"NASC"
FORMAT_VERSION = 2  # 2: Rice-coded gaps added as a position encoding
LAYERED_VERSION = 3  # per-weight widths; packed or entropy-coded weights
_HEADER = struct.Struct("<4sBBBI")
assert _HEADER.size == HEADER_BYTES


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
    code = position_code(mask)
    if code.kind == DENSE:
        return bytes([DENSE])
    if code.kind == BITMASK:
        return bytes([BITMASK]) + np.packbits(mask, bitorder="little").tobytes()
    positions = np.flatnonzero(mask)
    count = struct.pack("<I", positions.size)
    if code.kind == INDEX_LIST:
        width = index_bits_per_entry(mask.size)
        return bytes([INDEX_LIST]) + count + pack_uints(positions, width)
    gaps = rice_gaps(positions)
    return bytes([RICE]) + count + bytes([code.rice_bits]) + _rice_bytes(gaps, code.rice_bits)


def _rice_bytes(gaps: np.ndarray, rice_bits: int) -> bytes:
    """Quotients in unary (q ones then a zero each), then the remainders at ``rice_bits``."""
    quotients = gaps >> rice_bits
    n_unary = int(quotients.sum()) + gaps.size
    unary = np.ones(n_unary, dtype=np.uint8)
    unary[np.cumsum(quotients + 1) - 1] = 0  # each code's terminating zero
    remainders = gaps & ((1 << rice_bits) - 1)
    return np.packbits(unary, bitorder="little").tobytes() + pack_uints(remainders, rice_bits)


def _encode_weight(weight: Tensor, bits: int) -> bytes:
    weight = weight.detach().cpu().float()
    mask = stored_positions(weight, bits)
    out = _encode_positions(mask)
    if bits >= 16:
        return out + _float_bytes(weight.reshape(-1)[torch.from_numpy(mask)], bits)
    codes, _ = quantize_weight_codes(weight, bits)
    absmax = channel_absmax(weight).reshape(-1)
    offset_codes = codes.reshape(-1).numpy()[mask].astype(np.int64) + weight_qmax(bits)
    return out + absmax.numpy().astype(np.float32).tobytes() + pack_uints(offset_codes, bits)


def save_compressed(
    model: nn.Module, path: str | Path, weight_bits: int | None = None, coding: str = "packed"
) -> int:
    """Write ``model`` at ``weight_bits`` (default: its QAT widths, per layer) with ``coding``
    (``packed`` or ``entropy``) to ``path``; returns the bytes written."""
    widths = weight_widths(model, weight_bits)
    trained = set(weight_bits_by_layer(model).values())
    if weight_bits is not None and trained and trained != {weight_bits}:
        raise ValueError(
            f"weight_bits={weight_bits} differs from the {sorted(trained)} bits the model was "
            "trained at"
        )
    entries = stored_tensors(model)
    checksum = _layout_checksum(entries)
    if is_layered(widths, coding):
        coding_byte = CODINGS.index(coding)
        header = _HEADER.pack(MAGIC, LAYERED_VERSION, coding_byte, activation_bits(model), checksum)
        data = header + _layered_payload(entries, widths, coding)
    else:
        bits = widths[0] if widths else (32 if weight_bits is None else weight_bits)
        header = _HEADER.pack(MAGIC, FORMAT_VERSION, bits, activation_bits(model), checksum)
        data = header + b"".join(
            _encode_weight(e.tensor, bits) if e.is_weight else _float_bytes(e.tensor, bits)
            for e in entries
        )
    Path(path).write_bytes(data)
    return len(data)


def _layered_payload(entries: list[StoredTensor], widths: list[int], coding: str) -> bytes:
    """Format 3 after the header: widths, records, then the entropy-coded stream if any."""
    dense = dense_storage_bits(widths)
    parts = [bytes(widths)]
    weight_iter = iter(widths)
    for entry in entries:
        if not entry.is_weight:
            parts.append(_float_bytes(entry.tensor, dense))
            continue
        bits = next(weight_iter)
        if coding == "entropy" and entropy_coded(bits):
            absmax = channel_absmax(entry.tensor.detach().cpu().float()).reshape(-1)
            parts.append(absmax.numpy().astype(np.float32).tobytes())
        else:
            parts.append(_encode_weight(entry.tensor, bits))
    if coding == "entropy":
        parts.append(entropy_stream(entries, widths))
    return b"".join(parts)


def round_to_storage(model: nn.Module) -> nn.Module:
    """Round (in place) what the artifact stores at lower precision than the model holds, so
    that the evaluated model is the stored one: at 16 bits, every non-weight tensor to fp16
    (weights are already fp16 through fake quantization). A no-op at other widths."""
    if set(weight_bits_by_layer(model).values()) != {16}:
        return model
    with torch.no_grad():
        for entry in stored_tensors(model):
            if not entry.is_weight and entry.tensor.is_floating_point():
                entry.tensor.copy_(entry.tensor.half().to(entry.tensor.dtype))
    return model


# ---------------------------------------------------------------- skeletons

# The attributes structured pruning changes, per layer type (the convolutions and Linear include
# the Quant* subclasses).
_SHAPE_FIELDS: tuple[tuple[type[nn.Module] | tuple[type[nn.Module], ...], tuple[str, ...]], ...] = (
    (CONV_LAYERS, ("in_channels", "out_channels", "groups")),
    (nn.Linear, ("in_features", "out_features")),
    (nn.modules.batchnorm._BatchNorm, ("num_features",)),
)


def _shape_fields(module: nn.Module) -> tuple[str, ...]:
    for layer_type, fields in _SHAPE_FIELDS:
        if isinstance(module, layer_type):
            return fields
    return ()


def layer_shapes(model: nn.Module) -> dict[str, dict[str, int]]:
    """Channel counts of every convolution / Linear / BatchNorm, by module name: with the
    architecture, what rebuilds a structurally pruned skeleton (JSON-able)."""
    return {
        name: {field: int(getattr(module, field)) for field in fields}
        for name, module in model.named_modules()
        if (fields := _shape_fields(module))
    }


def _resized(module: nn.Module, counts: dict[str, int]) -> nn.Module:
    """A copy of ``module`` at the recorded channel counts, its tensors re-allocated (the
    caller loads their values). Copying rather than constructing anew keeps what a subclass
    adds: timm's BatchNormAct2d holds its activation, a "same"-padding conv its padding rule."""
    resized = copy.deepcopy(module)
    for field, value in counts.items():
        setattr(resized, field, value)
    if is_conv(module):
        per_group = counts["in_channels"] // counts["groups"]
        shapes = {
            "weight": (counts["out_channels"], per_group, *module.kernel_size),
            "bias": (counts["out_channels"],),
        }
    elif isinstance(module, nn.Linear):
        shapes = {
            "weight": (counts["out_features"], counts["in_features"]),
            "bias": (counts["out_features"],),
        }
    else:
        n = counts["num_features"]
        shapes = {"weight": (n,), "bias": (n,), "running_mean": (n,), "running_var": (n,)}
    for name, shape in shapes.items():
        current = getattr(resized, name, None)
        if current is None:
            continue
        fresh = torch.zeros(shape, dtype=current.dtype, device=current.device)
        if isinstance(current, nn.Parameter):
            setattr(resized, name, nn.Parameter(fresh, requires_grad=current.requires_grad))
        else:
            setattr(resized, name, fresh)  # a registered buffer stays a buffer
    return resized


def reshape_layers(model: nn.Module, shapes: dict[str, dict[str, int]]) -> nn.Module:
    """Give a freshly built (unpruned, float) model the channel counts of ``layer_shapes``, in
    place, so it can serve as ``load_compressed``'s skeleton; returns ``model``."""
    modules = dict(model.named_modules())
    for name, counts in shapes.items():
        module = modules.get(name)
        if module is None or set(_shape_fields(module)) != set(counts):
            raise ValueError(f"layer {name!r} of the recorded shapes is not in the model")
        if all(getattr(module, field) == value for field, value in counts.items()):
            continue
        parent_name, _, child_name = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child_name, _resized(module, counts))
    return model


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
    if encoding == DENSE:
        return np.ones(numel, dtype=bool)
    if encoding == BITMASK:
        packed = np.frombuffer(reader.take(_packed_length(numel, 1)), np.uint8)
        return np.unpackbits(packed, count=numel, bitorder="little").astype(bool)
    if encoding not in (INDEX_LIST, RICE):
        raise ValueError(f"unknown weight encoding {encoding} in compressed file")
    (nnz,) = struct.unpack("<I", reader.take(4))
    if encoding == INDEX_LIST:
        width = index_bits_per_entry(numel)
        positions = unpack_uints(reader.take(_packed_length(nnz, width)), nnz, width)
    else:
        positions = _read_rice_positions(reader, nnz, numel)
    if positions.size and (positions.max() >= numel or np.any(np.diff(positions) <= 0)):
        raise ValueError("compressed file holds positions outside the weight")
    mask = np.zeros(numel, dtype=bool)
    mask[positions] = True
    return mask


def _read_rice_positions(reader: _Reader, nnz: int, numel: int) -> np.ndarray:
    rice_bits = reader.take(1)[0]
    # The unary stream's length is only known once its nnz zeros are found: peek ahead, at
    # most as far as the longest stream possible (the gaps sum to at most numel - nnz).
    longest = _packed_length(((numel - nnz) >> rice_bits) + nnz, 1)
    rest = reader.data[reader.offset : reader.offset + longest]
    rest = np.unpackbits(np.frombuffer(rest, np.uint8), bitorder="little")
    ends = np.flatnonzero(rest == 0)[:nnz]
    if ends.size < nnz:
        raise ValueError("compressed file is truncated")
    n_unary = int(ends[-1]) + 1 if nnz else 0
    reader.take(_packed_length(n_unary, 1))
    quotients = np.diff(ends, prepend=-1) - 1
    remainders = unpack_uints(reader.take(_packed_length(nnz, rice_bits)), nnz, rice_bits)
    gaps = (quotients.astype(np.int64) << rice_bits) + remainders
    return np.cumsum(gaps + 1) - 1


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
    prepared = set(weight_bits_by_layer(skeleton).values())
    quantizable = any(is_quantized_layer(m) for m in skeleton.modules())
    if not prepared and bits < 32 and quantizable:  # none: the header's width alone
        prepare_qat(
            skeleton, QuantConfig(bits=bits, act_bits=act_bits, layers=active_layer_kinds())
        )
    elif prepared and prepared != {bits}:
        shown = prepared.pop() if len(prepared) == 1 else sorted(prepared)
        raise ValueError(f"model_skeleton is prepared at {shown} bits, file has {bits}")


def _prepare_layered_skeleton(skeleton: nn.Module, widths: list[int], act_bits: int) -> None:
    """Prepare ``skeleton`` at the file's per-weight widths (or check that it is)."""
    weights = [entry for entry in stored_tensors(skeleton) if entry.is_weight]
    if len(weights) != len(widths):
        raise ValueError("model_skeleton's tensors (names/shapes) do not match the file")
    if weight_bits_by_layer(skeleton):
        if weight_widths(skeleton) != widths:
            raise ValueError(
                f"model_skeleton is prepared at widths {weight_widths(skeleton)}, file has {widths}"
            )
        return
    by_layer = {layer_name(entry): bits for entry, bits in zip(weights, widths, strict=True)}
    prepare_qat(
        skeleton, QuantConfig(bits=32, act_bits=act_bits, layers=active_layer_kinds()), by_layer
    )


def _read_header(
    reader: _Reader, path: str | Path, skeleton: nn.Module
) -> tuple[list[int], str, int]:
    """Check the header, prepare ``skeleton`` as the file says; returns the per-weight widths,
    the coding and the width the other tensors are stored at (16: fp16, else fp32)."""
    magic, version, third, act_bits, checksum = _HEADER.unpack(reader.take(_HEADER.size))
    if magic != MAGIC or version not in (FORMAT_VERSION, LAYERED_VERSION):
        raise ValueError(
            f"{path} is not a nascomp compressed file (versions {FORMAT_VERSION}, "
            f"{LAYERED_VERSION})"
        )
    n_weights = sum(entry.is_weight for entry in stored_tensors(skeleton))
    if version == FORMAT_VERSION:
        _prepare_skeleton(skeleton, third, act_bits)
        widths, coding, dense = [third] * n_weights, "packed", third
    else:
        if third >= len(CODINGS):
            raise ValueError(f"unknown coding {third} in compressed file")
        coding = CODINGS[third]
        widths = list(reader.take(n_weights))
        if any(bits not in VALID_BITS for bits in widths):
            raise ValueError(f"compressed file holds weight widths {widths} outside {VALID_BITS}")
        _prepare_layered_skeleton(skeleton, widths, act_bits)
        dense = dense_storage_bits(widths)
    if _layout_checksum(stored_tensors(skeleton)) != checksum:
        raise ValueError("model_skeleton's tensors (names/shapes) do not match the file")
    return widths, coding, dense


def load_compressed(path: str | Path, model_skeleton: nn.Module) -> nn.Module:
    """Restore a ``save_compressed`` file into ``model_skeleton`` (same architecture and
    shapes), preparing it for QAT at the file's widths when needed; returns the skeleton."""
    reader = _Reader(Path(path).read_bytes())
    widths, coding, dense = _read_header(reader, path, model_skeleton)
    entries = stored_tensors(model_skeleton)
    streamed: list[tuple[StoredTensor, int, Tensor]] = []  # weight, width, per-channel max|w|
    weight_iter = iter(widths)
    with torch.no_grad():
        for entry in entries:
            shape = entry.tensor.shape
            if not entry.is_weight:
                entry.tensor.copy_(reader.floats(entry.tensor.numel(), dense).reshape(shape))
                continue
            bits = next(weight_iter)
            if coding == "entropy" and entropy_coded(bits):
                absmax = reader.floats(shape[0], 32).reshape(-1, *([1] * (len(shape) - 1)))
                streamed.append((entry, bits, absmax))
            else:
                entry.tensor.copy_(_decode_weight(reader, shape, bits))
        if coding == "entropy":
            _load_stream(reader, streamed)
    for module in model_skeleton.modules():
        if isinstance(module, ActivationFakeQuant):
            module.sync_observed()
    if reader.offset != len(reader.data):
        raise ValueError("compressed file has trailing bytes")
    return model_skeleton


def _load_stream(reader: _Reader, streamed: list[tuple[StoredTensor, int, Tensor]]) -> None:
    """Decode the entropy-coded stream (the rest of the file) into the streamed weights."""
    stream = reader.take(len(reader.data) - reader.offset)
    shapes = [(e.tensor.shape[0], e.tensor.numel() // e.tensor.shape[0]) for e, _, _ in streamed]
    all_codes = decode_codes(stream, shapes, [bits for _, bits, _ in streamed])
    for (entry, bits, absmax), codes in zip(streamed, all_codes, strict=True):
        if codes.size and int(np.abs(codes).max()) > weight_qmax(bits):
            raise ValueError("compressed file holds codes outside the weight's range")
        codes_tensor = torch.from_numpy(codes).float().reshape(entry.tensor.shape)
        entry.tensor.copy_(_dequantize(codes_tensor, absmax, bits))
