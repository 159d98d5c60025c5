"""bench/mixed_precision.py --combine: one table over several --json files, and the files it
must refuse (the same seeds twice pooled two searches into one run, silently)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from mixed_precision import SETTINGS, Refused, load_rows, main, write_rows

SETTINGS_A = dict.fromkeys(SETTINGS, 1) | {"coding": "packed", "data_root": "/data"}


def _rows(seed: int, *modes: str) -> list[dict]:
    return [
        {"mode": mode, "seed": seed, "val_accuracy": acc, "size_bytes": size}
        for mode in modes
        for acc, size in ((0.9, 1000.0), (0.8, 400.0 if mode == "budget" else 600.0))
    ]


def test_halves_combine_into_one_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_rows(a, SETTINGS_A, _rows(0, "none", "budget"))
    write_rows(b, SETTINGS_A, _rows(1, "none", "budget"))
    assert not list(tmp_path.glob("*.partial"))
    assert len(load_rows([a, b])) == 8
    assert main(["--combine", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    # Two seeds, two trials each per mode; "groups" is in neither file: no nan row for it.
    assert "| none | " in out and "| budget | " in out and "groups" not in out
    assert "| 4 |" in out and "over 2 seeds (2 higher, 0 lower)" in out


@pytest.mark.parametrize(
    ("second", "settings", "refusal"),
    [
        (_rows(0, "none"), SETTINGS_A, "none seed 0 is also in"),  # the same seeds twice
        (_rows(1, "none"), SETTINGS_A | {"epochs": 3}, "epochs is 3, but 1"),
        (_rows(1, "none"), SETTINGS_A | {"data_root": "/other"}, "data_root"),
    ],
)
def test_combine_refuses_files_that_do_not_make_one_run(
    tmp_path: Path, second: list[dict], settings: dict, refusal: str
) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_rows(a, SETTINGS_A, _rows(0, "none"))
    write_rows(b, settings, second)
    with pytest.raises(Refused, match=refusal):
        load_rows([a, b])


def test_combine_refuses_what_it_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "list.json").write_text("[]")  # an older bench's file: rows and no settings
    (tmp_path / "bad.json").write_text("{not json")
    for name in ("list.json", "bad.json", "missing.json"):
        with pytest.raises(SystemExit) as stop:
            main(["--combine", str(tmp_path / name)])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "not a file written by --json" in err, err
