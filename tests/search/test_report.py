"""Known answers for what the front looks like to a person: the markdown table of the parent
run's description, run names, rank labels that do not collide, which axes are logarithmic."""

from __future__ import annotations

import numpy as np
import pytest

from nascomp.search.front.plot import log_scaled, place_labels
from nascomp.search.front.report import compact, fmt, front_markdown, objectives_line

OBJECTIVES = {"val_accuracy": "max", "size_bytes": "min"}


def test_front_markdown_links_each_row_to_its_run() -> None:
    rows = [
        ("abcdef0123", {"val_accuracy": 0.99, "size_bytes": 73485.0}, "cnn plain | 32 bit"),
        (None, {"val_accuracy": 0.5, "size_bytes": 881.0}, "cnn plain | 4 bit"),
    ]
    text = front_markdown(rows, OBJECTIVES, "7", final=True, n_trials=20)
    assert text.splitlines() == [
        "**Pareto front (final)**: 2 models of 20 finished trials; "
        "max val_accuracy, min size_bytes",
        "",
        "| rank | val_accuracy | size_bytes | model | run |",
        "|---:|---:|---:|---|---|",
        "| 1 | 0.9900 | 73,485 | cnn plain / 32 bit "
        "| [abcdef01](#/experiments/7/runs/abcdef0123?workflowType=machine_learning) |",
        "| 2 | 0.5000 | 881 | cnn plain / 4 bit | - |",
    ]


def test_a_long_front_is_cut_between_rows_and_says_how_many_more() -> None:
    rows = [(f"run{i:04d}", {"val_accuracy": 0.5, "size_bytes": 1e3}, "m" * 100) for i in range(99)]
    text = front_markdown(rows, OBJECTIVES, "1", final=False, n_trials=99)
    assert len(text) <= 4800 and "(so far)" in text
    shown = sum(line.startswith("| ") and "run0" in line for line in text.splitlines())
    assert 0 < shown < 99
    assert text.endswith(f"... and {99 - shown} more: see pareto_front.json")


def test_objectives_line_and_cells() -> None:
    metrics = {"val_accuracy": 0.97916, "size_bytes": 6585.0, "latency_ms": 0.11823}
    line = objectives_line(metrics, ["val_accuracy", "size_bytes", "latency_ms"])
    assert line == "0.9792 · 6.58 kB · 0.118 ms"
    assert fmt(None) == "-" and fmt(3.0) == "3.0000" and fmt(12.0) == "12"


@pytest.mark.parametrize(
    ("name", "value", "text"),
    [
        ("test_accuracy", 0.5, "0.5000"),
        ("size_bytes", 881, "881 B"),
        ("size_bytes", 3.2e6, "3.2 MB"),
        ("macs", 1_234_567, "1.23M MACs"),
        ("params", 950, "950 params"),
        ("nonzero_params", 2.5e9, "2.5G nonzero"),
        ("latency_batch_ms", 12.34, "12.3 ms"),
        ("train_seconds", 12.34, "12.3 s"),
        ("latency_ms", None, "-"),
    ],
)
def test_compact_values_carry_their_unit(name: str, value: float, text: str) -> None:
    assert compact(name, value) == text


def test_costs_are_logarithmic_accuracies_linear() -> None:
    assert log_scaled("size_bytes", np.array([10.0, 3e6]))
    assert log_scaled("latency_ms", np.array([0.1, 0.2]))
    assert not log_scaled("val_accuracy", np.array([0.5, 0.9]))
    assert not log_scaled("size_bytes", np.array([0.0, 10.0]))  # a zero has no logarithm


@pytest.mark.parametrize("n_points", [1, 3, 8, 12])
def test_labels_of_coincident_points_never_overlap(n_points: int) -> None:
    anchors = np.zeros((n_points, 2))
    offsets = place_labels(anchors, [str(i + 1) for i in range(n_points)])
    placed = [o for o in offsets if o is not None]
    assert len(set(placed)) == len(placed)  # each at its own place
    assert len(placed) == min(n_points, 8)  # eight places around a point, then none
    assert offsets[: len(placed)] == placed  # the best ranks are placed first


def test_labels_of_distant_points_all_go_to_the_first_place() -> None:
    anchors = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    assert place_labels(anchors, ["1", "2", "3"]) == [(4.0, 4.0)] * 3
