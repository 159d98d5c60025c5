"""A CSV file of rows (``data.name: csv``): tabular data without a factory of the user's.

``data.root`` is one ``.csv`` file (its test split is then held out, stratified) or a folder
holding ``train.csv`` and, optionally, ``test.csv`` with the same columns. ``data.options``:

- ``target``: the column of labels (default: the last column). Its values may be words or
  integers; the classes are its distinct values, sorted, and label i is ``classes[i]``;
- ``features``: the columns the model reads, in this order (default: every other column, in
  the file's order);
- ``drop``: columns left out of the default ``features`` (a row number, an id);
- ``sep``: the field separator (default ``,``; longer than one character, a regular
  expression, as pandas reads it);
- ``header``: whether the first line names the columns (default true; false: the columns are
  named by their position, ``0``, ``1``, ...);
- ``thousands`` and ``decimal``: how numbers are written (default: none and ``.``; ``1.500,5``
  is ``thousands: '.'``, ``decimal: ','``);
- ``encoding``: the files' text encoding (default ``utf-8``; e.g. ``latin-1``, ``cp1252``).

Numbers are features as they are (booleans read as 0 and 1). A column of words is one-hot
encoded: one input per distinct value of the training file, sorted, named ``column=value`` (at
most ``MAX_CATEGORIES`` values; more, such as ids or free text, is an error). A value only
``test.csv`` holds gets no input (all of its column's inputs 0, with a note), as a deployment
encodes a value it was not given. The exported ``preprocess.json`` lists the inputs and each
text column's values, so a deployment encodes a row the same way. Features that cannot help a
model (a row number, an id, one value in every row) are kept, with a note naming them.

A word is its text without the spaces around it, and only an empty cell is missing ("NA" is
a word). No cell may be empty: nascomp does not guess an imputation a deployed model would
have to repeat, nor read a column of numbers with a few words in it (a "?" placeholder,
"1,500") as words. pandas reads the file (quoting, large files).
"""

from __future__ import annotations

import codecs
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from nascomp.trainers.data import DataNotFoundError
from nascomp.trainers.init import file_digest

TRAIN_FILE, TEST_FILE = "train.csv", "test.csv"
OPTIONS = ("target", "features", "drop", "sep", "header", "thousands", "decimal", "encoding")
MAX_CATEGORIES = 100  # the distinct values a column of words may hold: one input each
# Fewer rows a class than this, on average, is no classification task (a column of counts or
# prices taken for labels: scikit-learn's diabetes target made 214 classes of 442 rows).
MIN_ROWS_PER_CLASS, MANY_CLASSES = 3, 10
_SHOWN = 8  # columns named in an error at most
# A column of distinct integers in this many rows or more is noted as an id or a row number.
MIN_ROWS_ID = 50


class TableError(ValueError):
    """The CSV cannot be read as rows of numbers and a label; the message names the field."""


class Table(TensorDataset):
    """(row of float32 features, integer label) pairs, with each label's name (``classes``),
    each input's name (``feature_names``: a column, or ``column=value`` of a one-hot encoded
    column of words), each such column's values (``categories``), and what the user should
    know about the file that is no error (``notes``)."""

    def __init__(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        classes: list[str],
        names: list[str],
        categories: dict[str, list[str]],
        notes: tuple[str, ...] = (),
    ) -> None:
        super().__init__(torch.from_numpy(features), torch.from_numpy(labels))
        self.classes = classes
        self.feature_names = names
        self.categories = categories
        self.notes = notes


def csv_files(root: str | None) -> tuple[Path, Path | None]:
    """(train file, test file or None) of ``data.root``."""
    path = Path(root) if root is not None else None
    if path is not None and path.is_file():
        return path, None
    if path is not None and (path / TRAIN_FILE).is_file():
        test = path / TEST_FILE
        return path / TRAIN_FILE, test if test.is_file() else None
    missing = (
        f"{path} does not exist"
        if path is not None and not path.exists()
        else f"{path} holds no {TRAIN_FILE}"
        if path is not None and path.is_dir()
        else f"got {root!r}"
    )
    raise DataNotFoundError(
        f"data.root: {missing}; a csv dataset is a .csv file, or a folder holding {TRAIN_FILE} "
        f"(and optionally {TEST_FILE})"
    )


