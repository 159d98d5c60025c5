"""``data.name: csv`` (trainers/tables.py): rows and labels read from real CSV files, known
answers for the columns, classes and splits, and a one-line error naming the field for each
file or option a user gets wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from nascomp.trainers.settings import DataConfig
from nascomp.trainers.tables import open_table

ROWS = """\
height, weight ,smoker,kind
1.5,60,true,b
1.7,80,false,a
1.6,"70",false,c
1.8,90,true,a
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_columns_labels_and_classes_come_out_as_written(tmp_path: Path) -> None:
    """The last column is the label by default; words become classes sorted, label i being
    classes[i]; booleans read as 0 and 1; spaces around a column's name are not part of it."""
    train, test = open_table(str(_write(tmp_path, "rows.csv", ROWS)), {})
    assert test is None
    assert train.feature_names == ["height", "weight", "smoker"]
    assert train.classes == ["a", "b", "c"]
    x, y = train.tensors
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    np.testing.assert_allclose(x[0].numpy(), [1.5, 60.0, 1.0])
    assert y.tolist() == [1, 0, 2, 0]


def test_a_column_of_words_is_one_hot_over_the_training_values(tmp_path: Path) -> None:
    """Each distinct word of the training file, sorted, is an input named column=value, 1
    where the row holds it; a word only the test file holds sets none of them (as a deployment
    following preprocess.json encodes it), with a note. A column of numbers in one file and
    words in the other is refused."""
    _write(tmp_path, "train.csv", "size,city,y\n1,Rome,0\n2,Oslo,1\n3,Rome,0\n")
    _write(tmp_path, "test.csv", "size,city,y\n4,Lima,1\n5,Oslo,0\n")
    train, test = open_table(str(tmp_path), {})
    assert test is not None
    assert train.feature_names == ["size", "city=Oslo", "city=Rome"]
    assert train.categories == {"city": ["Oslo", "Rome"]}
    assert train.tensors[0].tolist() == [[1, 0, 1], [2, 1, 0], [3, 0, 1]]
    assert test.tensors[0].tolist() == [[4, 0, 0], [5, 1, 0]]
    assert train.notes == (
        "data.root: column 'city' of test.csv holds 1 value(s) the training file does not "
        "(e.g. 'Lima', in 1 row(s)): those rows have all of 'city''s inputs 0, as a deployed "
        "model would be fed them",
    )
    _write(tmp_path, "test.csv", "size,city,y\nbig,Lima,1\n")
    with pytest.raises(ValueError, match=r"column 'size' holds numbers in train\.csv and words"):
        open_table(str(tmp_path), {})


def test_labels_of_numbers_in_one_file_and_words_in_the_other_are_refused(
    tmp_path: Path,
) -> None:
    """One "?" among a test file's integer labels made its "0" another class than the
    training file's 0: six classes for three, and every test label shifted, silently."""
    _write(tmp_path, "train.csv", "x,y\n1,0\n2,1\n3,2\n4,0\n")
    _write(tmp_path, "test.csv", "x,y\n1,0\n2,?\n3,2\n")
    with pytest.raises(
        ValueError,
        match=r"^data.options.target: column 'y' holds numbers in train\.csv and words in "
        r"test\.csv \(e\.g\. '\?'\); give it one kind in both files$",
    ):
        open_table(str(tmp_path), {})
    _write(tmp_path, "test.csv", "x,y\n1,0\n2,1\n3,2\n")
    train, test = open_table(str(tmp_path), {})
    flags = tmp_path / "flags"
    flags.mkdir()
    _write(flags, "train.csv", "x,y\n1,True\n2,False\n")
    _write(flags, "test.csv", "x,y\n1,yes\n2,no\n")
    with pytest.raises(ValueError, match=r"column 'y' holds true/false in train\.csv and words"):
        open_table(str(flags), {})
    assert test is not None and train.classes == ["0", "1", "2"]
    assert test.tensors[1].tolist() == [0, 1, 2]


