"""The layers nascomp compresses: one definition for pruning, quantization, sizes and export.

Convolutions of any rank (Conv1d for text and audio, Conv2d for images, Conv3d for video and
volumes) and Linear layers: each has a ``weight`` whose first dimension is its output channels,
which magnitude pruning zeroes, structured pruning narrows, QAT quantizes per channel, and the
compressed artifact codes. Embedding tables (a row per id: their first dimension too) are
quantized per row and coded the same way; pruning leaves them to torch-pruning's dependency
graph (structured) and whole (unstructured), and they cost no multiply-accumulates. So are the
weight matrices of recurrent layers (LSTM, GRU, RNN: a row per gate unit), which no pruning
touches and whose multiply-accumulates are not counted, and attention's input projection
(``nn.MultiheadAttention``: a row per query, key or value channel). The
quantization-aware twins (``compressors.quantization``) are subclasses, so ``isinstance`` finds
them too.

Trials logged before Conv1d, Conv3d, Embedding, recurrent and attention layers were compressed
compressed Conv2d and Linear alone; their configs say so (``quant.layers`` absent:
:data:`LEGACY`), and a trial, its export and ``load_exported`` run inside :func:`layer_kinds`
of the config, so that they reproduce exactly. Anything outside such a block sees every kind
(:data:`ALL`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

ALL = "all"
LEGACY = "conv2d_linear"  # before 2026-12-03
LAYER_KINDS = (ALL, LEGACY)

CONV_LAYERS: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
RECURRENT_LAYERS: tuple[type[nn.Module], ...] = (nn.LSTM, nn.GRU, nn.RNN)
_WEIGHT_LAYERS = {ALL: (*CONV_LAYERS, nn.Linear), LEGACY: (nn.Conv2d, nn.Linear)}
_QUANTIZED_LAYERS = {
    ALL: (*_WEIGHT_LAYERS[ALL], nn.Embedding, *RECURRENT_LAYERS, nn.MultiheadAttention),
    LEGACY: _WEIGHT_LAYERS[LEGACY],
}
# How the layers are named in messages and docs.
QUANTIZED_LAYER_NAMES = (
    "Conv1d / Conv2d / Conv3d / Linear / Embedding / LSTM / GRU / RNN / MultiheadAttention"
)

_KINDS: ContextVar[str] = ContextVar("nascomp_layer_kinds", default=ALL)


def quantized_layer_names() -> str:
    """:data:`QUANTIZED_LAYER_NAMES` of the kinds in force (``quant.layers``)."""
    return QUANTIZED_LAYER_NAMES if _KINDS.get() == ALL else "Conv2d / Linear"


@contextmanager
def layer_kinds(kinds: str) -> Iterator[None]:
    """Within the block, the layers compressed are those of ``kinds`` (:data:`LAYER_KINDS`)."""
    if kinds not in LAYER_KINDS:
        raise ValueError(f"layers must be one of {', '.join(LAYER_KINDS)}, got {kinds!r}")
    token = _KINDS.set(kinds)
    try:
        yield
    finally:
        _KINDS.reset(token)


def active_layer_kinds() -> str:
    """The kinds in force here: the innermost :func:`layer_kinds`, else :data:`ALL`."""
    return _KINDS.get()


def weight_layers() -> tuple[type[nn.Module], ...]:
    """The layer types whose weights are pruned, quantized and coded (and whose MACs count)."""
    return _WEIGHT_LAYERS[_KINDS.get()]


def is_weight_layer(module: nn.Module) -> bool:
    """A layer whose weight nascomp prunes, quantizes and codes."""
    return isinstance(module, weight_layers())


def is_quantized_layer(module: nn.Module) -> bool:
    """A layer whose weight (or table) QAT quantizes per channel (row) and the artifact codes:
    the weight layers and embeddings."""
    return isinstance(module, _QUANTIZED_LAYERS[_KINDS.get()])


def is_recurrent(module: nn.Module) -> bool:
    return isinstance(module, RECURRENT_LAYERS)


def weight_names(module: nn.Module) -> list[str]:
    """The attributes of a quantized layer that hold its weight matrices: ``weight``, or a
    recurrent layer's ``weight_ih_l0``, ``weight_hh_l0``, ... (each quantized per row: a gate's
    unit), in the order of its parameters."""
    if is_recurrent(module):
        return [name for name in module._flat_weights_names if name.startswith("weight_")]
    if isinstance(module, nn.MultiheadAttention):
        # its input projection (its output projection is a Linear child of its own)
        if module._qkv_same_embed_dim:
            return ["in_proj_weight"]
        return ["q_proj_weight", "k_proj_weight", "v_proj_weight"]
    return ["weight"]


def is_conv(module: nn.Module) -> bool:
    return isinstance(module, CONV_LAYERS)


@contextmanager
def attention_fast_path_off() -> Iterator[None]:
    """Attention and ``nn.TransformerEncoder`` as plain operators within the block. In eval
    mode they take PyTorch's fused kernel (``_transformer_encoder_layer_fwd``), which calls
    none of the layer's submodules: the TorchScript exporter cannot write it (it printed its
    whole IR graph, then the dynamo fallback a traceback of its own, for a file then written),
    and hooks on the attention and its Linear layers never run (their MACs went uncounted)."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)
