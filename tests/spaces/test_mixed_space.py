"""space.quant.mixed: the parameters of per-group widths and of a bit budget."""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest
from pydantic import ValidationError

from nascomp.spaces.mixed import GROUP_NAME_CHARS, per_layer_groups
from nascomp.spaces.params import Param
from nascomp.spaces.space import QuantSpace, SpaceConfig


def _space(quant: dict[str, Any], arch: dict[str, Any] | None = None) -> SpaceConfig:
    return SpaceConfig.model_validate({"arch": arch or {"family": "cnn"}, "quant": quant})


def _quant_params(space: SpaceConfig) -> dict[str, Param]:
    return {p.name: p for p in space.params() if p.name.startswith("quant.")}


def test_default_is_one_width_per_trial() -> None:
    assert list(_quant_params(_space({}))) == ["quant.bits", "quant.act_bits", "quant.layers"]


def test_cnn_groups_follow_the_stages_the_architecture_can_have() -> None:
    params = _quant_params(
        _space({"mixed": "groups", "bits": [4, 8]}, {"family": "cnn", "n_stages": [1, 2, 3]})
    )
    widths = {name: p for name, p in params.items() if name.startswith("quant.group_bits.")}
    assert list(widths) == [
        "quant.group_bits.stem",
        "quant.group_bits.stage1",
        "quant.group_bits.stage2",
        "quant.group_bits.stage3",
        "quant.group_bits.head",
    ]
    assert all(p.choices == (4, 8) for p in widths.values())
    assert widths["quant.group_bits.stem"].condition is None
    assert widths["quant.group_bits.stage1"].condition is None  # every architecture has stage 1
    assert widths["quant.group_bits.stage2"].condition == ("arch.n_stages", (2, 3))
    assert widths["quant.group_bits.stage3"].condition == ("arch.n_stages", (3,))
    assert params["quant.groups.stage2"].value == ("stages.1.*",)
    assert params["quant.groups.stage2"].condition == ("arch.n_stages", (2, 3))
    assert params["quant.mixed"].value == "groups"
    assert "quant.bits" not in params  # the built-in groups cover every layer
    # A one-stage architecture: stage 2 and 3 are absent, and so are their parameters.
    one_stage = {"arch.n_stages": 1}
    assert not widths["quant.group_bits.stage2"].is_active(one_stage)
    assert not params["quant.groups.stage3"].is_active(one_stage)
    assert widths["quant.group_bits.stage1"].is_active(one_stage)


def test_a_stage_no_architecture_has_gets_no_parameter_at_all() -> None:
    params = _quant_params(_space({"mixed": "groups"}, {"family": "cnn", "n_stages": 2}))
    assert (
        "quant.group_bits.stage2" in params and params["quant.group_bits.stage2"].condition is None
    )
    assert not any("stage3" in name for name in params)
    # A range of stage counts is enumerated like a list.
    ranged = _quant_params(
        _space({"mixed": "groups"}, {"family": "cnn", "n_stages": {"low": 1, "high": 3}})
    )
    assert ranged["quant.group_bits.stage3"].condition == ("arch.n_stages", (3,))


def test_user_groups_for_any_family() -> None:
    arch = {"family": "custom", "builder": "tests.spaces.user_models:tiny"}
    params = _quant_params(
        _space({"mixed": "groups", "bits": [2, 4], "groups": {"convs": ["body.*"]}}, arch)
    )
    assert params["quant.group_bits.convs"].choices == (2, 4)
    assert params["quant.groups.convs"].value == ("body.*",)
    assert params["quant.bits"].choices == (2, 4)  # layers in no group


def test_budget_is_one_searched_number() -> None:
    params = _quant_params(_space({"mixed": "budget", "bits": [8, 2, 4]}))
    assert params["quant.budget"].kind == "float"
    assert (params["quant.budget"].low, params["quant.budget"].high) == (2.0, 8.0)
    assert params["quant.widths"].value == (2, 4, 8)
    assert params["quant.sensitivity"].value == "kl"  # new searches allocate by KL
    assert "quant.bits" not in params
    fixed = _quant_params(_space({"mixed": "budget", "bits": [4, 8], "budget": [4, 6]}))
    assert fixed["quant.budget"].choices == (4.0, 6.0)
    # Without a budget given, the default range starts at the narrowest width: 4 to 8 bits
    # for the default bits [4, 8, 32], one value when no width is under 8.
    default = _quant_params(_space({"mixed": "budget"}))["quant.budget"]
    assert (default.kind, default.low, default.high) == ("float", 4.0, 8.0)
    wide = _quant_params(_space({"mixed": "budget", "bits": [8, 32]}))["quant.budget"]
    assert wide.choices == (8.0,)
    # A range given without its low end takes that same start, not the default's 2.
    high = _quant_params(_space({"mixed": "budget", "budget": {"high": 6}}))["quant.budget"]
    assert (high.kind, high.low, high.high) == ("float", 4.0, 6.0)