def test_columns_no_model_can_learn_from_are_kept_with_a_note(tmp_path: Path) -> None:
    """A row number (pandas' index written by to_csv), distinct integer ids and a column of
    one value are named, one note per kind; real features are not."""
    rng = np.random.default_rng(0)
    frame = {
        "Unnamed: 0": np.arange(60),
        "customer": rng.permutation(1000)[:60] + 5000,
        "country": ["NL"] * 60,
        "age": rng.integers(18, 80, size=60),
        "score": rng.normal(size=60).round(3),
        "y": rng.integers(0, 2, size=60),
    }
    header = ",".join(frame)
    rows = [",".join(str(frame[c][i]) for c in frame) for i in range(60)]
    train, _ = open_table(str(_write(tmp_path, "n.csv", "\n".join([header, *rows]) + "\n")), {})
    assert train.notes == (
        "data.options.features: column(s) 'Unnamed: 0' of n.csv count the rows (0, 1, 2, ...: "
        "a row number, such as the index pandas writes unless to_csv(index=False)): no model "
        "can learn from that; leave them out with data.options.drop: ['Unnamed: 0']",
        "data.options.features: column(s) 'customer' of n.csv hold a different integer in "
        "every row (an id?): no model can learn from that; leave them out with "
        "data.options.drop: ['customer']",
        "data.options.features: column(s) 'country' of n.csv hold one value in every row: no "
        "model can learn from that; leave them out with data.options.drop: ['country']",
    )
    dropped, _ = open_table(str(tmp_path / "n.csv"), {"drop": ["Unnamed: 0", "customer"]})
    assert dropped.feature_names == ["country=NL", "age", "score"]
    assert len(dropped.notes) == 1
    options = {"features": ["age", "score"]}
    assert open_table(str(tmp_path / "n.csv"), options)[0].notes == ()


def test_the_encoding_is_an_option_and_a_wrong_one_is_named(tmp_path: Path) -> None:
    """A latin-1 file reads with ``encoding: latin-1``; read as utf-8 it names the option."""
    path = tmp_path / "l.csv"
    path.write_bytes("city,y\nMünchen,0\nZürich,1\n".encode("latin-1"))
    train, _ = open_table(str(path), {"encoding": "latin-1"})
    assert train.categories == {"city": ["München", "Zürich"]}
    with pytest.raises(ValueError) as caught:
        open_table(str(path), {})
    assert str(caught.value) == (  # the line in the file, not an offset into pandas' chunk
        f"data.options.encoding: {path} is not utf-8 text (byte b'\\xfc' on line 2); name its "
        "encoding, e.g. 'latin-1' or 'cp1252'"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (  # it was "train sample 4's input holds inf at (2,)": an index into the inputs
            "a,b,y\n1,2,0\n3,4,1\n5,-inf,0\n",
            "data.root: rows.csv holds -inf in column 'b' on line 4; replace infinite values "
            "first (nascomp does not guess values)",
        ),
        (  # pandas renamed the second "a" to "a.1", a name the file does not hold
            "a,b,a,y\n1,2,3,0\n4,5,6,1\n",
            "data.root: the header of rows.csv names column 'a' 2 times; give each column a "
            "name of its own",
        ),
    ],
)
def test_a_file_read_otherwise_than_it_says_is_refused_naming_where(
    tmp_path: Path, text: str, message: str
) -> None:
    _write(tmp_path, "rows.csv", text)
    with pytest.raises(ValueError) as caught:
        open_table(str(tmp_path / "rows.csv"), {})
    assert str(caught.value) == message


