"""Family "nb201": the NAS-Bench-201 cell search space (Dong & Yang, ICLR 2020).

A cell is a 4-node DAG; each of its 6 edges (node1<-0; node2<-0,1; node3<-0,1,2) carries one of
5 ops, written as ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``. The macro skeleton matches NB201's
``TinyNetwork``: stem, 3 stages of ``n_cells`` cells, two residual reduction blocks, then
BN-ReLU-pool-linear. With the NB201 defaults (C=16, N=5, CIFAR-10) parameter counts equal the
benchmark's (0.073306 M to 1.531546 M).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from torch import Tensor, nn

from nascomp.spaces.models import (
    InfeasibleArchitecture,
    config_from_fields,
    register_model,
    require_int,
)
from nascomp.spaces.params import ArchSpaceBase, Param, Rule, in_choices, in_interval, to_param

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
N_NODES = 4
N_EDGES = 6
# (target node, source node) of each edge, in cell-string order.
EDGES = tuple((target, source) for target in range(1, N_NODES) for source in range(target))


def _paths_to(node: int) -> tuple[tuple[int, ...], ...]:
    """Every path from the input (node 0) to ``node``, as the indices of its edges in order."""
    if node == 0:
        return ((),)
    return tuple(
        (*path, index)
        for index, (target, source) in enumerate(EDGES)
        if target == node
        for path in _paths_to(source)
    )


# The cell's input-to-output paths: (3,) is 3<-0; (0, 4) is 1<-0 then 3<-1; and so on.
PATHS = _paths_to(N_NODES - 1)


@dataclass(frozen=True)
class PathEncoding:
    """Path encoding of NB201 cells (White et al., BANANAS, AAAI 2021) for a search's model.

    For each input-to-output path of the cell, a one-hot of the sequence of ops along it, or all
    zeros when one of them is ``none`` (the path carries nothing). Edge one-hots alone make a
    model guess how the 6 edges combine; paths say it: a ``none`` cuts every path through its
    edge, and a cell's depth is the longest live path. ``params`` are the Optuna names of the
    6 edges (``arch.edge0`` ...). Used by the ``pls`` sampler
    (``nascomp.search.samplers.pareto_local``); bench/search_efficiency.py measured what it
    gains.
    """

    params: tuple[str, ...]
    ops: tuple[str, ...] = NB201_OPS

    def canonical(self, trial: Mapping[str, Any]) -> dict[str, Any]:
        """The same network with ``none`` on every edge that lies on no live path (one that
        gets nothing from the input or gives nothing to the output): it computes the same
        function as ``trial`` and costs no more. Two cells compute the same function when their
        canonical forms agree, which is when their path encodings do."""
        live = {
            edge
            for path in PATHS
            if "none" not in [trial[self.params[e]] for e in path]
            for edge in path
        }
        return {
            **trial,
            **{name: "none" for edge, name in enumerate(self.params) if edge not in live},
        }

    def __call__(self, trials: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        """Per path, an array of (len(trials), live ops ** path length)."""
        live = [op for op in self.ops if op != "none"]
        digit = {op: i for i, op in enumerate(live)}
        blocks = []
        for path in PATHS:
            block = np.zeros((len(trials), len(live) ** len(path)))
            for row, trial in enumerate(trials):
                ops = [trial[self.params[edge]] for edge in path]
                if "none" not in ops:
                    block[row, sum(digit[op] * len(live) ** i for i, op in enumerate(ops))] = 1.0
            blocks.append(block)
        return blocks


def parse_cell(cell: str) -> tuple[str, ...]:
    """The 6 ops of an NB201 cell string, in edge order (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2)."""
    if not isinstance(cell, str):
        raise ValueError(f"cell must be a string like {cell_string(['none'] * N_EDGES)!r}")
    nodes = cell.strip().split("+")
    if len(nodes) != N_NODES - 1:
        raise ValueError(f"malformed cell {cell!r}: expected {N_NODES - 1} '+'-separated nodes")
    ops: list[str] = []
    for target, node in enumerate(nodes, start=1):
        if len(node) < 2 or not (node.startswith("|") and node.endswith("|")):
            raise ValueError(f"malformed cell {cell!r}: node {node!r} must be '|op~i|...|'")
        tokens = node[1:-1].split("|")
        if len(tokens) != target:
            raise ValueError(f"malformed cell {cell!r}: node {target} needs {target} inputs")
        for source, token in enumerate(tokens):
            ops.append(_parse_edge(cell, token, source))
    return tuple(ops)


def _parse_edge(cell: str, token: str, source: int) -> str:
    op, sep, index = token.partition("~")
    if not sep or index != str(source):
        raise ValueError(f"malformed cell {cell!r}: edge {token!r} should read 'op~{source}'")
    if op not in NB201_OPS:
        raise ValueError(f"unknown op {op!r} in cell {cell!r}; allowed: {', '.join(NB201_OPS)}")
    return op


def cell_string(ops: Sequence[str]) -> str:
    """Inverse of parse_cell: the NB201 string for 6 ops in edge order."""
    if len(ops) != N_EDGES:
        raise ValueError(f"a cell has {N_EDGES} ops, got {len(ops)}")
    unknown = [op for op in ops if op not in NB201_OPS]
    if unknown:
        raise ValueError(f"unknown op(s) {unknown}; allowed: {', '.join(NB201_OPS)}")
    nodes: list[list[str]] = [[] for _ in range(N_NODES - 1)]
    for (target, source), op in zip(EDGES, ops, strict=True):
        nodes[target - 1].append(f"{op}~{source}")
    return "+".join("|" + "|".join(node) + "|" for node in nodes)


@dataclass(frozen=True)
class NB201Config:
    cell: str
    channels: int = 16
    n_cells: int = 5  # cells per stage (NB201's N)

    def __post_init__(self) -> None:
        parse_cell(self.cell)
        object.__setattr__(self, "channels", require_int("channels", self.channels))
        object.__setattr__(self, "n_cells", require_int("n_cells", self.n_cells))


class Zero(nn.Module):
    """The 'none' op: outputs zeros."""

    def forward(self, x: Tensor) -> Tensor:
        # x * 0 rather than torch.zeros_like keeps the op in the autograd graph, which
        # graph-tracing tools (e.g. channel pruning) follow.
        return x.mul(0.0)


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(
            nn.ReLU(inplace=False),  # the input feeds other edges too, so never in place
            nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


def make_op(name: str, channels: int) -> nn.Module:
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown op {name!r}; allowed: {', '.join(NB201_OPS)}")


class Cell(nn.Module):
    """Node j = sum of its incoming edges; the output is node 3."""

    def __init__(self, ops: Sequence[str], channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(make_op(op, channels) for op in ops)

    def forward(self, x: Tensor) -> Tensor:
        nodes = [x]
        edge_index = 0
        for target in range(1, N_NODES):
            total = self.edges[edge_index](nodes[0])
            for source in range(1, target):
                total = total + self.edges[edge_index + source](nodes[source])
            edge_index += target
            nodes.append(total)
        return nodes[-1]


class ResNetReduction(nn.Module):
    """NB201's reduction block: a stride-2 basic block with an avg-pool + 1x1 conv shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        # ceil_mode lets odd maps (e.g. 7x7) match the conv's rounded-up size; for the even
        # sizes NB201 used it changes nothing.
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(2, stride=2, ceil_mode=True),
            nn.Conv2d(c_in, c_out, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    def __init__(self, config: NB201Config, in_channels: int, n_classes: int) -> None:
        super().__init__()
        self.config = config
        ops = parse_cell(config.cell)
        channels = config.channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        )
        layers: list[nn.Module] = []
        for stage in range(3):
            if stage > 0:
                layers.append(ResNetReduction(channels, channels * 2))
                channels *= 2
            layers.extend(Cell(ops, channels) for _ in range(config.n_cells))
        self.cells = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, n_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.cells(self.stem(x)))


