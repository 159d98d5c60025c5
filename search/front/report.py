"""The front as people read it: a markdown table for the search's MLflow run page, and short
run names that carry a trial's objective values into MLflow's runs table.

MLflow renders a run's description (the ``mlflow.note.content`` tag) as markdown, so the
parent run's page shows the front ranked, each row linking to its trial's run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nascomp.search.tracking.pages import run_page

# MLflow keeps tag values up to this many characters (nascomp's run log cuts at 5,000); rows
# past it are left out and counted, never cut in the middle.
_NOTE_LIMIT = 4800


def fmt(value: Any) -> str:
    """A metric for a table cell: thousands separators for counts, 4 digits for fractions."""
    if value is None:
        return "-"
    if float(value).is_integer() and abs(value) >= 10:
        return f"{int(value):,}"
    return f"{value:.4f}"


def compact(name: str, value: Any) -> str:
    """A metric in few characters, its unit saying which it is: ``0.9792``, ``6.6 kB``,
    ``0.118 ms``, ``1.2M MACs``."""
    if value is None:
        return "-"
    value = float(value)
    if name.endswith("accuracy"):
        return f"{value:.4f}"
    if name == "size_bytes":
        return _si(value, "B")
    if name.endswith("_ms"):
        return f"{value:.3g} ms"
    if name.endswith("_seconds"):
        return f"{value:.1f} s"
    unit = {"macs": "MACs", "params": "params", "nonzero_params": "nonzero"}.get(name, name)
    return _si(value, unit)


def _si(value: float, unit: str) -> str:
    """``6.58 kB`` for bytes, ``1.23M MACs`` for counts (SI prefixes, 3 significant digits)."""
    for prefix in ("", "k", "M", "G"):
        if abs(value) < 1000 or prefix == "G":
            number = f"{value:.0f}" if prefix == "" else f"{value:.3g}"
            return f"{number} {prefix}B" if unit == "B" else f"{number}{prefix} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def objectives_line(metrics: Mapping[str, Any], objectives: Sequence[str]) -> str:
    """``0.9792 · 6.6 kB · 0.118 ms``: what a trial's run name leads with. MLflow's runs table
    shows a name's first characters only, so values come first and short."""
    return " · ".join(compact(name, metrics.get(name)) for name in objectives)


def front_markdown(
    rows: Sequence[tuple[str | None, Mapping[str, Any], str]],
    objectives: Mapping[str, str],
    experiment_id: str,
    *,
    final: bool,
    n_trials: int,
) -> str:
    """The front as a markdown table: ``rows`` are (run id or None, metrics, model) in rank
    order; a run id becomes a link to that run's page in the MLflow UI."""
    names = list(objectives)
    state = "final" if final else "so far"
    head = [
        f"**Pareto front ({state})**: {len(rows)} models of {n_trials} finished trials; "
        + ", ".join(f"{mode} {name}" for name, mode in objectives.items()),
        "",
        "| rank | " + " | ".join(names) + " | model | run |",
        "|---:|" + "---:|" * len(names) + "---|---|",
    ]
    text = "\n".join(head)
    for rank, (run_id, metrics, model) in enumerate(rows, start=1):
        link = f"[{run_id[:8]}]({run_page(experiment_id, run_id)})" if run_id else "-"
        cells = [str(rank), *(fmt(metrics.get(m)) for m in names), model.replace("|", "/"), link]
        line = "\n| " + " | ".join(cells) + " |"
        more = f"\n\n... and {len(rows) - rank + 1} more: see pareto_front.json"
        if len(text) + len(line) + len(more) > _NOTE_LIMIT:
            return text + more
        text += line
    return text


def record_rows(
    front: Sequence[Any], describe: Callable[[dict[str, Any]], str]
) -> list[tuple[str | None, Mapping[str, Any], str]]:
    """Rows of :func:`front_markdown` from trial records (run_id, metrics, params)."""
    return [(r.run_id, r.metrics, describe(r.params)) for r in front]
