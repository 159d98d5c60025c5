"""A CSV file of rows (``data.name: csv``): tabular data without a factory of the user's.

``data.root`` is one ``.csv`` file (its test split is then held out, stratified) or a folder
holding ``train.csv`` and, optionally, ``test.csv`` with the same columns. ``data.options``:

- ``target``: the column of labels (default: the last column). Its values may be words or
  integers; the classes are its distinct values, sorted, and label i is ``classes[i]``;
- ``features``: the columns the model reads, in this order (default: every other column, in
  the file's order);
- ``sep``: the field separator (default ``,``).

Features must be numbers (booleans read as 0 and 1) and no cell may be empty: nascomp does not
guess an encoding or an imputation a deployed model would have to repeat. pandas reads the
file (quoting, number formats, large files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from nascomp.trainers.data import DataNotFoundError

TRAIN_FILE, TEST_FILE = "train.csv", "test.csv"
OPTIONS = ("target", "features", "sep")
_SHOWN = 8  # columns named in an error at most


class TableError(ValueError):
    """The CSV cannot be read as rows of numbers and a label; the message names the field."""


class Table(TensorDataset):
    """(row of float32 features, integer label) pairs, with each label's name (``classes``)
    and each feature's column (``feature_names``)."""

    def __init__(
        self, features: np.ndarray, labels: np.ndarray, classes: list[str], names: list[str]
    ) -> None:
        super().__init__(torch.from_numpy(features), torch.from_numpy(labels))
        self.classes = classes
        self.feature_names = names


def csv_files(root: str | None) -> tuple[Path, Path | None]:
    """(train file, test file or None) of ``data.root``."""
    path = Path(root) if root is not None else None
    if path is not None and path.is_file():
        return path, None
    if path is not None and (path / TRAIN_FILE).is_file():
        test = path / TEST_FILE
        return path / TRAIN_FILE, test if test.is_file() else None
    raise DataNotFoundError(
        f"data.root: a csv dataset is a .csv file, or a folder holding {TRAIN_FILE} (and "
        f"optionally {TEST_FILE}); got {root!r}"
    )


def check_options(options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TableError(f"data.options: csv reads {', '.join(OPTIONS)}; got {unknown}")
    if "target" in options and not isinstance(options["target"], str):
        raise TableError(f"data.options.target: a column name; got {options['target']!r}")
    features = options.get("features")
    if features is not None and (
        not isinstance(features, list)
        or not features
        or not all(isinstance(name, str) for name in features)
    ):
        raise TableError(f"data.options.features: a list of column names; got {features!r}")
    sep = options.get("sep", ",")
    if not isinstance(sep, str) or not sep:
        raise TableError(f"data.options.sep: the field separator, e.g. ',' or ';'; got {sep!r}")


def check_table(root: str | None, options: dict[str, Any]) -> None:
    """Config-time checks: the files, the options, and the columns they name (headers only)."""
    check_options(options)
    for path in filter(None, csv_files(root)):
        _columns(path, _read(path, options, nrows=0).columns, options)


def open_table(root: str | None, options: dict[str, Any]) -> tuple[Table, Table | None]:
    """The (train, test or None) datasets of the CSV file(s) at ``root``."""
    check_options(options)
    train_path, test_path = csv_files(root)
    frames = {path: _read(path, options) for path in filter(None, (train_path, test_path))}
    target, names = _columns(train_path, frames[train_path].columns, options)
    for path, frame in frames.items():
        _columns(path, frame.columns, options)
        _check_values(path, frame, target, names)
    values = [frame[target] for frame in frames.values()]
    classes = _classes(train_path, target, values)
    index = {value: i for i, value in enumerate(classes)}
    tables = [
        Table(
            frame[names].to_numpy(dtype=np.float32),
            np.array([index[_key(v)] for v in frame[target]], dtype=np.int64),
            [str(value) for value in classes],
            names,
        )
        for frame in frames.values()
    ]
    return tables[0], (tables[1] if len(tables) > 1 else None)


def _read(path: Path, options: dict[str, Any], nrows: int | None = None) -> Any:
    import pandas as pd

    try:
        frame = pd.read_csv(path, sep=options.get("sep", ","), nrows=nrows, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TableError(f"data.root: {path} is not a CSV pandas reads: {first}") from None
    frame.columns = [str(name).strip() for name in frame.columns]  # "a, b": "b"
    return frame


def _columns(path: Path, columns: Any, options: dict[str, Any]) -> tuple[str, list[str]]:
    """(target column, feature columns) of a file with ``columns``."""
    columns = [str(name) for name in columns]
    if len(columns) < 2:
        raise TableError(
            f"data.root: {path.name} has {len(columns)} column(s); a csv dataset needs features "
            f"and a label (is data.options.sep, now {options.get('sep', ',')!r}, the file's?)"
        )
    target = options.get("target", columns[-1])
    names = options.get("features") or [name for name in columns if name != target]
    missing = [name for name in [target, *names] if name not in columns]
    if missing:
        field = "target" if missing[0] == target else "features"
        raise TableError(
            f"data.options.{field}: {path.name} has no column {missing[0]!r}; its columns: "
            f"{_listed(columns)}"
        )
    if target in names:
        raise TableError(f"data.options.features: {target!r} is the target column")
    return target, names


def _check_values(path: Path, frame: Any, target: str, names: list[str]) -> None:
    import pandas as pd

    if not len(frame):
        raise TableError(f"data.root: {path.name} has a header and no rows")
    empty = frame[[*names, target]].isna().sum()
    if int(empty.sum()):
        column = str(empty[empty > 0].index[0])
        raise TableError(
            f"data.root: column {column!r} of {path.name} has {int(empty[column])} empty "
            f"cell(s); fill or drop them first (nascomp does not guess values)"
        )
    text = [name for name in names if not pd.api.types.is_numeric_dtype(frame[name])]
    if text:
        example = frame[text[0]].iloc[0]
        raise TableError(
            f"data.options.features: column {text[0]!r} of {path.name} holds text (e.g. "
            f"{example!r}); features are numbers: encode it, or leave it out of "
            f"data.options.features"
        )


def _classes(path: Path, target: str, values: list[Any]) -> list[Any]:
    """The target's distinct values, sorted: numbers as numbers, anything else as words."""
    import pandas as pd

    column = pd.concat(values, ignore_index=True)
    if pd.api.types.is_float_dtype(column):
        fractional = column[column != column.round()]
        if len(fractional):
            raise TableError(
                f"data.options.target: column {target!r} of {path.name} holds fractions (e.g. "
                f"{fractional.iloc[0]!r}); nascomp searches classifiers: name a column of classes"
            )
    found = {_key(value) for value in column}
    return sorted(found, key=lambda v: (isinstance(v, str), v))


def _key(value: Any) -> Any:
    """A label value as a class: integral numbers as int (1 and 1.0 are one class)."""
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, int | float | np.number):
        return int(value)
    return str(value)


def _listed(columns: list[str]) -> str:
    shown = ", ".join(repr(name) for name in columns[:_SHOWN])
    return shown + (f", ... ({len(columns)} in all)" if len(columns) > _SHOWN else "")
