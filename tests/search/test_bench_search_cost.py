"""bench/search_cost.py's arithmetic on known answers: the reference front, the hypervolume a
search has reached by a given CPU-second, and when a mean curve first reaches a target."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from search_cost import (
    Refused,
    Run,
    hv_at,
    load_runs,
    main,
    reference_front,
    save_runs,
    seconds_to_reach,
)


def test_hypervolume_by_cpu_second() -> None:
    # (val_accuracy, size_bytes): a finds the two ends of the union's front, b its middle
    # point, late, after a stopped trial; b's first point is dominated.
    a = Run("a", 0, [10.0, 20.0], [(0.9, 100.0), (0.5, 10.0)], 0, 0)
    b = Run("b", 0, [5.0, 8.0, 30.0], [(0.4, 200.0), None, (0.8, 50.0)], 1, 0)
    reference = reference_front([a, b])
    assert reference.ideal.tolist() == [-0.9, 10.0] and reference.nadir.tolist() == [-0.5, 100.0]
    # Normalised: (0, 1), (1, 0) and (0.25, 4/9); reference point 1.1 per objective.
    corners = 1.1 * 0.1 + 0.1 * 1.1 - 0.1 * 0.1  # the two ends alone
    middle = (1.0 - 0.25) * (1.0 - 4 / 9)  # the box the middle point adds
    assert reference.hypervolume == pytest.approx(corners + middle)
    assert hv_at(a, 9.9, reference) == 0.0
    assert hv_at(a, 10.0, reference) == pytest.approx(1.1 * 0.1 / reference.hypervolume)
    assert hv_at(a, 20.0, reference) == pytest.approx(corners / reference.hypervolume)
    # b's dominated first point lies beyond the nadir: clipped, it adds nothing.
    assert hv_at(b, 8.0, reference) == pytest.approx(0.0)
    assert hv_at(b, 30.0, reference) == pytest.approx(0.85 * (1.1 - 4 / 9) / reference.hypervolume)


def test_seconds_to_reach_the_first_crossing() -> None:
    grid = np.array([1.0, 2.0, 3.0, 4.0])
    assert seconds_to_reach(grid, np.array([0.1, 0.5, 0.7, 0.9]), 0.7) == 3.0
    assert seconds_to_reach(grid, np.array([0.1, 0.5, 0.7, 0.9]), 0.95) is None


def _saved(path: Path, runs: list[Run], **changed: object) -> Path:
    settings = {
        "budget_s": 240.0,
        "train_samples": 2000,
        "image_size": 16,
        "inherit_epochs": 2,
        "test_samples": None,
    }
    save_runs(path, {**settings, **changed}, runs)
    return path


def test_saved_sets_combine_into_one_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    first = [Run("pls", 0, [10.0], [(0.9, 100.0)], 0, 0), Run("random", 0, [5.0], [None], 1, 0)]
    second = [
        Run("pls", 1, [20.0], [(0.5, 10.0)], 0, 0),
        Run("random", 1, [8.0], [(0.8, 50.0)], 0, 2),
    ]
    a, b = _saved(tmp_path / "a.json", first), _saved(tmp_path / "b.json", second)
    assert not list(tmp_path.glob("*.partial"))
    settings, runs = load_runs([a, b])
    assert settings["budget_s"] == 240.0 and settings["inherit_epochs"] == 2
    assert runs == first + second  # objectives come back as tuples, stopped trials as None
    # Reported as one run: both seeds in each strategy's mean, pls's final HV the target.
    plot = tmp_path / "curves.png"
    assert main(["--combine", str(a), str(b), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "2 seeds (0 to 1), 240 CPU-s per search" in out and plot.exists()
    assert "| random | " in out and "| pls | " in out


@pytest.mark.parametrize(
    ("second", "changed", "refusal"),
    [
        ([Run("pls", 1, [1.0], [(0.5, 1.0)], 0, 0)], {"budget_s": 120.0}, "budget_s is 120.0"),
        ([Run("pls", 1, [1.0], [(0.5, 1.0)], 0, 0)], {"inherit_epochs": 1}, "inherit_epochs"),
        ([Run("pls", 0, [1.0], [(0.5, 1.0)], 0, 0)], {}, "pls seed 0 is also in"),
        ([Run("random", 1, [1.0], [(0.5, 1.0)], 0, 0)], {}, "lacks seeds"),
        # what run_search never writes (an edited file, another bench's): one line each
        ([Run("nonsense", 0, [1.0], [(0.5, 1.0)], 0, 0)], {}, "unknown strategy 'nonsense'"),
        ([Run("random", 0, [1.0, 2.0], [(0.5, 1.0)], 0, 0)], {}, "2 times, 1 values"),
        ([Run("random", 0, [1.0], [(0.5, "big")], 0, 0)], {}, "not 2 numbers"),
        ([Run("random", 0, [1.0], [(0.5, 1.0)], 0, 0)], {"budget_s": -5}, "budget_s is -5"),
    ],
)
def test_combine_refuses_sets_that_differ(
    tmp_path: Path, second: list[Run], changed: dict, refusal: str
) -> None:
    a = _saved(tmp_path / "a.json", [Run("pls", 0, [1.0], [(0.9, 1.0)], 0, 0)])
    b = _saved(tmp_path / "b.json", second, **changed)
    with pytest.raises(Refused, match=refusal):
        load_runs([a, b])


def test_combine_refuses_a_file_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text('{"runs": []}')
    with pytest.raises(Refused, match="not a file saved by --save"):
        load_runs([tmp_path / "other.json"])
    with pytest.raises(SystemExit) as stop:
        main(["--combine", str(tmp_path / "other.json"), "--plot", str(tmp_path / "p.png")])
    assert stop.value.code == 2 and not (tmp_path / "p.png").exists()


def test_combine_refuses_another_benchs_file_and_reports_nothing_finished(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    other = _saved(tmp_path / "other.json", [Run("pls", 0, [1.0], [(0.9, 1.0)], 0, 0)])
    document = json.loads(other.read_text())
    other.write_text(json.dumps({**document, "bench": "mixed_precision"}))
    with pytest.raises(Refused, match="written by 'mixed_precision'"):
        load_runs([other])
    # Every trial stopped (a budget below one trial): said in a line, not a traceback; and
    # without --plot no picture is written (it was search_cost.png in the working folder).
    stopped = _saved(tmp_path / "stopped.json", [Run("pls", 0, [1.0], [None], 1, 0)])
    monkeypatch.chdir(tmp_path)
    assert main(["--combine", str(stopped)]) == 0
    assert "no trial finished in any search within 240 CPU-s" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.json", "stopped.json"]


def test_a_plot_or_save_path_that_cannot_be_written_is_refused_before_any_search(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for flag in ("--plot", "--save"):
        with pytest.raises(SystemExit) as stop:
            main(["--seeds", "1", flag, str(tmp_path / "missing" / "x.png")])
        assert stop.value.code == 2
        assert f"{flag}: a file in an existing folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["--seeds", "0"])
    assert stop.value.code == 2 and "--seeds: at least 1; got 0" in capsys.readouterr().err