def test_what_a_file_writes_is_read_as_it_means(tmp_path: Path) -> None:
    """Only an empty cell is missing ("NA" and "None" are words), words lose the spaces around
    them, numbers follow the file's notation, and boolean labels keep their names."""
    text = 'city,amount,ok\n NA ,"1.500,5",true\nNone,2,false\nParis ,3,true\n'
    options = {"thousands": ".", "decimal": ","}
    train, _ = open_table(str(_write(tmp_path, "t.csv", text)), options)
    assert train.categories == {"city": ["NA", "None", "Paris"]}
    assert train.tensors[0].tolist() == [[1, 0, 0, 1500.5], [0, 1, 0, 2], [0, 0, 1, 3]]
    assert train.classes == ["False", "True"] and train.tensors[1].tolist() == [1, 0, 1]


def test_a_folder_gives_train_and_test_and_options_pick_the_columns(tmp_path: Path) -> None:
    """A class only the test file holds is still a class (both files' values, sorted);
    1 and 1.0 are one class; ``features`` sets the order."""
    _write(tmp_path, "train.csv", "a;b;label\n1;2;3\n4;5;1\n")
    _write(tmp_path, "test.csv", "a;b;label\n7;8;1.0\n9;9;2\n")
    options = {"target": "label", "features": ["b", "a"], "sep": ";"}
    train, test = open_table(str(tmp_path), options)
    assert test is not None
    assert train.classes == test.classes == ["1", "2", "3"]
    assert train.tensors[0].tolist() == [[2.0, 1.0], [5.0, 4.0]]
    assert train.tensors[1].tolist() == [2, 0]
    assert test.tensors[1].tolist() == [0, 1]


def test_a_csv_loads_as_splits_with_its_feature_names(tmp_path: Path) -> None:
    """Through ``data``: the test split is held out of one file, the inputs are normalised
    per feature, and the splits keep each feature's column and each class's name."""
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(200, 3)) * [1.0, 10.0, 100.0] + [0.0, 5.0, -50.0]
    labels = np.where(rows[:, 0] > 0, "up", "down")
    text = "x,y,z,move\n" + "".join(
        f"{a},{b},{c},{label}\n" for (a, b, c), label in zip(rows, labels, strict=True)
    )
    data = DataConfig(name="csv", root=str(_write(tmp_path, "m.csv", text))).load()
    assert data.input_shape == (3,) and data.n_classes == 2
    assert data.classes == ("down", "up") and data.feature_names == ("x", "y", "z")
    assert len(data.train_y) + len(data.val_y) + len(data.test_y) == 200
    assert data.train_x.std(dim=0).sub(1.0).abs().max() < 0.2
    assert data.name == "m.csv"


