"""The joint space of architecture and compression, as plain data.

``SpaceConfig`` is the validated ``space:`` section of an experiment. :meth:`SpaceConfig.params`
flattens it into :class:`~spaces.params.Param` records named like the trial's flat config
(``arch.n_stages``, ``prune.ratio``, ``quant.bits``, ``distill.temperature``...). Conditional
parameters carry a condition: pruning's ratio only when a method is chosen, the temperature
and weight only when distillation is on.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, ClassVar, Union

from pydantic import Field, PrivateAttr, field_validator, model_validator

from nascomp.compressors.layers import ALL as ALL_LAYERS
from nascomp.compressors.layers import LAYER_KINDS
from nascomp.compressors.pruning import IMPORTANCES, PRUNE_METHODS, SCOPES, PruneConfig
from nascomp.compressors.quantization import (
    MIXED_MODES,
    VALID_ACT_BITS,
    VALID_BITS,
    QuantConfig,
)
from nascomp.spaces.mixed import (
    PER_LAYER,
    builtin_groups,
    check_user_groups,
    per_layer_groups,
    user_groups,
)
from nascomp.spaces.models import arch_spaces, model_family, plugin_families
from nascomp.spaces.nb201 import PathEncoding
from nascomp.spaces.params import (
    RANGE_KEYS,
    Param,
    Rule,
    Scalar,
    SpecSection,
    in_choices,
    in_interval,
    to_param,
)
from nascomp.spaces.zoo import plugin_space

_BITS_TEXT = "in 2..8, 16 or 32"


def _bits_check(value: Any) -> str | None:
    return None if value in VALID_BITS else f"bit-width must be {_BITS_TEXT}"


# The searchable families: each registered its space with its builder (spaces/models.py), and
# a plugin's family without one gets custom's kind (every key a builder argument).
ARCH_SPACES: dict[str, type[SpecSection]] = dict(
    sorted({**arch_spaces(), **{n: plugin_space(n) for n in plugin_families()}}.items())
)
# A discriminated union over them, so an error names the family's own fields.
ArchSpace = Annotated[Union[tuple(ARCH_SPACES.values())], Field(discriminator="family")]  # noqa: UP007


class PruneSpace(SpecSection):
    """The space over :class:`~nascomp.compressors.pruning.PruneConfig`: one spec per field of
    it (a test keeps the two in step); a trial gets a ``PruneConfig`` of sampled values."""

    _rules: ClassVar[dict[str, Rule]] = {
        "method": Rule(str, in_choices(PRUNE_METHODS)),
        "ratio": Rule(float, in_interval(0.0, 1.0, high_open=True)),
        "importance": Rule(str, in_choices(IMPORTANCES)),
        "scope": Rule(str, in_choices(SCOPES)),
    }
    method: Any = list(PRUNE_METHODS)
    ratio: Any = {"low": 0.1, "high": 0.8}
    # Fixed unless the experiment searches them: the pruner's own defaults.
    importance: Any = PruneConfig.importance
    scope: Any = PruneConfig.scope
    # Not a leaf of the space: one list of layer-name patterns that every trial keeps.
    ignore: list[str] = Field(default_factory=list)
    # Not a leaf either: how long torch-pruning's analysis may run (None: the pruner's default)
    analysis_timeout_s: float | None = Field(None, gt=0.0, allow_inf_nan=False)
    _plain: ClassVar[frozenset[str]] = frozenset({"ignore", "analysis_timeout_s"})
    # Not the user's to set: written into every structured trial's config (params below).
    _derived: ClassVar[frozenset[str]] = frozenset({"emptied"})

    def params(self) -> list[Param]:
        method = to_param("prune.method", self.method)
        pruning = tuple(m for m in method.possible_values() or () if m != "none")
        when = ("prune.method", pruning)
        ignore = (
            # Only when set, so the flat configs of searches without it stay as they were.
            [Param("prune.ignore", "fixed", choices=(tuple(self.ignore),), condition=when)]
            if self.ignore
            else []
        )
        timeout = (  # only when set, as ignore; only structured pruning runs the analysis
            [
                Param(
                    "prune.analysis_timeout_s",
                    "fixed",
                    choices=(float(self.analysis_timeout_s),),
                    condition=("prune.method", ("structured",)),
                )
            ]
            if self.analysis_timeout_s is not None and "structured" in pruning
            else []
        )
        # In every pruned trial's config: what a layer or group the target would empty keeps
        # (compressors.pruning.EMPTIED_GROUPS) is part of what the trial reproduces.
        emptied = (
            [Param("prune.emptied", "fixed", choices=("leave_one",), condition=when)]
            if pruning
            else []
        )
        return [
            method,
            *(
                to_param(f"prune.{name}", getattr(self, name), when)
                for name in ("ratio", "importance", "scope")
            ),
            *ignore,
            *emptied,
            *timeout,
        ]


# The default budget as validated (a range spec's every key), which a dumped experiment holds.
_DEFAULT_BUDGET = {"low": 2.0, "high": 8.0, "log": False, "step": None}


class QuantSpace(SpecSection):
    """The space over :class:`~nascomp.compressors.quantization.QuantConfig` (same fields).

    ``mixed`` (fixed, not searched): ``none``, one width per trial from ``bits``; ``groups``, one
    width from ``bits`` per layer group (``spaces.mixed``: the cnn family's stem, stages and
    head, or the user's ``groups`` of module-name globs; a group the architecture lacks gets no
    parameter); ``budget``, the average bits per kept weight is searched (``budget``) and the
    allocator picks each layer's width among ``bits`` after training.
    """

    _rules: ClassVar[dict[str, Rule]] = {
        "bits": Rule(int, _bits_check, discrete=True),
        "act_bits": Rule(int, in_choices(VALID_ACT_BITS), discrete=True),
        "budget": Rule(float, in_interval(2.0, 32.0)),
    }
    bits: Any = [4, 8, 32]
    act_bits: Any = QuantConfig.act_bits
    mixed: Any = "none"
    budget: Any = {"low": 2.0, "high": 8.0}
    groups: dict[str, list[str]] | str = Field(default_factory=dict)
    # The layer kinds compressed (compressors.layers): every kind, or Conv2d and Linear alone.
    layers: Any = ALL_LAYERS
    # ``groups: layers`` once resolved (:meth:`with_layer_groups`): whether other architectures
    # of the space may hold layers the first one lacks (they then take a searched ``bits``).
    _per_layer_others: bool | None = PrivateAttr(default=None)
    # Not leaves of the space: one mode per search, the user's groups every trial keeps, and the
    # layer kinds (one value, written into every trial's config).
    _plain: ClassVar[frozenset[str]] = frozenset({"mixed", "groups", "layers"})
    # The config's fields sampled from another spec: a width per group, a budget's choices, and
    # the allocator's criterion (one value).
    _derived: ClassVar[frozenset[str]] = frozenset({"group_bits", "widths", "sensitivity"})

    @field_validator("mixed", mode="before")
    @classmethod
    def _mixed_mode(cls, value: Any) -> str:
        # One mode per search: the modes have different parameters, which a search compares
        # by running once per mode (bench/mixed_precision.py).
        if not isinstance(value, str) or value not in MIXED_MODES:
            raise ValueError(
                f"mixed must be one of {', '.join(MIXED_MODES)} (one value, not searched); "
                f"got {value!r}"
            )
        return value

    @field_validator("layers", mode="before")
    @classmethod
    def _layer_kinds(cls, value: Any) -> str:
        if not isinstance(value, str) or value not in LAYER_KINDS:
            raise ValueError(
                f"layers must be one of {', '.join(LAYER_KINDS)} (one value, not searched); "
                f"got {value!r}"
            )
        return value

    @field_validator("groups", mode="before")
    @classmethod
    def _groups(cls, value: Any) -> Any:
        return check_user_groups(value)

    @model_validator(mode="before")
    @classmethod
    def _budget_low_from_the_widths(cls, data: Any) -> Any:
        """A budget range given without ``low`` (``--set space.quant.budget.high=6``) starts
        where the default budget would: at the narrowest width in ``bits``, not at 2."""
        budget = data.get("budget") if isinstance(data, dict) else None
        if not isinstance(budget, dict) or "low" in budget or not set(budget) <= RANGE_KEYS:
            return data
        try:
            widths = to_param("quant.bits", data.get("bits", cls.model_fields["bits"].default))
            narrowest = min(float(v) for v in widths.possible_values() or ())
        except (TypeError, ValueError):
            return data  # the bits' own check names what is wrong with them
        if narrowest > 2.0:
            return {**data, "budget": {**budget, "low": narrowest}}
        return data

    @model_validator(mode="after")
    def _budget_fits_widths(self) -> QuantSpace:
        if self.mixed == "budget":
            self._budget_params()
        if self.mixed == "groups" and len(widths := self._widths()) < 2:
            # Every group took the one width: the search ran as mixed: none, without a word.
            raise ValueError(
                "mixed: groups searches each layer group's width among bits: give two or "
                f"more (e.g. [4, 8]); got {list(widths)}"
            )
        # A setting its mode does not read was dropped without a word (the trials' params did
        # not even hold it), as data.factory with a name that reads none would be.
        if self.mixed != "groups" and self.groups and self.groups != PER_LAYER:  # said below
            raise ValueError(f"groups are read with mixed: groups; mixed is {self.mixed!r}")
        if self.mixed != "budget" and self.budget != _DEFAULT_BUDGET:  # a dump holds the default
            raise ValueError(f"budget is read with mixed: budget; mixed is {self.mixed!r}")
        return self

    def params(self, arch: Any = None) -> list[Param]:
        act_bits = to_param("quant.act_bits", self.act_bits)
        # In every trial's config: what a trial compressed is part of what it reproduces.
        layers = Param("quant.layers", "fixed", choices=(self.layers,))
        if self.mixed == "none":
            bits = to_param("quant.bits", self.bits)
            if act_bits.kind != "fixed":
                # Searched, it is drawn only where activations are quantized (weights below 16
                # bits): a 32-bit trial's act_bits meant nothing, and doubled a grid's points.
                quantized = tuple(b for b in bits.possible_values() or () if int(b) < 16)
                act_bits = dataclasses.replace(act_bits, condition=("quant.bits", quantized))
            return [bits, act_bits, layers]
        mode = Param("quant.mixed", "fixed", choices=(self.mixed,))
        if self.mixed == "budget":
            return [mode, act_bits, *self._budget_params(), layers]
        return [mode, act_bits, *self._group_params(arch), layers]

    def _widths(self) -> tuple[int, ...]:
        values = to_param("quant.bits", self.bits).possible_values()
        assert values is not None  # bits is discrete
        return tuple(sorted(int(v) for v in values))

    def _budget_params(self) -> list[Param]:
        widths = self._widths()
        if len(widths) < 2 or widths[0] >= 16:
            # Nothing to allocate: every layer took the one width, or fp16 and fp32 alone (no
            # quantized layer), and the search ran without a word.
            raise ValueError(
                "mixed: budget allocates each layer's width among bits: give two or more, one "
                f"of them under 16 (e.g. [2, 4, 8]); got {list(widths)}"
            )
        spec = self.budget
        if "budget" not in self.model_fields_set and widths[0] > 2:
            # The default budget, 2 to 8 bits, starts at the narrowest width in bits instead:
            # with bits [4, 8, 32], mixed: budget alone would otherwise be an error.
            spec = {**spec, "low": float(widths[0])} if widths[0] < 8 else float(widths[0])
        budget = to_param("quant.budget", spec)
        low = budget.low if budget.kind != "fixed" and budget.low is not None else None
        lowest = min(float(v) for v in budget.possible_values() or (low,))
        if lowest < widths[0]:
            raise ValueError(
                f"budget must be >= the narrowest width in bits ({widths[0]}); got {lowest}"
            )
        return [
            budget,
            Param("quant.widths", "fixed", choices=(widths,)),
            # Written into every trial's config: the allocator's criterion is part of what a
            # trial reproduces (compressors.allocation).
            Param("quant.sensitivity", "fixed", choices=("kl",)),
        ]

    def with_groups_covering(self) -> QuantSpace:
        """The user's groups, found to cover every quantized layer of the architectures the
        pre-flight built: ``bits`` is then not searched (it would change no model)."""
        covering = self.model_copy()
        covering._per_layer_others = False
        return covering

    def with_layer_groups(self, layer_names: list[str], others: bool) -> QuantSpace:
        """``groups: layers`` resolved: one group per quantized layer of
        ``layer_names`` (the space's first architecture); ``others``: other architectures may
        add layers, which then take a searched trial-wide width."""
        resolved = self.model_copy(update={"groups": per_layer_groups(layer_names)})
        resolved._per_layer_others = others
        return resolved

    def _group_params(self, arch: Any) -> list[Param]:
        if self.groups == PER_LAYER:
            raise ValueError(
                "quant.groups: 'layers' is resolved from the model when the search starts "
                "(search.preflight); this space has not been"
            )
        groups = user_groups(self.groups) if self.groups else builtin_groups(arch)
        if groups is None:
            family = getattr(arch, "family", None)
            raise ValueError(
                f"quant.groups: family {family!r} has no built-in layer groups (cnn has stem, "
                "stage<k>, head); give groups of module-name globs, e.g. "
                "{convs: ['features.*'], fc: ['classifier.*']}"
            )
        # Layers in no user group keep a trial-wide width; built-in groups cover every layer,
        # and so do per-layer groups when the architecture is fixed, and user groups the
        # pre-flight found to cover every layer it built (with_groups_covering).
        covered = not self.groups or self._per_layer_others is False
        fallback = [] if covered else [to_param("quant.bits", self.bits)]
        params = []
        for group in groups:
            params.append(to_param(f"quant.group_bits.{group.name}", self.bits, group.condition))
            params.append(
                Param(
                    f"quant.groups.{group.name}",
                    "fixed",
                    choices=(group.patterns,),
                    condition=group.condition,
                )
            )
        return [*fallback, *params]


class DistillSpace(SpecSection):
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


class SpaceConfig(SpecSection):
    arch: ArchSpace = Field(default_factory=ARCH_SPACES["cnn"])
    prune: PruneSpace = Field(default_factory=PruneSpace)
    quant: QuantSpace = Field(default_factory=QuantSpace)
    distill: DistillSpace = Field(default_factory=DistillSpace)

    @field_validator("arch", mode="before")
    @classmethod
    def _cnn_unless_named(cls, arch: Any) -> Any:
        """An arch mapping without ``family`` is of the default family (``cnn``), as ``--set
        space.arch.n_stages=[1]`` is: the file gave the mapping, not a new model (a misspelt
        key then gets cnn's did-you-mean). One holding a key of another family's alone
        (``builder``, ``model``, mlp's ``hidden``) still asks for ``family``."""
        if isinstance(arch, dict) and "family" in arch and arch["family"] is None:
            arch = {k: v for k, v in arch.items() if k != "family"}  # family: null, the default
        if not isinstance(arch, dict) or "family" in arch:
            return arch
        cnn = set(ARCH_SPACES["cnn"].model_fields)
        others = {f for space in ARCH_SPACES.values() for f in space.model_fields} - cnn
        if set(arch) & others:
            return arch
        return {"family": "cnn", **arch}

    @model_validator(mode="after")
    def _groups_exist(self) -> SpaceConfig:
        if self.quant.groups == PER_LAYER and self.quant.mixed != "groups":
            raise ValueError("quant.groups: 'layers' needs quant.mixed: groups")
        if self.quant.mixed == "groups" and self.quant.groups != PER_LAYER:
            self.quant.params(self.arch)  # a family without built-in groups needs the user's
        return self

    def params(self) -> list[Param]:
        """Every parameter of the joint space, in sampling order (conditions come after)."""
        return [
            *self.arch.params(),
            *self.prune.params(),
            *self.quant.params(self.arch),
            *self.distill.params(),
        ]

    def unread_notes(self) -> list[str]:
        """A line per condition that can never hold, naming the settings the user gave that it
        gates (``prune.ratio`` with ``prune.method: [none]``, ``distill.temperature`` with
        ``distill.enabled: false``): no trial reads them. Notes, not errors: ``--set
        space.distill.enabled=false`` on a file that tunes distillation is a fair comparison."""
        params = self.params()
        values = {param.name: param.possible_values() for param in params}
        never: set[str] = set()
        unread: dict[tuple[str, tuple[Scalar, ...]], list[str]] = {}
        for param in params:
            if param.condition is None:
                continue
            other, allowed = param.condition
            possible = values.get(other)
            if other not in never and (possible is None or set(possible) & set(allowed)):
                continue
            never.add(param.name)
            section_name, _, field = param.name.partition(".")
            section = getattr(self, section_name, None)
            if section is not None and field in section.model_fields_set:
                unread.setdefault(param.condition, []).append(param.name)
        quant = self.quant
        widths = to_param("quant.bits", quant.bits).possible_values() or ()
        act = to_param("quant.act_bits", quant.act_bits)
        if (
            quant.mixed == "none"
            and act.kind == "fixed"
            and "act_bits" in quant.model_fields_set
            and all(int(b) >= 16 for b in widths)
        ):  # fixed, it has no condition to fail: activations are quantized below 16 bits
            unread[("quant.bits", tuple(b for b in VALID_BITS if b < 16))] = ["quant.act_bits"]
        notes = []
        for (other, allowed), names in unread.items():
            why = (
                f"{other} is never sampled either"
                if other in never
                else f"{other} is {_shown(values.get(other))}"
            )
            them = "it" if len(names) == 1 else "them"
            when = (
                f"trials read {them} only when {other} is {_shown(allowed)}, and "
                if allowed
                else ""
            )
            shown = ", ".join(f"space.{name}" for name in names)
            notes.append(f"{shown} {'is' if len(names) == 1 else 'are'} never read: {when}{why}")
        return notes

    def features(self) -> PathEncoding | None:
        """What the space adds to the ``pls`` sampler's model besides the parameters' one-hots
        (``nascomp.search.samplers.pareto_local.Features``): an nb201 cell's paths, else nothing."""
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


def _shown(values: Any) -> str:
    """``true``, or ``one of structured, unstructured``: values as the YAML writes them."""
    words = [str(v).lower() if isinstance(v, bool) else str(v) for v in values or ()]
    return words[0] if len(words) == 1 else f"one of {', '.join(words)}"


def arch_from_flat(flat: dict[str, Any]) -> dict[str, Any]:
    """The model builder's arch mapping from a trial's flat config (``arch.*`` keys)."""
    arch = {key[len("arch.") :]: value for key, value in flat.items() if key.startswith("arch.")}
    family = model_family(arch.get("family"))
    if family is None or family.space is None:
        return arch
    return family.space.to_arch(arch)


def arch_keys(family: str | None) -> list[str]:
    """Allowed keys of an ``arch`` section, for "did you mean" hints."""
    if family in ARCH_SPACES:
        return list(ARCH_SPACES[family].model_fields)
    return sorted({key for space in ARCH_SPACES.values() for key in space.model_fields})
