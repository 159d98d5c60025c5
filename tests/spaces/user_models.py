"""Builders a user might write, good and bad, for the custom-family tests (imported by path
``tests.spaces.user_models:<name>``)."""

from __future__ import annotations

import torch
from torch import nn


class InfeasibleArchitecture(ValueError):
    """The user's own class of this name (their module does not import nascomp)."""


def tiny(input_shape, n_classes, width=8, depth=1, act="relu"):
    channels = input_shape[0]
    activation = {"relu": nn.ReLU, "gelu": nn.GELU}[act]
    layers: list[nn.Module] = []
    c_in = channels
    for _ in range(depth):
        layers += [nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)]
        layers.append(activation())
        c_in = width
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, n_classes)
    )


def picky(input_shape, n_classes, width=8):
    if width > 16:
        raise InfeasibleArchitecture(f"width {width} is more than this input deserves")
    return tiny(input_shape, n_classes, width)


def returns_dict(input_shape, n_classes):
    return {"not": "a module"}


class _Squeezed(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).squeeze()  # (n_classes,) for one input


class _OneFails(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) == 1:
            raise RuntimeError("expects a batch")
        return self.inner(x)


def fails_on_one(input_shape, n_classes):
    return _OneFails(nn.Sequential(nn.Flatten(), nn.LazyLinear(n_classes)))


def squeezes(input_shape, n_classes):
    return _Squeezed(nn.Sequential(nn.Flatten(), nn.LazyLinear(n_classes)))


def embeds(input_shape, n_classes):
    return nn.Sequential(nn.Embedding(16, 4), nn.Flatten(), nn.LazyLinear(n_classes))


def wrong_classes(input_shape, n_classes):
    return tiny(input_shape, n_classes + 3)


class _Rounded(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x).round().long()  # an integer cast: nothing trains through it


def integer_logits(input_shape, n_classes):
    return _Rounded(tiny(input_shape, n_classes))


def raises(input_shape, n_classes, width=8):
    raise RuntimeError("no GPU kernels here")


def breaks_on_input(input_shape, n_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(5, n_classes))


class _Refuses(nn.Module):
    def __init__(self, n_classes):
        super().__init__()
        self.head = nn.Linear(1, n_classes)

    def forward(self, x):
        raise RuntimeError("the lookup table is not loaded")


def forward_raises(input_shape, n_classes):
    return _Refuses(n_classes)


def slow(input_shape, n_classes):
    import time

    time.sleep(0.6)
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(n_classes))


def rgb_only(input_shape, n_classes):
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(n_classes))


NOT_A_FUNCTION = 3


class _PartialResidual(nn.Module):
    """ReXNet's block: an expansion, then the input added to the first of the wider output's
    channels."""

    def __init__(self, cin, cout):
        super().__init__()
        self.cin = cin
        self.expand = nn.Sequential(nn.Conv2d(cin, 2 * cin, 1), nn.BatchNorm2d(2 * cin), nn.ReLU())
        self.conv = nn.Sequential(nn.Conv2d(2 * cin, cout, 3, padding=1), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.conv(self.expand(x))
        return torch.cat([y[:, : self.cin] + x, y[:, self.cin :]], dim=1)


def partial_residual(input_shape, n_classes, blocks=4):
    """Four such blocks in a row: torch-pruning's dependency analysis of it never ends."""
    layers, width = [nn.Conv2d(input_shape[0], 16, 3, padding=1)], 16
    for _ in range(blocks):
        layers.append(_PartialResidual(width, width + 8))
        width += 8
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, n_classes)
    )


def no_onnx(input_shape, n_classes, width=8):
    """A model no ONNX exporter takes (torch.cummax has no ONNX op)."""
    return _CumMax(tiny(input_shape, n_classes, width))


class _CumMax(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.cummax(x, dim=3).values)


def fails_in_training(input_shape, n_classes, width=8):
    """Evaluates (the search's checks pass) and fails once it trains, as a model with
    sparse gradients under Adam does."""
    return _FailsInTraining(tiny(input_shape, n_classes, width))


class _FailsInTraining(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("sparse gradients are not supported\nsecond line")
        return self.inner(x)
