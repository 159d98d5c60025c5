"""The Python API that `import nascomp` offers (search/api.py): an experiment from any of its
forms, and a real search run from a mapping (NAS-Bench-201 lookups: seconds of trial time)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import nascomp

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nb201.yaml"


def test_an_experiment_from_a_path_a_mapping_or_an_experiment() -> None:
    from_path = nascomp.load_experiment(EXAMPLE, ["search.trials=7"])
    raw = yaml.safe_load(EXAMPLE.read_text())
    from_mapping = nascomp.load_experiment(raw, ["search.trials=7"])
    assert from_mapping == from_path
    assert raw["search"]["trials"] == 200  # the caller's mapping is left as it was
    assert nascomp.load_experiment(from_path) is from_path
    again = nascomp.load_experiment(from_path, ["search.seed=3"])
    assert again.search.seed == 3 and again.search.trials == 7
    assert nascomp.load_experiment().search.trials == 20  # the built-in quickstart


def test_bad_experiments_raise_one_line_config_errors() -> None:
    with pytest.raises(nascomp.ConfigError, match=r"^search\.trails: unknown key"):
        nascomp.load_experiment({"search": {"trails": 3}})
    with pytest.raises(nascomp.ConfigError, match="expected a YAML path, a mapping"):
        nascomp.load_experiment(42)  # type: ignore[arg-type]
    # A string is not read character by character as overrides
    with pytest.raises(nascomp.ConfigError, match=r"^overrides: expected a list of KEY.PATH="):
        nascomp.load_experiment(None, "search.trials=1")  # type: ignore[arg-type]


@pytest.mark.e2e
def test_run_search_from_a_mapping_returns_the_front(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["search"] = {"trials": 12, "concurrent": 2, "seed": 1}
    raw["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "api"}
    raw["storage"] = str(tmp_path / "results")
    lines: list[str] = []
    summary = nascomp.run_search(raw, echo=lines.append)
    assert len(summary.trials) == 12 and summary.count("ok") == 12
    err = capfd.readouterr().err
    assert "A new study created" not in err  # Optuna's INFO line
    assert "Creating initial MLflow database tables" not in err  # MLflow's
    # the end, in one line, as nascomp search says it
    assert lines[-1].startswith("12 trials in ") and lines[-1].endswith(
        f"s (12 ok); front of {len(summary.front)} models, search {summary.search_run_id}"
    )
    assert summary.front and all(r in summary.trials for r in summary.front)
    assert sum(line.startswith("[") for line in lines) == 12  # one line per trial
    best = max(summary.front, key=lambda r: r.metrics["val_accuracy"])
    assert best is summary.front[0]  # ranked by the first objective
    # The trials the parent run's end read are what the store holds once the search is over.
    from nascomp.search.tracking.store import Tracker

    stored = Tracker(raw["tracking"]["uri"], "api").trials(summary.search_run_id)
    assert summary.trials == stored and all(t.status == "ok" for t in stored)
