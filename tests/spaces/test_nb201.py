"""NAS-Bench-201 space: cell strings, the cell's graph, and the benchmark's parameter counts."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nascomp.spaces.models import InfeasibleArchitecture, build_model, describe_arch
from nascomp.spaces.nb201 import (
    N_EDGES,
    NB201_OPS,
    PATHS,
    Cell,
    PathEncoding,
    cell_string,
    parse_cell,
)

ALL_CONV3 = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
    "+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
)
# NAS-Bench-201's own CIFAR-10 figures (its API's `params`, in millions, e.g. as tabulated by
# EvoXBench's NASBench201 min/max values): the largest net has 1.531546 M parameters, the
# smallest (only none / skip / pool edges) 0.073306 M; CIFAR-100's largest 1.537396 M.
PUBLISHED_MAX_PARAMS_CIFAR10 = 1.531546e6
PUBLISHED_MIN_PARAMS_CIFAR10 = 0.073306e6
PUBLISHED_MAX_PARAMS_CIFAR100 = 1.537396e6


def n_params(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def nb201_params(cell: str, n_classes: int = 10) -> int:
    return n_params(build_model({"family": "nb201", "cell": cell}, (3, 32, 32), n_classes))


def test_largest_network_matches_nas_bench_201() -> None:
    # By hand: stem 464; 5 cells of 6 x (16*16*9 + 32) = 70,080; reduction 16->32 14,464;
    # 5 cells at 32 = 278,400; reduction 32->64 57,600; 5 cells at 64 = 1,109,760;
    # final BN 128; classifier 650.
    count = nb201_params(ALL_CONV3)
    assert count == 1_531_546
    assert abs(count - PUBLISHED_MAX_PARAMS_CIFAR10) <= 0.01 * PUBLISHED_MAX_PARAMS_CIFAR10
    assert nb201_params(ALL_CONV3, n_classes=100) == PUBLISHED_MAX_PARAMS_CIFAR100


@pytest.mark.parametrize("op", ["none", "skip_connect", "avg_pool_3x3"])
def test_parameter_free_cells_match_the_smallest_network(op: str) -> None:
    assert nb201_params(cell_string([op] * N_EDGES)) == 73_306 == PUBLISHED_MIN_PARAMS_CIFAR10


def test_mixed_cell_parameter_count() -> None:
    # Each 1x1 edge at width c costs c*c + 2c, each 3x3 edge 9c*c + 2c; 5 cells per stage.
    ops = ["nor_conv_1x1", "nor_conv_3x3", "skip_connect", "none", "avg_pool_3x3", "nor_conv_1x1"]
    per_width = {c: 5 * (2 * (c * c + 2 * c) + (9 * c * c + 2 * c)) for c in (16, 32, 64)}
    assert nb201_params(cell_string(ops)) == 73_306 + sum(per_width.values())


def test_parse_and_format_known_cell() -> None:
    cell = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|none~2|"
    ops = ("avg_pool_3x3", "nor_conv_1x1", "skip_connect", "nor_conv_1x1", "skip_connect", "none")
    assert parse_cell(cell) == ops
    assert cell_string(ops) == cell


def test_every_benchmark_cell_parses_and_round_trips(data_root: Path) -> None:
    with open(data_root / "nasbench201" / "nb201_accuracy.csv", newline="") as file:
        cells = [row["cellstr"] for row in csv.DictReader(file)]
    assert len(cells) == 15_625 == len(NB201_OPS) ** N_EDGES
    parsed = {parse_cell(cell) for cell in cells}
    assert len(parsed) == 15_625  # every op combination exactly once
    assert all(cell_string(parse_cell(cell)) == cell for cell in cells)


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", "3 '\\+'-separated nodes"),
        ("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv_5x5'"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "'op~0'"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 needs 2 inputs"),
        ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "must be '\\|op~i\\|...\\|'"),
        ("|none|+|none~0|none~1|+|none~0|none~1|none~2|", "'op~0'"),
    ],
)
def test_malformed_cells_raise_value_error(cell: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_cell(cell)


def test_cell_string_rejects_bad_ops() -> None:
    with pytest.raises(ValueError, match="6 ops"):
        cell_string(["none"] * 5)
    with pytest.raises(ValueError, match="max_pool_3x3"):
        cell_string(["max_pool_3x3"] + ["none"] * 5)


def test_cell_computes_node_sums() -> None:
    # skip edges only: node1 = x, node2 = x + node1 = 2x, node3 = x + node1 + node2 = 4x.
    x = torch.randn(2, 4, 5, 5)
    assert torch.allclose(Cell(["skip_connect"] * N_EDGES, 4)(x), 4 * x)
    # Only the 3<-0 edge is open: output = x; all 'none': zeros with x's shape.
    only_direct = ["none", "none", "none", "skip_connect", "none", "none"]
    assert torch.equal(Cell(only_direct, 4)(x), x)
    assert torch.equal(Cell(["none"] * N_EDGES, 4)(x), torch.zeros_like(x))


def test_avg_pool_excludes_padding() -> None:
    # count_include_pad=False: pooling a constant map leaves it constant, borders included.
    ones = torch.ones(1, 2, 4, 4)
    pool_only = ["none", "none", "none", "avg_pool_3x3", "none", "none"]
    assert torch.equal(Cell(pool_only, 2)(ones), ones)


@pytest.mark.parametrize("input_shape", [(3, 32, 32), (1, 28, 28), (1, 8, 8), (3, 7, 9)], ids=str)
def test_network_runs_for_other_inputs(input_shape: tuple[int, int, int]) -> None:
    arch = {"family": "nb201", "cell": ALL_CONV3, "channels": 8, "n_cells": 1}
    model = build_model(arch, input_shape, 5).eval()
    with torch.no_grad():
        assert model(torch.randn(2, *input_shape)).shape == (2, 5)


def test_tiny_input_is_infeasible() -> None:
    arch = {"family": "nb201", "cell": ALL_CONV3, "n_cells": 1}
    build_model(arch, (1, 3, 3), 10)  # 3 -> 2 -> 1 still fits both reductions
    with pytest.raises(InfeasibleArchitecture, match="height shrinks to 1"):
        build_model(arch, (1, 2, 8), 10)


def test_channels_and_n_cells_fields() -> None:
    arch = {"family": "nb201", "cell": ALL_CONV3, "channels": 8, "n_cells": 2}
    model = build_model(arch, (3, 32, 32), 10)
    assert sum(isinstance(m, Cell) for m in model.modules()) == 3 * 2
    assert model.head[-1].in_features == 32
    with pytest.raises(ValueError, match="n_cells"):
        build_model({**arch, "n_cells": 0}, (3, 32, 32), 10)
    with pytest.raises(ValueError, match="needs field"):
        build_model({"family": "nb201"}, (3, 32, 32), 10)


def test_a_label_names_the_width_and_depth_where_they_are_not_the_benchmarks() -> None:
    """A searched width gave models 60 times apart one label on the front (a helper's sweep)."""
    conv = "/".join(["nor_conv_3x3"] * 6)
    assert describe_arch({"family": "nb201", "cell": ALL_CONV3}) == f"nb201 {conv}"
    assert describe_arch({"family": "nb201", "cell": ALL_CONV3, "channels": 16}) == f"nb201 {conv}"
    wide = {"family": "nb201", "cell": ALL_CONV3, "channels": 4, "n_cells": 1}
    assert describe_arch(wide) == f"nb201 C4 N1 {conv}"
    assert describe_arch({**wide, "channels": 16}) == f"nb201 C16 N1 {conv}"


def test_paths_are_the_four_input_to_output_paths() -> None:
    # edges in cell order: 0 is 1<-0; 1, 2 are 2<-0, 2<-1; 3, 4, 5 are 3<-0, 3<-1, 3<-2
    assert PATHS == ((3,), (0, 4), (1, 5), (0, 2, 5))


def test_path_encoding_marks_each_live_path_by_its_ops() -> None:
    names = tuple(f"arch.edge{i}" for i in range(N_EDGES))
    encode = PathEncoding(names)
    # live ops in order: skip 0, conv1x1 1, conv3x3 2, pool 3; a path's index reads its ops
    # as base-4 digits, the first edge lowest
    ops = ["skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "skip_connect", "avg_pool_3x3"]
    cell = dict(zip(names, ops, strict=True))
    blocks = encode([cell, dict.fromkeys(names, "none")])
    assert [b.shape for b in blocks] == [(2, 4), (2, 16), (2, 16), (2, 64)]
    direct, via_1, via_2, via_1_2 = (b[0] for b in blocks)
    assert np.flatnonzero(direct).tolist() == [1]  # 3<-0: conv1x1
    assert np.flatnonzero(via_1).tolist() == [0]  # skip, skip
    assert not via_2.any()  # 2<-0 is none: the path is cut
    assert np.flatnonzero(via_1_2).tolist() == [0 + 2 * 4 + 3 * 16]  # skip, conv3x3, pool
    assert not any(b[1].any() for b in blocks)  # every edge none: no live path


def test_path_encoding_follows_the_space_ops() -> None:
    names = tuple(f"arch.edge{i}" for i in range(N_EDGES))
    encode = PathEncoding(names, ("none", "nor_conv_3x3", "skip_connect"))
    blocks = encode([dict.fromkeys(names, "skip_connect")])
    assert [b.shape[1] for b in blocks] == [2, 4, 4, 8]
    assert [np.flatnonzero(b[0]).tolist() for b in blocks] == [[1], [3], [3], [7]]


def test_canonical_cell_drops_the_ops_that_cannot_reach_the_output() -> None:
    names = tuple(f"arch.edge{i}" for i in range(N_EDGES))
    encode = PathEncoding(names)

    def canonical(ops: list[str]) -> list[str]:
        form = encode.canonical({**dict(zip(names, ops, strict=True)), "other": 1})
        assert form["other"] == 1  # parameters other than the edges are kept
        return [form[name] for name in names]

    # 1<-0 is none: node 1 gets nothing, so 2<-1 and 3<-1 are dead; 2<-0, 3<-0, 3<-2 live
    cell = ["none", "skip_connect", "nor_conv_3x3", "skip_connect", "nor_conv_1x1", "skip_connect"]
    assert canonical(cell) == [
        "none", "skip_connect", "none", "skip_connect", "none", "skip_connect"
    ]  # fmt: skip
    # 3<-2 and 3<-1 are none: nodes 1 and 2 reach nothing; only 3<-0 is live
    cell = ["nor_conv_3x3", "avg_pool_3x3", "nor_conv_3x3", "skip_connect", "none", "none"]
    assert canonical(cell) == ["none"] * 3 + ["skip_connect", "none", "none"]
    # every path live: unchanged
    cell = ["nor_conv_3x3", "avg_pool_3x3", "nor_conv_1x1", "skip_connect"] + ["nor_conv_1x1"] * 2
    assert canonical(cell) == cell
    # without none among the ops no path is ever cut
    restricted = PathEncoding(names, ("nor_conv_3x3", "skip_connect"))
    cell = dict.fromkeys(names, "skip_connect")
    assert restricted.canonical(cell) == cell


def test_same_canonical_form_is_same_path_encoding_and_costs_no_more() -> None:
    """Over all 15,625 cells: two cells have the same canonical form exactly when they have the
    same path encoding (the same live paths with the same ops), and the canonical form is a
    fixed point with no more conv ops (the only ops with parameters or MACs)."""
    names = tuple(f"arch.edge{i}" for i in range(N_EDGES))
    encode = PathEncoding(names)
    cells = [dict(zip(names, ops, strict=True)) for ops in itertools.product(NB201_OPS, repeat=6)]
    forms = [encode.canonical(cell) for cell in cells]
    codes = np.hstack(encode(cells))
    by_form: dict[tuple, bytes] = {}
    by_code: dict[bytes, tuple] = {}
    for cell, form, code in zip(cells, forms, codes, strict=True):
        key = tuple(form[name] for name in names)
        assert by_form.setdefault(key, code.tobytes()) == code.tobytes()
        assert by_code.setdefault(code.tobytes(), key) == key
        assert encode.canonical(form) == form
        convs = [sum("conv" in p[name] for name in names) for p in (form, cell)]
        assert convs[0] <= convs[1]
    assert len(by_form) == len(by_code) == 9445
