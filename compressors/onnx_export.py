"""ONNX: the file a deployment team runs, built and timed by ONNX Runtime (no torch.ao).

- :func:`export_onnx` writes any model nascomp can train as fp32 ONNX (a QAT model with its
  fake-quantized weights folded in), pruned models at their real, smaller shapes, with a
  dynamic batch axis.
- :func:`quantize_int8` turns that file into an int8 QDQ model with ONNX Runtime's own
  quantizer: per-channel symmetric int8 weights over [-127, 127] (max |w| / 127 per output
  channel, exactly the grid and scale of nascomp's 8-bit QAT, so the folded QAT weights come
  back as the same integer codes), and uint8 activations: each convolution's and Linear's
  input on the range its QAT quantizer learnt, the other tensors int8 kernels need on ranges
  calibrated on training batches (with attention, nothing but the layers' inputs).
- :func:`fp16_onnx` writes fp16 weights (and computation) with float32 input and logits,
  on request (``nascomp reproduce --export DIR --fp16``).
- :class:`OnnxModule` runs a file in ONNX Runtime behind ``nn.Module``'s call, so accuracy,
  agreement and latency are measured by the same code as for PyTorch forms.

Exporter: torch's TorchScript-based exporter takes 20 to 140 ms a model here against 0.7 to
4.5 s for the torch.export-based one (measured on the cnn family and torchvision's
mobilenet_v3_small), which would add seconds to every trial; it is tried first, and the
torch.export-based exporter, torch's default and future, is the fallback when it is missing or
fails. Both write standard ONNX (opset :data:`OPSET`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from nascomp.compressors.layers import attention_fast_path_off, is_conv, is_weight_layer
from nascomp.compressors.quantization import ActivationFakeQuant, freeze_fake_quant

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# The exporters, in the order they are tried (see the module's docstring).
EXPORTERS = ("torchscript", "dynamo")

FORM_FP32 = "fp32"
FORM_FP16 = "fp16"
FORM_INT8_QDQ = "int8-qdq"


def _float_model(model: nn.Module, rounded_below: int = 0) -> nn.Module:
    """A CPU, eval-mode, plain-float copy: QAT layers folded, the original untouched; layer
    inputs quantized to fewer bits than ``rounded_below`` keep their rounding
    (:func:`freeze_fake_quant`)."""
    return freeze_fake_quant(copy.deepcopy(model), rounded_below).cpu().eval()


def export_onnx(
    model: nn.Module,
    example: Tensor,
    path: str | Path,
    exporters: tuple[str, ...] = EXPORTERS,
    rounded_below: int = 0,
) -> str:
    """Write ``model`` (any trained or QAT model) as fp32 ONNX at ``path``; returns the name of
    the exporter that succeeded. The batch axis is dynamic; the rest is ``example``'s shape.

    The example has two rows: torch.export specialises every dimension of size 1, so a model
    whose forward reshapes by the batch size (attention heads, ``x.view(x.size(0), -1)``) came
    out with a batch of 1 fixed when exported at one row. A file is accepted only once ONNX
    Runtime has run it at a third batch size; otherwise the next exporter is tried.
    ``rounded_below``: see :func:`_float_model`."""
    float_model = _float_model(model, rounded_below)
    example = example[:2].detach().cpu()
    example = torch.cat([example, example]) if len(example) == 1 else example
    errors: list[str] = []
    for exporter in exporters:
        try:
            with warnings.catch_warnings(), torch.no_grad(), attention_fast_path_off():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
                _EXPORT[exporter](float_model, example, Path(path))
            _check_batch_axis(path, example)
            return exporter
        except Exception as exc:  # a model one exporter cannot take may suit the other
            errors.append(f"{exporter}: {type(exc).__name__}: {_first_line(exc)[:200]}")
    raise RuntimeError(f"no ONNX exporter could export the model ({'; '.join(errors)})")


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


def _check_batch_axis(path: str | Path, example: Tensor) -> None:
    """Raise unless the file at ``path`` runs a batch of 3 (``example`` has 2 rows) and gives
    one row of logits per input."""
    batch = torch.cat([example, example[:1]]).numpy()
    try:
        runner = session(path)
        logits = runner.run(None, {runner.get_inputs()[0].name: batch})[0]
    except Exception as exc:
        raise ValueError(f"the file does not run a batch of 3: {_first_line(exc)}") from None
    if logits.shape[0] != len(batch):
        raise ValueError(f"a batch of 3 gave logits of shape {logits.shape}: no batch axis")


def _export_torchscript(model: nn.Module, example: Tensor, path: Path) -> None:
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
    )


def _export_dynamo(model: nn.Module, example: Tensor, path: Path) -> None:
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        opset_version=OPSET,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        verbose=False,
    )
    program.save(str(path))


_EXPORT = {"torchscript": _export_torchscript, "dynamo": _export_dynamo}


# ONNX Runtime 1.32's CPU session crashed the process (SIGSEGV, in its x86 NCHWc layout pass at the
# default optimisation level) opening the fp16 form of a user's convolutions followed by
# nn.MultiheadAttention; ``onnx.checker`` passed the file. Keeping its Transpose ops in
# float32 avoided it. So each fp16 form is opened in a child process first, and these op
# types are kept in float32 in turn until one opens: none, the Transposes, then every op but
# those that carry the weights (:data:`FP16_WEIGHT_OPS`).
FP16_KEPT_FLOAT: tuple[tuple[str, ...] | None, ...] = ((), ("Transpose",), None)
FP16_WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
FP16_KEPT_KEY = "nascomp.fp16_float_ops"  # metadata: the op types the file keeps in float32


class Fp16Error(ValueError):
    """No fp16 form of the model opens in ONNX Runtime."""


def fp16_kept_float(path: str | Path) -> list[str]:
    """The op types the fp16 file at ``path`` keeps in float32 (:data:`FP16_KEPT_KEY`)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    kept = {entry.key: entry.value for entry in model.metadata_props}.get(FP16_KEPT_KEY, "")
    return kept.split()