def _check_spatial(height: int, width: int) -> None:
    """Each of the two reductions must halve a map of at least 2 pixels."""
    for dim_name, size in (("height", height), ("width", width)):
        trail = [size]
        for _ in range(2):
            if trail[-1] < 2:
                raise InfeasibleArchitecture(
                    f"nb201: input {dim_name} shrinks to {trail[-1]} "
                    f"({' -> '.join(map(str, trail))}) before a reduction; needs >= 3 pixels"
                )
            trail.append((trail[-1] + 1) // 2)


class Nb201ArchSpace(ArchSpaceBase):
    """NAS-Bench-201 cells: each of the 6 edges picks one op from ``ops``."""

    _rules: ClassVar[dict[str, Rule]] = {
        "ops": Rule(str, in_choices(NB201_OPS)),
        "channels": Rule(int, in_interval(1, 1024)),
        "n_cells": Rule(int, in_interval(1, 16)),
    }
    family: Literal["nb201"] = "nb201"
    ops: list[str] = list(NB201_OPS)
    channels: Any = 16
    n_cells: Any = 5

    def params(self) -> list[Param]:
        edges = [to_param(f"arch.edge{i}", list(self.ops)) for i in range(N_EDGES)]
        return [
            to_param("arch.family", "nb201"),
            *edges,
            to_param("arch.channels", self.channels),
            to_param("arch.n_cells", self.n_cells),
        ]

    def features(self) -> PathEncoding:
        """The cell's path encoding, for the ``pls`` sampler's model."""
        return PathEncoding(tuple(f"arch.edge{i}" for i in range(N_EDGES)), tuple(self.ops))

    @classmethod
    def to_arch(cls, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The six sampled edges become the builder's cell string."""
        arch = {key: value for key, value in fields.items() if not key.startswith("edge")}
        if "cell" not in arch:
            arch["cell"] = cell_string([fields[f"edge{i}"] for i in range(N_EDGES)])
        return arch


def describe_nb201(arch: Mapping[str, Any]) -> str:
    """``nb201 none/skip_connect/...``: the ops of the six edges, in cell-string order, after
    the skeleton's width and depth (``C8 N1``) where they are not the benchmark's C=16, N=5
    (a searched width gave models 60 times apart one label)."""
    cell = arch.get("cell")
    ops = list(parse_cell(cell)) if isinstance(cell, str) else ["?"] * N_EDGES
    channels, n_cells = arch.get("channels", 16), arch.get("n_cells", 5)
    skeleton = f"C{channels} N{n_cells} " if (channels, n_cells) != (16, 5) else ""
    return f"nb201 {skeleton}" + "/".join(ops)


@register_model("nb201", space=Nb201ArchSpace, describe=describe_nb201, config=NB201Config)
def build_nb201(
    fields: Mapping[str, Any], input_shape: tuple[int, int, int], n_classes: int
) -> NB201Network:
    config = config_from_fields(NB201Config, fields, "nb201")
    in_channels, height, width = input_shape
    _check_spatial(height, width)
    return NB201Network(config, in_channels, n_classes)
