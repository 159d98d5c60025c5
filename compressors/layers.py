"""The layers nascomp compresses: one definition for pruning, quantization, sizes and export.

Convolutions of any rank (Conv1d for text and audio, Conv2d for images, Conv3d for video and
volumes) and Linear layers: each has a ``weight`` whose first dimension is its output channels,
which magnitude pruning zeroes, structured pruning narrows, QAT quantizes per channel, and the
compressed artifact codes. Their quantization-aware twins (``compressors.quantization``) are
subclasses, so ``isinstance`` finds them too.
"""

from __future__ import annotations

from torch import nn

CONV_LAYERS: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (*CONV_LAYERS, nn.Linear)
# How the layers are named in messages and docs.
WEIGHT_LAYER_NAMES = "Conv1d / Conv2d / Conv3d / Linear"


def is_weight_layer(module: nn.Module) -> bool:
    """A layer whose weight nascomp prunes, quantizes and codes."""
    return isinstance(module, WEIGHT_LAYERS)


def is_conv(module: nn.Module) -> bool:
    return isinstance(module, CONV_LAYERS)
