"""MLPs and Caffe's LeNet-5: a searchable MLP for vectors of features (tabular data), and the
classic compression baselines.

LeNet-300-100 and LeNet-5 are the networks Deep Compression (Han et al., 2016) reports on
MNIST, so their parameter counts are fixed known answers: LeNet-300-100 has 266,610 and
LeNet-5 431,080 on 1x28x28. ``mlp`` takes its hidden widths as a list (``hidden``, as a
teacher's) or, searchable, as ``depth`` layers of ``width`` units.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from torch import Tensor, nn

from nascomp.spaces.models import (
    InfeasibleArchitecture,
    config_from_fields,
    register_model,
    require_int,
)
from nascomp.spaces.params import ArchSpaceBase, Rule, in_interval

LENET_300_100 = (300, 100)


@dataclass(frozen=True)
class MLPConfig:
    hidden: tuple[int, ...] | None = None  # the hidden widths; LeNet-300-100's without any field
    depth: int | None = None  # or this many hidden layers...
    width: int | None = None  # ...of this many units each
    dropout: float = 0.0  # after each hidden layer's ReLU, while training

    def __post_init__(self) -> None:
        by_shape = self.depth is not None or self.width is not None
        if self.hidden is not None and by_shape:
            raise ValueError("give hidden (a list of widths) or depth and width, not both")
        if by_shape:
            if self.depth is None or self.width is None:
                raise ValueError("depth and width go together (depth hidden layers of width)")
            depth = require_int("depth", self.depth, minimum=0)
            width = require_int("width", self.width)
            object.__setattr__(self, "depth", depth)
            object.__setattr__(self, "width", width)
            widths: tuple[int, ...] = (width,) * depth
        elif self.hidden is None:
            widths = LENET_300_100
        elif isinstance(self.hidden, (str, bytes)) or not hasattr(self.hidden, "__iter__"):
            raise ValueError(f"hidden must be a list of ints >= 1, got {self.hidden!r}")
        else:  # a config file gives a list; a tuple keeps the frozen config hashable
            widths = tuple(require_int("hidden", width) for width in self.hidden)
        object.__setattr__(self, "hidden", widths)
        dropout = self.dropout
        if isinstance(dropout, bool) or not isinstance(dropout, int | float):
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        object.__setattr__(self, "dropout", float(dropout))


class MLP(nn.Sequential):
    """Flatten, then Linear-ReLU (and Dropout, when set) per hidden width, then the
    classifier."""

    def __init__(self, config: MLPConfig, n_inputs: int, n_classes: int) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        width_in = n_inputs
        for width in config.hidden or ():
            layers += [nn.Linear(width_in, width), nn.ReLU(inplace=True)]
            if config.dropout:
                layers.append(nn.Dropout(config.dropout))
            width_in = width
        layers.append(nn.Linear(width_in, n_classes))
        super().__init__(*layers)
        self.config = config


def _n_inputs(input_shape: tuple[int, ...]) -> int:
    return math.prod(input_shape)


class MlpArchSpace(ArchSpaceBase):
    """``space.arch`` for ``family: mlp``: ``depth`` hidden layers of ``width`` units, for
    vectors of features (tabular data) or flattened images."""

    _rules: ClassVar[dict[str, Rule]] = {
        "depth": Rule(int, in_interval(1, 16)),
        "width": Rule(int, in_interval(1, 65536)),
        "dropout": Rule(float, in_interval(0.0, 1.0, high_open=True)),
    }
    family: Literal["mlp"] = "mlp"
    depth: Any = [1, 2, 3]
    width: Any = [32, 64, 128, 256]
    dropout: Any = 0.0


def describe_mlp(arch: Mapping[str, Any]) -> str:
    """``mlp 2x64`` (depth x width), ``mlp 300-100`` (hidden widths), ``drop 0.1`` after."""
    if "depth" in arch or "width" in arch:
        shape = f"{arch.get('depth')}x{arch.get('width')}"
    else:
        shape = "-".join(str(w) for w in arch.get("hidden", LENET_300_100)) or "linear"
    dropout = arch.get("dropout") or 0
    return f"mlp {shape}" + (f" drop {dropout:g}" if dropout else "")


@register_model("mlp", space=MlpArchSpace, describe=describe_mlp, config=MLPConfig)
def build_mlp(fields: Mapping[str, Any], input_shape: tuple[int, int, int], n_classes: int) -> MLP:
    config = config_from_fields(MLPConfig, fields, "mlp")
    return MLP(config, _n_inputs(input_shape), n_classes)


@dataclass(frozen=True)
class _NoFields:
    """LeNet-300-100 is a fixed network: it takes no fields."""


@register_model("lenet300100", config=_NoFields)
def build_lenet300100(
    fields: Mapping[str, Any], input_shape: tuple[int, int, int], n_classes: int
) -> MLP:
    config_from_fields(_NoFields, fields, "lenet300100")
    return MLP(MLPConfig(hidden=LENET_300_100), _n_inputs(input_shape), n_classes)


@dataclass(frozen=True)
class LeNet5Config:
    # Caffe's lenet_train_test.prototxt widths, as used by Deep Compression.
    conv1_channels: int = 20
    conv2_channels: int = 50
    fc_features: int = 500

    def __post_init__(self) -> None:
        for name in ("conv1_channels", "conv2_channels", "fc_features"):
            object.__setattr__(self, name, require_int(name, getattr(self, name)))


CONV_KERNEL = 5
POOL = 2


class LeNet5(nn.Module):
    """conv5x5 -> maxpool2 -> conv5x5 -> maxpool2 -> fc -> ReLU -> fc.

    Caffe's variant has no activation after the convolutions; only the hidden fc has a ReLU.
    """

    def __init__(self, config: LeNet5Config, in_channels: int, flat_size: int, n_classes: int):
        super().__init__()
        self.config = config
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, config.conv1_channels, CONV_KERNEL),
            nn.MaxPool2d(POOL),
            nn.Conv2d(config.conv1_channels, config.conv2_channels, CONV_KERNEL),
            nn.MaxPool2d(POOL),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(config.conv2_channels * flat_size, config.fc_features),
            nn.ReLU(inplace=True),
            nn.Linear(config.fc_features, n_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def _lenet5_feature_size(size: int, dim_name: str) -> int:
    """Spatial size after the two conv+pool pairs; infeasible if a map vanishes."""
    trail = [str(size)]
    for _ in range(2):
        size -= CONV_KERNEL - 1  # 'valid' convolution
        if size < POOL:
            raise InfeasibleArchitecture(
                f"lenet5: input {dim_name} shrinks to {max(size, 0)} after a 5x5 conv "
                f"({' -> '.join(trail)} -> {max(size, 0)}), too small for the 2x2 max-pool; "
                "needs >= 16 pixels"
            )
        trail.append(str(size))
        size //= POOL
        trail.append(str(size))
    return size


@register_model("lenet5", config=LeNet5Config)
def build_lenet5(
    fields: Mapping[str, Any], input_shape: tuple[int, int, int], n_classes: int
) -> LeNet5:
    config = config_from_fields(LeNet5Config, fields, "lenet5")
    in_channels, height, width = input_shape
    flat_size = _lenet5_feature_size(height, "height") * _lenet5_feature_size(width, "width")
    return LeNet5(config, in_channels, flat_size, n_classes)
