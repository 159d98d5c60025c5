"""Quantization-aware training by fake quantization of convolution (1d, 2d, 3d), Linear,
Embedding and recurrent (LSTM, GRU, RNN) layers (``compressors.layers``).

Weights: symmetric, per output channel (dim 0), ``scale_c = max|w_c| / (2**(bits-1) - 1)``,
so a channel takes at most ``2**bits - 1`` levels and zero stays exactly zero (pruning masks
survive quantization). Gradients pass through the rounding unchanged (straight-through
estimator). Input activations: asymmetric unsigned per-tensor quantization with an EMA min/max
observer that learns in training mode and is frozen in eval mode. An embedding's table is
quantized per row (an id's vector) and its input, ids, is not; a recurrent layer's weight
matrices are quantized per row (a gate's unit), its input and hidden state are not.

``prepare_qat`` swaps each such layer for its ``QuantConv{1,2,3}d`` / ``QuantLinear`` /
``QuantEmbedding`` / ``QuantLSTM`` / ``QuantGRU`` / ``QuantRNN`` twin,
which holds the SAME ``nn.Parameter`` objects, so an optimizer built earlier and the pruner's
masks (keyed by Parameter) keep working.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nascomp.compressors.layers import (
    ALL,
    LAYER_KINDS,
    LEGACY,
    QUANTIZED_LAYER_NAMES,
    is_conv,
    is_quantized_layer,
    is_recurrent,
    layer_kinds,
    weight_names,
)

VALID_BITS = (2, 3, 4, 5, 6, 7, 8, 16, 32)
VALID_ACT_BITS = (2, 3, 4, 5, 6, 7, 8, 32)
# Weight of the newest batch in the activation range EMA (torch's MovingAverageMinMaxObserver
# uses the same default).
ACT_EMA_MOMENTUM = 0.01


MIXED_MODES = ("none", "groups", "budget")
SENSITIVITY_CRITERIA = ("kl", "loss")  # compressors.allocation.measure_sensitivity


@dataclass(frozen=True)
class QuantConfig:
    """``bits``: weight bit-width (32 = off, 16 = fp16 weights); ``act_bits``: input activation
    bit-width (32 = off). Activations are only quantized when ``bits < 16``.

    Mixed precision (``compressors.allocation`` turns these into per-layer widths):
    ``mixed="groups"``: a layer matching one of ``groups[g]`` (module-name globs) takes width
    ``group_bits[g]``; ``mixed="budget"``: the allocator picks each layer's width among ``widths``
    with at most ``budget`` bits per kept weight on average. Other layers take ``bits``.
    """

    # Read by pydantic where a trial config holds this one: an unknown key is an error.
    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}

    bits: int = 32
    act_bits: int = 8
    mixed: str = "none"
    budget: float | None = None
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Sampled from the space's ``bits`` (a width per group; the widths a budget chooses from).
    group_bits: dict[str, int] = field(default_factory=dict)
    widths: tuple[int, ...] = ()
    # How a budget's allocator measures a layer's sensitivity (compressors.allocation): "kl" in
    # every search since it existed; "loss" where a config does not say, as configs written
    # before then were allocated, so that they reproduce exactly.
    sensitivity: str = "loss"
    # Which layer kinds QAT, pruning and the artifact compress (compressors.layers): "all", or
    # "conv2d_linear", as trials logged before Conv1d, Conv3d and Embedding were compressed
    # (their configs lack the key: ``TrialConfig.from_flat`` reads them so).
    layers: str = ALL

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or self.bits not in VALID_BITS:
            raise ValueError(f"bits must be one of {VALID_BITS}, got {self.bits!r}")
        if isinstance(self.act_bits, bool) or self.act_bits not in VALID_ACT_BITS:
            raise ValueError(f"act_bits must be one of {VALID_ACT_BITS}, got {self.act_bits!r}")
        if self.mixed not in MIXED_MODES:
            raise ValueError(f"mixed must be one of {', '.join(MIXED_MODES)}, got {self.mixed!r}")
        for name, bits in self.group_bits.items():
            if isinstance(bits, bool) or bits not in VALID_BITS:
                raise ValueError(f"group_bits.{name} must be one of {VALID_BITS}, got {bits!r}")
        if set(self.group_bits) - set(self.groups):
            missing = sorted(set(self.group_bits) - set(self.groups))
            raise ValueError(f"group_bits names groups {missing} that have no globs in groups")
        if self.layers not in LAYER_KINDS:
            raise ValueError(f"layers must be one of {', '.join(LAYER_KINDS)}, got {self.layers!r}")
        if self.sensitivity not in SENSITIVITY_CRITERIA:
            raise ValueError(
                f"sensitivity must be one of {', '.join(SENSITIVITY_CRITERIA)}, "
                f"got {self.sensitivity!r}"
            )
        if self.mixed == "budget":
            if not self.widths or any(w not in VALID_BITS for w in self.widths):
                raise ValueError(
                    f"widths must list bit-widths from {VALID_BITS}, got {self.widths}"
                )
            if self.budget is None or not min(self.widths) <= self.budget:
                raise ValueError(
                    f"budget must be a number >= the narrowest width {min(self.widths)}, "
                    f"got {self.budget!r}"
                )

    def quantizes(self) -> bool:
        """Whether QAT runs: a width below 32 bits, or mixed precision."""
        return self.bits < 32 or self.mixed != "none"


def weight_qmax(bits: int) -> int:
    """Largest integer level of a symmetric ``bits``-bit weight code (levels -qmax..qmax)."""
    return 2 ** (bits - 1) - 1


def channel_absmax(weight: Tensor) -> Tensor:
    """max|w| per output channel, shaped to broadcast against ``weight``."""
    flat = weight.detach().abs().reshape(weight.shape[0], -1)
    return flat.amax(dim=1).reshape(-1, *([1] * (weight.dim() - 1)))


def channel_scale(absmax: Tensor, bits: int) -> Tensor:
    """Scale from a channel's max|w|; an all-zero channel gets scale 1 (its codes are all 0)."""
    scale = absmax / weight_qmax(bits)
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def quantize_weight_codes(weight: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Integer codes in [-qmax, qmax] and the per-channel scale, for ``bits`` < 16."""
    qmax = weight_qmax(bits)
    scale = channel_scale(channel_absmax(weight), bits)
    codes = torch.clamp(torch.round(weight.detach() / scale), -qmax, qmax)
    return codes, scale


def fake_quantize_weight(weight: Tensor, bits: int) -> Tensor:
    """Quantize-dequantize ``weight`` at ``bits`` with a straight-through gradient."""
    if bits not in VALID_BITS:
        raise ValueError(f"bits must be one of {VALID_BITS}, got {bits!r}")
    if bits == 32:
        return weight
    if not (torch.is_grad_enabled() and weight.requires_grad):
        # No gradient to pass: plain tensor ops give the same values, and a TorchScript trace
        # of them can be saved (a Python autograd Function cannot).
        return _quantize_dequantize(weight, bits)
    return _StraightThroughQuant.apply(weight, bits)


def _quantize_dequantize(weight: Tensor, bits: int) -> Tensor:
    if bits == 16:
        return weight.half().to(weight.dtype)
    codes, scale = quantize_weight_codes(weight, bits)
    return codes * scale


class _StraightThroughQuant(torch.autograd.Function):
    """Forward: exact quantized values (``w + (q - w).detach()`` would be off by rounding
    errors and break the level count); backward: identity."""

    @staticmethod
    def forward(ctx, weight: Tensor, bits: int) -> Tensor:  # type: ignore[override]
        return _quantize_dequantize(weight, bits)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad_output, None


def fake_quantize_activation(x: Tensor, scale: Tensor, zero_point: Tensor, qmax: int) -> Tensor:
    """``torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, qmax)``, bit for bit,
    with its gradient (passed where the code falls in [0, qmax], zero where clamped).

    Written as plain tensor ops because torch's CPU kernel for it is slow: it runs at the input
    of every QAT layer in every step and evaluation pass, and took about as long as the
    convolution after it. These ops are 2.1 to 2.5 times faster forward and backward, 2 to 10
    times in evaluation (torch 2.15, 1 thread, ``python bench/eval_kernels.py``). The arithmetic
    is the kernel's: ``x`` times the float32 ``1 / scale``, rounded half to even, plus the zero
    point, clamped to [0, qmax], less the zero point, times ``scale``. Other devices keep
    torch's kernel: one fused pass there against these six, and not measured on a GPU.
    """
    if x.device.type != "cpu":
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, qmax)
    if torch.is_grad_enabled() and x.requires_grad:
        return _ActivationQuant.apply(x, scale, zero_point, qmax)
    # No gradient to pass: plain ops, which TorchScript and torch.export can capture.
    return _activation_codes_to_values(
        _activation_codes(x, scale, zero_point), scale, zero_point, qmax
    )


def _activation_codes(x: Tensor, scale: Tensor, zero_point: Tensor) -> Tensor:
    """Unclamped integer codes, as floats: round(x * (1 / scale)) + zero_point."""
    return torch.round(x * (1.0 / scale)) + zero_point


def _activation_codes_to_values(
    codes: Tensor, scale: Tensor, zero_point: Tensor, qmax: int
) -> Tensor:
    return (torch.clamp(codes, 0, qmax) - zero_point) * scale


class _ActivationQuant(torch.autograd.Function):
    """Forward: :func:`fake_quantize_activation`'s values; backward: the gradient where the
    code was in range (torch's straight-through estimator for fake quantization)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: Tensor, scale: Tensor, zero_point: Tensor, qmax: int
    ) -> Tensor:
        codes = _activation_codes(x, scale, zero_point)
        ctx.save_for_backward((codes >= 0) & (codes <= qmax))
        return _activation_codes_to_values(codes, scale, zero_point, qmax)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        (in_range,) = ctx.saved_tensors
        return grad_output * in_range, None, None, None


