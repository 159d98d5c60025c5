"""A user's own model: a small MobileNetV2 (inverted residual blocks) with three knobs.

nascomp calls ``mobilenet(input_shape=(C, H, W), n_classes=K, **knobs)`` with the knobs sampled
from ``space.arch`` in ``experiment.yaml``. This module does not import nascomp: it is plain
PyTorch, as a model of yours would be.
"""

from __future__ import annotations

from torch import Tensor, nn


class InfeasibleArchitecture(ValueError):
    """Raised for knobs that cannot work on this input; nascomp counts the trial infeasible
    (any exception class with this name does: the module need not import nascomp)."""


def _divisible(value: float, divisor: int = 8) -> int:
    """Round channel counts to multiples of 8, as MobileNets do (friendlier to int8 kernels)."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int, groups: int = 1) -> list[nn.Module]:
    padding = kernel // 2
    return [
        nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]


class InvertedResidual(nn.Module):
    """1x1 expansion, depthwise 3x3 (carries the stride), 1x1 projection; a residual add when
    the shapes allow it."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [*_conv_bn(c_in, hidden, 1, 1), nn.ReLU6(inplace=True)]
        layers += [*_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(inplace=True)]
        layers += _conv_bn(hidden, c_out, 1, 1)
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        return x + out if self.residual else out


def mobilenet(
    input_shape: tuple[int, int, int],
    n_classes: int,
    width_mult: float = 1.0,
    expansion: int = 6,
    depth: int = 2,
) -> nn.Module:
    """Stem, three stages of ``depth`` inverted residual blocks (16, 24, 32 channels times
    ``width_mult``; stride 2 at the start of the last two), a 1x1 head and the classifier."""
    channels, height, width = input_shape
    if min(height, width) < 4:
        raise InfeasibleArchitecture(f"input {height}x{width} is too small for two halvings")
    stem = _divisible(16 * width_mult)
    layers: list[nn.Module] = [*_conv_bn(channels, stem, 3, 1), nn.ReLU6(inplace=True)]
    c_in = stem
    for index, base in enumerate((16, 24, 32)):
        c_out = _divisible(base * width_mult)
        for block in range(depth):
            stride = 2 if index > 0 and block == 0 else 1
            layers.append(InvertedResidual(c_in, c_out, stride, expansion))
            c_in = c_out
    head = _divisible(128 * width_mult)
    layers += [*_conv_bn(c_in, head, 1, 1), nn.ReLU6(inplace=True)]
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(head, n_classes)
    )
