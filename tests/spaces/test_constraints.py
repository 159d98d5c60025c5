"""Constraints: the safe parser, its one-line errors, violations in Optuna's convention, --pick."""

from __future__ import annotations

import math

import pytest

from nascomp.search.errors import ConfigError
from nascomp.search.experiment import METRICS, load_experiment
from nascomp.spaces.constraints import (
    Constraint,
    is_feasible,
    parse_constraint,
    parse_constraints,
    parse_pick,
    violations,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("latency_ms <= 2.0", Constraint("latency_ms", "<=", 2.0)),
        ("size_bytes<50000", Constraint("size_bytes", "<", 50000.0)),
        ("  val_accuracy >= .9 ", Constraint("val_accuracy", ">=", 0.9)),
        ("params > 1e3", Constraint("params", ">", 1000.0)),
        ("macs <= -2.5E-1", Constraint("macs", "<=", -0.25)),
    ],
)
def test_parse(text: str, expected: Constraint) -> None:
    assert parse_constraint(text, METRICS) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("latncy_ms <= 2", "unknown metric 'latncy_ms' (did you mean 'latency_ms'?)"),
        ("latency_ms == 2", "is not '<metric> <=|<|>=|> <number>'"),
        ("latency_ms <= 2 or 1", "is not"),
        ("__import__('os').system('x') <= 1", "is not"),
        ("latency_ms <= inf", "is not"),
        ("2 >= latency_ms", "is not"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_constraint(text, METRICS)
    assert message in str(info.value)


def test_errors_name_the_item() -> None:
    with pytest.raises(ValueError, match=r"^constraints\[1\]: unknown metric 'speed'"):
        parse_constraints(["params <= 10", "speed < 3"], METRICS)


def test_experiment_file_errors_are_one_line_naming_the_item() -> None:
    with pytest.raises(ConfigError) as info:
        load_experiment(None, ['constraints=["latency_ms <= 2", "size_bytes <= big"]'])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("constraints[1]: 'size_bytes <= big' is not")
    assert load_experiment(None, ['constraints=["latency_ms <= 2"]']).constraints == [
        "latency_ms <= 2"
    ]


def test_violations_follow_optunas_convention() -> None:
    constraints = parse_constraints(
        ["latency_ms <= 2", "size_bytes < 100", "val_accuracy >= 0.9", "params > 10"], METRICS
    )
    metrics = {"latency_ms": 3.0, "size_bytes": 100.0, "val_accuracy": 0.95, "params": 10.0}
    got = violations(constraints, metrics)
    assert got[0] == 1.0  # one millisecond too slow
    assert got[1] > 0  # a strict bound met with equality is violated, however slightly
    assert got[2] == pytest.approx(-0.05)  # satisfied: <= 0
    assert got[3] > 0
    assert not is_feasible(constraints, metrics)
    assert is_feasible(constraints[2:3], metrics)
    # A metric the trial did not report violates (infinitely) and is infeasible.
    assert violations(constraints[:1], {}) == [math.inf]
    assert not is_feasible(constraints[:1], {})


def test_parse_pick() -> None:
    assert parse_pick("knee", METRICS).kind == "knee"
    pick = parse_pick("max val_accuracy where latency_ms <= 2 and size_bytes < 5e4", METRICS)
    assert (pick.kind, pick.metric) == ("max", "val_accuracy")
    assert pick.where == (
        Constraint("latency_ms", "<=", 2.0),
        Constraint("size_bytes", "<", 50000.0),
    )
    assert parse_pick("min latency_ms", METRICS).where == ()
    knee = parse_pick("knee  where\tsize_bytes < 5e4", METRICS)
    assert (knee.kind, knee.metric, knee.where) == (
        "knee",
        None,
        (Constraint("size_bytes", "<", 5e4),),
    )
    bad_rules = ("best", "max", "max speed", "max val_accuracy if x", "max val_accuracy where")
    for bad in (*bad_rules, "knee val_accuracy", "knee where", ""):
        with pytest.raises(ValueError, match="--pick"):
            parse_pick(bad, METRICS)


def test_a_metric_above_its_low_bound_never_meets_it() -> None:
    from nascomp.spaces.constraints import check_can_hold, parse_constraints

    bounds = {"size_bytes": (0.0, math.inf), "val_accuracy": (0.0, 1.0)}
    meetable = ["size_bytes > 0", "size_bytes < 0.5", "size_bytes >= 0", "val_accuracy <= 0"]
    check_can_hold(parse_constraints(meetable, list(bounds)), bounds, ["size_bytes"])
    for never in ("size_bytes <= 0", "size_bytes < 0"):
        with pytest.raises(ValueError, match=r"size_bytes is more than 0$"):
            check_can_hold(parse_constraints([never], list(bounds)), bounds, ["size_bytes"])
    check_can_hold(parse_constraints(["size_bytes <= 0"], list(bounds)), bounds)  # closed