class ActivationFakeQuant(nn.Module):
    """Asymmetric unsigned per-tensor fake quantization with an EMA min/max observer.

    The range is +inf/-inf until the first training batch; before that (an untrained model in
    eval mode) the input passes unchanged rather than being quantized with a made-up range.
    """

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits
        self.register_buffer("range_min", torch.tensor(float("inf")))
        self.register_buffer("range_max", torch.tensor(float("-inf")))
        # A Python flag, not a tensor comparison: forward must hold no data-dependent branch,
        # or torch.export (MLflow's pt2 format) and TorchScript tracing cannot capture it.
        self.observed = False

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.sync_observed()

    def sync_observed(self) -> None:
        """Re-read the flag from the range buffers after they were written from outside."""
        self.observed = bool(self.range_min <= self.range_max)

    @torch.no_grad()
    def _observe(self, x: Tensor) -> None:
        batch_min, batch_max = x.detach().aminmax()
        if not self.observed:
            self.range_min.copy_(batch_min)
            self.range_max.copy_(batch_max)
            self.observed = True
            return
        self.range_min.lerp_(batch_min, ACT_EMA_MOMENTUM)
        self.range_max.lerp_(batch_max, ACT_EMA_MOMENTUM)

    def scale_and_zero_point(self) -> tuple[Tensor, Tensor]:
        # The range must contain 0 so that zero (ReLU outputs, padding) is exact.
        low = torch.clamp(self.range_min, max=0.0)
        high = torch.clamp(self.range_max, min=0.0)
        n_levels = 2**self.bits - 1
        scale = torch.clamp((high - low) / n_levels, min=torch.finfo(torch.float32).eps)
        zero_point = torch.clamp(torch.round(-low / scale), 0, n_levels).to(torch.int32)
        return scale.reshape(1), zero_point.reshape(1)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self._observe(x)
        if not self.observed:
            return x
        scale, zero_point = self.scale_and_zero_point()
        return fake_quantize_activation(x, scale, zero_point, 2**self.bits - 1)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class _QuantMixin:
    """Shared state of the quantized layers: weight bits and the input quantizer."""

    weight_bits: int
    input_quant: nn.Module

    def _setup_quant(self, config: QuantConfig) -> None:
        self.weight_bits = config.bits
        # fp16 weights mimic a half-precision deployment, which keeps activations in float.
        if config.bits < 16 and config.act_bits < 32:
            self.input_quant = ActivationFakeQuant(config.act_bits)
        else:
            self.input_quant = nn.Identity()

    def quantized_weight(self) -> Tensor:
        return fake_quantize_weight(self.weight, self.weight_bits)  # type: ignore[attr-defined]

    def stored_weights(self) -> dict[str, Tensor]:
        """Each weight matrix as stored, by parameter name: ``weight``, a recurrent layer's
        ``weight_ih_l0``..., attention's input projection (``weight_names``)."""
        return {
            name: fake_quantize_weight(getattr(self, name), self.weight_bits)
            for name in weight_names(self)  # type: ignore[arg-type]
        }


