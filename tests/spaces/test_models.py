"""The model registry and every registered family: shapes, feasibility, known parameter counts."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from nascomp.spaces.cnn import BLOCK_TYPES, CNNConfig
from nascomp.spaces.models import (
    InfeasibleArchitecture,
    build_model,
    describe_arch,
    model_names,
    register_model,
)
from nascomp.spaces.nb201 import cell_string

# A small, typical arch per family; a new family must add one here (the test below checks).
DEFAULT_ARCHS: dict[str, dict[str, Any]] = {
    "cnn": {"family": "cnn"},
    "nb201": {"family": "nb201", "cell": cell_string(["nor_conv_3x3"] * 6), "n_cells": 1},
    "mlp": {"family": "mlp", "hidden": [32, 16]},
    "lenet300100": {"family": "lenet300100"},
    "lenet5": {"family": "lenet5"},
    # Models the user brings (spaces/zoo.py): their builder, and the zoos by name.
    "custom": {"family": "custom", "builder": "tests.spaces.user_models:tiny"},
    "torchvision": {"family": "torchvision", "model": "mobilenet_v3_small"},
    "timm": {"family": "timm", "model": "mobilenetv3_small_050"},
}
INPUT_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 17, 23)]


def n_params(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def test_every_family_has_a_default_arch() -> None:
    assert set(model_names()) == set(DEFAULT_ARCHS)
    assert {"cnn", "nb201", "mlp", "lenet300100", "lenet5"} <= set(model_names())


@pytest.mark.parametrize("input_shape", INPUT_SHAPES, ids=str)
@pytest.mark.parametrize("family", model_names())
def test_family_builds_and_runs_or_is_infeasible(
    family: str, input_shape: tuple[int, int, int]
) -> None:
    # lenet5's two valid 5x5 convs and 2x2 pools need at least 16x16 inputs.
    expect_infeasible = family == "lenet5" and min(input_shape[1:]) < 16
    if expect_infeasible:
        with pytest.raises(InfeasibleArchitecture, match="lenet5: input height shrinks"):
            build_model(DEFAULT_ARCHS[family], input_shape, 7)
        return
    model = build_model(DEFAULT_ARCHS[family], input_shape, 7).eval()
    with torch.no_grad():
        logits = model(torch.randn(3, *input_shape))
    assert logits.shape == (3, 7)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("family", model_names())
def test_family_is_deterministic_under_a_seed(family: str) -> None:
    def weights(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        return list(build_model(DEFAULT_ARCHS[family], (1, 28, 28), 10).state_dict().values())

    first, again, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("family", model_names())
def test_unknown_field_is_named(family: str) -> None:
    arch = {**DEFAULT_ARCHS[family], "not_a_field": 1}
    with pytest.raises(ValueError, match="not_a_field") as error:
        build_model(arch, (1, 28, 28), 10)
    assert not isinstance(error.value, InfeasibleArchitecture)


def test_unknown_or_missing_family_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown model family 'resnet'.*cnn.*nb201"):
        build_model({"family": "resnet"}, (1, 8, 8), 10)
    # From the CLI (`nascomp reproduce` of a family a script registered) importing is no
    # way: the line names the entry point that makes it known there.
    with pytest.raises(ValueError, match=r"in your package's 'nascomp.models' entry point\)$"):
        build_model({"family": "resnet"}, (1, 8, 8), 10)
    with pytest.raises(ValueError, match="'family'"):
        build_model({"n_stages": 2}, (1, 8, 8), 10)


def test_register_model_adds_a_family() -> None:
    @register_model("_test_linear")
    def build_linear(fields: Any, input_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
        channels, height, width = input_shape
        return nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width, n_classes))

    from nascomp.spaces import models

    try:
        assert "_test_linear" in model_names()
        model = build_model({"family": "_test_linear"}, (1, 2, 3), 4)
        assert n_params(model) == 6 * 4 + 4
        # Registered by this code, not by nascomp or an installed plugin: what a search sends
        # to its workers, which register it in turn.
        sent = models.code_families()
        assert "_test_linear" in sent and "cnn" not in sent and "mlp" not in sent
        models._REGISTRY.pop("_test_linear")
        models.adopt_families(sent)
        assert models.model_family("_test_linear") == sent["_test_linear"]
    finally:
        models._REGISTRY.pop("_test_linear", None)


# ------------------------------------------------------------------------- classic families


def test_lenet5_has_caffe_parameter_count() -> None:
    # conv 20*1*25+20 + conv 50*20*25+50 + fc 800*500+500 + fc 500*10+10 (Deep Compression).
    model = build_model({"family": "lenet5"}, (1, 28, 28), 10)
    assert n_params(model) == 431_080
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [20, 50]
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [500, 10]


def test_lenet300100_parameter_count_and_mlp_equivalence() -> None:
    lenet = build_model({"family": "lenet300100"}, (1, 28, 28), 10)
    assert n_params(lenet) == 266_610  # 784*300+300 + 300*100+100 + 100*10+10
    mlp = build_model({"family": "mlp", "hidden": [300, 100]}, (1, 28, 28), 10)
    assert n_params(mlp) == 266_610
    assert n_params(build_model({"family": "mlp", "hidden": []}, (1, 8, 8), 10)) == 64 * 10 + 10


def test_mlp_rejects_bad_hidden_widths() -> None:
    with pytest.raises(ValueError, match="hidden"):
        build_model({"family": "mlp", "hidden": [300, 0]}, (1, 28, 28), 10)
    with pytest.raises(ValueError, match="hidden"):
        build_model({"family": "mlp", "hidden": "300"}, (1, 28, 28), 10)


def test_mlp_by_depth_and_width_for_rows_of_features() -> None:
    """The searchable form: depth hidden layers of width units, on (F,) rows; dropout only
    while training. Known answer: 30*16+16 + 16*16+16 + 16*2+2 parameters."""
    arch = {"family": "mlp", "depth": 2, "width": 16, "dropout": 0.25}
    model = build_model(arch, (30,), 2)
    assert n_params(model) == 30 * 16 + 16 + 16 * 16 + 16 + 16 * 2 + 2
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.25, 0.25]
    rows = torch.randn(4, 30)
    model.eval()
    assert torch.equal(model(rows), model(rows))  # no dropout at inference
    assert describe_arch(arch) == "mlp 2x16 drop 0.25"
    assert describe_arch({"family": "mlp", "hidden": [300, 100]}) == "mlp 300-100"
    cnn = {"family": "cnn", "block": "plain", "n_stages": 1, "blocks_per_stage": 1}
    cnn.update(base_channels=12, kernel_size=3)
    assert describe_arch({**cnn, "width_mult": 1.0}) == "cnn plain s1x1 c12 k3"
    assert describe_arch({**cnn, "width_mult": 2 / 3}) == "cnn plain s1x1 c12 k3 w0.667"
    assert n_params(build_model({"family": "mlp"}, (1, 28, 28), 10)) == 266_610  # LeNet-300-100


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"hidden": [8], "depth": 1, "width": 8}, "give hidden .* or depth and width, not both"),
        ({"depth": 2}, "depth and width go together"),
        ({"depth": 2, "width": 0}, "width must be an int >= 1"),
        ({"depth": 1, "width": 8, "dropout": 1.0}, r"dropout must be a number in \[0, 1\)"),
    ],
)
def test_mlp_shape_fields_are_checked(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model({"family": "mlp", **fields}, (30,), 2)


# ------------------------------------------------------------------------- cnn


def cnn_params(**fields: Any) -> int:
    return n_params(build_model({"family": "cnn", **fields}, (1, 8, 8), 10))


def test_cnn_default_parameter_count_by_hand() -> None:
    # stem 1->16 (3x3, no bias) + BN; stage 16->32; stage 32->64; linear 64->10.
    expected = (16 * 9 + 32) + (16 * 32 * 9 + 64) + (32 * 64 * 9 + 128) + (64 * 10 + 10)
    assert cnn_params() == expected == 24_058


def test_cnn_block_types_by_hand() -> None:
    # One stage, 4 stem channels, kernel 3: 1->4 stem, then a 4->8 block, then linear 8->10.
    base = (4 * 9 + 8) + (8 * 10 + 10)
    one = {"n_stages": 1, "base_channels": 4}
    assert cnn_params(**one, block="plain") == base + 4 * 8 * 9 + 16
    residual_body = 4 * 8 * 9 + 16 + 8 * 8 * 9 + 16
    shortcut = 4 * 8 + 16  # 1x1 stride-2 projection + BN
    assert cnn_params(**one, block="residual") == base + residual_body + shortcut
    depthwise = (4 * 9 + 8) + (4 * 8 + 16)  # dw 3x3 + BN, pw 1x1 + BN
    assert cnn_params(**one, block="depthwise") == base + depthwise


def test_cnn_width_mult_and_minimum_stem_channels() -> None:
    model = build_model({"family": "cnn", "width_mult": 0.5, "n_stages": 1}, (1, 8, 8), 10)
    assert model.stem[0].out_channels == 8
    tiny = build_model({"family": "cnn", "width_mult": 0.01, "n_stages": 1}, (1, 8, 8), 10)
    assert tiny.stem[0].out_channels == 4


@pytest.mark.parametrize("block", BLOCK_TYPES)
@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7])
def test_cnn_every_block_and_kernel_runs(block: str, kernel_size: int) -> None:
    arch = {"family": "cnn", "block": block, "kernel_size": kernel_size, "blocks_per_stage": 2}
    model = build_model(arch, (1, 8, 8), 10).eval()
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("block", BLOCK_TYPES)
def test_cnn_halves_down_to_one_pixel_then_infeasible(block: str) -> None:
    # 8 -> 4 -> 2 -> 1 works; a 4th halving of a 1x1 map does not.
    model = build_model({"family": "cnn", "n_stages": 3, "block": block}, (1, 8, 8), 10).eval()
    assert model.stages(model.stem(torch.randn(1, 1, 8, 8))).shape[-2:] == (1, 1)
    with pytest.raises(InfeasibleArchitecture, match=r"height shrinks to 1 \(8 -> 4 -> 2 -> 1\)"):
        build_model({"family": "cnn", "n_stages": 4, "block": block}, (1, 8, 8), 10)


def test_cnn_infeasible_names_the_shrinking_dimension() -> None:
    with pytest.raises(InfeasibleArchitecture, match="width shrinks to 1"):
        build_model({"family": "cnn", "n_stages": 3}, (1, 32, 4), 10)
    # 28 -> 14 -> 7 -> 4 -> 2 -> 1: five stages fit MNIST, six do not.
    build_model({"family": "cnn", "n_stages": 5}, (1, 28, 28), 10)
    with pytest.raises(InfeasibleArchitecture):
        build_model({"family": "cnn", "n_stages": 6}, (1, 28, 28), 10)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kernel_size", 4),
        ("kernel_size", 9),
        ("block", "bottleneck"),
        ("n_stages", 0),
        ("blocks_per_stage", 0),
        ("base_channels", 2.5),
        ("width_mult", 0.0),
        ("n_stages", True),
    ],
)
def test_cnn_bad_field_raises_value_error_naming_it(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field) as error:
        CNNConfig(**{field: value})
    assert not isinstance(error.value, InfeasibleArchitecture)
