"""Family "cnn": a plain / residual / depthwise-separable CNN with stride-2 stages.

Layout: stem conv (stride 1) -> ``n_stages`` stages, each doubling the channels and halving
the resolution at its first block -> global average pool -> linear classifier.
"""

from __future__ import annotations

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
from nascomp.spaces.params import ArchSpaceBase, Rule, in_choices, in_interval

BLOCK_TYPES = ("plain", "residual", "depthwise")
KERNEL_SIZES = (1, 3, 5, 7)
MIN_STEM_CHANNELS = 4  # below this a width multiplier leaves too few channels to learn anything


@dataclass(frozen=True)
class CNNConfig:
    n_stages: int = 2
    blocks_per_stage: int = 1
    base_channels: int = 16
    width_mult: float = 1.0
    kernel_size: int = 3
    block: str = "plain"

    def __post_init__(self) -> None:
        # Normalise sampler types (numpy ints) so the config is hashable and prints cleanly.
        object.__setattr__(self, "n_stages", require_int("n_stages", self.n_stages))
        blocks = require_int("blocks_per_stage", self.blocks_per_stage)
        object.__setattr__(self, "blocks_per_stage", blocks)
        object.__setattr__(self, "base_channels", require_int("base_channels", self.base_channels))
        kernel = require_int("kernel_size", self.kernel_size, allowed=KERNEL_SIZES)
        object.__setattr__(self, "kernel_size", kernel)
        if isinstance(self.width_mult, bool) or not isinstance(self.width_mult, (int, float)):
            raise ValueError(f"width_mult must be a number > 0, got {self.width_mult!r}")
        if not self.width_mult > 0:
            raise ValueError(f"width_mult must be a number > 0, got {self.width_mult!r}")
        if self.block not in BLOCK_TYPES:
            raise ValueError(f"block must be one of {BLOCK_TYPES}, got {self.block!r}")

    @property
    def stem_channels(self) -> int:
        return max(MIN_STEM_CHANNELS, round(self.base_channels * self.width_mult))


def _conv_bn_relu(
    c_in: int, c_out: int, kernel: int, stride: int, groups: int = 1
) -> list[nn.Module]:
    # No conv bias: the following BatchNorm's shift makes it redundant.
    conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class PlainBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__(*_conv_bn_relu(c_in, c_out, kernel, stride))


class DepthwiseSeparableBlock(nn.Sequential):
    """Depthwise kxk conv (carries the stride) + BN + ReLU, then pointwise 1x1 + BN + ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        depthwise = _conv_bn_relu(c_in, c_in, kernel, stride, groups=c_in)
        super().__init__(*depthwise, *_conv_bn_relu(c_in, c_out, 1, 1))


class ResidualBlock(nn.Module):
    """ResNet basic block; a 1x1 (stride 2) projection + BN on the shortcut when shapes change."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn_relu(c_in, c_out, kernel, stride),
            nn.Conv2d(c_out, c_out, kernel, 1, kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))


_BLOCKS: dict[str, type[nn.Module]] = {
    "plain": PlainBlock,
    "residual": ResidualBlock,
    "depthwise": DepthwiseSeparableBlock,
}


def _check_spatial(config: CNNConfig, height: int, width: int) -> None:
    """Raise InfeasibleArchitecture when a stage would have to halve a 1-pixel map."""
    for dim_name, size in (("height", height), ("width", width)):
        sizes = [size]
        # padding = k // 2 keeps a stride-1 conv's size; the padded map (size + k - 1) is
        # always >= k for size >= 1, so only the halvings can make an architecture infeasible.
        for stage in range(config.n_stages):
            if sizes[-1] < 2:
                trail = " -> ".join(str(s) for s in sizes)
                raise InfeasibleArchitecture(
                    f"cnn: input {dim_name} shrinks to {sizes[-1]} ({trail}) before stage "
                    f"{stage + 1} of {config.n_stages}; n_stages <= {stage} fits this input"
                )
            sizes.append((sizes[-1] + 1) // 2)  # a stride-2 conv with k // 2 padding rounds up


class CNN(nn.Module):
    def __init__(self, config: CNNConfig, in_channels: int, n_classes: int) -> None:
        super().__init__()
        self.config = config
        channels = config.stem_channels
        self.stem = nn.Sequential(*_conv_bn_relu(in_channels, channels, config.kernel_size, 1))
        block_cls = _BLOCKS[config.block]
        stages = []
        for _ in range(config.n_stages):
            blocks = []
            for index in range(config.blocks_per_stage):
                c_in = channels if index == 0 else channels * 2
                stride = 2 if index == 0 else 1
                blocks.append(block_cls(c_in, channels * 2, config.kernel_size, stride))
            stages.append(nn.Sequential(*blocks))
            channels *= 2
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, n_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stages(self.stem(x)))


class CnnArchSpace(ArchSpaceBase):
    _rules: ClassVar[dict[str, Rule]] = {
        "n_stages": Rule(int, in_interval(1, 6)),
        "blocks_per_stage": Rule(int, in_interval(1, 8)),
        "base_channels": Rule(int, in_interval(1, 1024)),
        "width_mult": Rule(float, in_interval(0.0, 8.0, low_open=True)),
        "kernel_size": Rule(int, in_choices((1, 3, 5, 7)), discrete=True),
        "block": Rule(str, in_choices(BLOCK_TYPES)),
    }
    family: Literal["cnn"] = "cnn"
    n_stages: Any = [1, 2, 3]
    blocks_per_stage: Any = [1, 2]
    base_channels: Any = [8, 16, 32]
    width_mult: Any = 1.0
    kernel_size: Any = [3, 5]
    block: Any = list(BLOCK_TYPES)


def describe_cnn(arch: Mapping[str, Any]) -> str:
    """``cnn residual s2x1 c16 k3``: block, stages x blocks per stage, base channels, kernel,
    then the width multiplier when it is not 1 (``w0.5``)."""
    width = arch.get("width_mult", 1.0)
    return (
        f"cnn {arch.get('block')} s{arch.get('n_stages')}x{arch.get('blocks_per_stage')} "
        f"c{arch.get('base_channels')} k{arch.get('kernel_size')}"
        + ("" if width == 1 else f" w{width:.3g}")
    )


@register_model("cnn", space=CnnArchSpace, describe=describe_cnn, config=CNNConfig)
def build_cnn(fields: Mapping[str, Any], input_shape: tuple[int, int, int], n_classes: int) -> CNN:
    config = config_from_fields(CNNConfig, fields, "cnn")
    in_channels, height, width = input_shape
    _check_spatial(config, height, width)
    return CNN(config, in_channels, n_classes)