class QuantConv1d(_QuantMixin, nn.Conv1d):
    """Conv1d that fake-quantizes its weight and its input."""

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self.input_quant(x), self.quantized_weight(), self.bias)


class QuantConv2d(_QuantMixin, nn.Conv2d):
    """Conv2d that fake-quantizes its weight and its input."""

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self.input_quant(x), self.quantized_weight(), self.bias)


class QuantConv3d(_QuantMixin, nn.Conv3d):
    """Conv3d that fake-quantizes its weight and its input."""

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self.input_quant(x), self.quantized_weight(), self.bias)


class QuantLinear(_QuantMixin, nn.Linear):
    """Linear that fake-quantizes its weight and its input."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.input_quant(x), self.quantized_weight(), self.bias)


class QuantEmbedding(_QuantMixin, nn.Embedding):
    """Embedding that fake-quantizes its table, per row (its ids are not activations: no input
    quantizer)."""

    def _setup_quant(self, config: QuantConfig) -> None:
        self.weight_bits = config.bits
        self.input_quant = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return F.embedding(
            x,
            self.quantized_weight(),
            self.padding_idx,
            self.max_norm,
            self.norm_type,
            self.scale_grad_by_freq,
            self.sparse,
        )


class _QuantRecurrent(_QuantMixin):
    """A recurrent layer that fake-quantizes its weight matrices, each per row (a gate's unit),
    for the length of a forward pass; biases, the input and the hidden state stay float (no
    runtime nascomp ships to runs a recurrent layer in int8)."""

    _flat_weights_names: list[str]
    _flat_weights: list[Tensor | None]

    def _setup_quant(self, config: QuantConfig) -> None:
        self.weight_bits = config.bits
        self.input_quant = nn.Identity()

    def quantized_weights(self) -> list[Tensor | None]:
        """The flat parameters as the forward pass uses them: weights fake-quantized."""
        return [
            fake_quantize_weight(tensor, self.weight_bits)
            if tensor is not None and name.startswith("weight_")
            else tensor
            for name, tensor in zip(self._flat_weights_names, self._flat_weights, strict=True)
        ]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # torch's recurrent forward reads self._flat_weights; in place of the Parameters it
        # holds, the quantized values for this pass (gradients reach the Parameters through
        # the straight-through estimator), then the Parameters again.
        self._update_flat_weights()  # type: ignore[attr-defined]
        parameters = self._flat_weights
        self._flat_weights = self.quantized_weights()
        try:
            return super().forward(*args, **kwargs)  # type: ignore[misc]
        finally:
            self._flat_weights = parameters


class QuantLSTM(_QuantRecurrent, nn.LSTM):
    """LSTM whose weight matrices are fake-quantized per row."""


class QuantGRU(_QuantRecurrent, nn.GRU):
    """GRU whose weight matrices are fake-quantized per row."""


class QuantRNN(_QuantRecurrent, nn.RNN):
    """Elman RNN whose weight matrices are fake-quantized per row."""


_QUANT_RECURRENT: dict[type[nn.Module], type[nn.Module]] = {
    nn.LSTM: QuantLSTM,
    nn.GRU: QuantGRU,
    nn.RNN: QuantRNN,
}


def _torch_class(module: nn.Module, twins: Mapping[type[nn.Module], type[nn.Module]]) -> Any:
    """The torch class among ``twins``' keys that ``module`` is (or subclasses), e.g. Conv1d,
    Conv2d or Conv3d; LSTM, GRU or RNN."""
    return next(kind for kind in twins if isinstance(module, kind))


def _recurrent_like(kind: type[nn.Module], rnn: nn.Module, **kwargs: Any) -> nn.Module:
    """A recurrent layer of class ``kind`` with ``rnn``'s settings (its weights to be set)."""
    settings: dict[str, Any] = {
        "num_layers": rnn.num_layers,
        "bias": rnn.bias,
        "batch_first": rnn.batch_first,
        "dropout": float(rnn.dropout),
        "bidirectional": rnn.bidirectional,
    }
    if isinstance(rnn, nn.LSTM):
        settings["proj_size"] = rnn.proj_size
    if isinstance(rnn, nn.RNN):
        settings["nonlinearity"] = rnn.nonlinearity
    return kind(rnn.input_size, rnn.hidden_size, **settings, **kwargs)


def _adopt_recurrent(twin: nn.Module, rnn: nn.Module) -> None:
    """Move ``rnn``'s Parameters into ``twin`` unchanged (torch keeps its flat list in step)."""
    for name in rnn._flat_weights_names:
        setattr(twin, name, getattr(rnn, name))
    twin._init_flat_weights()


class QuantMultiheadAttention(_QuantMixin, nn.MultiheadAttention):
    """Attention whose input projection is fake-quantized per row, and whose output projection
    (a ``QuantLinear`` child, which torch's attention reads as a tensor, never calling it) is
    used at its own width. The attention's products and its output projection's input stay
    float."""

    def _setup_quant(self, config: QuantConfig) -> None:
        self.weight_bits = config.bits
        self.input_quant = nn.Identity()

    def _quantized_entries(self) -> list[tuple[nn.Module, str, int]]:
        entries = [(self, name, self.weight_bits) for name in weight_names(self)]
        if isinstance(self.out_proj, _QuantMixin):
            entries.append((self.out_proj, "weight", self.out_proj.weight_bits))
        return entries

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # torch's attention reads these Parameters by attribute; for this pass they hold the
        # quantized values (gradients reach the Parameters by the straight-through estimator).
        saved = []
        for owner, name, bits in self._quantized_entries():
            parameter = owner._parameters[name]
            saved.append((owner, name, parameter))
            owner._parameters[name] = fake_quantize_weight(parameter, bits)  # type: ignore[assignment]
        try:
            return super().forward(*args, **kwargs)
        finally:
            for owner, name, parameter in saved:
                owner._parameters[name] = parameter


def _embedding_like(kind: type[nn.Embedding], table: nn.Embedding, **kwargs: Any) -> nn.Embedding:
    """An embedding of class ``kind`` with ``table``'s settings (its weight to be set), sized
    by its weight (which a skeleton's reshaping or pruning may have changed)."""
    n_ids, dim = table.weight.shape
    return kind(
        n_ids,
        dim,
        padding_idx=table.padding_idx,
        max_norm=table.max_norm,
        norm_type=table.norm_type,
        scale_grad_by_freq=table.scale_grad_by_freq,
        sparse=table.sparse,
        **kwargs,
    )


def _quant_twin(module: nn.Module, config: QuantConfig) -> nn.Module:
    """A Quant* layer with the same hyper-parameters that adopts ``module``'s Parameters."""
    if isinstance(module, nn.MultiheadAttention):
        # Its attributes depend on how it was built (kdim, vdim, bias_k, add_zero_attn...) and
        # on pruning (embed_dim, head_dim): the module itself becomes the twin.
        module.__class__ = QuantMultiheadAttention
        module._setup_quant(config)  # type: ignore[operator]
        module.input_quant.to(module.out_proj.weight.device)
        return module
    if is_recurrent(module):
        kind = _QUANT_RECURRENT[_torch_class(module, _QUANT_RECURRENT)]
        recurrent = _recurrent_like(kind, module, device="meta")
        _adopt_recurrent(recurrent, module)
        recurrent._setup_quant(config)  # type: ignore[operator]
        recurrent.train(module.training)
        return recurrent
    if isinstance(module, nn.Embedding):
        twin: nn.Module = _embedding_like(QuantEmbedding, module, device="meta")
    elif is_conv(module):
        twin = _QUANT_CONV[_torch_class(module, _QUANT_CONV)](
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            module.groups,
            module.bias is not None,
            module.padding_mode,
            device="meta",
        )
    else:
        assert isinstance(module, nn.Linear)
        twin = QuantLinear(
            module.in_features, module.out_features, module.bias is not None, device="meta"
        )
    # Built on "meta" so nothing is allocated; then the original Parameters move in unchanged.
    twin.weight = module.weight
    if not isinstance(module, nn.Embedding):
        twin.bias = module.bias
    twin._setup_quant(config)  # type: ignore[operator]
    twin.input_quant.to(module.weight.device)
    twin.train(module.training)
    return twin


_QUANT_CONV: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv1d: QuantConv1d,
    nn.Conv2d: QuantConv2d,
    nn.Conv3d: QuantConv3d,
}