def content_digest(root: str | None) -> dict[str, str]:
    """The SHA-256 of each CSV file at ``root``, by name: what a cached teacher's key holds of
    the data besides the config (a file edited in place, its labels or categories changed,
    must not find the teacher trained on it before)."""
    return {path.name: _digest(path) for path in filter(None, csv_files(root))}


def _digest(path: Path) -> str:
    stat = path.stat()
    return _digest_of(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=16)
def _digest_of(path: str, size: int, mtime_ns: int) -> str:
    """Read once per file version (path, size and modification time) and process."""
    return file_digest(path)


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` checked, column names as text (a header of numbers: ``target: 6``)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TableError(f"data.options: csv reads {', '.join(OPTIONS)}; got {unknown}")
    options = dict(options)
    if "target" in options:
        if not _is_name(options["target"]):
            raise TableError(f"data.options.target: a column name; got {options['target']!r}")
        options["target"] = str(options["target"])
    for key in ("features", "drop"):
        listed = options.get(key)
        if listed is None:
            continue
        if not isinstance(listed, list) or not listed or not all(map(_is_name, listed)):
            raise TableError(f"data.options.{key}: a list of column names; got {listed!r}")
        names = [str(name) for name in listed]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise TableError(f"data.options.{key}: {repeated[0]!r} is listed twice")
        options[key] = names
    if "features" in options and "drop" in options:
        raise TableError(
            "data.options.drop: leaves columns out of the default features; with "
            "data.options.features, list only the columns to use there"
        )
    sep = options.get("sep", ",")
    if not isinstance(sep, str) or not sep:
        raise TableError(f"data.options.sep: the field separator, e.g. ',' or ';'; got {sep!r}")
    if not isinstance(options.get("header", True), bool):
        raise TableError(
            f"data.options.header: true (the first line names the columns) or false; got "
            f"{options['header']!r}"
        )
    if "decimal" in options and options["decimal"] is None:
        # null: the default, as for thousands (pandas took None: a traceback)
        del options["decimal"]
    for key in ("thousands", "decimal"):
        mark = options.get(key)
        if mark is not None and (not isinstance(mark, str) or len(mark) != 1):
            raise TableError(f"data.options.{key}: one character, e.g. ',' or '.'; got {mark!r}")
    if options.get("thousands") is not None and options["thousands"] == options.get("decimal", "."):
        # pandas reads both as the thousands mark: 5.1 became 51.0, silently.
        raise TableError(
            f"data.options.thousands: {options['thousands']!r} is also the decimal mark "
            f"(data.options.decimal{'' if 'decimal' in options else ', by default'}); give "
            "them different characters, e.g. thousands: '.' with decimal: ','"
        )
    encoding = options.get("encoding", "utf-8")
    try:
        codecs.lookup(encoding if isinstance(encoding, str) else "")
    except LookupError:
        raise TableError(
            f"data.options.encoding: a text encoding Python knows, e.g. 'utf-8', 'latin-1' or "
            f"'cp1252'; got {encoding!r}"
        ) from None
    return options


def _is_name(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def check_table(root: str | None, options: dict[str, Any]) -> None:
    """Config-time checks: the files, the options, and the columns they name (headers only)."""
    options = check_options(options)
    train_path, test_path = csv_files(root)
    target, names = _columns(train_path, _read(train_path, options, nrows=0).columns, options)
    if test_path is not None:
        _has_columns(
            test_path, _read(test_path, options, nrows=0).columns, train_path, target, names
        )


def open_table(root: str | None, options: dict[str, Any]) -> tuple[Table, Table | None]:
    """The (train, test or None) datasets of the CSV file(s) at ``root``."""
    options = check_options(options)
    train_path, test_path = csv_files(root)
    frames = {path: _read(path, options) for path in filter(None, (train_path, test_path))}
    target, names = _columns(train_path, frames[train_path].columns, options)
    if test_path is not None:
        _has_columns(test_path, frames[test_path].columns, train_path, target, names)
    for path, frame in frames.items():
        _check_values(path, frame, target, names)
    _same_kind(frames, target, "data.options.target")
    values = [frame[target] for frame in frames.values()]
    classes = _classes(train_path, target, values)
    index = {value: i for i, value in enumerate(classes)}
    categories = _categories(frames, names, train_path, options)
    notes = _useless_columns(train_path, frames[train_path], names, categories)
    if test_path is not None:
        notes += _unseen_values(test_path, frames[test_path], categories)
    notes += _unread_files(train_path)
    inputs = _input_names(names, categories)
    _refuse_repeated_inputs(inputs, names, categories)
    tables = []
    for frame in frames.values():
        features = _encoded(frame, names, categories)
        labels = np.array([index[_key(v)] for v in frame[target]], dtype=np.int64)
        table = Table(features, labels, [str(c) for c in classes], inputs, categories, notes)
        tables.append(table)
    return tables[0], (tables[1] if len(tables) > 1 else None)


def _useless_columns(
    path: Path, frame: Any, names: list[str], categories: dict[str, list[str]]
) -> tuple[str, ...]:
    """A note on each kind of feature column a model cannot learn from: a row number (what
    ``DataFrame.to_csv`` writes first, unless ``index=False``), distinct integer ids, and a
    column of one value. Kept, as the user may know better; the note says how to leave them
    out."""
    import pandas as pd

    kinds: dict[str, list[str]] = {"row numbers": [], "ids": [], "one value": []}
    for name in names:
        column = frame[name]
        if column.nunique() == 1:
            kinds["one value"].append(name)
        elif (
            name in categories
            or not pd.api.types.is_integer_dtype(column)
            or len(column) < MIN_ROWS_ID
            or not column.is_unique
        ):
            continue
        elif bool((column.diff().iloc[1:] == 1).all()):
            kinds["row numbers"].append(name)
        else:
            kinds["ids"].append(name)
    what = {
        "row numbers": "count the rows (0, 1, 2, ...: a row number, such as the index pandas "
        "writes unless to_csv(index=False))",
        "ids": "hold a different integer in every row (an id?)",
        "one value": "hold one value in every row",
    }
    return tuple(
        f"data.options.features: column(s) {_listed(found)} of {path.name} {what[kind]}: no "
        f"model can learn from that; leave them out with data.options.drop: {found}"
        for kind, found in kinds.items()
        if found
    )


def _unseen_values(path: Path, frame: Any, categories: dict[str, list[str]]) -> tuple[str, ...]:
    """A note for each column of words whose test values the training file lacks: those rows
    get no input of that column (all 0), as a deployment would encode them."""
    notes = []
    for name, known in categories.items():
        unseen = sorted(set(frame[name].astype(str)) - set(known))
        if unseen:
            rows = int((~frame[name].astype(str).isin(known)).sum())
            notes.append(
                f"data.root: column {name!r} of {path.name} holds {len(unseen)} value(s) the "
                f"training file does not (e.g. {unseen[0]!r}, in {rows} row(s)): those rows "
                f"have all of {name!r}'s inputs 0, as a deployed model would be fed them"
            )
    return tuple(notes)


def _unread_files(train: Path) -> tuple[str, ...]:
    """A note for a validation file beside ``train.csv``: an image folder's ``val/`` is its
    validation split, a csv folder's ``val.csv`` is not read (it was ignored silently)."""
    if train.name != TRAIN_FILE:
        return ()
    unread = [
        name
        for name in ("val.csv", "valid.csv", "validation.csv")
        if (train.parent / name).is_file()
    ]
    return tuple(
        f"data.root: {name} in {train.parent} is not read: a csv dataset's validation split is "
        f"data.val_fraction of {TRAIN_FILE} (put its rows into {TRAIN_FILE} to use them)"
        for name in unread
    )


def _refuse_repeated_inputs(
    inputs: list[str], names: list[str], categories: dict[str, list[str]]
) -> None:
    """Two inputs of one name (a column ``Sex=male`` beside a column of words ``Sex`` holding
    ``male``) would make ``preprocess.json`` ambiguous."""
    seen: set[str] = set()
    for name in inputs:
        if name in seen:
            sources = [f"column {name!r}"] * (name in names and name not in categories)
            sources += [
                f"value {value!r} of column {column!r}"
                for column, values in categories.items()
                for value in values
                if f"{column}={value}" == name
            ]
            raise TableError(
                f"data.options.features: two inputs would be named {name!r} "
                f"({' and '.join(sources)}); rename one of the columns"
            )
        seen.add(name)


def _categories(
    frames: dict[Path, Any], names: list[str], train: Path, options: dict[str, Any]
) -> dict[str, list[str]]:
    """Each column of words among the features: its distinct values in the training file,
    sorted (both files are checked to be words)."""

    found: dict[str, list[str]] = {}
    for name in names:
        if not _same_kind(frames, name, "data.options.features"):
            continue
        _refuse_numbers_as_words(
            name, sorted({str(v) for f in frames.values() for v in f[name]}), options
        )
        values = sorted({str(v) for v in frames[train][name]})
        if len(values) > MAX_CATEGORIES:
            raise TableError(
                f"data.options.features: column {name!r} holds {len(values)} distinct words "
                f"(e.g. {values[0]!r}), over the {MAX_CATEGORIES} one-hot inputs nascomp makes "
                f"of a column of words: encode it as numbers, or leave it out of "
                f"data.options.features"
            )
        found[name] = values
    return found


def _same_kind(frames: dict[Path, Any], name: str, field: str) -> bool:
    """Whether column ``name`` holds words; an error naming ``field`` when it holds numbers in
    one file and words in the other. A label ``?`` in a test file of integer labels made its
    ``"0"`` another class than the training file's ``0``, silently."""
    import pandas as pd

    words = {path: not pd.api.types.is_numeric_dtype(f[name]) for path, f in frames.items()}
    if any(words.values()) and not all(words.values()):
        text = next(path for path, word in words.items() if word)
        numbers = next(path for path, word in words.items() if not word)
        column = frames[text][name]
        example = next((v for v in column if not _is_number(v)), column.iloc[0])
        kind = "true/false" if pd.api.types.is_bool_dtype(frames[numbers][name]) else "numbers"
        raise TableError(
            f"{field}: column {name!r} holds {kind} in {numbers.name} and words in "
            f"{text.name} (e.g. {example!r}); give it one kind in both files"
        )
    return all(words.values())


def _input_names(names: list[str], categories: dict[str, list[str]]) -> list[str]:
    """Each input's name: the column's, or ``column=value`` for a column of words."""
    inputs = []
    for name in names:
        words = categories.get(name)
        inputs += [f"{name}={value}" for value in words] if words is not None else [name]
    return inputs


def _encoded(frame: Any, names: list[str], categories: dict[str, list[str]]) -> np.ndarray:
    """The rows as float32 inputs, a column of words as one input per value (one-hot; a
    value not in ``categories`` sets none of them)."""
    parts = []
    for name in names:
        if name in categories:
            values = np.array(categories[name], dtype=object)
            column = frame[name].astype(str).to_numpy(dtype=object)
            parts.append((column[:, None] == values[None, :]).astype(np.float32))
        else:
            parts.append(frame[name].to_numpy(dtype=np.float32)[:, None])
    return np.concatenate(parts, axis=1)


def _refuse_numbers_as_words(name: str, values: list[str], options: dict[str, Any]) -> None:
    """A column of words most of whose values are numbers is a column of numbers with a few
    placeholders (Adult's "?") or in another notation ("1,500"): one-hot encoding it would
    make each number a category, so it is an error naming what is not a number."""
    others = [v for v in values if not _is_number(v)]
    if not others and all(v.lstrip("+-").isdigit() for v in values):
        # integers pandas keeps as text: beyond 64 bits (an id of 25 digits)
        raise TableError(
            f"data.options.features: column {name!r} holds integers beyond 64 bits (e.g. "
            f"{values[-1]!r}): an id? leave it out with data.options.drop: [{name!r}]"
        )
    if not others:  # numbers each, yet text to pandas: the options' notation is not the file's
        raise TableError(
            f"data.options.decimal: column {name!r} holds numbers pandas did not read as "
            f"numbers with decimal {options.get('decimal', '.')!r} and thousands "
            f"{options.get('thousands')!r} (e.g. {values[0]!r}); give the file's own marks"
        )
    marks = [m for m in ",." if all(_is_number(v.replace(m, "")) for v in others)]
    if marks:
        hint = (
            f"numbers written with {marks[0]!r} (e.g. {others[0]!r}): set data.options."
            f"{_notation(marks[0], others)}: {marks[0]!r}"
        )
    elif len(others) * 2 >= len(values) and not (
        len(others) < len(values) and all(map(_is_float, others))
    ):
        return  # words (unless numbers beside "nan" or "inf": how a missing value is written)
    else:
        shown = ", ".join(repr(v) for v in others[:3])
        hint = (
            f"numbers and {len(others)} value(s) that are not ({shown}): fill or drop those "
            "cells first (missing values?), or leave the column out of data.options.features"
        )
    raise TableError(f"data.options.features: column {name!r} holds {hint}")


def _notation(mark: str, values: list[str]) -> str:
    """Which option ``mark`` is in ``values``: a decimal comma (one comma, not followed by three
    digits, in some value), else a thousands separator."""
    decimal = mark == "," and any(
        v.count(",") == 1 and len(v.rsplit(",", 1)[1]) != 3 for v in values
    )
    return "decimal" if decimal else "thousands"


def _is_number(value: Any) -> bool:
    """Whether ``value`` reads as a finite number ("nan" and "inf" do not: a missing value's
    spelling, not a measurement)."""
    try:
        return bool(np.isfinite(float(value)))
    except (TypeError, ValueError):
        return False


def _read(path: Path, options: dict[str, Any], nrows: int | None = None) -> Any:
    import pandas as pd

    try:
        frame = pd.read_csv(
            path,
            **_layout(options),
            nrows=nrows,
            skipinitialspace=True,
            thousands=options.get("thousands"),
            decimal=options.get("decimal", "."),
            encoding=options.get("encoding", "utf-8"),
            # Only an empty cell is missing: "NA", "None" or "n/a" are words a file may mean.
            keep_default_na=False,
            na_values=[""],
        )
    except UnicodeError as exc:  # UTF-16 without its BOM is a UnicodeError, not a decode one
        encoding = options.get("encoding", "utf-8")
        where = _bad_byte(path, encoding, exc) if isinstance(exc, UnicodeDecodeError) else exc
        raise TableError(
            f"data.options.encoding: {path} is not {encoding} text ({where}); name its "
            "encoding, e.g. 'latin-1' or 'cp1252'"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TableError(f"data.root: {path} is not a CSV pandas reads: {first}") from None
    if options.get("header", True):
        _refuse_repeated_names(path, options)
    frame.columns = [str(name).strip() for name in frame.columns]  # "a, b": "b"
    if "header" not in options:
        _refuse_data_as_header(path, frame.columns)
    for name in frame.columns:  # a word is its text without the spaces around it
        if not pd.api.types.is_numeric_dtype(frame[name]):
            frame[name] = frame[name].map(lambda v: v.strip() if isinstance(v, str) else v)
    return frame


def _is_float(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _layout(options: dict[str, Any]) -> dict[str, Any]:
    """pandas' arguments for the file's separator and header. A separator of more than one
    character is a regular expression, which pandas' C parser does not read: it fell back to
    the Python parser with a ParserWarning printed into the search's output."""
    sep = options.get("sep", ",")
    engine = {"engine": "python"} if len(sep) > 1 else {}
    return {"sep": sep, "header": 0 if options.get("header", True) else None, **engine}


def _refuse_data_as_header(path: Path, columns: Any) -> None:
    """A file without a header lost its first row to the column names ('5.1', '3.5', ...,
    'setosa'), silently. Names of which half or more are fractions (a number, not a whole
    one) are taken for data; whole numbers (0, 1, 2, ...) name columns by position and stay a
    header. ``header: true`` given keeps any first line as the names."""
    names = [str(name) for name in columns]
    fractions = [name for name in names if _is_number(name) and not _is_whole(name)]
    if len(fractions) * 2 >= len(names):
        raise TableError(
            f"data.options.header: the first line of {path.name} holds numbers "
            f"({_listed(names)}), not column names; for a file without a header give "
            "data.options.header: false (its columns are then named 0, 1, 2, ...), or "
            "header: true to keep them as names"
        )


def _is_whole(name: str) -> bool:
    return name.strip().lstrip("+-").isdigit()


def _bad_byte(path: Path, encoding: str, exc: UnicodeDecodeError) -> str:
    """Where in the file the first byte ``encoding`` cannot decode lies: pandas decodes in
    chunks, and its offset was into one of them."""
    raw = path.read_bytes()
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as whole:
        line = raw.count(b"\n", 0, whole.start) + 1
        return f"byte {raw[whole.start : whole.start + 1]!r} on line {line}"
    except LookupError:
        pass
    return f"byte {exc.object[exc.start : exc.start + 1]!r}"


def _refuse_repeated_names(path: Path, options: dict[str, Any]) -> None:
    """pandas renames a second column ``a`` to ``a.1``: the file's own names would not name
    its inputs (data.options.features, preprocess.json), silently."""
    import pandas as pd

    header = pd.read_csv(
        path,
        **{**_layout(options), "header": None},
        nrows=1,
        dtype=str,
        encoding=options.get("encoding", "utf-8"),
        keep_default_na=False,
    )
    names = [str(name).strip() for name in header.iloc[0]] if len(header) else []
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        data = (
            " (a file without a header? give data.options.header: false)"
            if all(map(_is_number, names))
            else ""
        )
        raise TableError(
            f"data.root: the header of {path.name} names column {repeated[0]!r} "
            f"{names.count(repeated[0])} times; give each column a name of its own{data}"
        )


def _columns(path: Path, columns: Any, options: dict[str, Any]) -> tuple[str, list[str]]:
    """(target column, feature columns) of a file with ``columns``."""
    columns = [str(name) for name in columns]
    if len(columns) < 2:
        raise TableError(
            f"data.root: {path.name} has {len(columns)} column(s); a csv dataset needs features "
            f"and a label (is data.options.sep, now {options.get('sep', ',')!r}, the file's?)"
        )
    target = options.get("target", columns[-1])
    dropped = options.get("drop", [])
    names = options.get("features") or [
        name for name in columns if name != target and name not in dropped
    ]
    missing = [name for name in [target, *names, *dropped] if name not in columns]
    if missing:
        field = (
            "target" if missing[0] == target else "drop" if missing[0] in dropped else "features"
        )
        raise TableError(
            f"data.options.{field}: {path.name} has no column {missing[0]!r}; its columns: "
            f"{_listed(columns)}"
        )
    if target in names:
        raise TableError(f"data.options.features: {target!r} is the target column")
    if not names:
        raise TableError(f"data.options.drop: leaves no column of {path.name} but the target")
    return target, names


def _has_columns(path: Path, columns: Any, train_path: Path, target: str, names: list[str]) -> None:
    """The test file holds the training file's target and feature columns (its own other
    columns are not read, a dropped one need not be there): a test.csv without one was a
    KeyError traceback, and one with `drop`'s column missing was refused."""
    columns = [str(name) for name in columns]
    missing = [name for name in [target, *names] if name not in columns]
    if missing:
        role = "its target" if missing[0] == target else "a feature"
        raise TableError(
            f"data.root: {path.name} has no column {missing[0]!r}, {role} in {train_path.name}; "
            f"its columns: {_listed(columns)}"
        )


def _check_values(path: Path, frame: Any, target: str, names: list[str]) -> None:
    import pandas as pd

    if not len(frame):
        raise TableError(f"data.root: {path.name} has a header and no rows")
    missing = frame[[*names, target]].isna()
    counts = missing.sum()
    if int(counts.sum()):
        columns = [str(c) for c in counts[counts > 0].index]
        listed = ", ".join(f"{c!r} {int(counts[c])}" for c in columns[:3])
        more = f" and {len(columns) - 3} more column(s)" if len(columns) > 3 else ""
        line = int(np.flatnonzero(missing.any(axis=1).to_numpy())[0]) + 2  # header is line 1
        raise TableError(
            f"data.root: {path.name} has empty cells (column and count: {listed}{more}; the "
            f"first on line {line}); fill or drop them first (nascomp does not guess values)"
        )
    # the target too: an inf label was an OverflowError traceback making it a class
    numbers = [n for n in [*names, target] if pd.api.types.is_float_dtype(frame[n])]
    infinite = np.isinf(frame[numbers].to_numpy(dtype=np.float64)) if numbers else None
    if infinite is not None and infinite.any():
        row, column = (int(i[0]) for i in np.nonzero(infinite))
        raise TableError(
            f"data.root: {path.name} holds {frame[numbers[column]].iloc[row]} in column "
            f"{numbers[column]!r} on line {row + 2}; replace infinite values first (nascomp "
            "does not guess values)"
        )
    # Inputs are float32: 1e39 became inf, and the error named a sample's input, not the cell
    huge = np.abs(frame[numbers].to_numpy(dtype=np.float64)) > np.finfo(np.float32).max
    if numbers and huge.any():
        row, column = (int(i[0]) for i in np.nonzero(huge))
        raise TableError(
            f"data.root: {path.name} holds {frame[numbers[column]].iloc[row]} in column "
            f"{numbers[column]!r} on line {row + 2}, beyond float32's range (3.4e38): scale "
            "the column, or leave it out with data.options.drop"
        )


def _classes(path: Path, target: str, values: list[Any]) -> list[Any]:
    """The target's distinct values, sorted: numbers as numbers, anything else as words."""
    import pandas as pd

    column = pd.concat(values, ignore_index=True)
    if not pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        _refuse_placeholder_labels(path, target, [str(v) for v in column], len(values[0]))
    if pd.api.types.is_float_dtype(column):
        fractional = column[column != column.round()]
        if len(fractional):
            raise TableError(
                f"data.options.target: column {target!r} of {path.name} holds fractions (e.g. "
                f"{float(fractional.iloc[0])!r}); nascomp searches classifiers: name a column "
                "of classes"
            )
    found = {_key(value) for value in column}
    if len(found) < 2:
        raise TableError(
            f"data.options.target: column {target!r} of {path.name} holds one value "
            f"({next(iter(found))!r}); name the column of labels (the default is the last)"
        )
    if len(found) > MANY_CLASSES and len(column) < MIN_ROWS_PER_CLASS * len(found):
        raise TableError(
            f"data.options.target: column {target!r} of {path.name} holds {len(found)} "
            f"distinct values in {len(column)} rows, under {MIN_ROWS_PER_CLASS} a class: a "
            "regression target? nascomp searches classifiers: name a column of classes"
        )
    return sorted(found, key=lambda v: (isinstance(v, str), v))


# How a missing label is written among numbers (case aside); a label of only punctuation
# ("?", "-") is one too.
_MISSING_WORDS = frozenset({"na", "n/a", "nan", "null", "none", "missing", "inf", "-inf"})


def _refuse_placeholder_labels(path: Path, target: str, labels: list[str], n_train: int) -> None:
    """Number labels with a few missing ones written as words ("?", "nan"): each placeholder
    became a class of its own, and the numbers classes of text ("0.0" beside "1"), with no
    word said."""
    others = sorted({v for v in labels if not _is_number(v)})
    if not others or len(others) == len(set(labels)):
        return  # numbers each (pandas read them as such), or words each
    placeholders = [
        v for v in others if v.lower() in _MISSING_WORDS or not any(c.isalnum() for c in v)
    ]
    if placeholders:
        count = sum(v in placeholders for v in labels)
        row = next(i for i, v in enumerate(labels) if v in placeholders)
        where = f"{path.name}'s line {row + 2}" if row < n_train else "the test file"
        raise TableError(
            f"data.options.target: column {target!r} holds number labels and {count} that are "
            f"not ({', '.join(repr(v) for v in placeholders[:3])}, first in {where}): missing "
            "labels? drop those rows first (nascomp does not guess labels)"
        )


def _key(value: Any) -> Any:
    """A label value as a class: integral numbers as int (1 and 1.0 are one class), booleans
    as themselves (named False and True)."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | float | np.number):
        return int(value)
    return str(value)


def _listed(columns: list[str]) -> str:
    shown = ", ".join(repr(name) for name in columns[:_SHOWN])
    return shown + (f", ... ({len(columns)} in all)" if len(columns) > _SHOWN else "")
