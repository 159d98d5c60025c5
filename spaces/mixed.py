"""Layer groups for ``space.quant.mixed: groups``: which layers share a searched bit-width.

A group is a name, module-name globs (``fnmatch``, matched against ``model.named_modules()``
names) and the condition under which the sampled architecture has it. The ``cnn`` family has
built-in groups: ``stem``, ``stage1`` .. ``stageN`` and ``head``, where ``stage<k>`` exists only
when ``arch.n_stages >= k`` and so gets a parameter only then. Any family takes the user's own
groups (``space.quant.groups: {name: [glob, ...]}``), which exist in every architecture, or
``space.quant.groups: layers``: one group per quantized layer (convolution, Linear, Embedding,
recurrent, attention), which the search resolves (:func:`per_layer_groups`) from the space's first
architecture before it starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nascomp.spaces.params import Scalar, to_param

GROUP_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"
# ``space.quant.groups: layers``: one group per quantized layer of the model.
PER_LAYER = "layers"


@dataclass(frozen=True)
class LayerGroup:
    name: str
    patterns: tuple[str, ...]
    condition: tuple[str, tuple[Scalar, ...]] | None = None


def _possible_values(name: str, spec: Any) -> tuple[int, ...]:
    param = to_param(name, spec)
    values = param.possible_values()
    if values is None:  # an integer range
        assert param.low is not None and param.high is not None
        return tuple(range(int(param.low), int(param.high) + 1))
    return tuple(int(v) for v in values)


def cnn_groups(n_stages_spec: Any) -> list[LayerGroup]:
    """The cnn family's groups, given its ``n_stages`` spec: a stage group only where some
    sampled architecture has that stage, conditional where not all of them do."""
    n_stages = _possible_values("arch.n_stages", n_stages_spec)
    groups = [LayerGroup("stem", ("stem.*",))]
    for stage in range(1, max(n_stages) + 1):
        having = tuple(n for n in n_stages if n >= stage)
        condition = None if having == n_stages else ("arch.n_stages", having)
        groups.append(LayerGroup(f"stage{stage}", (f"stages.{stage - 1}.*",), condition))
    groups.append(LayerGroup("head", ("head.*",)))
    return groups


def builtin_groups(arch_space: Any) -> list[LayerGroup] | None:
    """The family's built-in groups, or None when it has none."""
    if getattr(arch_space, "family", None) == "cnn":
        return cnn_groups(arch_space.n_stages)
    return None


def user_groups(groups: Mapping[str, Sequence[str]]) -> list[LayerGroup]:
    return [LayerGroup(name, tuple(patterns)) for name, patterns in groups.items()]


def per_layer_groups(layer_names: Sequence[str]) -> dict[str, list[str]]:
    """One group per layer: each named after its module (lowercased, other characters as
    ``_``, ``layer`` for the root, ``_2``, ``_3``... where two names would clash), matching
    exactly that module (glob metacharacters escaped)."""
    groups: dict[str, list[str]] = {}
    for layer in layer_names:
        base = "".join(c if c in GROUP_NAME_CHARS else "_" for c in layer.lower()) or "layer"
        name, suffix = base, 2
        while name in groups:
            name, suffix = f"{base}_{suffix}", suffix + 1
        groups[name] = ["".join(f"[{c}]" if c in "*?[" else c for c in layer)]
    return groups


def check_user_groups(groups: Any) -> dict[str, list[str]] | str:
    """Validate ``space.quant.groups``: ``layers``, or names of lowercase letters, digits and
    underscores (they become parameter names), each with a non-empty list of glob strings."""
    if groups == PER_LAYER:
        return groups
    if not isinstance(groups, dict):
        raise ValueError(
            f"groups must be {PER_LAYER!r} (one group per quantized layer) or a "
            f"mapping of group name to module-name globs, got {groups!r}"
        )
    for name, patterns in groups.items():
        if not isinstance(name, str) or not name or set(name) - set(GROUP_NAME_CHARS):
            raise ValueError(
                f"group name {name!r} must use only lowercase letters, digits and underscores"
            )
        if (
            not isinstance(patterns, list)
            or not patterns
            or not all(isinstance(p, str) and p for p in patterns)
        ):
            raise ValueError(f"groups.{name} must be a non-empty list of globs, got {patterns!r}")
    return groups