# Run in the child: open the file as a deployment would (the CPU session at its default
# options) and run it once on zeros, a batch of one.
_OPEN_AND_RUN = """
import sys, numpy, onnxruntime
session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
feed = session.get_inputs()[0]
shape = [dim if isinstance(dim, int) else 1 for dim in feed.shape]
kind = numpy.int64 if "int64" in feed.type else numpy.float32
session.run(None, {feed.name: numpy.zeros(shape, dtype=kind)})
"""


def fp16_opens(data: bytes, timeout_s: float = 300.0) -> str | None:
    """None when ONNX Runtime's CPU session, at its default options, opens the ONNX model
    ``data`` and runs it; else what happened. In a child process: a crash there would take
    this one."""
    import signal
    import subprocess
    import sys

    onnxruntime_module()  # the child inherits the telemetry setting
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.fp16.onnx"
        path.write_bytes(data)
        try:
            done = subprocess.run(
                [sys.executable, "-c", _OPEN_AND_RUN, str(path)],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"ONNX Runtime did not open and run it within {timeout_s:g} s"
    if done.returncode == 0:
        return None
    if done.returncode < 0:
        return f"ONNX Runtime crashed opening it ({signal.Signals(-done.returncode).name})"
    last = (done.stderr.strip().splitlines() or ["no message"])[-1]
    return f"ONNX Runtime failed on it: {last[:300]}"


def to_fp16(data: bytes, kept_float: Sequence[str] = ()) -> bytes:
    """The fp32 ONNX model ``data`` with fp16 weights and fp16 computation, float32 at the graph
    boundary: the input and the logits keep their names and float32 type (a Cast after the input
    and one before the logits), so the file is a drop-in replacement for ``model.onnx`` (same
    feed, same output type) at half the size.

    Converted by ONNX Runtime's own ``onnxruntime.transformers.float16`` (shipped with the
    ``onnxruntime`` package nascomp already needs; onnxconverter-common's converter is the
    same code as a separate package). Weights beyond fp16's range are clamped to +-65504 and
    tiny ones to +-5.96e-8, the converter's defaults. ONNX Runtime's CPU package has fp16
    kernels for few ops and runs the others through inserted casts in float32: the file is
    for GPU runtimes (CUDA, TensorRT, DirectML, OpenVINO GPU), not a CPU speed-up.
    """
    import onnx

    onnxruntime_module()
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load_model_from_string(data)
    blocked = [*DEFAULT_OP_BLOCK_LIST, *kept_float]
    model = convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked)
    _topological_sort(model.graph)
    if kept_float:
        entry = model.metadata_props.add()
        entry.key, entry.value = FP16_KEPT_KEY, " ".join(sorted(set(kept_float)))
    return model.SerializeToString()


