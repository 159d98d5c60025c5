"""ONNX: the file a deployment team runs, built and timed by ONNX Runtime (no torch.ao).

- :func:`export_onnx` writes any model nascomp can train as fp32 ONNX (a QAT model with its
  fake-quantized weights folded in), pruned models at their real, smaller shapes, with a
  dynamic batch axis.
- :func:`quantize_int8` turns that file into an int8 QDQ model with ONNX Runtime's own
  quantizer: per-channel symmetric int8 weights over [-127, 127] (max |w| / 127 per output
  channel, exactly the grid and scale of nascomp's 8-bit QAT, so the folded QAT weights come
  back as the same integer codes), and uint8 activation ranges calibrated on training batches
  (QAT learned ranges for layer inputs only; int8 kernels need every tensor's range).
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

import copy
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from nascomp.compressors.quantization import freeze_fake_quant

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# The exporters, in the order they are tried (see the module's docstring).
EXPORTERS = ("torchscript", "dynamo")

FORM_FP32 = "fp32"
FORM_FP16 = "fp16"
FORM_INT8_QDQ = "int8-qdq"


def _float_model(model: nn.Module) -> nn.Module:
    """A CPU, eval-mode, plain-float copy: QAT layers folded, the original untouched."""
    return freeze_fake_quant(copy.deepcopy(model)).cpu().eval()


def export_onnx(
    model: nn.Module, example: Tensor, path: str | Path, exporters: tuple[str, ...] = EXPORTERS
) -> str:
    """Write ``model`` (any trained or QAT model) as fp32 ONNX at ``path``; returns the name of
    the exporter that succeeded. The batch axis is dynamic; the rest is ``example``'s shape."""
    float_model = _float_model(model)
    example = example[:1].detach().cpu()
    errors: list[str] = []
    for exporter in exporters:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
                _EXPORT[exporter](float_model, example, Path(path))
            return exporter
        except Exception as exc:  # a model one exporter cannot take may suit the other
            errors.append(f"{exporter}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    raise RuntimeError(f"no ONNX exporter could export the model ({'; '.join(errors)})")


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


def to_fp16(data: bytes) -> bytes:
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
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load_model_from_string(data), keep_io_types=True)
    _topological_sort(model.graph)
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
    float32 at the boundary (:func:`to_fp16`)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        export_onnx(model, example, path)
        return to_fp16(path.read_bytes())


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
) -> None:
    """An int8 QDQ model of the fp32 ONNX file (see the module's docstring). ``pad_channels``:
    pad the stem's input channels for ONNX Runtime's fast kernel (:func:`pad_input_channels`)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_Batches, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory() as folder:
        # ORT's pre-processing folds the exporter's Identity nodes and infers shapes: without it
        # half the convolutions of a residual CNN stayed float (measured: 8 of 16 QLinearConv).
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        pads = pad_input_channels(prepared) if pad_channels else []
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
            nodes_to_exclude=pads,
            # Logits stay float: quantizing the classifier's output to 8 bits flips near-ties
            # (measured on digits: 98.9% -> 99.2% top-1 agreement with the evaluated model).
            extra_options={
                "WeightSymmetric": True,
                "ActivationSymmetric": False,
                "OpTypesToExcludeOutputQuantization": ["Gemm", "MatMul"],
            },
        )


# ONNX Runtime's fast int8 convolution (MLAS's symmetric "ConvSym" kernels, used when the
# weights' zero points are 0, as ours are) takes only group-1 convolutions whose input channels
# are a multiple of 4 and whose output channels are at least 16 and a multiple of 8; any other
# falls back to im2col and a generic int8 GEMM.
CONV_SYM_INPUT_MULTIPLE = 4
CONV_SYM_MIN_OUTPUT = 16
CONV_SYM_OUTPUT_MULTIPLE = 8


def pad_input_channels(path: str | Path) -> list[str]:
    """Zero-pad the input channels of every convolution that reads a graph input (an image
    model's stem: 3 colour or 1 grey channel) to a multiple of 4, in place: a float ``Pad`` on
    the input, zero weights for the new channels. The model computes the same function (the
    quantized model bit for bit: the padded input quantizes to the zero point and meets zero
    weights), and the stem's int8 convolution runs ONNX Runtime's fast kernel; measured on the
    CIFAR-sized model at batch 64: stem 1.36 ms -> 0.87 ms plus 0.06 ms for the Pad. The other
    weights, and the stem's per-channel scales and codes, are unchanged. Returns the names of the
    Pad nodes added."""
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


def session(path: str | Path | bytes, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session using ``threads`` threads (the trial's CPUs)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about hardware-specific fusions are not errors
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


class OnnxModule(nn.Module):
    """An ONNX Runtime session behind ``nn.Module``'s call: inputs go to the CPU as float32,
    logits come back as a tensor on the inputs' device."""

    def __init__(self, model_bytes: bytes, threads: int = 1) -> None:
        super().__init__()
        self.model_bytes = model_bytes
        self.session = session(model_bytes, threads)
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: Tensor) -> Tensor:
        feed = {self.input_name: x.detach().cpu().float().numpy()}
        logits = self.session.run(None, feed)[0]
        return torch.from_numpy(logits).to(x.device)


@dataclass
class OnnxForm:
    """The ONNX file a trial ships, and its runnable session."""

    data: bytes
    precision: str  # fp32, int8-qdq, or fp32-folded-<bits>bit
    exporter: str
    module: OnnxModule

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
) -> OnnxForm:
    """The file that ships for a (QAT) model: int8 QDQ for 8-bit weights and activations, else
    fp32 (weights at other widths folded in: no ONNX Runtime CPU kernel runs them)."""
    with tempfile.TemporaryDirectory() as folder:
        float_path = Path(folder) / "model.onnx"
        exporter = export_onnx(model, example_inputs, float_path)
        if bits == 8 and act_bits == 8:
            int8_path = Path(folder) / "model.int8.onnx"
            quantize_int8(float_path, calibration_batches, int8_path)
            data, precision = int8_path.read_bytes(), FORM_INT8_QDQ
        else:
            data = float_path.read_bytes()
            precision = FORM_FP32 if bits == 32 else f"fp32-folded-{bits}bit"
    return OnnxForm(data, precision, exporter, OnnxModule(data, threads))


def check_model(data: bytes) -> None:
    """``onnx.checker`` on a serialized model (raises ``onnx.checker.ValidationError``)."""
    import onnx

    onnx.checker.check_model(onnx.load_model_from_string(data), full_check=True)
