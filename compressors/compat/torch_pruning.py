"""torch-pruning internals nascomp relies on (tested with the range in pyproject.toml).

torch-pruning's pruners fix a schedule of per-step ratios at construction and measure every
target against the channel counts they saw first. nascomp drives the ratio from its own
schedule (the caller's training progress) and checkpoints a trial mid-pruning, so it sets the
next step's target and saves and restores those first counts; torch-pruning has no public API
for either.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def step_to(pruner: Any, target: float) -> None:
    """Prune, in one step, until ``target`` of the first channel counts are gone."""
    pruner.per_step_pruning_ratio = [0.0, target]
    pruner.current_step = 0
    pruner.step()


def has_groups(pruner: Any) -> bool:
    """Whether the pruner's dependency graph holds any group of channels it may remove (none:
    every layer is ignored, or tied to one that is)."""
    groups = pruner.DG.get_all_groups(
        ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types
    )
    return next(iter(groups), None) is not None


def initial_channels(pruner: Any, names: dict[nn.Module, str]) -> dict[str, Any]:
    """The first channel counts a pruner measures targets against, keyed by layer name."""
    return {
        "scope_initial_channels": dict(pruner._scope_initial_channels),
        "init_out_channels": _by_name(pruner.layer_init_out_ch, names),
        "init_in_channels": _by_name(pruner.layer_init_in_ch, names),
    }


def _by_name(counts: dict[Any, Any], names: dict[nn.Module, str]) -> dict[str, Any]:
    """Per-module counts keyed by module name (the pruner's graph also holds operator nodes,
    which are not modules of the model and are rebuilt identically)."""
    return {names[module]: count for module, count in counts.items() if module in names}


def restore_initial_channels(
    pruner: Any, state: dict[str, Any], modules: dict[str, nn.Module]
) -> None:
    """Undo :func:`initial_channels` on a pruner rebuilt over the (pruned) model."""
    pruner._scope_initial_channels = dict(state["scope_initial_channels"])
    for counts, saved in (
        (pruner.layer_init_out_ch, state["init_out_channels"]),
        (pruner.layer_init_in_ch, state["init_in_channels"]),
    ):
        for name, count in saved.items():
            if name not in modules:
                raise ValueError(f"pruner state names layer {name!r}, not in the model")
            counts[modules[name]] = count
