"""Constraints on a trial's metrics, written ``"latency_ms <= 2.0"``, parsed without eval.

Grammar: ``<metric> <op> <number>`` with ``op`` one of ``<=``, ``<``, ``>=``, ``>`` and the
metric one of the names trials report. Several constraints all have to hold.

Optuna's convention for its samplers' ``constraints_func``: one value per constraint, a trial
is feasible when every value is <= 0 and a larger positive value is a worse violation.
:func:`violations` follows it; :func:`is_feasible` is the exact test (strict ``<`` included).
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_PATTERN = re.compile(rf"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>)\s*({_NUMBER})\s*$")
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
}
# Optuna counts a violation of exactly 0 as feasible; a strict bound that is met with equality
# must still read as violated, by the smallest positive amount.
_TINY = math.ulp(0.0)
FORMAT = "'<metric> <=|<|>=|> <number>', e.g. 'latency_ms <= 2.0'"


@dataclass(frozen=True)
class Constraint:
    metric: str
    op: str
    bound: float

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.bound)

    def violation(self, value: float | None) -> float:
        """<= 0 when satisfied; otherwise how far past the bound (a missing value: infinity)."""
        if value is None or math.isnan(value):
            return math.inf
        gap = value - self.bound if self.op in ("<=", "<") else self.bound - value
        if self.holds(value):
            return min(gap, 0.0)
        return max(gap, _TINY)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


def parse_constraint(text: str, metrics: Sequence[str]) -> Constraint:
    """One constraint from its text; ValueError saying what is wrong and what is allowed."""
    if not isinstance(text, str):
        raise ValueError(f"must be a string like {FORMAT}; got {text!r}")
    match = _PATTERN.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not {FORMAT}")
    metric, op, number = match.groups()
    if metric not in metrics:
        close = difflib.get_close_matches(metric, list(metrics), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown metric {metric!r}{hint}; allowed: {', '.join(metrics)}")
    bound = float(number)
    if not math.isfinite(bound):
        raise ValueError(f"{text!r}: the bound must be a finite number")
    return Constraint(metric, op, bound)


def parse_constraints(texts: Sequence[str], metrics: Sequence[str]) -> list[Constraint]:
    """All constraints; the error names the failing item as ``constraints[i]``."""
    parsed = []
    for i, text in enumerate(texts):
        try:
            parsed.append(parse_constraint(text, metrics))
        except ValueError as exc:
            raise ValueError(f"constraints[{i}]: {exc}") from None
    return parsed


def check_can_hold(
    constraints: Sequence[Constraint],
    bounds: Mapping[str, tuple[float, float]],
    above_low: Collection[str] = (),
) -> None:
    """Refuse a constraint no value meets (``val_accuracy >= 1.5``, where ``bounds`` says
    what each metric can be, and ``above_low`` names those never at their low bound: a size
    or a latency is never 0), two that no one value meets together (``params <= 100`` and
    ``params >= 200``) and one given twice: each trained a whole search to an empty front.
    ValueError names the item as ``constraints[i]``."""
    for i, constraint in enumerate(constraints):
        text = str(constraint)
        earlier = list(constraints[:i])
        if constraint in earlier:
            raise ValueError(
                f"constraints[{i}]: {text!r} repeats constraints[{earlier.index(constraint)}]"
            )
        low, high = bounds.get(constraint.metric, (-math.inf, math.inf))
        low_open = constraint.metric in above_low
        if not _can_hold([constraint], low, high, low_open):
            if math.isfinite(high):
                takes = f"in {'(' if low_open else '['}{low:g}, {high:g}]"
            else:
                takes = f"more than {low:g}" if low_open else f"at least {low:g}"
            raise ValueError(
                f"constraints[{i}]: {text!r} can never hold: {constraint.metric} is {takes}"
            )
        same = (c for c in earlier if c.metric == constraint.metric)
        clash = next((c for c in same if not _can_hold([c, constraint], low, high, low_open)), None)
        if clash is not None:
            raise ValueError(
                f"constraints[{i}]: {text!r} and constraints[{earlier.index(clash)}] "
                f"{str(clash)!r} can never hold together"
            )


def _can_hold(
    constraints: Sequence[Constraint], low: float, high: float, low_open: bool = False
) -> bool:
    """Whether one value in [low, high] ((low, high] with ``low_open``) meets every
    constraint (all on one metric)."""
    high_open = False
    for c in constraints:
        if c.op in (">=", ">") and (c.bound > low or (c.bound == low and c.op == ">")):
            low, low_open = c.bound, c.op == ">"
        if c.op in ("<=", "<") and (c.bound < high or (c.bound == high and c.op == "<")):
            high, high_open = c.bound, c.op == "<"
    return low < high or (low == high and not (low_open or high_open))


def violations(constraints: Sequence[Constraint], metrics: Mapping[str, float]) -> list[float]:
    return [c.violation(_number(metrics.get(c.metric))) for c in constraints]


def is_feasible(constraints: Sequence[Constraint], metrics: Mapping[str, float]) -> bool:
    return all(
        (value := _number(metrics.get(c.metric))) is not None and c.holds(value)
        for c in constraints
    )


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@dataclass(frozen=True)
class Pick:
    """How ``nascomp pareto --pick`` chooses one model: the front's knee, or the best value of
    one metric among the finished, feasible trials that meet extra conditions."""

    kind: str  # "knee" | "max" | "min"
    metric: str | None = None
    where: tuple[Constraint, ...] = ()


PICK_FORMAT = (
    "'knee [where <metric> <op> <number> [and ...]]' or "
    "'<max|min> <metric> [where <metric> <op> <number> [and ...]]'"
)


def parse_pick(text: str, metrics: Sequence[str]) -> Pick:
    """``knee``, ``max val_accuracy``, either followed by ``where latency_ms <= 2 and ...``."""
    words = text.strip().split(maxsplit=1)
    if not words or words[0].lower() not in ("knee", "max", "min"):
        raise ValueError(f"--pick {text!r} is not {PICK_FORMAT}")
    kind, rest = words[0].lower(), words[1] if len(words) > 1 else ""
    metric = None
    if kind != "knee":
        if not rest:
            raise ValueError(f"--pick {text!r} is not {PICK_FORMAT}")
        metric, rest = [*rest.split(maxsplit=1), ""][:2]
        if metric not in metrics:
            close = difflib.get_close_matches(metric, list(metrics), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"--pick: unknown metric {metric!r}{hint}; allowed: {', '.join(metrics)}"
            )
    where: list[Constraint] = []
    if rest.strip():
        keyword, conditions = [*rest.split(maxsplit=1), ""][:2]
        if keyword.lower() != "where" or not conditions.strip():
            raise ValueError(f"--pick {text!r} is not {PICK_FORMAT}")
        for part in re.split(r"\s+and\s+", conditions.strip(), flags=re.IGNORECASE):
            try:
                where.append(parse_constraint(part, metrics))
            except ValueError as exc:
                raise ValueError(f"--pick: {exc}") from None
    return Pick(kind, metric, tuple(where))
