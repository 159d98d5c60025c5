"""The Pareto plot: one panel per pair of objectives, every finished trial in grey, the front
highlighted and labelled with its rank (1 = first row of ``nascomp pareto``).

- Costs (sizes, latencies, MACs, parameter counts: every objective that is not an accuracy)
  are drawn on log axes when all their values are positive: one 3 MB trial would otherwise
  squeeze every other point into a corner.
- Each 2-D panel also rings the points that are non-dominated in that pair alone: a point of
  the full front may be dominated in one projection, and a pair's own trade-off is what the
  panel shows.
- Rank labels are placed greedily where they overlap no other label (:func:`place_labels`); a
  label with no free place is left out rather than drawn over another.

With one objective there are no pairs: the single panel shows it against the trial's order.
Matplotlib's Agg backend draws to a file without a display (servers, CI, Ray workers).
:func:`write_html` writes the same front as an interactive page (plotly): hover a point for its
run, model and values.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from nascomp.search.front.pareto import non_dominated_mask, to_minimise

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from nascomp.search.tracking.store import TrialRecord

_PANEL_INCHES = 4.2
_DPI = 110
_LABEL_POINTS = 8.0  # font size of rank labels
# Where a label may go around its point, in points, tried in this order.
_OFFSETS = ((4, 4), (4, -12), (-12, 4), (-12, -12), (10, 14), (10, -20), (-20, 14), (-20, -20))


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend, imported when a plot is drawn: 0.3 s
    of every `nascomp` command's start-up that only the end of a search and `report` need."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def log_scaled(name: str, values: np.ndarray) -> bool:
    """Whether an objective is drawn on a log axis: costs are, accuracies are not."""
    values = np.asarray(values, dtype=float)
    return not name.endswith("accuracy") and values.size > 0 and bool(np.all(values > 0))


def place_labels(
    anchors: np.ndarray, texts: Sequence[str], char_points: float = 0.62 * _LABEL_POINTS
) -> list[tuple[float, float] | None]:
    """An offset (points) for each label at ``anchors`` (n, 2, in points) such that no two
    placed labels' boxes overlap; None where every candidate place is taken. Earlier labels
    (better ranks) choose first."""
    boxes: list[tuple[float, float, float, float]] = []
    placed: list[tuple[float, float] | None] = []
    for (x, y), text in zip(np.asarray(anchors, dtype=float), texts, strict=True):
        width, height = char_points * len(text) + 1.0, _LABEL_POINTS + 1.0
        for dx, dy in _OFFSETS:
            box = (x + dx, y + dy, x + dx + width, y + dy + height)
            if not any(_overlap(box, other) for other in boxes):
                boxes.append(box)
                placed.append((float(dx), float(dy)))
                break
        else:
            placed.append(None)
    return placed


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


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
    plt = _pyplot()
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
    for ax, (x, y) in zip(axes.flat, pairs, strict=False):
        _rank_labels(ax, values, list(front), x, y)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The file's suffix picks the format (pareto --plot front.svg); PNG for any other name.
    suffix = path.suffix.lower().lstrip(".")
    figure.savefig(path, dpi=_DPI, format=suffix if suffix in _FORMATS else "png")
    plt.close(figure)
    return path


_FORMATS = frozenset({"png", "svg", "pdf", "jpg", "jpeg"})


def _coordinates(values: np.ndarray, x: int, y: int) -> tuple[np.ndarray, np.ndarray]:
    xs = np.arange(1, values.shape[0] + 1, dtype=float) if x < 0 else values[:, x]
    return xs, values[:, y]


def _panel(
    ax: Axes,
    values: np.ndarray,
    names: Sequence[str],
    modes: Sequence[str],
    front: list[int],
    x: int,
    y: int,
) -> None:
    xs, ys = _coordinates(values, x, y)
    ax.scatter(xs, ys, s=18, c="0.7", label="trials")
    if x >= 0:
        pair = to_minimise(values[:, [x, y]], [modes[x], modes[y]])
        in_pair = np.flatnonzero(non_dominated_mask(pair))
        ax.scatter(
            xs[in_pair],
            ys[in_pair],
            s=90,
            facecolors="none",
            edgecolors="tab:blue",
            linewidths=1.2,
            label="non-dominated in this pair",
            zorder=2,
        )
    if front:
        order = sorted(front, key=lambda i: xs[i])  # a staircase reads left to right
        ax.plot(xs[order], ys[order], c="tab:red", lw=1, alpha=0.5)
        ax.scatter(xs[front], ys[front], s=36, c="tab:red", label="Pareto front", zorder=3)
    if x >= 0 and log_scaled(names[x], xs):
        ax.set_xscale("log")
        # Under a decade, matplotlib labels the minor ticks too ("2x10^2 3x10^2 4x10^2 ..."),
        # which ran into each other on a panel's width: tilted, they do not.
        ax.tick_params(axis="x", which="both", labelrotation=30)
    if log_scaled(names[y], ys):
        ax.set_yscale("log")
    ax.set_xlabel("trial" if x < 0 else f"{names[x]} ({modes[x]})")
    ax.set_ylabel(f"{names[y]} ({modes[y]})")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")


def _rank_labels(ax: Axes, values: np.ndarray, front: list[int], x: int, y: int) -> None:
    """Rank labels of the front, where they do not collide (after layout: the final axes)."""
    if not front:
        return
    xs, ys = _coordinates(values, x, y)
    pixels = ax.transData.transform(np.column_stack([xs[front], ys[front]]))
    anchors = pixels * 72.0 / ax.figure.dpi  # in points, as the offsets are
    texts = [str(rank) for rank in range(1, len(front) + 1)]
    for i, text, offset in zip(front, texts, place_labels(anchors, texts), strict=True):
        if offset is not None:
            ax.annotate(
                text,
                (xs[i], ys[i]),
                textcoords="offset points",
                xytext=offset,
                fontsize=_LABEL_POINTS,
                color="tab:red",
            )


def _trial_values(
    trials: Sequence[TrialRecord], front: Sequence[TrialRecord], names: list[str]
) -> tuple[np.ndarray, list[int]]:
    values = np.array([[t.metrics[m] for m in names] for t in trials], dtype=float)
    index = {t.run_id: i for i, t in enumerate(trials)}
    return values, [index[t.run_id] for t in front if t.run_id in index]


def write_plot(
    trials: Sequence[TrialRecord],
    front: Sequence[TrialRecord],
    objectives: dict[str, str],
    path: Path,
    search_run_id: str = "",
) -> Path:
    """The Pareto plot of ``trials`` (finished, feasible) with ``front`` ranked, as a PNG."""
    values, ranked = _trial_values(trials, front, list(objectives))
    title = f"search {search_run_id[:12]}: {len(trials)} feasible trials, front of {len(ranked)}"
    return plot_front(values, list(objectives), list(objectives.values()), ranked, path, title)


def write_html(
    trials: Sequence[TrialRecord],
    front: Sequence[TrialRecord],
    objectives: dict[str, str],
    path: Path,
    describe: Any = None,
) -> Path:
    """The same panels as an interactive, self-contained page (plotly, its script inlined so
    it opens offline and in MLflow's artifact viewer). ``describe(record)`` names a model in
    the hover text."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names, modes = list(objectives), list(objectives.values())
    values, ranked = _trial_values(trials, front, names)
    pairs = list(itertools.combinations(range(len(names)), 2)) or [(-1, 0)]
    n_cols = min(3, len(pairs))
    n_rows = -(-len(pairs) // n_cols)
    figure = make_subplots(rows=n_rows, cols=n_cols)
    rank_of = {i: rank for rank, i in enumerate(ranked, start=1)}
    hover = [
        "<br>".join(
            [
                f"rank {rank_of[i]}" if i in rank_of else "not on the front",
                f"run {t.run_id}",
                *([str(describe(t))] if describe else []),
                *(f"{m} = {t.metrics[m]:.6g}" for m in names),
            ]
        )
        for i, t in enumerate(trials)
    ]
    for k, (x, y) in enumerate(pairs):
        row, col = k // n_cols + 1, k % n_cols + 1
        xs, ys = _coordinates(values, x, y)
        others = [i for i in range(len(trials)) if i not in rank_of]
        for members, name, color in ((others, "trials", "#b3b3b3"), (ranked, "front", "#d62728")):
            figure.add_trace(
                go.Scatter(
                    x=xs[members],
                    y=ys[members],
                    mode="markers+text" if name == "front" else "markers",
                    text=[str(rank_of[i]) for i in members] if name == "front" else None,
                    textposition="top right",
                    marker={"color": color, "size": 9 if name == "front" else 7},
                    hovertext=[hover[i] for i in members],
                    hoverinfo="text",
                    name=name,
                    showlegend=k == 0,
                    legendgroup=name,
                ),
                row=row,
                col=col,
            )
        x_type = "log" if x >= 0 and log_scaled(names[x], xs) else "linear"
        y_type = "log" if log_scaled(names[y], ys) else "linear"
        x_title = "trial" if x < 0 else f"{names[x]} ({modes[x]})"
        figure.update_xaxes(title_text=x_title, type=x_type, row=row, col=col)
        figure.update_yaxes(title_text=f"{names[y]} ({modes[y]})", type=y_type, row=row, col=col)
    figure.update_layout(
        title=f"{len(trials)} feasible trials, front of {len(ranked)}",
        height=420 * n_rows,
        width=460 * n_cols,
        template="plotly_white",
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.write_html(path, include_plotlyjs=True, full_html=True)
    return path


class _Point(NamedTuple):
    """What the writers above read of a trial record."""

    run_id: str
    metrics: dict[str, float]


def warm_up() -> None:
    """Draw a two-point front, as PNG and page, into a scratch folder: a process's first plots
    load pyplot, its fonts and plotly's validators (1.4 s on a 2-core VM), which the end
    of a search would otherwise pay after its last trial. The driver calls this on its main
    thread while the first trials train (``search.tune.warmup``)."""
    points: list[Any] = [  # read as TrialRecords: run_id and metrics
        _Point("a", {"accuracy": 0.5, "bytes": 1e3}),
        _Point("b", {"accuracy": 0.6, "bytes": 1e4}),
    ]
    objectives = {"accuracy": "max", "bytes": "min"}
    with tempfile.TemporaryDirectory(prefix="nascomp-warm-up-") as scratch:
        write_plot(points, points[1:], objectives, Path(scratch) / "front.png")
        write_html(points, points[1:], objectives, Path(scratch) / "front.html")
