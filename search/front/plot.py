"""The Pareto plot: one panel per pair of objectives, every finished trial in grey, the front
highlighted and labelled with its rank (1 = first row of ``nascomp pareto``).

With one objective there are no pairs: the single panel shows it against the trial's order.
Matplotlib's Agg backend draws to a file without a display (servers, CI, Ray workers).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

if TYPE_CHECKING:
    from nascomp.search.tracking.store import TrialRecord

_PANEL_INCHES = 4.2


def plot_front(
    values: np.ndarray,
    names: Sequence[str],
    modes: Sequence[str],
    front: Sequence[int],
    path: str | Path,
    title: str = "",
) -> Path:
    """Write the plot of ``values`` (n_trials, n_objectives, as measured) to ``path`` (PNG).

    ``front`` lists the rows on the Pareto front in rank order (as ``front_order`` gives them).
    """
    values = np.asarray(values, dtype=float).reshape(-1, len(names))
    pairs = list(itertools.combinations(range(len(names)), 2)) or [(-1, 0)]
    n_cols = min(3, len(pairs))
    n_rows = -(-len(pairs) // n_cols)
    figure, axes = plt.subplots(
        n_rows, n_cols, figsize=(_PANEL_INCHES * n_cols, _PANEL_INCHES * n_rows), squeeze=False
    )
    for ax, (x, y) in zip(axes.flat, pairs, strict=False):
        _panel(ax, values, names, modes, list(front), x, y)
    for ax in list(axes.flat)[len(pairs) :]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, format="png")
    plt.close(figure)
    return path


def _panel(
    ax: plt.Axes,
    values: np.ndarray,
    names: Sequence[str],
    modes: Sequence[str],
    front: list[int],
    x: int,
    y: int,
) -> None:
    xs = np.arange(1, values.shape[0] + 1) if x < 0 else values[:, x]
    ys = values[:, y]
    ax.scatter(xs, ys, s=18, c="0.7", label="trials")
    if front:
        order = sorted(front, key=lambda i: xs[i])  # a staircase reads left to right
        ax.plot(xs[order], ys[order], c="tab:red", lw=1, alpha=0.5)
        ax.scatter(xs[front], ys[front], s=36, c="tab:red", label="Pareto front", zorder=3)
        for rank, i in enumerate(front, start=1):
            ax.annotate(str(rank), (xs[i], ys[i]), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("trial" if x < 0 else f"{names[x]} ({modes[x]})")
    ax.set_ylabel(f"{names[y]} ({modes[y]})")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")


def write_plot(
    trials: Sequence[TrialRecord],
    front: Sequence[TrialRecord],
    objectives: dict[str, str],
    path: Path,
    search_run_id: str = "",
) -> Path:
    """The Pareto plot of ``trials`` (finished, feasible) with ``front`` ranked, as a PNG."""
    names = list(objectives)
    values = np.array([[t.metrics[m] for m in names] for t in trials])
    index = {t.run_id: i for i, t in enumerate(trials)}
    ranked = [index[t.run_id] for t in front if t.run_id in index]
    title = f"search {search_run_id[:12]}: {len(trials)} feasible trials, front of {len(ranked)}"
    return plot_front(values, names, list(objectives.values()), ranked, path, title=title)
