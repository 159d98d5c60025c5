"""Trial type ``nb201_lookup``: a NAS-Bench-201 cell's accuracy looked up, not trained.

Accuracies come from the NAS-Bench-201 table (``../shared/data/nasbench201/nb201_accuracy.csv``,
percentages, converted to fractions): the validation accuracy is the search objective, the test
accuracy is reported and never selects. Costs (params, size, MACs) come from the real PyTorch
network that ``spaces`` builds from the cell for the dataset's input shape and class count, so a
whole search costs milliseconds per trial and every architecture's truth is known.

Like :func:`trainers.trial.run_trial` it is a plain function of the trial's flat config: no Ray,
no MLflow. Keys it reads: ``arch.edge0..5`` (or ``arch.cell``), ``nb201.dataset``,
``nb201.table``.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from nascomp.compressors.measure import count_macs, count_params
from nascomp.compressors.size import model_size_bytes
from nascomp.spaces.models import build_model
from nascomp.spaces.nb201 import N_EDGES, cell_string, parse_cell
from nascomp.trainers.init import file_digest
from nascomp.trainers.settings import Section
from nascomp.trainers.trial import STATUS_OK, TrialOutcome

# dataset -> (CSV column prefix, input shape, number of classes) as NAS-Bench-201 trained them.
DATASETS: dict[str, tuple[str, tuple[int, int, int], int]] = {
    "cifar10": ("cifar10", (3, 32, 32), 10),
    "cifar100": ("cifar100", (3, 32, 32), 100),
    "ImageNet16-120": ("imagenet", (3, 16, 16), 120),
}
# What a lookup trial reports; objectives and constraints must come from these.
METRICS = ("val_accuracy", "test_accuracy", "params", "nonzero_params", "size_bytes", "macs")
TABLE_FILE = "nasbench201/nb201_accuracy.csv"
# Where the table is when nb201.table is not given: under $NASCOMP_DATA_ROOT when set (an
# installed nascomp has no ../shared beside it), else in the checkout's ../shared/data.
DATA_ROOT_ENV = "NASCOMP_DATA_ROOT"
DEFAULT_TABLE = Path(__file__).resolve().parents[1].parent / "shared/data" / TABLE_FILE
# The table was measured for NB201's own skeleton: C=16 channels, N=5 cells per stage.
CHANNELS, N_CELLS = 16, 5


class Nb201LookupConfig(Section):
    """Settings of ``trial: nb201_lookup`` (accuracies looked up in the NAS-Bench-201 table)."""

    dataset: Literal["cifar10", "cifar100", "ImageNet16-120"] = "cifar10"
    table: str | None = Field(
        None,
        description="default: $NASCOMP_DATA_ROOT/nasbench201/nb201_accuracy.csv, else "
        "../shared/data/nasbench201/nb201_accuracy.csv beside the checkout; a relative path "
        "is read from the working folder",
    )
    table_sha256: str | None = Field(
        None,
        description="filled in from the table when a lookup search reads it and logged with "
        "every trial, so that reproduce says when the table changed since; not set by hand",
    )

    def resolved_table(self) -> Path:
        if self.table:
            return Path(self.table).expanduser().resolve()
        root = os.environ.get(DATA_ROOT_ENV)
        # resolved, as a given path is: validating the experiment again keeps the same string
        return (Path(root).expanduser() / TABLE_FILE if root else DEFAULT_TABLE).resolve()


def table_problem(table: Path) -> str | None:
    """Why ``table`` cannot be read as the table (``does not exist``, ``is a folder``), or
    None."""
    if table.is_file():
        return None
    return "is a folder" if table.is_dir() else "does not exist"


def look_up_again(
    config: Mapping[str, Any],
    table: Path | None = None,
    named: str = "nb201.table",
    fix: str = "put the table the search read back there",
) -> tuple[TrialOutcome, bool]:
    """A logged lookup trial's ``run_lookup_trial`` again, and whether its table changed since
    the search read it (``nb201.table_sha256``; runs logged before it was recorded: False).
    ``table``: where the table is now, when not where the search read it (another machine),
    as the option ``named`` gave it. A table that is gone or does not read is a one-line
    ValueError naming it and ``fix`` (a traceback)."""
    if table is None:
        table = Path(str(config.get("nb201.table") or DEFAULT_TABLE))
    if problem := table_problem(table):
        raise ValueError(
            f"its NAS-Bench-201 table {str(table)!r} ({named}) {problem}: to look the cell up "
            f"again, {fix}"
        )
    logged = config.get("nb201.table_sha256")
    changed = bool(logged) and file_digest(table) != logged
    try:
        return run_lookup_trial({**config, "nb201.table": str(table)}), changed
    except (ValueError, KeyError, UnicodeDecodeError, csv.Error) as exc:
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise ValueError(f"its NAS-Bench-201 table {str(table)!r} ({named}): {text}") from None


def load_table(path: str, dataset: str) -> dict[str, tuple[float, float]]:
    """cell string -> (validation, test) accuracy in % on ``dataset``, read once per process,
    path and dataset while the file stays as it was (its size and modification time: a table
    edited between two searches of one Python session was looked up as it was first read).
    A table that is not NAS-Bench-201's in those columns is a ValueError naming the line and
    column: a cell the lookup cannot read, a value that is no percentage (``abc``, 150, or
    every value at most 1: fractions), a cell listed twice."""
    stat = Path(path).stat()
    return _read_table(path, dataset, (stat.st_mtime_ns, stat.st_size))


@lru_cache(maxsize=4)
def _read_table(path: str, dataset: str, stamp: tuple[int, int]) -> dict[str, tuple[float, float]]:
    """:func:`load_table`'s reading, cached by ``stamp`` (the file's mtime and size)."""
    prefix = _dataset(dataset)[0]
    columns = (f"{prefix}-val", f"{prefix}-test")
    table: dict[str, tuple[float, float]] = {}
    lines: dict[str, int] = {}
    with io.StringIO(_utf8(Path(path).read_bytes()), newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            line = reader.line_num  # the row's last line in the file
            try:
                cell = cell_string(parse_cell(row.get("cellstr") or ""))
            except ValueError as exc:
                raise ValueError(f"line {line}, column cellstr: {exc}") from None
            if cell in lines:
                raise ValueError(f"line {line}: cell {cell} is listed on line {lines[cell]} too")
            table[cell] = (_percent(row, columns[0], line), _percent(row, columns[1], line))
            lines[cell] = line
    if not table:
        raise ValueError("it holds no row below its header")
    if max(value for pair in table.values() for value in pair) <= 1.0:
        raise ValueError(
            f"every value of {columns[0]} and {columns[1]} is at most 1: the table holds "
            "accuracies in % (NAS-Bench-201's 0 to 100), not fractions"
        )
    return table


def _utf8(data: bytes) -> str:
    """``data`` as UTF-8 text; bytes that are not are a ValueError naming their line (the
    decoder's own error gave a position within a block of the file)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(
            f"line {line}: byte {data[exc.start]:#04x} is not UTF-8 text; save the table as UTF-8"
        ) from None