def _topological_sort(graph: Any) -> None:
    """Order ``graph``'s nodes so each comes after its inputs' producers (the fp16 converter
    appends its boundary casts at the end, which ``onnx.checker`` rejects)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        waiting = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise ValueError(f"graph has a cycle or a missing input at {waiting[0].name!r}")
        pending = waiting
    del graph.node[:]
    graph.node.extend(ordered)


def fp16_onnx(model: nn.Module, example: Tensor) -> bytes:
    """``model`` (any trained or QAT model, folded as in :func:`export_onnx`) as fp16 ONNX,
    float32 at the boundary (:func:`to_fp16`): the first form of :data:`FP16_KEPT_FLOAT` that
    ONNX Runtime opens (the op types it keeps in float32 are in its metadata,
    :data:`FP16_KEPT_KEY`); :class:`Fp16Error` when none does."""
    import onnx

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        export_onnx(model, example, path)
        data = path.read_bytes()
    problem = ""
    for kept in FP16_KEPT_FLOAT:
        if kept is None:
            ops = {node.op_type for node in onnx.load_model_from_string(data).graph.node}
            kept = tuple(sorted(ops - set(FP16_WEIGHT_OPS)))
        converted = to_fp16(data, kept)
        problem = fp16_opens(converted) or ""
        if not problem:
            return converted
    raise Fp16Error(
        f"--fp16: {problem}, with every op but {'/'.join(FP16_WEIGHT_OPS)} kept in float32 "
        "too; export without --fp16 (model.onnx is not affected)"
    )


class _Batches:
    """ONNX Runtime's calibration reader over input batches (tensors or (inputs, labels))."""

    def __init__(self, batches: Iterable[Any], input_name: str) -> None:
        self._feeds = (
            {input_name: (b[0] if isinstance(b, tuple | list) else b).detach().cpu().numpy()}
            for b in batches
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # part of the reader protocol; one pass is all calibration takes
        raise NotImplementedError


def quantize_int8(
    float_path: str | Path,
    calibration_batches: Iterable[Any],
    out_path: str | Path,
    pad_channels: bool = True,
    int8_layers: Sequence[tuple[str, bool]] | None = None,
    float_input_weights: Sequence[np.ndarray] = (),
    layer_ranges: Sequence[tuple[str, tuple[float, float] | None]] | None = None,
    weight_inputs_only: bool = False,
) -> None:
    """An int8 QDQ model of the fp32 ONNX file (see the module's docstring). ``pad_channels``:
    pad the stem's input channels for ONNX Runtime's fast kernel (:func:`pad_input_channels`).
    ``int8_layers`` (mixed precision): for each weight layer of the file in graph order
    (:func:`weight_nodes`), its module kind (``conv`` or ``linear``) and whether it runs int8;
    the others stay float, with a dequantize before them and a quantize after where they meet
    int8 neighbours. ValueError when the file's layers do not match that list.
    ``float_input_weights``: the weights of layers whose inputs QAT keeps float (attention's
    projections, :func:`attention_weights`); the nodes that multiply by them stay float (and
    take no place in ``int8_layers``, as no module call of the model precedes them).
    ``layer_ranges``: for each convolution and Linear the model calls, in order, its kind and
    the range its QAT input quantizer learnt (:func:`qat_input_ranges`); the file's other
    weight layers taken in order, each quantizes its input on that range instead of the
    calibration's. The calibration's min and max over 1,024 inputs is wider than what the
    quantizer's moving average of batch extremes learnt: a small transformer's int8 file
    agreed with its model on 88% of its validation inputs with the calibration's ranges (on
    99% with 256 inputs), on all of them with the learnt ones. Unmatched layers (none is
    matched when the file's weight layers differ from the calls): the calibration's.

    A file with attention (a MatMul of two computed tensors) has its weight layers' inputs
    alone quantized, as QAT quantizes them: not their outputs, nor the products of two
    activations, nor the reshapes, transposes and softmax between the projections, which
    ONNX Runtime would otherwise quantize too. ``weight_inputs_only`` does the same for any
    file, keeping a convolution's output quantized (the int8 kernel's)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quiet_runtime()

    class Reader(_Batches, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory() as folder:
        # ORT's pre-processing folds the exporter's Identity nodes and infers shapes: without it
        # half the convolutions of a residual CNN stayed float (measured: 8 of 16 QLinearConv).
        prepared = Path(folder) / "prepared.onnx"
        # Matched before pre-processing, which keeps node names but may reorder the nodes
        # (ghostnet's: 47 of 96 layers took a neighbour's range when matched after it).
        chosen = (
            None
            if int8_layers is None
            else _chosen_nodes(
                Path(float_path),
                int8_layers,
                _nodes_multiplying_by(Path(float_path), float_input_weights),
            )
        )
        in_call_order = weight_nodes(float_path)
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        if chosen is not None:
            kept = {name for name, _ in weight_nodes(prepared)}
            if not kept.issuperset(chosen):
                raise ValueError(f"pre-processing lost the layers {sorted(set(chosen) - kept)}")
        pads = pad_input_channels(prepared, only=chosen) if pad_channels else []
        products = _activation_products(prepared)
        attention = bool(products)
        kept_float = _nodes_multiplying_by(prepared, float_input_weights)
        overrides = _range_overrides(prepared, in_call_order, kept_float, layer_ranges)
        with _without_axis_warnings():
            quantize_static(
                str(prepared),
                str(out_path),
                Reader(calibration_batches, INPUT_NAME),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                # The channel padding stays float, before the input's QuantizeLinear (a quantized
                # Pad would add a dequantize-pad-quantize round trip on the input).
                nodes_to_exclude=[*pads, *kept_float, *products],
                nodes_to_quantize=chosen,
                op_types_to_quantize=(
                    list(_WEIGHT_OPS) if attention or weight_inputs_only else None
                ),
                # Logits stay float: quantizing the classifier's output to 8 bits flips near-ties
                # (measured on digits: 98.9% -> 99.2% top-1 agreement with the evaluated model).
                extra_options={
                    "WeightSymmetric": True,
                    "ActivationSymmetric": False,
                    # With attention, no weight layer's output either: what follows a
                    # convolution (a patch embedding's reshape into the projections) is float.
                    "OpTypesToExcludeOutputQuantization": list(_WEIGHT_OPS)
                    if attention
                    else ["Gemm", "MatMul"],
                    "TensorQuantOverrides": overrides,
                },
            )
    drop_unused_opsets(out_path)


def drop_unused_opsets(path: str | Path) -> None:
    """Keep in the file's ``opset_import`` only the domains its nodes use (and the default
    one): ONNX Runtime's quantizer declares every domain it knows (``com.microsoft``,
    ``ai.onnx.training``, ``org.pytorch.aten``: nine in all) in files whose every node is a
    standard operator, which a stricter converter than ONNX Runtime may refuse."""
    import onnx

    model = onnx.load(str(path))
    used = {""} | {node.domain for node in _all_nodes(model.graph)}
    kept = [opset for opset in model.opset_import if opset.domain in used | {"ai.onnx"}]
    if len(kept) == len(model.opset_import):
        return
    del model.opset_import[:]
    model.opset_import.extend(kept)
    onnx.save(model, str(path))


def _all_nodes(graph: Any) -> Iterator[Any]:
    """The graph's nodes, those of its subgraphs (an If's, a Loop's) too."""
    import onnx

    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_nodes(subgraph)