@pytest.mark.parametrize(
    ("text", "options", "expected"),
    [
        (ROWS, {"target": "kinds"}, "data.options.target: bad.csv has no column 'kinds'"),
        (ROWS, {"features": ["height", "age"]}, "data.options.features: bad.csv has no column"),
        (ROWS, {"features": ["height", "kind"]}, "'kind' is the target column"),
        (
            ROWS,
            {"label": "kind"},
            "data.options: csv reads target, features, drop, sep, header, thousands, decimal, "
            "encoding; got ['label']",
        ),
        (ROWS, {"encoding": "utf-9"}, "data.options.encoding: a text encoding Python knows"),
        (ROWS, {"drop": ["age"]}, "data.options.drop: bad.csv has no column 'age'"),
        (ROWS, {"drop": ["height", "weight", "smoker"]}, "data.options.drop: leaves no column"),
        (
            ROWS,
            {"drop": ["height"], "features": ["weight"]},
            "data.options.drop: leaves columns out of the default features; with "
            "data.options.features, list only the columns to use there",
        ),
        (
            "Sex,Sex=male,y\nmale,1,0\nfemale,0,1\n",
            {},
            "data.options.features: two inputs would be named 'Sex=male' (column 'Sex=male' and "
            "value 'male' of column 'Sex'); rename one of the columns",
        ),
        (
            "age,y\n20,a\n?,b\n30,a\n40,b\n",
            {},
            "data.options.features: column 'age' holds numbers and 1 value(s) that are not "
            "('?'): fill or drop those cells first (missing values?)",
        ),
        (
            'amount,y\n"1,500",a\n"2,000",b\n300,a\n',
            {},
            "column 'amount' holds numbers written with ',' (e.g. '1,500'): set "
            "data.options.thousands: ','",
        ),
        (
            "amount;y\n1,5;a\n2,25;b\n",
            {"sep": ";"},
            "column 'amount' holds numbers written with ',' (e.g. '1,5'): set "
            "data.options.decimal: ','",
        ),
        (  # "nan" read as a number made the hint's example an index error (a traceback)
            "age,y\n20.5,a\nnan,b\n30,a\n40,b\n",
            {},
            "data.options.features: column 'age' holds numbers and 1 value(s) that are not "
            "('nan'): fill or drop those cells first (missing values?)",
        ),
        (  # beside numbers, "NaN" is a missing value however many rows hold it (not a word)
            "age,y\n20.5,a\nNaN,b\nNaN,a\n",
            {},
            "column 'age' holds numbers and 1 value(s) that are not ('NaN')",
        ),
        (  # the same traceback: every value a number, none read as one
            ROWS,
            {"decimal": ","},
            "data.options.decimal: column 'height' holds numbers pandas did not read as numbers "
            "with decimal ',' and thousands None (e.g. '1.5')",
        ),
        (  # pandas read both as the thousands mark: 1.5 became 15.0, silently
            ROWS,
            {"thousands": "."},
            "data.options.thousands: '.' is also the decimal mark (data.options.decimal, by "
            "default); give them different characters",
        ),
        (ROWS, {"header": "no"}, "data.options.header: true (the first line names the columns)"),
        (  # the first row was taken for the header, silently: 149 rows of iris's 150
            "5.1,3.5,setosa\n4.9,3.0,setosa\n6.2,2.9,virginica\n",
            {},
            "data.options.header: the first line of bad.csv holds numbers ('5.1', '3.5', "
            "'setosa'), not column names; for a file without a header give "
            "data.options.header: false",
        ),
        (
            "1,1,0\n2,3,1\n",
            {},
            "names column '1' 2 times; give each column a name of its own (a file without a "
            "header? give data.options.header: false)",
        ),
        (ROWS, {"decimal": ",,"}, "data.options.decimal: one character, e.g. ',' or '.'"),
        (ROWS, {"features": "height"}, "data.options.features: a list of column names"),
        (ROWS, {"sep": ";"}, "bad.csv has 1 column(s)"),
        (
            "a,b\n" + "".join(f"w{i},{i % 2}\n" for i in range(101)),
            {},
            "data.options.features: column 'a' holds 101 distinct words (e.g. 'w0'), over the "
            "100 one-hot inputs",
        ),
        (
            "a,b,c\n1,2,3\n1,,\n2,3,\n",
            {},
            "data.root: bad.csv has empty cells (column and count: 'b' 1, 'c' 2; the first on "
            "line 3); fill or drop them first",
        ),
        ("a,b\n1,7\n2,7\n", {}, "data.options.target: column 'b' of bad.csv holds one value (7)"),
        (
            "a,b\n" + "".join(f"{i},{i * 7}\n" for i in range(40)),
            {},
            "column 'b' of bad.csv holds 40 distinct values in 40 rows, under 3 a class: a "
            "regression target?",
        ),
        (ROWS, {"features": ["height", "height"]}, "'height' is listed twice"),
        ("a,b\n1,0.5\n2,3\n", {}, "data.options.target: column 'b' of bad.csv holds fractions"),
        ("a,b\n", {}, "data.root: bad.csv has a header and no rows"),
        ("a,b\n1,2\n3,4,5\n", {}, "data.root: "),
        (  # an OverflowError traceback, making inf a class
            "a,b\n1,0.0\n2,1.0\n3,inf\n4,1.0\n",
            {},
            "data.root: bad.csv holds inf in column 'b' on line 4; replace infinite values",
        ),
        (  # "?" and "nan" became classes of their own, the numbers classes of text
            "a,b\n1,0\n2,1\n3,?\n4,2\n5,0\n",
            {},
            "data.options.target: column 'b' holds number labels and 1 that are not ('?', first "
            "in bad.csv's line 4): missing labels? drop those rows first",
        ),
        (
            "a,b\n1,0.0\n2,1.0\n3,nan\n4,1.0\n5,nan\n",
            {},
            "column 'b' holds number labels and 2 that are not ('nan', first in bad.csv's line 4)",
        ),
        (  # the hint named the decimal mark
            "id,a,b\n" + "".join(f"{10**24 + i * 7919},{i},{i % 2}\n" for i in range(6)),
            {},
            "data.options.features: column 'id' holds integers beyond 64 bits (e.g. "
            "'1000000000000000000039595'): an id? leave it out with data.options.drop: ['id']",
        ),
        (  # float32's inf, named as a sample's input
            "a,b\n1,0\n1e39,1\n2,0\n3,1\n",
            {},
            "data.root: bad.csv holds 1e+39 in column 'a' on line 3, beyond float32's range",
        ),
        (ROWS, {"encoding": "utf-16"}, "data.options.encoding: "),
    ],
)
def test_what_a_user_gets_wrong_is_one_line_naming_the_field(
    tmp_path: Path, text: str, options: dict, expected: str
) -> None:
    path = _write(tmp_path, "bad.csv", text)
    with pytest.raises(ValueError) as error:
        DataConfig(name="csv", root=str(path), options=options).load()
    message = str(error.value)
    if isinstance(error.value, ValidationError):
        message = error.value.errors()[0]["msg"].removeprefix("Value error, ")
    assert expected in message
    assert "\n" not in message


