"""The joint space of architecture and compression, as plain data.

``SpaceConfig`` is the validated ``space:`` section of an experiment. :meth:`SpaceConfig.params`
flattens it into :class:`~spaces.params.Param` records named like the trial's flat config
(``arch.n_stages``, ``prune.ratio``, ``quant.bits``, ``distill.temperature``...). Conditional
parameters carry a condition: pruning's ratio only when a method is chosen, the temperature
and weight only when distillation is on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from compressors.pruning import IMPORTANCES, PRUNE_METHODS
from compressors.quantization import VALID_BITS
from spaces.cnn import BLOCK_TYPES
from spaces.nb201 import N_EDGES, NB201_OPS, PathEncoding, cell_string
from spaces.params import Param, in_choices, in_interval, parse_spec, to_param

_BITS_TEXT = "in 2..8, 16 or 32"


def _bits_check(value: Any) -> str | None:
    return None if value in VALID_BITS else f"bit-width must be {_BITS_TEXT}"


@dataclass(frozen=True)
class Rule:
    """How one field's spec is validated: its value type, what is allowed, whether discrete."""

    kind: type
    check: Callable[[Any], str | None] | None = None
    discrete: bool = False


class _Section(BaseModel):
    """A space section: each field in ``_rules`` is a spec checked by :func:`parse_spec`, so
    that lists mean choices and mappings mean ranges."""

    model_config = ConfigDict(extra="forbid", validate_default=True)
    _rules: ClassVar[dict[str, Rule]] = {}

    @field_validator("*")
    @classmethod
    def _spec(cls, value: Any, info: ValidationInfo) -> Any:
        rule = cls._rules.get(info.field_name)
        if rule is None:
            return value
        return parse_spec(value, kind=rule.kind, check=rule.check, discrete=rule.discrete)


class CnnArchSpace(_Section):
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

    def params(self) -> list[Param]:
        return [to_param(f"arch.{name}", getattr(self, name)) for name in type(self).model_fields]

    def features(self) -> None:
        """No features beyond the parameters' own (see ``Nb201ArchSpace.features``)."""
        return None


class Nb201ArchSpace(_Section):
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


ARCH_SPACES: dict[str, type[_Section]] = {"cnn": CnnArchSpace, "nb201": Nb201ArchSpace}
ArchSpace = Annotated[CnnArchSpace | Nb201ArchSpace, Field(discriminator="family")]


class PruneSpace(_Section):
    _rules: ClassVar[dict[str, Rule]] = {
        "method": Rule(str, in_choices(PRUNE_METHODS)),
        "ratio": Rule(float, in_interval(0.0, 1.0, high_open=True)),
        "importance": Rule(str, in_choices(IMPORTANCES)),
        "scope": Rule(str, in_choices(("global", "layer"))),
    }
    method: Any = list(PRUNE_METHODS)
    ratio: Any = {"low": 0.1, "high": 0.8}
    importance: Any = "l1"
    scope: Any = "global"

    def params(self) -> list[Param]:
        method = to_param("prune.method", self.method)
        pruning = tuple(m for m in method.possible_values() or () if m != "none")
        when = ("prune.method", pruning)
        return [
            method,
            *(
                to_param(f"prune.{name}", getattr(self, name), when)
                for name in ("ratio", "importance", "scope")
            ),
        ]


class QuantSpace(_Section):
    _rules: ClassVar[dict[str, Rule]] = {
        "bits": Rule(int, _bits_check, discrete=True),
        "act_bits": Rule(int, in_choices((2, 3, 4, 5, 6, 7, 8, 32)), discrete=True),
    }
    bits: Any = [4, 8, 32]
    act_bits: Any = 8

    def params(self) -> list[Param]:
        return [to_param("quant.bits", self.bits), to_param("quant.act_bits", self.act_bits)]


class DistillSpace(_Section):
    """Hinton's loss (``temperature``, ``alpha``) and, when ``features`` is on, a FitNets hint
    between intermediate features weighted by ``feature_weight``. Features are off by default:
    they cost a teacher forward pass per batch; ``features: [false, true]`` searches them."""

    _rules: ClassVar[dict[str, Rule]] = {
        "enabled": Rule(bool),
        "temperature": Rule(float, in_interval(0.0, None, low_open=True)),
        "alpha": Rule(float, in_interval(0.0, 1.0)),
        "features": Rule(bool),
        "feature_weight": Rule(float, in_interval(0.0, None, low_open=True)),
    }
    enabled: Any = [True, False]
    temperature: Any = {"low": 1.0, "high": 8.0, "log": True}
    alpha: Any = {"low": 0.2, "high": 0.9}
    features: Any = False
    feature_weight: Any = {"low": 0.1, "high": 10.0, "log": True}

    def params(self) -> list[Param]:
        when = ("distill.enabled", (True,))
        return [
            to_param("distill.enabled", self.enabled),
            to_param("distill.temperature", self.temperature, when),
            to_param("distill.alpha", self.alpha, when),
            to_param("distill.features", self.features, when),
            # Sampled after ``features`` (conditions only look back), and only when it is on.
            to_param("distill.feature_weight", self.feature_weight, ("distill.features", (True,))),
        ]


class SpaceConfig(_Section):
    arch: ArchSpace = Field(default_factory=CnnArchSpace)
    prune: PruneSpace = Field(default_factory=PruneSpace)
    quant: QuantSpace = Field(default_factory=QuantSpace)
    distill: DistillSpace = Field(default_factory=DistillSpace)

    def params(self) -> list[Param]:
        """Every parameter of the joint space, in sampling order (conditions come after)."""
        return [
            *self.arch.params(),
            *self.prune.params(),
            *self.quant.params(),
            *self.distill.params(),
        ]

    def features(self) -> PathEncoding | None:
        """What the space adds to the ``pls`` sampler's model besides the parameters' one-hots
        (``search.pareto_local_sampler.Features``): an nb201 cell's paths, else nothing."""
        return self.arch.features()

    def distillation_possible(self) -> bool:
        enabled = to_param("distill.enabled", self.distill.enabled)
        return True in (enabled.possible_values() or ())

    def describe(self) -> list[dict[str, Any]]:
        """The space as JSON-able records (logged with the search)."""
        out = []
        for param in self.params():
            record: dict[str, Any] = {"name": param.name, "kind": param.kind}
            if param.kind in ("fixed", "choice"):
                record["choices"] = list(param.choices)
            else:
                record.update(low=param.low, high=param.high, log=param.log, step=param.step)
            if param.condition:
                record["when"] = {param.condition[0]: list(param.condition[1])}
            out.append(record)
        return out


def arch_from_flat(flat: dict[str, Any]) -> dict[str, Any]:
    """The model builder's arch mapping from a trial's flat config (``arch.*`` keys)."""
    arch = {key[len("arch.") :]: value for key, value in flat.items() if key.startswith("arch.")}
    if arch.get("family") == "nb201" and "cell" not in arch:
        arch["cell"] = cell_string([arch[f"edge{i}"] for i in range(N_EDGES)])
    for i in range(N_EDGES):
        arch.pop(f"edge{i}", None)
    return arch


def arch_keys(family: str | None) -> list[str]:
    """Allowed keys of an ``arch`` section, for "did you mean" hints."""
    if family in ARCH_SPACES:
        return list(ARCH_SPACES[family].model_fields)
    return sorted({key for space in ARCH_SPACES.values() for key in space.model_fields})