def _is_plain_float_layer(module: nn.Module) -> bool:
    return is_quantized_layer(module) and not isinstance(module, _QuantMixin)


def prepare_qat(
    model: nn.Module, config: QuantConfig, layer_bits: Mapping[str, int] | None = None
) -> nn.Module:
    """Make every convolution / Linear / Embedding / recurrent layer of ``model`` fake-quantize
    (in place); returns ``model``.

    ``layer_bits`` (mixed precision): a weight bit-width per such layer's module name, in place
    of ``config.bits`` for those layers; a layer at 16 or 32 bits keeps float inputs.
    """
    if not isinstance(config, QuantConfig):
        raise ValueError(f"config must be a QuantConfig, got {type(config).__name__}")
    if any(isinstance(m, _QuantMixin) for m in model.modules()):
        raise ValueError("model is already prepared for QAT; prepare_qat applies once")
    layer_bits = dict(layer_bits or {})
    with layer_kinds(config.layers):  # the kinds of layer this config quantizes
        _check_layer_bits(model, layer_bits)
        if config.bits == 32 and all(bits == 32 for bits in layer_bits.values()):
            return model
        if _is_plain_float_layer(model):
            raise ValueError("prepare_qat swaps children; pass a model that contains the layer")
        swapped = 0
        for parent_name, parent in list(model.named_modules()):
            for name, child in list(parent.named_children()):
                if _is_plain_float_layer(child):
                    full_name = f"{parent_name}.{name}" if parent_name else name
                    bits = layer_bits.get(full_name, config.bits)
                    setattr(parent, name, _quant_twin(child, replace(config, bits=bits)))
                    swapped += 1
        if config.layers != LEGACY:  # trials logged before were evaluated so: they reproduce
            if not swapped:
                # Else the trial ran at full precision under a "4 bit" label, its size that
                # of the 32-bit model's.
                raise QuantizationError(
                    f"quantization finds no layer to quantize in {type(model).__name__}: QAT "
                    f"quantizes {QUANTIZED_LAYER_NAMES} modules, and a weight used through "
                    "F.conv2d or F.linear is none of them; quant.bits [32] keeps it float"
                )
            _take_slow_attention_path(model)
    return model