def test_a_test_file_needs_only_the_training_files_target_and_features(tmp_path: Path) -> None:
    """test.csv without the target (or a feature) was a KeyError traceback; a column `drop`
    leaves out of train.csv was required in test.csv too."""
    train = "id,a,b,y\n" + "".join(f"{i},{i % 3},{i % 5},{i % 2}\n" for i in range(20))
    _write(tmp_path, "train.csv", train)
    _write(tmp_path, "test.csv", "a,b\n1,2\n2,3\n")
    for options in ({}, {"drop": ["id"]}):
        with pytest.raises(ValueError) as error:
            DataConfig(name="csv", root=str(tmp_path), options=options).load()
        message = str(error.value)
        if isinstance(error.value, ValidationError):
            message = error.value.errors()[0]["msg"].removeprefix("Value error, ")
        assert message.startswith("data.root: test.csv has no column ")
        assert "in train.csv; its columns: 'a', 'b'" in message
    _write(tmp_path, "test.csv", "b,a,y\n1,2,0\n2,3,1\n")  # no id, the columns reordered
    fit, test = open_table(str(tmp_path), {"drop": ["id"]})
    assert test is not None and fit.feature_names == test.feature_names == ["a", "b"]
    assert test.tensors[0][0].tolist() == [2.0, 1.0]


def test_a_csv_refuses_the_channels_first_layout(tmp_path: Path) -> None:
    """Taken, it made each row a one-channel signal: every column normalised by one mean and
    std, and the export's preprocess.json lost the columns' names (a helper's sweep)."""
    path = _write(tmp_path, "rows.csv", ROWS)
    with pytest.raises(ValidationError) as error:
        DataConfig(name="csv", root=str(path), layout="channels_first")
    assert error.value.errors()[0]["msg"].removeprefix("Value error, ") == (
        "data.layout: 'channels_first' is for custom and torchvision datasets; 'csv' holds "
        "rows of features (F,) (leave data.layout: auto)"
    )