_WEIGHT_OPS = ("Conv", "Gemm", "MatMul")


def attention_weights(model: nn.Module) -> list[np.ndarray]:
    """The projection weights of ``model``'s ``nn.MultiheadAttention`` layers: QAT quantizes
    them, and keeps their inputs float (their forward uses the weights without calling a
    Linear, so no input quantizer runs)."""
    arrays = []
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            names = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
            weights = [getattr(module, name) for name in names] + [module.out_proj.weight]
            arrays += [w.detach().cpu().numpy() for w in weights if w is not None]
    return arrays


def _activation_products(path: Path) -> list[str]:
    """The MatMul nodes of the ONNX file at ``path`` that multiply two computed tensors
    (attention's scores and weighted values), which no weight layer does; unnamed ones are
    named here, in place. ONNX Runtime's QDQ quantizer quantizes them whatever its
    ``MatMulConstBOnly`` says (that option reaches its QOperator format alone)."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    constants = {tensor.name for tensor in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    products, renamed = [], False
    for position, node in enumerate(graph.node):
        if node.op_type == "MatMul" and not constants.intersection(node.input):
            if not node.name:
                node.name, renamed = f"activation_product_{position}", True
            products.append(node.name)
    if renamed:
        onnx.save(model, str(path))
    return products


def _nodes_multiplying_by(path: Path, weights: Sequence[np.ndarray]) -> list[str]:
    """The weight nodes (:func:`weight_nodes`) of the file at ``path`` whose constant operand
    is one of ``weights``, as the exporter wrote it: the matrix, its transpose, or (a packed
    query-key-value projection split in three) a third of its rows, either way."""
    if not weights:
        return []
    import onnx
    from onnx import numpy_helper

    targets = []
    for weight in weights:
        parts = [weight] + (list(np.split(weight, 3)) if weight.shape[0] % 3 == 0 else [])
        targets += [array for part in parts for array in (part, part.T)]
    named = dict(weight_nodes(path))  # names unnamed weight nodes in the file: read it after
    graph = onnx.load(str(path)).graph
    constants = {t.name: t for t in graph.initializer}
    found = []
    for node in graph.node:
        if node.name not in named:
            continue
        for name in node.input[:2]:
            if name not in constants:
                continue
            array = numpy_helper.to_array(constants[name])
            if any(t.shape == array.shape and np.array_equal(t, array) for t in targets):
                found.append(node.name)
                break
    return found


def qat_input_ranges(
    model: nn.Module, float_model: nn.Module, example: Tensor
) -> list[tuple[str, tuple[float, float] | None]] | None:
    """For each convolution and Linear ``model`` (QAT) calls, in order (:func:`layer_order`
    on its ``float_model``, :func:`_float_model`'s copy), its kind and the range (including 0)
    its input quantizer learnt, None where it has none; None when a layer is called twice (no
    order to match the file's nodes by)."""
    try:
        order = layer_order(float_model, example[:1].detach().cpu())
    except ValueError:
        return None
    ranges: list[tuple[str, tuple[float, float] | None]] = []
    for name, kind in order:
        quant = getattr(model.get_submodule(name), "input_quant", None)
        if isinstance(quant, ActivationFakeQuant) and quant.observed:
            low, high = min(float(quant.range_min), 0.0), max(float(quant.range_max), 0.0)
            ranges.append((kind, (low, high)))
        else:
            ranges.append((kind, None))
    return ranges


def _range_overrides(
    path: Path,
    in_call_order: Sequence[tuple[str, str]],
    kept_float: Sequence[str],
    layer_ranges: Sequence[tuple[str, tuple[float, float] | None]] | None,
) -> dict[str, list[dict[str, np.ndarray]]]:
    """ONNX Runtime's ``TensorQuantOverrides`` for the file at ``path``: each matched weight
    node's input on its layer's learnt range (see :func:`quantize_int8`). ``in_call_order``:
    the weight nodes as the exporter wrote them, the order the model calls its layers, matched
    to ``layer_ranges`` by position and found in ``path`` by name; none when they do not
    match. A tensor that several layers read (a block's input, to its branch and its
    shortcut) is quantized once: on the union of their ranges, so that none is clipped."""
    if not layer_ranges:
        return {}
    import onnx

    nodes = [(name, op) for name, op in in_call_order if name not in kept_float]
    kinds = [kind for kind, _ in layer_ranges]
    if len(nodes) != len(kinds) or any(
        op not in _LAYER_OPS[kind] for (_, op), kind in zip(nodes, kinds, strict=False)
    ):
        return {}
    inputs = {node.name: node.input[0] for node in onnx.load(str(path)).graph.node}
    ranges: dict[str, tuple[float, float]] = {}
    for (name, _), (_, learnt) in zip(nodes, layer_ranges, strict=True):
        if learnt is not None and name in inputs:
            tensor = inputs[name]
            low, high = ranges.get(tensor, learnt)
            ranges[tensor] = (min(low, learnt[0]), max(high, learnt[1]))
    return {
        tensor: [{"rmin": np.array(low, np.float32), "rmax": np.array(high, np.float32)}]
        for tensor, (low, high) in ranges.items()
    }


@contextlib.contextmanager
def _without_axis_warnings() -> Iterator[None]:
    """ONNX Runtime's quantizer warns on the root logger, "Axis 1 is out-of-range for weight
    ...", for a 1-D constant it was asked to quantize per channel (a GroupNorm's scale, say),
    then quantizes it per tensor, which is right: the line is dropped, not the logger's other
    messages."""

    def keep(record: logging.LogRecord) -> bool:
        return "is out-of-range for weight" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


# ONNX Runtime's fast int8 convolution (MLAS's symmetric "ConvSym" kernels, used when the
# weights' zero points are 0, as ours are) takes only group-1 convolutions whose input channels
# are a multiple of 4 and whose output channels are at least 16 and a multiple of 8; any other
# falls back to im2col and a generic int8 GEMM.
CONV_SYM_INPUT_MULTIPLE = 4
CONV_SYM_MIN_OUTPUT = 16
CONV_SYM_OUTPUT_MULTIPLE = 8


# The ONNX ops a convolution / Linear module exports to.
_LAYER_OPS = {"conv": ("Conv",), "linear": ("Gemm", "MatMul")}


def weight_nodes(path: str | Path) -> list[tuple[str, str]]:
    """The file's weight layers (Conv, Gemm, and MatMul with a constant operand) as (node name,
    op type), in graph order. In an exporter's file that is the order the model's Conv2d and
    Linear modules run in (:func:`layer_order`); ONNX Runtime's pre-processing may reorder
    nodes. Unnamed nodes are named here, in place."""
    import onnx

    model = onnx.load(str(path))
    constants = {t.name for t in model.graph.initializer}
    layers, renamed = [], False
    for position, node in enumerate(model.graph.node):
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        if not any(name in constants for name in node.input[:2]):
            continue  # a MatMul of two activations is not a weight layer
        if not node.name:
            node.name, renamed = f"weight_layer_{position}", True
        layers.append((node.name, node.op_type))
    if renamed:
        onnx.save(model, str(path))
    return layers


def _chosen_nodes(
    path: Path, int8_layers: Sequence[tuple[str, bool]], kept_float: Sequence[str] = ()
) -> list[str]:
    """The file's weight nodes to run int8: matched by position to ``int8_layers`` (see
    :func:`quantize_int8`), all but ``kept_float``, which stay float unmatched (an attention's
    projections, which no module call precedes)."""
    nodes = [node for node in weight_nodes(path) if node[0] not in kept_float]
    kinds = [kind for kind, _ in int8_layers]
    if len(nodes) != len(kinds) or any(
        op not in _LAYER_OPS[kind] for (_, op), kind in zip(nodes, kinds, strict=False)
    ):
        raise ValueError(
            f"the ONNX file's weight layers ({', '.join(op for _, op in nodes)}) do not match "
            f"the model's convolution / Linear calls ({', '.join(kinds)})"
        )
    return [name for (name, _), (_, int8) in zip(nodes, int8_layers, strict=True) if int8]


def layer_order(model: nn.Module, example: Tensor) -> list[tuple[str, str]]:
    """``model``'s convolution and Linear modules as (name, ``conv`` or ``linear``) in the order one
    forward pass calls them. ValueError when one is called more than once (a shared layer has
    one ONNX node per call, so positions would not match modules)."""
    calls: list[tuple[str, str]] = []
    hooks = []
    for name, module in model.named_modules():
        if is_weight_layer(module):
            call = (name, "conv" if is_conv(module) else "linear")
            hooks.append(module.register_forward_pre_hook(lambda *_, c=call: calls.append(c)))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    names = [name for name, _ in calls]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"layers called more than once per forward pass: {repeated}")
    return calls


def pad_input_channels(path: str | Path, only: Sequence[str] | None = None) -> list[str]:
    """Zero-pad the input channels of every convolution that reads a graph input (an image
    model's stem: 3 colour or 1 grey channel) to a multiple of 4, in place: a float ``Pad`` on
    the input, zero weights for the new channels. The model computes the same function (the
    quantized model bit for bit on CPUs with VNNI: the padded input quantizes to the zero point
    and meets zero weights; on AVX2 alone ONNX Runtime's fast and generic int8 kernels saturate
    their int16 pair sums differently, so logits differ slightly), and the stem's int8
    convolution runs ONNX Runtime's fast kernel; measured on the CIFAR-sized model at batch 64:
    stem 1.36 ms -> 0.87 ms plus 0.06 ms for the Pad. The other weights, and the stem's
    per-channel scales and codes, are unchanged. Returns the names of the Pad nodes added.
    ``only``: pad only these nodes (those quantized: a float convolution would just compute
    more)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    graph_inputs = {i.name for i in graph.input}
    added: list[str] = []
    for node in list(graph.node):
        if node.op_type != "Conv" or node.input[0] not in graph_inputs:
            continue
        if only is not None and node.name not in only:
            continue
        weight = initializers.get(node.input[1])
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if weight is None or group != 1:
            continue
        w = numpy_helper.to_array(weight)
        out_channels, in_channels = w.shape[:2]
        extra = -in_channels % CONV_SYM_INPUT_MULTIPLE
        if (
            extra == 0
            or out_channels < CONV_SYM_MIN_OUTPUT
            or out_channels % CONV_SYM_OUTPUT_MULTIPLE
        ):
            continue  # already a multiple of 4, or the fast kernel would not take it anyway
        zeros = np.zeros((out_channels, extra, *w.shape[2:]), dtype=w.dtype)
        weight.CopyFrom(numpy_helper.from_array(np.concatenate([w, zeros], axis=1), weight.name))
        spatial = [0] * (w.ndim - 2)
        name = f"{node.name or 'conv'}_channel_pad_{len(added)}"
        pads = numpy_helper.from_array(
            np.array([0, 0, *spatial, 0, extra, *spatial], dtype=np.int64), f"{name}_pads"
        )
        graph.initializer.append(pads)
        pad = helper.make_node("Pad", [node.input[0], pads.name], [f"{name}_output"], name=name)
        graph.node.insert(list(graph.node).index(node), pad)
        node.input[0] = pad.output[0]
        added.append(pad.name)
    if added:
        onnx.save(model, str(path))
    return added


def onnxruntime_module() -> Any:
    """ONNX Runtime, imported with its usage telemetry off unless ``ORT_DISABLE_TELEMETRY`` is
    set: from 1.29 on Linux and macOS its import writes a device id and an event queue under
    ``~/.cache/Microsoft/DeveloperTools`` and a session file in the temp folder, and sends
    them. Decided once per process, at the first import (``disable_telemetry_events()``
    after it still left both files)."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    return onnxruntime


def quiet_runtime() -> None:
    """ONNX Runtime's default logger at errors only: its graph optimizer's warnings (an
    EmbeddingBag's subgraph: "Implicit input name ... cannot be safely updated") went to
    stderr in colour on every trial and reproduction. What a file computes is checked against
    its model instead (``onnx_agreement``)."""
    onnxruntime_module().set_default_logger_severity(3)


def session(path: str | Path | bytes, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session using ``threads`` threads (the trial's CPUs)."""
    ort = onnxruntime_module()
    quiet_runtime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about hardware-specific fusions are not errors
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


class OnnxModule(nn.Module):
    """An ONNX Runtime session behind ``nn.Module``'s call: inputs go to the CPU as float32
    (integer ids as int64), logits come back as a tensor on the inputs' device."""

    def __init__(self, model_bytes: bytes, threads: int = 1) -> None:
        super().__init__()
        self.model_bytes = model_bytes
        self.session = session(model_bytes, threads)
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: Tensor) -> Tensor:
        logits = self.session.run(None, self._feed(x))[0]
        return torch.from_numpy(logits).to(x.device)

    def runner(self, x: Tensor) -> Callable[[], object]:
        """One inference on ``x`` as a deployment runs it: ``session.run`` on a NumPy feed
        made once, without this module's conversions from and to torch tensors (about 4 us
        a call: 1.6x the time of the smallest models' own runs)."""
        feed = self._feed(x)
        return lambda: self.session.run(None, feed)

    def _feed(self, x: Tensor) -> dict[str, Any]:
        x_cpu = x.detach().cpu()
        x_cpu = x_cpu.float() if x_cpu.is_floating_point() else x_cpu.long()
        return {self.input_name: x_cpu.numpy()}


@dataclass
class OnnxForm:
    """The ONNX file a trial ships, and its runnable session."""

    data: bytes
    precision: str  # fp32, int8-qdq, int8-qdq mixed (...), or fp32-folded-<bits>bit
    exporter: str
    module: OnnxModule
    # Mixed widths: the form each convolution / Linear runs in, by module name (int8, fp32, or
    # fp32-folded-<bits>bit); empty for a model at one width.
    layers: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"onnxruntime {self.precision}"


def onnx_form(
    model: nn.Module,
    *,
    bits: int,
    act_bits: int,
    example_inputs: Tensor,
    calibration_batches: Iterable[Any],
    threads: int = 1,
    layer_bits: Mapping[str, int] | None = None,
) -> OnnxForm:
    """The file that ships for a (QAT) model: int8 QDQ for 8-bit weights and activations, else
    fp32 (weights at other widths folded in: no ONNX Runtime CPU kernel runs them).

    ``layer_bits`` (mixed precision: each convolution / Linear's weight width by module name, as
    ``weight_bits_by_layer`` gives it; ``bits`` is then ignored): with 8-bit activations the
    layers at 8 bits run int8 and the others float with their widths folded in (``int8-qdq
    mixed``); with no layer at 8 bits, or a file whose layers cannot be matched to the modules
    (a layer called twice), fp32, with the reason in the precision's name. ``layers`` says which
    layer ran in which form."""
    with tempfile.TemporaryDirectory() as folder:
        float_path = Path(folder) / "model.onnx"
        # Activations below 8 bits, which no CPU runtime runs as integers: the float file keeps
        # their rounding, or it answers otherwise than the model trained and ranked with it.
        rounded = act_bits < 8
        exporter = export_onnx(model, example_inputs, float_path, rounded_below=8 if rounded else 0)
        layers: dict[str, str] = {}
        checked: OnnxModule | None = None  # the int8 file's session from its agreement check
        if layer_bits and len(set(layer_bits.values())) > 1:
            data, precision, layers = _mixed_form(
                model, layer_bits, act_bits, example_inputs, calibration_batches, float_path
            )
        elif bits == 8 and act_bits == 8:
            checked = _faithful_int8(model, example_inputs, list(calibration_batches), float_path)
            data, precision = checked.model_bytes, FORM_INT8_QDQ
        else:
            data = float_path.read_bytes()
            precision = _float_precision(bits)
        if rounded:
            precision += f" act{act_bits}-rounded"
    if checked is None or threads != 1:  # the check's session runs on one thread
        checked = OnnxModule(data, threads)
    return OnnxForm(data, precision, exporter, checked, layers)


# An int8 file that agrees with its model on fewer of the first calibration inputs than this is
# built again with its weight layers' inputs alone quantized, and the one that agrees more kept.
FAITHFUL_AGREEMENT = 0.98
_AGREEMENT_BATCHES = 4


def _faithful_int8(
    model: nn.Module, example_inputs: Tensor, batches: list[Any], float_path: Path
) -> OnnxModule:
    """The int8 QDQ file of ``model``, as a one-thread session: every tensor ONNX Runtime has
    an int8 kernel for quantized (the fastest file), unless that changes the model's answers.
    QAT quantizes the weight layers' inputs alone, so the other tensors' rounding is new to the
    model: a GroupNorm's or LayerNorm's input, a squeeze-excitation gate, a residual sum. On a
    custom SE/GroupNorm CNN the file agreed with its model on 89% of inputs, on 98% with the
    weight layers' inputs alone quantized; on torchvision and timm CNNs that agree either way,
    the weight-inputs file ran 7 to 28% slower (efficientnet_b0, ghostnet_050), so it is built
    only when needed (docs/benchmarks.md)."""
    frozen = _float_model(model)  # one copy for both: what the file computes
    float_inputs = attention_weights(frozen)
    ranges = qat_input_ranges(model, frozen, example_inputs)
    inputs = [b[0] if isinstance(b, tuple | list) else b for b in batches[:_AGREEMENT_BATCHES]]
    training = model.training
    model.eval()  # in training mode its quantizers would learn from these inputs
    try:
        with torch.no_grad():
            expected = [model(x).argmax(dim=1) for x in inputs]
    finally:
        model.train(training)

    def built(weight_inputs_only: bool) -> tuple[OnnxModule, float]:
        path = float_path.with_suffix(f".int8{int(weight_inputs_only)}.onnx")
        quantize_int8(
            float_path,
            batches,
            path,
            float_input_weights=float_inputs,
            layer_ranges=ranges,
            weight_inputs_only=weight_inputs_only,
        )
        module = OnnxModule(path.read_bytes())
        pairs = zip(inputs, expected, strict=True)
        agreeing = sum(int((module(x).argmax(dim=1) == e).sum()) for x, e in pairs)
        return module, agreeing / max(1, sum(len(e) for e in expected))

    fast, agreement = built(False)
    if agreement < FAITHFUL_AGREEMENT:
        faithful, closer = built(True)
        if closer > agreement:
            return faithful
    return fast


def _float_precision(bits: int) -> str:
    """How float weights of ``bits`` run in ONNX Runtime: as they are at 32 bits, else with the
    quantized values folded in."""
    return FORM_FP32 if bits == 32 else f"fp32-folded-{bits}bit"


def _mixed_form(
    model: nn.Module,
    layer_bits: Mapping[str, int],
    act_bits: int,
    example: Tensor,
    calibration_batches: Iterable[Any],
    float_path: Path,
) -> tuple[bytes, str, dict[str, str]]:
    """A mixed-width model's file, precision and per-layer forms (see :func:`onnx_form`)."""
    layers = {name: _float_precision(width) for name, width in sorted(layer_bits.items())}
    if act_bits != 8 or 8 not in layer_bits.values():
        return float_path.read_bytes(), FORM_FP32, layers
    mixed_path = float_path.with_name("model.mixed.onnx")
    try:
        frozen = _float_model(model)  # what the file computes
        order = layer_order(frozen, example[:1].cpu())
        flags = [(kind, layer_bits.get(name) == 8) for name, kind in order]
        # An attention's projections stay float at every width, as in a uniform int8 file:
        # torch's attention multiplies by their weights without calling a module (no hook
        # sees them), and QAT keeps their inputs float.
        quantize_int8(
            float_path,
            calibration_batches,
            mixed_path,
            int8_layers=flags,
            float_input_weights=attention_weights(frozen),
        )
    except Exception as exc:  # a layer called twice, or a graph unlike the modules
        reason = str(exc).splitlines()[0][:200]
        return float_path.read_bytes(), f"{FORM_FP32} (no int8 layers: {reason})", layers
    int8 = [name for (name, _), (_, is_int8) in zip(order, flags, strict=True) if is_int8]
    layers.update(dict.fromkeys(int8, "int8"))
    precision = f"{FORM_INT8_QDQ} mixed ({len(int8)} of {len(layers)} layers int8)"
    return mixed_path.read_bytes(), precision, layers


def check_model(data: bytes) -> None:
    """``onnx.checker`` on a serialized model (raises ``onnx.checker.ValidationError``)."""
    import onnx

    onnx.checker.check_model(onnx.load_model_from_string(data), full_check=True)