class QuantizationError(RuntimeError):
    """A model that quantization-aware training cannot quantize (a trial's failure)."""


# torch's fused attention and encoder-layer kernels (its "fast path", taken in eval mode
# without gradients) read the Linear children's weights directly and skip their forward: a
# QAT transformer would be evaluated at full precision, QuantLinear's fake quantization and
# input quantizer bypassed. Around these modules' forward pass, a prepared model turns the
# fast path off (torch.backends.mha), then restores the caller's setting.
_FUSED_ATTENTION = (nn.TransformerEncoder, nn.TransformerEncoderLayer, nn.MultiheadAttention)


def _fast_path_off(module: nn.Module, args: Any) -> None:
    module.__dict__.setdefault("_nascomp_fast_path", []).append(
        torch.backends.mha.get_fastpath_enabled()
    )
    torch.backends.mha.set_fastpath_enabled(False)


def _fast_path_restored(module: nn.Module, args: Any, output: Any) -> None:
    saved = module.__dict__.get("_nascomp_fast_path") or [True]
    torch.backends.mha.set_fastpath_enabled(saved.pop())


def _take_slow_attention_path(model: nn.Module) -> None:
    for module in model.modules():
        hooked = _fast_path_off in module._forward_pre_hooks.values()
        if isinstance(module, _FUSED_ATTENTION) and not hooked:
            module.register_forward_pre_hook(_fast_path_off)
            module.register_forward_hook(_fast_path_restored, always_call=True)