def test_a_missing_file_or_folder_is_named_before_anything_is_read(tmp_path: Path) -> None:
    for root, what in ((tmp_path / "none.csv", "does not exist"), (tmp_path, "holds no train.csv")):
        with pytest.raises(ValidationError, match=rf"data.root: {root} {what}; a csv dataset is"):
            DataConfig(name="csv", root=str(root))
    with pytest.raises(ValidationError, match=r"data\.factory is only read with name: custom"):
        DataConfig(name="csv", root=str(_write(tmp_path, "ok.csv", ROWS)), factory="m:f")


def test_a_file_edited_in_place_is_other_data_to_the_teacher_cache(tmp_path: Path) -> None:
    """The teacher's cache key holds the CSV's content: labels changed in the same file must
    not find the teacher trained on the old ones."""
    from nascomp.search.experiment import teacher_job, validate_experiment

    path = _write(tmp_path, "rows.csv", ROWS)
    experiment = validate_experiment({"data": {"name": "csv", "root": str(path)}})
    before = teacher_job(experiment).key()
    again = validate_experiment({"data": {"name": "csv", "root": str(path)}})
    assert teacher_job(again).key() == (before)
    _write(tmp_path, "rows.csv", ROWS.replace(",b\n", ",c\n"))
    assert teacher_job(experiment).key() != before
    assert set(experiment.data.identity()["content"]) == {"rows.csv"}


def test_a_header_of_numbers_is_named_by_numbers(tmp_path: Path) -> None:
    """``--set data.options.target=2`` reads 2 as a number: it names column "2"."""
    path = _write(tmp_path, "n.csv", "0,1,2\n1.5,3,a\n2.5,4,b\n")
    train, _ = open_table(str(path), {"target": 2, "features": [1, 0]})
    assert train.feature_names == ["1", "0"] and train.classes == ["a", "b"]


def test_a_file_without_a_header_names_its_columns_by_position(tmp_path: Path) -> None:
    path = _write(tmp_path, "n.csv", "5.1,3.5,setosa\n4.9,3.0,setosa\n6.2,2.9,virginica\n")
    train, _ = open_table(str(path), {"header": False, "target": 2})
    assert train.feature_names == ["0", "1"] and train.classes == ["setosa", "virginica"]
    assert train.tensors[0][:, 0].tolist() == pytest.approx([5.1, 4.9, 6.2])
    kept, _ = open_table(str(path), {"header": True})  # the user's word: the line is names
    assert kept.feature_names == ["5.1", "3.5"] and len(kept) == 2
    # null is the default, as for thousands (decimal: null reached pandas: a traceback)
    same, _ = open_table(str(path), {"header": False, "target": 2, "decimal": None})
    assert same.tensors[0].tolist() == train.tensors[0].tolist()


def test_a_separator_of_several_characters_is_read_without_pandas_warning(
    tmp_path: Path,
) -> None:
    """pandas' C parser reads one character: it fell back to its Python parser with two
    ParserWarnings, and their source lines, printed before the search's own output."""
    import warnings

    path = _write(tmp_path, "s.csv", "a::b::y\n1::2::x\n3::4::z\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train, _ = open_table(str(path), {"sep": "::"})
    assert train.feature_names == ["a", "b"] and train.tensors[0].tolist() == [[1, 2], [3, 4]]


def test_a_validation_file_beside_train_csv_is_noted_as_unread(tmp_path: Path) -> None:
    """An image folder's val/ is its validation split; a csv folder's val.csv was ignored
    without a word (a helper's sweep)."""
    _write(tmp_path, "train.csv", ROWS)
    train, _ = open_table(str(tmp_path), {})
    assert not any("val.csv" in note for note in train.notes)
    _write(tmp_path, "val.csv", ROWS)
    train, _ = open_table(str(tmp_path), {})
    assert [note for note in train.notes if "val.csv" in note] == [
        f"data.root: val.csv in {tmp_path} is not read: a csv dataset's validation split is "
        "data.val_fraction of train.csv (put its rows into train.csv to use them)"
    ]
