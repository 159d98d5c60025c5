"""The joint space as plain data, and how Optuna samples it (conditions included)."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from nascomp.compressors.pruning import PruneConfig
from nascomp.compressors.quantization import QuantConfig
from nascomp.search.experiment import load_experiment
from nascomp.search.samplers.space import suggest
from nascomp.spaces.models import build_model, describe_arch, model_family, model_names
from nascomp.spaces.nb201 import NB201_OPS
from nascomp.spaces.params import Param
from nascomp.spaces.space import ARCH_SPACES, PruneSpace, QuantSpace, SpaceConfig, arch_from_flat


def params_by_name(space: SpaceConfig) -> dict[str, Param]:
    return {p.name: p for p in space.params()}


def test_quickstart_space_kinds_and_conditions() -> None:
    params = params_by_name(load_experiment().space)
    assert params["arch.n_stages"].kind == "choice" and params["arch.n_stages"].choices == (1, 2, 3)
    assert params["arch.width_mult"].kind == "fixed" and params["arch.width_mult"].value == 1.0
    assert params["prune.ratio"].kind == "float" and (
        params["prune.ratio"].low,
        params["prune.ratio"].high,
    ) == (0.2, 0.8)
    assert params["prune.ratio"].condition == ("prune.method", ("unstructured", "structured"))
    assert params["distill.temperature"].log is True
    assert params["distill.temperature"].condition == ("distill.enabled", (True,))
    assert params["quant.bits"].choices == (4, 8, 32)


def test_integer_range_is_an_int_param() -> None:
    space = SpaceConfig.model_validate(
        {"arch": {"family": "cnn", "base_channels": {"low": 8, "high": 64, "step": 8}}}
    )
    param = params_by_name(space)["arch.base_channels"]
    assert (param.kind, param.low, param.high, param.step) == ("int", 8, 64, 8)


def test_only_an_nb201_space_gives_the_sampler_path_features() -> None:
    nb201 = SpaceConfig.model_validate(
        {"arch": {"family": "nb201", "ops": ["none", "skip_connect"]}}
    )
    features = nb201.features()
    assert features is not None
    assert features.params == tuple(f"arch.edge{i}" for i in range(6))
    assert features.ops == ("none", "skip_connect")
    assert SpaceConfig.model_validate({}).features() is None


def test_nb201_space_has_six_edges_and_builds_a_cell() -> None:
    space = SpaceConfig.model_validate({"arch": {"family": "nb201", "n_cells": 1}})
    params = params_by_name(space)
    assert [params[f"arch.edge{i}"].choices for i in range(6)] == [NB201_OPS] * 6
    flat = {"arch.family": "nb201", "arch.channels": 16, "arch.n_cells": 1}
    flat |= {
        f"arch.edge{i}": op
        for i, op in enumerate(
            ["nor_conv_3x3", "none", "skip_connect", "avg_pool_3x3", "nor_conv_1x1", "none"]
        )
    }
    assert arch_from_flat(flat) == {
        "family": "nb201",
        "channels": 16,
        "n_cells": 1,
        "cell": "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|",
    }


def sample(space: SpaceConfig, n: int, seed: int = 0) -> list[tuple[dict, dict]]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        constants = suggest(trial, space.params())
        out.append((dict(trial.params), constants))
        study.tell(trial, 0.0)
    return out


def test_conditional_params_only_when_their_condition_holds() -> None:
    space = load_experiment().space
    draws = sample(space, 60)
    for params, _ in draws:
        assert ("distill.temperature" in params) == params["distill.enabled"]
        assert ("distill.alpha" in params) == params["distill.enabled"]
        assert ("prune.ratio" in params) == (params["prune.method"] != "none")
        if "prune.ratio" in params:
            assert 0.2 <= params["prune.ratio"] <= 0.8
    # Both branches of every condition were visited.
    assert {p["distill.enabled"] for p, _ in draws} == {True, False}
    assert {p["prune.method"] for p, _ in draws} == {"none", "unstructured", "structured"}


def test_fixed_values_are_constants_not_optuna_params() -> None:
    _, constants = sample(load_experiment().space, 1)[0]
    assert constants["arch.family"] == "cnn"
    assert constants["arch.width_mult"] == 1.0
    assert constants["quant.act_bits"] == 8


def test_a_fixed_condition_source_still_gates() -> None:
    space = SpaceConfig.model_validate({"prune": {"method": "none"}, "distill": {"enabled": False}})
    params, constants = sample(space, 1)[0]
    assert "prune.ratio" not in params and "prune.ratio" not in constants
    assert "distill.temperature" not in params and constants["distill.enabled"] is False


def test_describe_is_json_ready() -> None:
    import json

    records = load_experiment().space.describe()
    assert json.loads(json.dumps(records)) == records
    ratio = next(r for r in records if r["name"] == "prune.ratio")
    assert ratio["when"] == {"prune.method": ["unstructured", "structured"]}


@pytest.mark.parametrize("log", [True, False])
def test_float_ranges_are_sampled_within_bounds(log: bool) -> None:
    space = SpaceConfig.model_validate(
        {"distill": {"enabled": True, "temperature": {"low": 0.5, "high": 20.0, "log": log}}}
    )
    temperatures = [p["distill.temperature"] for p, _ in sample(space, 40)]
    assert all(0.5 <= t <= 20.0 for t in temperatures)


@pytest.mark.parametrize(
    ("space", "config"), [(PruneSpace, PruneConfig), (QuantSpace, QuantConfig)]
)
def test_a_compression_space_searches_exactly_its_configs_fields(space: type, config: type) -> None:
    """One definition per setting: the space has a spec for each field of the compressor's
    config and nothing else, and what it samples builds that config."""
    derived = getattr(space, "_derived", frozenset())  # sampled from another field's spec
    assert list(space.model_fields) == [
        f.name for f in dataclasses.fields(config) if f.name not in derived
    ]
    plain = getattr(space, "_plain", frozenset())  # settings that are not leaves of the space
    assert set(space._rules) | plain == set(space.model_fields)


@pytest.mark.parametrize("name", model_names())
def test_every_family_registers_builder_space_and_description_together(name: str) -> None:
    family = model_family(name)
    assert family is not None and family.name == name
    if family.space is None:
        return  # built only (e.g. as a teacher), never searched
    required = {
        "custom": {"builder": "tests.spaces.user_models:tiny"},
        "torchvision": {"model": "resnet18"},
        "timm": {"model": "resnet18"},
    }.get(name, {})
    if name == "timm":
        pytest.importorskip("timm")
    space = family.space(**required)
    assert space.family == name and ARCH_SPACES[name] is family.space
    fixed = {p.name: (p.choices[0] if p.choices else p.low) for p in space.params()}
    arch = arch_from_flat({**fixed, "arch.family": name})
    model = build_model(arch, (1, 28, 28), 10)
    assert model is not None
    line = describe_arch(arch)
    assert line.startswith(name) and "\n" not in line


def test_all_points_of_a_small_space_with_conditions() -> None:
    """Known answer: prune.method none or l1 (ratio 0.25 or 0.5 only when pruning), bits 4
    or 8 on an int grid of step 4, a fixed one left out: (1 + 2) * 2 = 6 points."""
    from nascomp.spaces.params import Param, all_points

    when = ("prune.method", ("unstructured",))
    params = [
        Param("prune.method", "choice", choices=("none", "unstructured")),
        Param("prune.ratio", "choice", choices=(0.25, 0.5), condition=when),
        Param("quant.bits", "int", low=4, high=8, step=4),
        Param("quant.layers", "fixed", choices=("all",)),
    ]
    points = all_points(params, limit=6)
    assert points == [
        {"prune.method": "none", "quant.bits": 4},
        {"prune.method": "none", "quant.bits": 8},
        {"prune.method": "unstructured", "prune.ratio": 0.25, "quant.bits": 4},
        {"prune.method": "unstructured", "prune.ratio": 0.25, "quant.bits": 8},
        {"prune.method": "unstructured", "prune.ratio": 0.5, "quant.bits": 4},
        {"prune.method": "unstructured", "prune.ratio": 0.5, "quant.bits": 8},
    ]
    assert all_points(params, limit=5) is None  # more points than asked for
    endless = [*params, Param("distill.alpha", "float", low=0.1, high=0.9)]
    assert all_points(endless, limit=100) is None


def test_an_integer_range_is_counted_not_listed() -> None:
    """1 to a billion would have been a tuple of a billion ints (gigabytes) before any trial."""
    import time

    from nascomp.spaces.params import Param, all_points

    started = time.perf_counter()
    wide = [Param("arch.n", "int", low=1, high=10**15)]
    assert all_points(wide, limit=10_000) is None
    assert time.perf_counter() - started < 1.0
    assert all_points([Param("arch.n", "int", low=0, high=20, step=5)], limit=5) == [
        {"arch.n": n} for n in (0, 5, 10, 15, 20)
    ]
    assert all_points([Param("arch.n", "int", low=0, high=20, step=5)], limit=4) is None


def test_stepped_floats_are_drawn_on_the_grid_as_written() -> None:
    """low + 3 * 0.1 is 0.30000000000000004 in floats: a builder that checks dropout <= 0.3
    refused it, and the logged value was off the declared grid."""
    space = load_experiment(
        None,
        [
            "space.arch={family: custom, builder: 'tests.spaces.user_models:tiny', "
            "width: 8, dropout: {low: 0.1, high: 0.7, step: 0.2}}",
            "space.prune.ratio={low: 0.0, high: 0.9, step: 0.1}",
        ],
    ).space
    grid = {round(0.1 + 0.2 * k, 12) for k in range(4)}
    ratios = {round(0.1 * k, 12) for k in range(10)}
    drawn, seen = set(), set()
    for params, constants in sample(space, 80, seed=3):
        config = {**params, **constants}  # what Tune's OptunaSearch gives the trial
        drawn.add(config["arch.dropout"])
        if "prune.ratio" in config:
            seen.add(config["prune.ratio"])
    assert drawn == grid  # 0.3 and 0.5 themselves, never 0.30000000000000004
    assert seen <= ratios and 0.3 in seen and 0.7 in seen
    arch_space = space.arch
    assert [v for leaf, v, _ in arch_space.varied_archs() if leaf == "dropout"] == [0.7]


def test_on_grid_rounds_to_the_decimals_the_range_is_written_with() -> None:
    from nascomp.spaces.params import on_grid

    assert on_grid(0.1 + 0.2 + 0.0000001, 0.1, 0.2) == 0.3
    assert on_grid(0.30000000000000004, 0.0, 0.1) == 0.3
    assert on_grid(7.0, 1.0, 2.0) == 7.0
    assert on_grid(3e-20, 1e-20, 1e-20) == 3e-20
    assert on_grid(0.5, 0.25, 0.125) == 0.5


def test_settings_no_trial_reads_are_noted() -> None:
    """prune.ratio with method [none], distillation's settings with it off: dropped unsaid."""

    def notes(*overrides: str) -> list[str]:
        return load_experiment(None, list(overrides)).space.unread_notes()

    assert notes("space.prune.method=[none]", "space.prune.ratio=0.5") == [
        "space.prune.ratio is never read: prune.method is none"
    ]
    # The quickstart's own temperature and alpha, and the features set here.
    assert notes("space.distill.enabled=false", "space.distill.features=true") == [
        "space.distill.temperature, space.distill.alpha, space.distill.features are never "
        "read: trials read them only when distill.enabled is true, and distill.enabled is false"
    ]
    assert notes("space.distill.features=false", "space.distill.feature_weight=2.0") == [
        "space.distill.feature_weight is never read: trials read it only when "
        "distill.features is true, and distill.features is false"
    ]
    # A fixed act_bits has no condition; activations are quantized below 16 bits alone.
    assert notes("space.quant.bits=[16, 32]", "space.quant.act_bits=4") == [
        "space.quant.act_bits is never read: trials read it only when quant.bits is one of 2, "
        "3, 4, 5, 6, 7, 8, and quant.bits is one of 16, 32"
    ]
    assert notes("space.quant.bits=[4, 32]", "space.quant.act_bits=4") == []
    # Read by some trials, or left to their defaults: nothing to say.
    assert notes("space.prune.method=[none, structured]", "space.prune.ratio=0.5") == []
    assert notes() == []


def test_searched_activation_widths_are_drawn_where_activations_are_quantized() -> None:
    """A 32-bit trial's act_bits meant nothing, and doubled a small space's grid."""
    from nascomp.spaces.params import all_points

    space = load_experiment(
        None, ["space.quant.bits=[4, 16, 32]", "space.quant.act_bits=[4, 8]"]
    ).space
    act = params_by_name(space)["quant.act_bits"]
    assert act.condition == ("quant.bits", (4,))
    for params, _ in sample(space, 40):
        assert ("quant.act_bits" in params) == (params["quant.bits"] == 4)
    quant = [p for p in space.params() if p.name.startswith("quant.")]
    assert len(all_points(quant, limit=100) or []) == 4  # 4 bit x 2 widths, 16, 32
    fixed = params_by_name(load_experiment(None, ["space.quant.bits=[4, 32]"]).space)
    assert fixed["quant.act_bits"].condition is None  # fixed: in every config, as before
