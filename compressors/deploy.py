"""The PyTorch runtime's deployable forms, and the one module that uses torch.ao.

torch.ao.quantization (eager and FX) is deprecated in favour of torchao / PT2E and scheduled
for removal. It is imported here only, lazily; when it is missing (or cannot convert a model),
the int8 form comes from ONNX Runtime (``compressors.onnx_export``) instead, so an 8-bit trial
never loses its deployable form. ``torch_ao_available()`` says which applies.

Real int8 models with torch.ao (FX graph mode, x86 backend):

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

import contextlib
import copy
import linecache
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from nascomp.compressors.layers import RECURRENT_LAYERS
from nascomp.compressors.quantization import freeze_fake_quant

# Tests set this to prove the int8 form survives torch.ao's removal (the module's docstring).
_TORCH_AO_MODULE = "torch.ao.quantization.quantize_fx"


def torch_ao_available() -> bool:
    """Whether torch.ao's FX quantization can be imported in this torch build."""
    import importlib

    try:
        importlib.import_module(_TORCH_AO_MODULE)
    except ImportError:
        return False
    return True


BACKEND = "x86"


def has_vnni() -> bool:
    """Whether this CPU has VNNI (int8 dot products accumulated in int32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def _int8_qconfig() -> Any:
    # Without VNNI, fbgemm sums pairs of u8 x s8 products in int16, which saturates unless
    # activations use 7 bits (torch's reduce_range); with VNNI the full 8 bits are exact and
    # agree better with 8-bit QAT (measured: 99.4% against 98.3% top-1 agreement on digits).
    # Min/max, not histogram, observers: QAT learned min/max ranges too, and histograms made
    # conversion cost most of a second per trial.
    from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver, QConfig

    act_max = 255 if has_vnni() else 127
    activation = MinMaxObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=act_max)
    weight = PerChannelMinMaxObserver.with_args(
        dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-127, quant_max=127
    )
    return QConfig(activation=activation, weight=weight)


def _batch_inputs(batch: Any) -> Tensor:
    # Accept a data loader of (inputs, labels) as well as bare input tensors.
    return batch[0] if isinstance(batch, (tuple, list)) else batch


@contextlib.contextmanager
def _conversion_leftovers_dropped() -> Iterator[None]:
    """Let go of what torch.ao's FX conversion keeps of every model it converts within the
    block, for as long as the process lives (torch 2.14.1):

    - ``torch.ao.quantization.fx.utils.assert_and_get_unique_device`` is an unbounded
      ``functools.cache`` keyed by module: each conversion left 2 whole models in it (their
      parameters included), so a trial worker that converts a model every trial (GPU trials,
      ``measure.runtime: torch``) grew by two models a trial;
    - torch.fx keeps the source of each module it generates (its loader's cache, and a lazy
      ``linecache`` entry holding the module's globals): 6 of each a conversion.

    The converted module runs without them; a traceback inside its generated ``forward``
    shows no source line. Each is left alone where this torch has no such attribute."""
    from torch.fx import graph_module

    cache = getattr(getattr(graph_module, "_loader", None), "eval_cache", None)
    before = set(cache) if isinstance(cache, dict) else set()
    try:
        yield
    finally:
        if isinstance(cache, dict):
            for key in set(cache) - before:
                cache.pop(key, None)
                linecache.cache.pop(key, None)
        with contextlib.suppress(ImportError):
            from torch.ao.quantization.fx import utils as fx_utils

            memo = getattr(fx_utils, "assert_and_get_unique_device", None)
            if hasattr(memo, "cache_clear"):
                memo.cache_clear()


def to_int8_deployable(
    model: nn.Module, example_inputs: Tensor, calibration_batches: Iterable[Any]
) -> nn.Module:
    """An int8 copy of ``model`` (8-bit QAT or float) for CPU inference; ``model`` is untouched.

    ``calibration_batches`` yields input tensors (or ``(inputs, labels)``); a few hundred
    samples set the activation ranges. Sets torch's quantized engine to x86 (process-wide).
    """
    import importlib

    quantize_fx = importlib.import_module(_TORCH_AO_MODULE)
    from torch.ao.quantization import QConfigMapping

    if BACKEND not in torch.backends.quantized.supported_engines:
        raise RuntimeError(f"quantized engine {BACKEND!r} is not available in this torch build")
    torch.backends.quantized.engine = BACKEND
    float_model = freeze_fake_quant(copy.deepcopy(model)).cpu().eval()
    # torch.ao quantizes embeddings only weight-only with float qparams, and recurrent layers
    # only dynamically; ours run as the float layers that hold their QAT-quantized rows.
    mapping = QConfigMapping().set_global(_int8_qconfig())
    for kind in (nn.Embedding, *RECURRENT_LAYERS):
        mapping = mapping.set_object_type(kind, None)
    with warnings.catch_warnings(), _conversion_leftovers_dropped():
        # torch.ao.quantization is deprecated in favour of torchao, which has no int8 conv.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        # Printed for ops with fixed output ranges (hardswish, sigmoid) in zoo models: the
        # qconfig is ours on purpose (see _int8_qconfig).
        warnings.filterwarnings("ignore", message="(?s).*get_default_qconfig_mapping")
        prepared = quantize_fx.prepare_fx(float_model, mapping, (example_inputs.cpu(),))
        n_batches = 0
        # no_grad, not inference_mode: observers keep their buffers for convert_fx to read.
        with torch.no_grad():
            for batch in calibration_batches:
                prepared(_batch_inputs(batch).cpu())
                n_batches += 1
        if n_batches == 0:
            raise ValueError("calibration_batches must yield at least one batch")
        return quantize_fx.convert_fx(prepared)


# Forms a trial can time; the name is logged so every latency says what it measured.
FORM_FP32 = "fp32"
FORM_INT8 = "int8-x86"


def folded_form_name(bits: int) -> str:
    return f"fp32-folded-{bits}bit"


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:120]}"


def deployable_form(
    model: nn.Module,
    *,
    bits: int,
    act_bits: int,
    example_inputs: Tensor,
    calibration_batches: Iterable[Any],
) -> tuple[nn.Module, str]:
    """The PyTorch runtime's form of a (QAT) model for CPU inference, and its name.

    - 32 bits: the model itself (``fp32``);
    - 8-bit weights with 8-bit activations, on CPU: a real int8 model from torch.ao
      (``int8-x86``). Without torch.ao, or when it cannot convert the model, ONNX Runtime's int8
      QDQ form (``onnxruntime int8-qdq``); when neither can (a model no tracer follows), the
      folded form below, with the reasons in its name;
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
        batches = list(calibration_batches)
        reasons = []
        if torch_ao_available():
            try:
                return to_int8_deployable(model, example_inputs, batches), FORM_INT8
            except Exception as exc:  # FX cannot trace the model, or no int8 kernel for an op
                reasons.append(f"torch.ao: {_reason(exc)}")
        else:
            reasons.append("torch.ao: not in this torch build")
        try:
            from nascomp.compressors.onnx_export import onnx_form

            onnx = onnx_form(
                model,
                bits=8,
                act_bits=8,
                example_inputs=example_inputs,
                calibration_batches=batches,
                threads=torch.get_num_threads(),
            )
            return onnx.module, onnx.name
        except Exception as exc:
            reasons.append(f"onnxruntime: {_reason(exc)}")
        # A model the user brought may hold what no tracer or int8 backend takes; the trial
        # still has a latency, and the form's name says which one and why.
        form = f"{form} (no int8 form: {'; '.join(reasons)})"
    return freeze_fake_quant(copy.deepcopy(model)).eval(), form
