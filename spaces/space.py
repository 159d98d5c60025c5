"""The joint space of architecture and compression, as plain data.

``SpaceConfig`` is the validated ``space:`` section of an experiment. :meth:`SpaceConfig.params`
flattens it into :class:`~spaces.params.Param` records named like the trial's flat config
(``arch.n_stages``, ``prune.ratio``, ``quant.bits``, ``distill.temperature``...). Conditional
parameters carry a condition: pruning's ratio only when a method is chosen, the temperature
and weight only when distillation is on.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from compressors.pruning import IMPORTANCES, PRUNE_METHODS
from compressors.quantization import VALID_BITS
from spaces.cnn import BLOCK_TYPES
from spaces.nb201 import N_EDGES, NB201_OPS, cell_string
from spaces.params import Param, in_choices, in_interval, parse_spec, to_param

_BITS_TEXT = "in 2..8, 16 or 32"


def _bits_check(value: Any) -> str | None:
    return None if value in VALID_BITS else f"bit-width must be {_BITS_TEXT}"


class _Section(BaseModel):
    # Specs are validated by hand (parse_spec) so that lists mean choices and dicts mean ranges.
    model_config = ConfigDict(extra="forbid", validate_default=True)


class CnnArchSpace(_Section):
    family: Literal["cnn"] = "cnn"
    n_stages: Any = [1, 2, 3]
    blocks_per_stage: Any = [1, 2]
    base_channels: Any = [8, 16, 32]
    width_mult: Any = 1.0
    kernel_size: Any = [3, 5]
    block: Any = list(BLOCK_TYPES)

    @field_validator("n_stages")
    @classmethod
    def _n_stages(cls, v: Any) -> Any:
        return parse_spec(v, kind=int, check=in_interval(1, 6))

    @field_validator("blocks_per_stage")
    @classmethod
    def _blocks(cls, v: Any) -> Any:
        return parse_spec(v, kind=int, check=in_interval(1, 8))

    @field_validator("base_channels")
    @classmethod
    def _channels(cls, v: Any) -> Any:
        return parse_spec(v, kind=int, check=in_interval(1, 1024))

    @field_validator("width_mult")
    @classmethod
    def _width(cls, v: Any) -> Any:
        return parse_spec(v, kind=float, check=in_interval(0.0, 8.0, low_open=True))

    @field_validator("kernel_size")
    @classmethod
    def _kernel(cls, v: Any) -> Any:
        return parse_spec(v, kind=int, check=in_choices((1, 3, 5, 7)), discrete=True)

    @field_validator("block")
    @classmethod
    def _block(cls, v: Any) -> Any:
        return parse_spec(v, kind=str, check=in_choices(BLOCK_TYPES))

    def params(self) -> list[Param]:
        return [to_param(f"arch.{name}", getattr(self, name)) for name in type(self).model_fields]


class Nb201ArchSpace(_Section):
    """NAS-Bench-201 cells: each of the 6 edges picks one op from ``ops``."""

    family: Literal["nb201"] = "nb201"
    ops: list[str] = list(NB201_OPS)
    channels: Any = 16
    n_cells: Any = 5

    @field_validator("ops")
    @classmethod
    def _ops(cls, ops: list[str]) -> list[str]:
        return parse_spec(ops, kind=str, check=in_choices(NB201_OPS))

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: Any) -> Any:
        return parse_spec(v, kind=int, check=in_interval(1, 1024))

    @field_validator("n_cells")
    @classmethod
    def _cells(cls, v: Any) -> Any:
        return parse_spec(v, kind=int, check=in_interval(1, 16))

    def params(self) -> list[Param]:
        edges = [to_param(f"arch.edge{i}", list(self.ops)) for i in range(N_EDGES)]
        return [
            to_param("arch.family", "nb201"),
            *edges,
            to_param("arch.channels", self.channels),
            to_param("arch.n_cells", self.n_cells),
        ]


ARCH_SPACES: dict[str, type[_Section]] = {"cnn": CnnArchSpace, "nb201": Nb201ArchSpace}
ArchSpace = Annotated[CnnArchSpace | Nb201ArchSpace, Field(discriminator="family")]


class PruneSpace(_Section):
    method: Any = list(PRUNE_METHODS)
    ratio: Any = {"low": 0.1, "high": 0.8}
    importance: Any = "l1"
    scope: Any = "global"

    @field_validator("method")
    @classmethod
    def _method(cls, v: Any) -> Any:
        return parse_spec(v, kind=str, check=in_choices(PRUNE_METHODS))

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, v: Any) -> Any:
        return parse_spec(v, kind=float, check=in_interval(0.0, 1.0, high_open=True))

    @field_validator("importance")
    @classmethod
    def _importance(cls, v: Any) -> Any:
        return parse_spec(v, kind=str, check=in_choices(IMPORTANCES))

    @field_validator("scope")
    @classmethod
    def _scope(cls, v: Any) -> Any:
        return parse_spec(v, kind=str, check=in_choices(("global", "layer")))

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
    bits: Any = [4, 8, 32]
    act_bits: Any = 8

    @field_validator("bits")
    @classmethod
    def _bits(cls, v: Any) -> Any:
        return parse_spec(v, kind=int, check=_bits_check, discrete=True)

    @field_validator("act_bits")
    @classmethod
    def _act_bits(cls, v: Any) -> Any:
        return parse_spec(v, kind=int, check=in_choices((2, 3, 4, 5, 6, 7, 8, 32)), discrete=True)

    def params(self) -> list[Param]:
        return [to_param("quant.bits", self.bits), to_param("quant.act_bits", self.act_bits)]


class DistillSpace(_Section):
    """Hinton's loss (``temperature``, ``alpha``) and, when ``features`` is on, a FitNets hint
    between intermediate features weighted by ``feature_weight``. Features are off by default:
    they cost a teacher forward pass per batch; ``features: [false, true]`` searches them."""

    enabled: Any = [True, False]
    temperature: Any = {"low": 1.0, "high": 8.0, "log": True}
    alpha: Any = {"low": 0.2, "high": 0.9}
    features: Any = False
    feature_weight: Any = {"low": 0.1, "high": 10.0, "log": True}

    @field_validator("enabled")
    @classmethod
    def _enabled(cls, v: Any) -> Any:
        return parse_spec(v, kind=bool)

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, v: Any) -> Any:
        return parse_spec(v, kind=float, check=in_interval(0.0, None, low_open=True))

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: Any) -> Any:
        return parse_spec(v, kind=float, check=in_interval(0.0, 1.0))

    @field_validator("features")
    @classmethod
    def _features(cls, v: Any) -> Any:
        return parse_spec(v, kind=bool)

    @field_validator("feature_weight")
    @classmethod
    def _feature_weight(cls, v: Any) -> Any:
        return parse_spec(v, kind=float, check=in_interval(0.0, None, low_open=True))

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