def _allow_fast_attention_path(model: nn.Module) -> None:
    """Undo ``_take_slow_attention_path``: a frozen model's Linear layers hold plain weights, which
    the fused kernels read as they are."""
    for module in model.modules():
        for hooks, hook in (
            (module._forward_pre_hooks, _fast_path_off),
            (module._forward_hooks, _fast_path_restored),
        ):
            for key in [key for key, value in hooks.items() if value is hook]:
                del hooks[key]
                module._forward_hooks_always_called.pop(key, None)
        module.__dict__.pop("_nascomp_fast_path", None)


def _check_layer_bits(model: nn.Module, layer_bits: Mapping[str, int]) -> None:
    layers = {name for name, m in model.named_modules() if _is_plain_float_layer(m)}
    for name, bits in layer_bits.items():
        if name not in layers:
            raise ValueError(
                f"layer_bits names {name!r}, not a {QUANTIZED_LAYER_NAMES} of the model"
            )
        if isinstance(bits, bool) or bits not in VALID_BITS:
            raise ValueError(f"layer_bits[{name!r}] must be one of {VALID_BITS}, got {bits!r}")


def quant_layers(model: nn.Module) -> list[nn.Module]:
    """The fake-quantized layers of ``model`` in module order."""
    return [m for m in model.modules() if isinstance(m, _QuantMixin)]


