"""torch-pruning internals nascomp relies on (tested with the range in pyproject.toml).

torch-pruning's pruners fix a schedule of per-step ratios at construction and measure every
target against the channel counts they saw first. nascomp drives the ratio from its own
schedule (the caller's training progress) and checkpoints a trial mid-pruning, so it sets the
next step's target and saves and restores those first counts; torch-pruning has no public API
for either.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from torch import nn


class AnalysisTimeout(Exception):
    """Raised in the thread of :func:`time_limit`'s block when it runs past its seconds."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`AnalysisTimeout` in this thread if the block is still running after
    ``seconds``.

    torch-pruning's dependency analysis can loop without end: where channels are sliced and
    joined again (ReXNet's partial residual, ``cat([y[:, :c] + x, y[:, c:]])``, four such
    blocks in a row), one group's list grows for ever (3,500 entries in 2 s over a graph of
    33 nodes, VainF/Torch-Pruning#474), and a trial or the search's pre-flight hung with no
    word. The loop is pure Python, so an exception set in its thread from a watching thread
    (CPython's ``PyThreadState_SetAsyncExc``) stops it at its next bytecode; signals would not
    do, since Ray Tune runs a trial in a thread that is not the main one."""
    ident = threading.get_ident()
    lock = threading.Lock()
    stop = threading.Event()
    done, fired = [False], [False]

    def watch() -> None:
        if stop.wait(seconds):
            return
        # Again every second while the block runs: torch-pruning's tracer calls the model
        # inside a bare ``except:``, which would swallow one that lands there.
        while True:
            with lock:
                if done[0]:
                    return
                fired[0] = True
                _set_async_exc(ident, AnalysisTimeout)
            if stop.wait(1.0):
                return

    watcher = threading.Thread(target=watch, name="nascomp-time-limit", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        with lock:
            done[0] = True
            stop.set()
            if fired[0]:  # set at the block's very end, and not raised yet: not raised at all
                _set_async_exc(ident, None)


def _set_async_exc(ident: int, exc: type[BaseException] | None) -> None:
    arg = ctypes.py_object(exc) if exc is not None else ctypes.c_void_p(0)  # NULL clears it
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), arg)


def traced_layer(tb: TracebackType | None) -> nn.Module | None:
    """The layer torch-pruning was working on where ``tb`` was raised: the ``layer`` or
    ``module`` of the innermost of its frames that holds one (a group's root, as
    ``DependencyGraph.get_pruning_group`` builds it; the layer an importance or a pruning
    function reads), or None when no frame of its holds one."""
    found = None
    while tb is not None:
        frame = tb.tb_frame
        if f"{os.sep}torch_pruning{os.sep}" in frame.f_code.co_filename:
            for name in ("layer", "module"):
                value = frame.f_locals.get(name)
                if isinstance(value, nn.Module):
                    found = value
                    break
        tb = tb.tb_next
    return found


def step_to(pruner: Any, target: float, leave_one: bool = True) -> None:
    """Prune, in one step, until ``target`` of the first channel counts are gone; with
    ``leave_one``, a group the target would empty keeps its strongest channel
    (:func:`_keeping_one`), else it is left whole."""
    pruner.per_step_pruning_ratio = [0.0, target]
    pruner.current_step = 0
    if not leave_one:
        pruner.step()
        return
    graph = pruner.DG
    graph.get_pruning_group, graph.get_all_groups = _keeping_one(
        pruner, graph.get_pruning_group, graph.get_all_groups
    )
    try:
        pruner.step()
    finally:
        del graph.get_pruning_group, graph.get_all_groups  # the class's methods again


def _keeping_one(pruner: Any, get_pruning_group: Any, get_all_groups: Any) -> tuple[Any, Any]:
    """``DG.get_pruning_group`` that leaves a group its strongest channel (in each of its
    channel groups: a grouped convolution's, a GroupNorm's) when the indices asked for are all
    of them.

    torch-pruning skips a group that would lose every channel (``check_pruning_group``), so a
    group whose channels all rank below the global threshold kept every one: a grouped model
    asked for 0.95 came back unpruned, and an MLP lost 99.7% of its prunable channels at 0.9
    but 8% at 0.99 (or none, pruned layer by layer). Leaving such a group one channel per
    channel group removes the most the target asks for that the model can lose and still run.
    Attention's groups are left to torch-pruning's head bookkeeping. The pruner lists its
    groups by asking for every channel of each (``get_all_groups``): those calls pass."""
    listing = [False]

    def all_groups(*args: Any, **kwargs: Any) -> Any:
        listing[0] = True
        try:
            yield from get_all_groups(*args, **kwargs)
        finally:
            listing[0] = False

    def leaving_one(module: nn.Module, pruning_fn: Any, idxs: Any) -> Any:
        graph = pruner.DG
        if listing[0]:
            return get_pruning_group(module, pruning_fn, idxs)
        out = graph.is_out_channel_pruning_fn(pruning_fn)
        channels = graph.get_out_channels(module) if out else graph.get_in_channels(module)
        if not channels or len(set(idxs)) < channels or module in pruner.num_heads:
            return get_pruning_group(module, pruning_fn, idxs)
        whole = get_pruning_group(module, pruning_fn, list(range(channels)))
        if any(dep.target.module in pruner.num_heads for dep, _ in whole):
            return get_pruning_group(module, pruning_fn, idxs)
        ch_groups = max(1, pruner._get_channel_groups(whole))
        importance = pruner.estimate_importance(whole)
        if importance is None or len(importance) != channels or channels % ch_groups:
            return get_pruning_group(module, pruning_fn, idxs)
        size = channels // ch_groups
        strongest = int(importance.view(ch_groups, size).mean(dim=0).argmax())
        kept = {strongest + g * size for g in range(ch_groups)}
        left = [i for i in idxs if i not in kept]
        # nothing left to remove (one channel per channel group already): torch-pruning's
        # check skips the group asked for whole
        return get_pruning_group(module, pruning_fn, left or idxs)

    return leaving_one, all_groups


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