def _percent(row: dict[str, Any], column: str, line: int) -> float:
    text = row.get(column)
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 100.0:  # nan too
        given = repr(text) if text is not None else "nothing (the row is short)"
        raise ValueError(f"line {line}, column {column}: {given} is no accuracy in % (0 to 100)")
    return value


def missing_columns(table: str | Path, dataset: str) -> list[str]:
    """The columns a lookup on ``dataset`` reads that the table's header lacks (its first
    line, read alone): a CSV of something else passed the checks, and every trial failed
    with KeyError: 'cellstr'. A first line that is not UTF-8 is a ValueError saying so."""
    prefix = _dataset(dataset)[0]
    try:
        with Path(table).open("rb") as handle:
            first = _utf8(handle.readline())  # bytes that are not UTF-8: a ValueError
        header = next(csv.reader([first]), [])
    except (OSError, csv.Error):
        header = []
    needed = ["cellstr", f"{prefix}-val", f"{prefix}-test"]
    return [column for column in needed if column not in header]


def missing_cells(table: str | Path, dataset: str, ops: Sequence[str]) -> list[str]:
    """The cells of a space whose edges each pick from ``ops`` that the table lacks (every
    trial that drew one failed with a KeyError), in the space's order."""
    held = load_table(str(table), dataset)
    cells = (cell_string(edges) for edges in itertools.product(ops, repeat=N_EDGES))
    return [cell for cell in cells if cell not in held]


def lookup_accuracy(cell: str, dataset: str, table: str | Path) -> dict[str, float]:
    """Validation and test accuracy (fractions) of ``cell`` on ``dataset``."""
    row = load_table(str(table), dataset).get(cell_string(parse_cell(cell)))
    if row is None:
        raise KeyError(f"cell {cell!r} is not in the NAS-Bench-201 table {table}")
    return {"val_accuracy": row[0] / 100.0, "test_accuracy": row[1] / 100.0}


def network_costs(cell: str, dataset: str) -> dict[str, float]:
    """Params, size and MACs of the real NB201 network for ``cell`` on ``dataset``."""
    # Every edge of a cell sees the same channels and resolution, so the costs depend only on
    # the multiset of ops: 210 networks cover all 15,625 cells (tests check permutations).
    return dict(_costs(tuple(sorted(parse_cell(cell))), dataset))


@lru_cache(maxsize=1024)
def _costs(ops: tuple[str, ...], dataset: str) -> tuple[tuple[str, float], ...]:
    _, shape, n_classes = _dataset(dataset)
    arch = {"family": "nb201", "cell": cell_string(ops), "channels": CHANNELS, "n_cells": N_CELLS}
    model = build_model(arch, shape, n_classes)
    n_params = float(count_params(model))
    return (
        ("params", n_params),
        # The benchmark's trained networks are dense; counting the non-zeros of this untrained
        # copy would call its zero-initialised BatchNorm biases "pruned".
        ("nonzero_params", n_params),
        ("size_bytes", float(model_size_bytes(model, weight_bits=32))),
        ("macs", float(count_macs(model, shape))),
    )


def cell_from_flat(flat: Mapping[str, Any]) -> str:
    if "arch.cell" in flat:
        return str(flat["arch.cell"])
    return cell_string([flat[f"arch.edge{i}"] for i in range(N_EDGES)])


def run_lookup_trial(config: Mapping[str, Any]) -> TrialOutcome:
    """One trial of the lookup type: the cell's table accuracies plus its network's costs."""
    cell = cell_from_flat(config)
    dataset = str(config.get("nb201.dataset", "cifar10"))
    table = config.get("nb201.table") or DEFAULT_TABLE
    metrics = {**lookup_accuracy(cell, dataset, table), **network_costs(cell, dataset)}
    return TrialOutcome(status=STATUS_OK, metrics=metrics, info={"cell": cell})


def _dataset(name: str) -> tuple[str, tuple[int, int, int], int]:
    if name not in DATASETS:
        raise ValueError(f"unknown NAS-Bench-201 dataset {name!r}; allowed: {', '.join(DATASETS)}")
    return DATASETS[name]