def weight_bits_by_layer(model: nn.Module) -> dict[str, int]:
    """The weight bit-width of every fake-quantized layer, by module name (empty when none)."""
    return {
        name: module.weight_bits  # type: ignore[attr-defined]
        for name, module in model.named_modules()
        if isinstance(module, _QuantMixin)
    }


def quantized_bits(model: nn.Module) -> int:
    """The weight bit-width ``prepare_qat`` applied to ``model`` (32 when none); a model with
    mixed widths raises ValueError (read ``weight_bits_by_layer`` then)."""
    bits = set(weight_bits_by_layer(model).values())
    if len(bits) > 1:
        raise ValueError(
            f"the model has mixed weight bit-widths {sorted(bits)}; see weight_bits_by_layer"
        )
    return bits.pop() if bits else 32


def observer_flags(model: nn.Module) -> list[bool]:
    """The ``observed`` flag of every ActivationFakeQuant of ``model``, in module order."""
    return [m.observed for m in model.modules() if isinstance(m, ActivationFakeQuant)]


def restore_observer_flags(model: nn.Module, flags: list[bool]) -> None:
    """Set the flags ``observer_flags`` returned (a Python attribute: not in the state_dict)."""
    observers = [m for m in model.modules() if isinstance(m, ActivationFakeQuant)]
    if len(observers) != len(flags):
        raise ValueError(f"{len(flags)} observer flags for {len(observers)} activation quantizers")
    for observer, flag in zip(observers, flags, strict=True):
        observer.observed = bool(flag)


