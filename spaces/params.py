"""Search-space parameter specs: the plain data a YAML leaf turns into.

A leaf of the ``space:`` section is one of

- a scalar (``kernel_size: 3``): fixed, not searched;
- a non-empty list (``bits: [4, 8, 32]``): a categorical choice;
- a range mapping (``ratio: {low: 0.1, high: 0.8}``, optional ``log: true``, ``step``): an
  integer range when ``low`` and ``high`` are both integers, a float range otherwise.

Nothing here knows Optuna; ``nascomp.search.samplers.space`` is the one place that turns a
:class:`Param` into a distribution.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from decimal import Decimal
from types import UnionType
from typing import Annotated, Any, ClassVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

Scalar = int | float | str | bool


@dataclass(frozen=True)
class Param:
    """One searchable (or fixed) parameter of the joint space.

    ``condition`` is ``(other_param_name, allowed_values)``: the parameter is only sampled when
    the other one took one of those values (e.g. the temperature only when distillation is on).
    """

    name: str
    kind: str  # "fixed" | "choice" | "int" | "float"
    choices: tuple[Scalar, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    condition: tuple[str, tuple[Scalar, ...]] | None = None

    @property
    def value(self) -> Scalar:
        """The value of a fixed parameter."""
        assert self.kind == "fixed", self
        return self.choices[0]

    def is_active(self, sampled: dict[str, Any]) -> bool:
        if self.condition is None:
            return True
        other, allowed = self.condition
        return other in sampled and sampled[other] in allowed

    def possible_values(self) -> tuple[Scalar, ...] | None:
        """Every value a fixed or categorical param can take; None for ranges."""
        return self.choices if self.kind in ("fixed", "choice") else None


def all_points(params: list[Param], limit: int) -> list[dict[str, Scalar]] | None:
    """Every distinct point of the space ``params`` span (each a mapping of its active,
    sampled parameters; fixed ones left out), in sampling order; None when a float range
    makes it endless or it holds more than ``limit`` points."""
    points: list[dict[str, Scalar]] = []

    def extend(index: int, chosen: dict[str, Scalar]) -> bool:
        if len(points) > limit:
            return False
        if index == len(params):
            points.append({k: v for k, v in chosen.items() if k not in fixed})
            return True
        param = params[index]
        if not param.is_active(chosen):
            return extend(index + 1, chosen)
        values = _values(param, limit)
        if values is None:
            return False
        return all(extend(index + 1, {**chosen, param.name: value}) for value in values)

    fixed = {param.name for param in params if param.kind == "fixed"}
    if not extend(0, {}) or len(points) > limit:
        return None
    return points


def _values(param: Param, limit: int) -> Sequence[Scalar] | None:
    """Every value a parameter takes: its choices, an integer range's grid; None for a float
    range, and for an integer range of more than ``limit`` values (counted, not listed: a
    range up to a billion would have held gigabytes before any trial)."""
    if param.kind in ("fixed", "choice"):
        return param.choices
    if param.kind == "int":
        assert param.low is not None and param.high is not None
        if param.log:
            return None  # a log range is left to the sampler
        step = int(param.step or 1)
        low, high = int(param.low), int(param.high)
        if (high - low) // step + 1 > limit:
            return None
        return range(low, high + 1, step)
    return None


def parse_spec(
    raw: Any,
    *,
    kind: type,
    check: Callable[[Any], str | None] | None = None,
    discrete: bool = False,
) -> Any:
    """Validate one YAML leaf as a spec of values of ``kind``; return it normalised.

    ``check(value)`` returns an error text (what is allowed) or None. Ranges check both ends.
    ``discrete`` fields (kernel sizes, bit-widths, names) take values or lists only: a range
    between two allowed values may hold values that are not allowed.
    Raises ValueError with a message that says what is allowed; pydantic adds the field path.
    A number is always finite, checked or not (a builder's ``dropout: [0.0, .nan]`` trained
    a trial with dropout nan, a range up to ``.inf`` ended in Optuna's traceback).
    """
    if check is None and kind in (int, float):
        check = in_interval()
    if isinstance(raw, dict):
        if discrete or kind in (str, bool):
            raise ValueError("a range ({low, high}) is not allowed here; give a value or a list")
        return _parse_range(raw, kind=kind, check=check)
    if isinstance(raw, list):
        if not raw:
            raise ValueError("choice list is empty; give at least one value")
        values = [_coerce(v, kind) for v in raw]
        for value in values:
            _run_check(value, check)
        if len(set(map(repr, values))) != len(values):
            raise ValueError(f"choice list {raw!r} repeats a value")
        return values
    value = _coerce(raw, kind)
    _run_check(value, check)
    return value


RANGE_KEYS = {"low", "high", "log", "step"}


def _parse_range(raw: dict, *, kind: type, check: Callable[[Any], str | None] | None) -> dict:
    unknown = set(raw) - RANGE_KEYS
    if unknown:
        raise ValueError(f"unknown range key(s) {sorted(unknown)}; allowed: low, high, log, step")
    if "low" not in raw or "high" not in raw:
        raise ValueError("a range needs both 'low' and 'high'")
    low, high = _coerce(raw["low"], kind), _coerce(raw["high"], kind)
    _run_check(low, check)
    _run_check(high, check)
    if not low < high:
        raise ValueError(f"range needs low < high; got low={low}, high={high}")
    if not math.isfinite(high - low):  # the samplers draw low + u * (high - low)
        raise ValueError(
            f"range low..high is too wide for a float (high - low overflows); got low={low}, "
            f"high={high}"
        )
    log = raw.get("log", False)
    if not isinstance(log, bool):
        # bool("false") is True: a quoted false turned the log scale on
        raise ValueError(f"range log must be true or false; got {log!r}")
    if isinstance(low, int) and isinstance(high, int) and max(abs(low), abs(high)) > MAX_INT_END:
        raise ValueError(
            f"integer range ends must be within -2**53..2**53 (the samplers draw integers "
            f"through floats); got low={low}, high={high}"
        )
    if log and low <= 0:
        raise ValueError(f"a log range needs low > 0; got low={low}")
    step = raw.get("step")
    if log and step is not None:
        raise ValueError(
            "a range takes log or step, not both (Optuna samples either); to step a log "
            "range, also set its log: false"
        )
    if step is not None and (isinstance(step, bool) or not isinstance(step, int | float)):
        raise ValueError(f"range step must be a positive number; got {step!r}")
    if step is not None and not (math.isfinite(step) and step > 0):
        raise ValueError(f"range step must be a positive number; got {step!r}")
    if step is not None and isinstance(low, int) and isinstance(high, int) and step % 1:
        raise ValueError(f"an integer range takes an integer step; got step={step!r}")
    if step is not None and step > high - low:
        # Optuna would silently draw ``low`` alone: nothing would be searched.
        raise ValueError(
            f"range step {step} is wider than the range {low}..{high}: only {low} could be "
            f"drawn; give a step of at most {high - low:g}, or a fixed value"
        )
    if step is not None and _remainder(low, high, step):
        # Optuna narrows the range to the last step below high, with a UserWarning alone; its
        # test is the same exact one (integers, or the decimals of the numbers as written).
        top, above = _tops(low, high, step)
        raise ValueError(
            f"range step {_num(step)} does not divide {_num(low)}..{_num(high)}: {_num(high)} "
            f"could never be drawn (the top would be {_num(top)}); give high: {_num(top)} or "
            f"{_num(above)}"
        )
    return {"low": low, "high": high, "log": log, "step": step}


def _num(number: float) -> str:
    """A number as a user writes it: an integer whole, a float in its shortest exact form."""
    return str(number) if isinstance(number, int) else repr(float(number))


def _remainder(low: float, high: float, step: float) -> bool:
    """Whether ``step`` leaves a remainder of ``high - low``: exactly, for integers as they
    are and for floats as their shortest decimals (``repr``), as Optuna tests it."""
    if all(isinstance(v, int) for v in (low, high, step)):
        return (high - low) % step != 0
    span = Decimal(repr(float(high))) - Decimal(repr(float(low)))
    return span % Decimal(repr(float(step))) != 0


def _tops(low: float, high: float, step: float) -> tuple[float, float]:
    """The last value of the grid at or below ``high`` (where Optuna narrows the range to)
    and the next one above it: the two highs ``step`` divides."""
    if all(isinstance(v, int) for v in (low, high, step)):
        top = low + (high - low) // step * step
        return top, top + step
    d_low, d_step = Decimal(repr(float(low))), Decimal(repr(float(step)))
    below = (Decimal(repr(float(high))) - d_low) // d_step * d_step + d_low
    return float(below), float(below + d_step)


# Integers beyond this pass through a float on their way through Optuna's samplers.
MAX_INT_END = 2**53


def on_grid(value: float, low: float, step: float) -> float:
    """``value`` snapped to the grid ``low + k * step`` and rounded to the decimals ``low``
    and ``step`` are written with: ``low + 3 * 0.1`` is 0.30000000000000004 in floats, and a
    builder that checks ``dropout <= 0.3`` refused it (the trial's logged value was off the
    declared grid too)."""
    snapped = low + round((value - low) / step) * step
    places = max(_decimal_places(low), _decimal_places(step))
    return round(snapped, places) if places < 300 else snapped


def _decimal_places(number: float) -> int:
    exponent = Decimal(repr(float(number))).as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def with_default_bounds(raw: dict, default: Any) -> dict:
    """A range that lacks a bound (``--set space.prune.ratio.high=0.5`` on a file without
    ``ratio``) completed from the field's ``default`` range: its bounds, and its ``log`` or
    ``step`` unless the user gave either. Anything else is returned as it is."""
    keys = set(raw)
    if not keys or keys - RANGE_KEYS or {"low", "high"} <= keys or not _is_range(default):
        return raw
    spacing = {"log", "step"}  # a range takes one of them: the user's, else the default's
    kept = {k: v for k, v in default.items() if not (spacing & keys and k in spacing)}
    return {**kept, **raw}


def _is_range(spec: Any) -> bool:
    return isinstance(spec, dict) and "low" in spec and "high" in spec


_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _coerce(value: Any, kind: type) -> Any:
    # bool is an int subclass in Python; never let `true` pass as an integer or vice versa.
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"expected true or false; got {value!r}")
    if isinstance(value, bool | dict | list):
        raise ValueError(f"expected {_KIND_NAMES[kind]}; got {value!r}")
    if kind is float and isinstance(value, int | float):
        return float(value)
    if kind is int and isinstance(value, int):
        return value
    if kind is str and isinstance(value, str):
        return value
    raise ValueError(f"expected {_KIND_NAMES[kind]}; got {value!r}")


def _run_check(value: Any, check: Callable[[Any], str | None] | None) -> None:
    if check is None:
        return
    problem = check(value)
    if problem:
        raise ValueError(f"{problem}; got {value!r}")


def to_param(
    name: str, spec: Any, condition: tuple[str, tuple[Scalar, ...]] | None = None
) -> Param:
    """Turn a validated spec into a :class:`Param`."""
    if isinstance(spec, dict):
        is_int = isinstance(spec["low"], int) and isinstance(spec["high"], int)
        return Param(
            name=name,
            kind="int" if is_int else "float",
            low=spec["low"],
            high=spec["high"],
            log=spec["log"],
            step=spec["step"],
            condition=condition,
        )
    if isinstance(spec, list):
        if len(spec) == 1:
            return Param(name=name, kind="fixed", choices=(spec[0],), condition=condition)
        return Param(name=name, kind="choice", choices=tuple(spec), condition=condition)
    return Param(name=name, kind="fixed", choices=(spec,), condition=condition)


def in_choices(allowed: Sequence[Scalar]) -> Callable[[Any], str | None]:
    text = ", ".join(map(str, allowed))
    return lambda value: None if value in allowed else f"must be one of {text}"


def in_interval(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Callable[[Any], str | None]:
    if low is not None and high is not None:
        text = f"must be in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        text = f"must be a finite number {'>' if low_open else '>='} {low}"
    elif high is not None:
        text = f"must be a finite number {'<' if high_open else '<='} {high}"
    else:
        text = "must be a finite number"

    def check(value: Any) -> str | None:
        if isinstance(value, float) and not math.isfinite(value):
            return text  # nan passes every comparison, inf every lower bound
        if low is not None and (value < low or (low_open and value == low)):
            return text
        if high is not None and (value > high or (high_open and value == high)):
            return text
        return None

    return check


@dataclass(frozen=True)
class Rule:
    """How one field's spec is validated: its value type, what is allowed, whether discrete."""

    kind: type
    check: Callable[[Any], str | None] | None = None
    discrete: bool = False


def admits_none(annotation: Any) -> bool:
    """Whether a field of this type takes None as a value of its own (``int | None``)."""
    if annotation is None or annotation is type(None) or annotation is Any:
        return True
    origin = get_origin(annotation)
    if origin is Annotated:
        return admits_none(get_args(annotation)[0])
    return origin in (Union, UnionType) and any(admits_none(a) for a in get_args(annotation))


def without_nulls(data: Any, fields: Mapping[str, Any], never_none: Set[str] = frozenset()) -> Any:
    """A section's mapping without the keys set to None whose field takes no None itself (a
    model's ``model_fields``; ``never_none`` names more), so those fields get their defaults.
    Keys that are no field stay, for the unknown-key error."""
    if not isinstance(data, dict):
        return data
    return {
        key: value
        for key, value in data.items()
        if value is not None
        or key not in fields
        or (key not in never_none and admits_none(fields[key].annotation))
    }


class SpecSection(BaseModel):
    """A space section: each field in ``_rules`` is a spec checked by :func:`parse_spec`, so
    that lists mean choices and mappings mean ranges. ``KEY: null`` (``--set KEY=null``) is
    the field's default: a spec is never null, nor a section."""

    model_config = ConfigDict(extra="forbid", validate_default=True)
    _rules: ClassVar[dict[str, Rule]] = {}

    @model_validator(mode="before")
    @classmethod
    def _null_is_the_default(cls, data: Any) -> Any:
        return without_nulls(data, cls.model_fields, never_none=set(cls._rules))

    @field_validator("*")
    @classmethod
    def _spec(cls, value: Any, info: ValidationInfo) -> Any:
        rule = cls._rules.get(info.field_name)
        if rule is None:
            return value
        if isinstance(value, dict):
            default = cls.model_fields[info.field_name].default
            # `--set space.prune.ratio.high=null`: that key of the default range
            given = {k: v for k, v in value.items() if not (k in RANGE_KEYS and v is None)}
            if value and not given and _is_range(default):  # every key null: the default's
                given = dict(default)
            value = given
            completed = with_default_bounds(value, default)
            if completed is not value:
                try:
                    return parse_spec(
                        completed, kind=rule.kind, check=rule.check, discrete=rule.discrete
                    )
                except ValueError as exc:
                    missing = " and ".join(k for k in ("low", "high") if k not in value)
                    raise ValueError(f"{exc} ({missing} from the default)") from None
        return parse_spec(value, kind=rule.kind, check=rule.check, discrete=rule.discrete)


class ArchSpaceBase(SpecSection):
    """The ``space.arch`` section of a model family: its searchable fields (``family`` is the
    tag). A family registers it with its builder (``register_model(name, space=...)``)."""

    def params(self) -> list[Param]:
        """The family's parameters, named like the trial's flat config (``arch.<field>``)."""
        return [to_param(f"arch.{name}", getattr(self, name)) for name in type(self).model_fields]

    def first_arch(self) -> dict[str, Any]:
        """One architecture of the space (each leaf's first value, a range's low end): what
        the search's pre-flight builds to check a model the user brought before any trial."""
        return self.to_arch(self.first_values())

    def first_values(self) -> dict[str, Any]:
        """Each leaf's first value (a range's low end), by leaf name (no ``arch.``)."""
        return {
            param.name.removeprefix("arch."): param.choices[0] if param.choices else param.low
            for param in self.params()
        }

    def varied_archs(self) -> list[tuple[str, Scalar, dict[str, Any]]]:
        """``first_arch`` with one leaf changed at a time to each of its other values (a
        range: its top), as (leaf, value, arch): what the pre-flight builds besides the first
        architecture, so that a value the user's builder rejects stops the search before any
        trial rather than failing the trials that draw it."""
        first = self.first_values()
        varied = []
        for param in self.params():
            leaf = param.name.removeprefix("arch.")
            for value in _other_values(param):
                varied.append((leaf, value, self.to_arch({**first, leaf: value})))
        return varied

    def features(self) -> Any:
        """Features of a sampled architecture for the ``pls`` sampler's model beyond the
        parameters' own one-hots (see ``Nb201ArchSpace.features``); None: none."""
        return None

    @classmethod
    def to_arch(cls, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The builder's arch mapping from the sampled ``arch.*`` values (without the prefix)."""
        return dict(fields)


def _other_values(param: Param) -> tuple[Scalar, ...]:
    """A param's values besides its first (``first_arch``'s): a choice's others, a range's top
    (on its step's grid: ``low + k * step``, as Optuna samples it)."""
    if param.choices:
        return tuple(param.choices[1:])
    assert param.low is not None and param.high is not None
    top = param.high
    if param.step:
        steps = math.floor((param.high - param.low) / param.step + 1e-9)
        top = on_grid(param.low + steps * param.step, param.low, param.step)
    if param.kind == "int":
        top = int(top)
    return (top,) if top != param.low else ()
