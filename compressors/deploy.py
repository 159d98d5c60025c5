"""Real int8 models (torch.ao.quantization, FX graph mode, x86 backend).

FX graph mode rather than eager: it fuses conv-bn-relu and turns residual ``+`` into quantized
adds by tracing, so the search's models need no ``QuantStub`` / ``FloatFunctional`` edits.

A QAT model's fake-quantized layers are first frozen into plain layers holding their quantized
weights. The int8 weight observer is per-channel symmetric over [-127, 127], the same grid as
8-bit QAT, so those weights convert without a second rounding; activations are calibrated
afresh on ``calibration_batches`` (int8 quantizes layer outputs, QAT quantized layer inputs),
at 8 bits on CPUs with VNNI and 7 bits elsewhere (see ``_int8_qconfig``). The int8 model is
therefore built for the CPU family it was converted on, as fbgemm models always are.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.ao.quantization import (
    MinMaxObserver,
    PerChannelMinMaxObserver,
    QConfig,
    QConfigMapping,
)
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from nascomp.compressors.quantization import quant_layers

BACKEND = "x86"


def has_vnni() -> bool:
    """Whether this CPU has VNNI (int8 dot products accumulated in int32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def _int8_qconfig() -> QConfig:
    # Without VNNI, fbgemm sums pairs of u8 x s8 products in int16, which saturates unless
    # activations use 7 bits (torch's reduce_range); with VNNI the full 8 bits are exact and
    # agree better with 8-bit QAT (measured: 99.4% against 98.3% top-1 agreement on digits).
    # Min/max, not histogram, observers: QAT learned min/max ranges too, and histograms made
    # conversion cost most of a second per trial.
    act_max = 255 if has_vnni() else 127
    activation = MinMaxObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=act_max)
    weight = PerChannelMinMaxObserver.with_args(
        dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-127, quant_max=127
    )
    return QConfig(activation=activation, weight=weight)


def _plain_twin(layer: nn.Module) -> nn.Module:
    """A float Conv2d / Linear carrying ``layer``'s fake-quantized weight."""
    if isinstance(layer, nn.Conv2d):
        plain: nn.Module = nn.Conv2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            layer.groups,
            layer.bias is not None,
            layer.padding_mode,
        )
    else:
        plain = nn.Linear(layer.in_features, layer.out_features, layer.bias is not None)
    with torch.no_grad():
        plain.weight.copy_(layer.quantized_weight())
        if layer.bias is not None:
            plain.bias.copy_(layer.bias)
    return plain


def freeze_fake_quant(model: nn.Module) -> nn.Module:
    """Replace (in place) every QAT layer by a plain layer holding its quantized weight."""
    targets = {id(layer) for layer in quant_layers(model)}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in targets:
                setattr(parent, name, _plain_twin(child).to(child.weight.device))
    return model


def _batch_inputs(batch: Any) -> Tensor:
    # Accept a data loader of (inputs, labels) as well as bare input tensors.
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def to_int8_deployable(
    model: nn.Module, example_inputs: Tensor, calibration_batches: Iterable[Any]
) -> nn.Module:
    """An int8 copy of ``model`` (8-bit QAT or float) for CPU inference; ``model`` is untouched.

    ``calibration_batches`` yields input tensors (or ``(inputs, labels)``); a few hundred
    samples set the activation ranges. Sets torch's quantized engine to x86 (process-wide).
    """
    if BACKEND not in torch.backends.quantized.supported_engines:
        raise RuntimeError(f"quantized engine {BACKEND!r} is not available in this torch build")
    torch.backends.quantized.engine = BACKEND
    float_model = freeze_fake_quant(copy.deepcopy(model)).cpu().eval()
    mapping = QConfigMapping().set_global(_int8_qconfig())
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which has no int8 conv.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        # Printed for ops with fixed output ranges (hardswish, sigmoid) in zoo models: the
        # qconfig is ours on purpose (see _int8_qconfig).
        warnings.filterwarnings("ignore", message="(?s).*get_default_qconfig_mapping")
        prepared = prepare_fx(float_model, mapping, (example_inputs.cpu(),))
        n_batches = 0
        # no_grad, not inference_mode: observers keep their buffers for convert_fx to read.
        with torch.no_grad():
            for batch in calibration_batches:
                prepared(_batch_inputs(batch).cpu())
                n_batches += 1
        if n_batches == 0:
            raise ValueError("calibration_batches must yield at least one batch")
        return convert_fx(prepared)


# Forms a trial can time; the name is logged so every latency says what it measured.
FORM_FP32 = "fp32"
FORM_INT8 = "int8-x86"


def folded_form_name(bits: int) -> str:
    return f"fp32-folded-{bits}bit"


def deployable_form(
    model: nn.Module,
    *,
    bits: int,
    act_bits: int,
    example_inputs: Tensor,
    calibration_batches: Iterable[Any],
) -> tuple[nn.Module, str]:
    """The form of a (QAT) model that would be shipped for CPU inference, and its name.

    - 32 bits: the model itself (``fp32``);
    - 8-bit weights with 8-bit activations: a real int8 model from ``to_int8_deployable``
      (``int8-x86``), on CPU only;
      When the conversion fails (a model FX cannot trace), the 8-bit folded form below, with
      the reason in its name;
    - any other width: no CPU backend runs it, so the fake-quantized weights are folded into a
      plain float model, without quantize-dequantize ops (``fp32-folded-<bits>bit``). That
      includes 16 bits: CPUs hold fp16 weights but compute in fp32.
    ``model`` is never modified.
    """
    if bits == 32:
        return model, FORM_FP32
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    form = folded_form_name(bits)
    if bits == 8 and act_bits == 8 and on_cpu:
        try:
            return to_int8_deployable(model, example_inputs, calibration_batches), FORM_INT8
        except Exception as exc:  # FX cannot trace the model, or no int8 kernel for an op
            # A model the user brought may hold what FX or the x86 backend cannot take; the
            # trial still has a latency, and the form's name says which one and why.
            reason = (str(exc).splitlines() or [""])[0][:160]
            form = f"{form} (no int8 form: {type(exc).__name__}: {reason})"
    return freeze_fake_quant(copy.deepcopy(model)).eval(), form