def activation_bits(model: nn.Module) -> int:
    """The input activation bit-width of the prepared layers (32 when none)."""
    for layer in quant_layers(model):
        if isinstance(layer.input_quant, ActivationFakeQuant):
            return layer.input_quant.bits
    return 32


# ---------------------------------------------------------------- frozen (deployable) form


def _plain_twin(layer: nn.Module) -> nn.Module:
    """A float convolution / Linear / Embedding / recurrent layer carrying ``layer``'s
    fake-quantized weights."""
    if isinstance(layer, QuantMultiheadAttention):
        with torch.no_grad():
            for name in weight_names(layer):
                parameter = getattr(layer, name)
                parameter.copy_(fake_quantize_weight(parameter, layer.weight_bits))
        del layer.input_quant
        layer.__class__ = nn.MultiheadAttention  # its out_proj is frozen as any QuantLinear
        return layer
    if is_recurrent(layer):
        recurrent = _recurrent_like(_torch_class(layer, _QUANT_RECURRENT), layer)
        with torch.no_grad():
            for name, value in zip(
                layer._flat_weights_names, layer.quantized_weights(), strict=True
            ):
                getattr(recurrent, name).copy_(value)
        return recurrent
    if isinstance(layer, nn.Embedding):
        table = _embedding_like(nn.Embedding, layer)
        with torch.no_grad():
            table.weight.copy_(layer.quantized_weight())
        return table
    if is_conv(layer):
        plain: nn.Module = _torch_class(layer, _QUANT_CONV)(
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


class FrozenActivationQuant(nn.Module):
    """An :class:`ActivationFakeQuant`'s rounding at the range it learnt, fixed, as plain
    tensor ops an ONNX file holds (Mul, Round, Add, Clip, Sub, Mul)."""

    def __init__(self, quant: ActivationFakeQuant) -> None:
        super().__init__()
        scale, zero_point = quant.scale_and_zero_point()
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("zero_point", zero_point.detach().to(torch.float32))
        self.qmax = 2**quant.bits - 1

    def forward(self, x: Tensor) -> Tensor:
        return fake_quantize_activation(x, self.scale, self.zero_point, self.qmax)


def freeze_fake_quant(model: nn.Module, rounded_below: int = 0) -> nn.Module:
    """Replace (in place) every QAT layer by a plain layer holding its quantized weight. With
    ``rounded_below``, a convolution's or Linear's input quantized to fewer bits than that
    keeps its rounding, in front of the plain layer: the answers of a model trained at 4-bit
    activations depend on it (its file without it agreed with the model on 38% of inputs, a
    helper's sweep)."""
    targets = {id(layer) for layer in quant_layers(model)}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in targets:
                device = next(child.parameters()).device
                quant = getattr(child, "input_quant", None)
                plain = _plain_twin(child).to(device)
                if (
                    isinstance(quant, ActivationFakeQuant)
                    and quant.observed
                    and quant.bits < rounded_below
                    and (is_conv(child) or isinstance(child, nn.Linear))
                    and not isinstance(parent, nn.MultiheadAttention)  # reads out_proj's weight
                ):
                    plain = nn.Sequential(FrozenActivationQuant(quant), plain).to(device)
                setattr(parent, name, plain)
    _allow_fast_attention_path(model)
    return model