@pytest.mark.parametrize(
    ("quant", "arch", "message"),
    [
        (
            {"mixed": "mixy"},
            None,
            r"mixed must be one of none, groups, budget \(one value, not searched\); got .mixy.",
        ),
        ({"mixed": ["none", "groups"]}, None, "mixed must be one of none, groups, budget"),
        (
            {"mixed": "budget", "bits": [4, 8], "budget": {"low": 3, "high": 6}},
            None,
            r"budget must be >= the narrowest width in bits \(4\); got 3.0",
        ),
        ({"mixed": "budget", "budget": {"low": 1.0, "high": 6}}, None, r"must be in \[2.0, 32.0\]"),
        (  # nothing to allocate: every layer took the one width, and the search said nothing
            {"mixed": "budget", "bits": [32]},
            None,
            r"mixed: budget allocates each layer's width among bits: give two or more, one of "
            r"them under 16 \(e.g. \[2, 4, 8\]\); got \[32\]",
        ),
        ({"mixed": "budget", "bits": [16, 32]}, None, r"one of them under 16 .*got \[16, 32\]"),
        ({"mixed": "budget", "bits": [8]}, None, r"give two or more.*got \[8\]"),
        (  # every group took the one width: mixed: none, and the search said nothing
            {"mixed": "groups", "bits": [32]},
            None,
            r"mixed: groups searches each layer group's width among bits: give two or more "
            r"\(e.g. \[4, 8\]\); got \[32\]",
        ),
        ({"mixed": "groups", "groups": "layers", "bits": 8}, None, r"two or more.*got \[8\]"),
        (
            {"mixed": "groups"},
            {"family": "custom", "builder": "tests.spaces.user_models:tiny"},
            "family 'custom' has no built-in layer groups",
        ),
        ({"groups": {"Conv": ["a"]}}, None, "group name 'Conv' must use only lowercase"),
        ({"groups": {"convs": []}}, None, "groups.convs must be a non-empty list of globs"),
        ({"groups": ["a"]}, None, "groups must be 'layers' .* or a mapping"),
    ],
)
def test_bad_input_names_the_field_and_the_allowed_values(
    quant: dict[str, Any], arch: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        _space(quant, arch)


def test_quant_space_alone_keeps_its_old_signature() -> None:
    params = QuantSpace().params()  # no architecture needed without groups
    assert [p.name for p in params] == ["quant.bits", "quant.act_bits", "quant.layers"]
    # every kind of layer is compressed; a config without the key is from before that
    assert params[-1].kind == "fixed" and params[-1].value == "all"


def test_per_layer_groups_are_named_after_their_modules() -> None:
    groups = per_layer_groups(["features.0", "Features.0", "head", "", "odd[1]*"])
    assert groups == {
        "features_0": ["features.0"],
        "features_0_2": ["Features.0"],  # same name once lowercased: numbered
        "head": ["head"],
        "layer": [""],  # the model itself is the layer
        "odd_1__": ["odd[[]1][*]"],  # glob characters match only themselves
    }
    assert all(set(name) <= set(GROUP_NAME_CHARS) for name in groups)
    assert [fnmatch.fnmatchcase("odd[1]*", g) for g in groups["odd_1__"]] == [True]
    assert not fnmatch.fnmatchcase("odd1x", groups["odd_1__"][0])


def test_per_layer_groups_are_resolved_before_they_are_searched() -> None:
    tiny = {"family": "custom", "builder": "tests.spaces.user_models:tiny"}
    space = _space({"mixed": "groups", "bits": [4, 8], "groups": "layers"}, tiny)
    with pytest.raises(ValueError, match="'layers' is resolved from the model"):
        space.params()
    fixed = space.quant.with_layer_groups(["0", "4"], others=False)
    params = {p.name: p for p in fixed.params(space.arch)}
    assert list(params) == [
        "quant.mixed",
        "quant.act_bits",
        "quant.group_bits.0",
        "quant.groups.0",
        "quant.group_bits.4",
        "quant.groups.4",
        "quant.layers",
    ]  # every layer has a group: no trial-wide width
    assert params["quant.group_bits.4"].choices == (4, 8)
    varying = space.quant.with_layer_groups(["0", "4"], others=True)
    assert "quant.bits" in {p.name for p in varying.params(space.arch)}


def test_per_layer_groups_need_mixed_groups() -> None:
    with pytest.raises(ValidationError, match=r"quant.groups: 'layers' needs quant.mixed: groups"):
        _space({"groups": "layers"})
