"""The Python API that `import nascomp` offers (search/api.py): an experiment from any of its
forms, and a real search run from a mapping (NAS-Bench-201 lookups: seconds of trial time)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import nascomp
from nascomp.search.errors import SearchError, TrackingError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nb201.yaml"


def test_an_experiment_from_a_path_a_mapping_or_an_experiment() -> None:
    from_path = nascomp.load_experiment(EXAMPLE, ["search.trials=7"])
    raw = yaml.safe_load(EXAMPLE.read_text())
    from_mapping = nascomp.load_experiment(raw, ["search.trials=7"])
    assert from_mapping == from_path
    assert raw["search"]["trials"] == 200  # the caller's mapping is left as it was
    assert nascomp.load_experiment(from_path) == from_path
    with_paths = nascomp.load_experiment({"storage": Path("/tmp/results"), "search": {}})
    assert with_paths.storage == "/tmp/results"  # a Path, as a notebook writes it
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
    with pytest.raises(nascomp.ConfigError, match=r"^overrides: expected a list .*got \[5\]"):
        nascomp.load_experiment(None, [5])  # type: ignore[list-item]
    assert nascomp.load_experiment(None, None).search.trials == 20  # type: ignore[arg-type]
    # An Experiment changed after loading is checked again: a 0-trial search ran before.
    changed = nascomp.load_experiment()
    changed.search.trials = 0
    with pytest.raises(nascomp.ConfigError, match=r"^search\.trials: "):
        nascomp.load_experiment(changed)
    with pytest.raises(nascomp.ConfigError, match=r"^resume: a result folder or 'latest'; got T"):
        nascomp.run_search(None, resume=True)  # type: ignore[arg-type]
    # found after the teacher had trained, a bare TypeError
    with pytest.raises(nascomp.ConfigError, match=r"^echo: a function given each progress line"):
        nascomp.run_search(None, echo="quiet")  # type: ignore[arg-type]
    with pytest.raises(nascomp.ConfigError, match=r"^address: a Ray cluster's .*got 6379$"):
        nascomp.run_search(None, address=6379)  # type: ignore[arg-type]
    with pytest.raises(nascomp.ConfigError, match=r"^address: a Ray cluster's .*got ''$"):
        nascomp.run_search(None, address="")  # an unset variable's value: it ran locally


def test_errors_name_the_apis_arguments_not_the_command_lines_flags(tmp_path: Path) -> None:
    """The driver's messages are the command line's (--set, --resume); a notebook gave
    overrides= and resume=."""
    with pytest.raises(nascomp.ConfigError, match=r"^overrides 'search.trials': expected KEY"):
        nascomp.load_experiment(None, ["search.trials"])
    with pytest.raises(
        nascomp.ConfigError,
        match=r"e\.g\. overrides=\['space.prune.ratio.low=\{low: 1, high: 4\}'\]$",
    ):
        nascomp.load_experiment(None, ["space.prune.ratio.low.high=1"])
    missing = tmp_path / "gone"
    with pytest.raises(
        nascomp.SearchError, match=rf"^resume {missing}: no such folder; .+ or resume='latest' for"
    ):
        nascomp.run_search(None, resume=str(missing), echo=None)
    # the store's own messages too (a helper's sweep): they said "fix --tracking-uri"
    with pytest.raises(TrackingError, match=r"unreachable .*; start it or fix tracking\.uri$"):
        nascomp.run_search(None, overrides=["tracking.uri=http://127.0.0.1:1"], echo=None)


def test_a_process_that_started_ray_itself_is_told_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ray's own "Maybe you called ray.init twice" came after every check had passed."""
    import sys
    from types import SimpleNamespace

    from nascomp.search.api import _check_no_ray_here

    monkeypatch.setitem(sys.modules, "ray", SimpleNamespace(is_initialized=lambda: True))
    with pytest.raises(nascomp.SearchError, match=r"^Ray is already initialised in this proc"):
        _check_no_ray_here(None)
    monkeypatch.setitem(sys.modules, "ray", SimpleNamespace(is_initialized=lambda: False))
    _check_no_ray_here(None)


def test_the_calling_process_is_left_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a search changed in a notebook's process: Ray's PYTHONBREAKPOINT and MLflow's
    request retries left in the environment, Ray's SIGTERM handler, one torch thread and
    reseeded generators (the teacher trains in the driver)."""
    import os
    import random
    import signal

    import numpy as np
    import torch

    from nascomp.search.api import process_state_kept

    monkeypatch.setenv("NASCOMP_TEST_KEPT", "1")
    # As in a fresh notebook: an earlier test's ray.init in this worker may have left Ray's.
    monkeypatch.delenv("PYTHONBREAKPOINT", raising=False)
    import faulthandler
    import logging
    import sys

    threads = torch.get_num_threads()
    term = signal.getsignal(signal.SIGTERM)
    states = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
    path, ray_level, faults = list(sys.path), logging.getLogger("ray").level, False
    pytests = faulthandler.is_enabled()  # pytest's own, put back at the end
    faulthandler.disable()
    gpu = torch.cuda.is_available()
    if gpu:  # in use here: manual_seed reseeds it too
        torch.cuda.init()
        cuda = torch.cuda.get_rng_state_all()
    with process_state_kept():
        sys.path.insert(0, os.getcwd())  # for the user's modules (spaces.userfn)
        logging.getLogger("ray").setLevel(logging.ERROR)  # ray.init(logging_level=...)
        faulthandler.enable()  # Ray's connection
        os.environ["PYTHONBREAKPOINT"] = "ray.util.rpdb._driver_set_trace"
        del os.environ["NASCOMP_TEST_KEPT"]
        signal.signal(signal.SIGTERM, lambda *_: None)
        torch.set_num_threads(1)
        random.seed(0)
        np.random.seed(0)
        torch.manual_seed(0)
    assert "PYTHONBREAKPOINT" not in os.environ or os.environ["PYTHONBREAKPOINT"] != (
        "ray.util.rpdb._driver_set_trace"
    )
    assert os.environ["NASCOMP_TEST_KEPT"] == "1"
    assert signal.getsignal(signal.SIGTERM) is term and torch.get_num_threads() == threads
    assert random.getstate() == states[0] and torch.equal(torch.random.get_rng_state(), states[2])
    assert np.array_equal(np.random.get_state()[1], states[1][1])
    if gpu:
        assert all(map(torch.equal, torch.cuda.get_rng_state_all(), cuda))
    assert sys.path == path and logging.getLogger("ray").level == ray_level
    assert faulthandler.is_enabled() == faults
    if pytests:
        faulthandler.enable()


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
    import os
    import signal

    environment, term = dict(os.environ), signal.getsignal(signal.SIGTERM)
    summary = nascomp.run_search(raw, echo=lines.append)
    assert len(summary.trials) == 12 and summary.count("ok") == 12
    # The process as it was: Ray's PYTHONBREAKPOINT, MLflow's retries, Ray's SIGTERM handler
    assert dict(os.environ) == environment and signal.getsignal(signal.SIGTERM) is term
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


def test_the_summary_line_counts_in_words() -> None:
    """ "1 trials ...; front of 1 models" (re-check)."""
    from nascomp.search.api import summary_line
    from nascomp.search.driver import SearchSummary
    from nascomp.search.experiment import load_experiment
    from nascomp.search.tracking.store import TrialRecord

    one = TrialRecord("r1", "t1", "ok", {}, {"val_accuracy": 0.9})
    summary = SearchSummary("s1", "1", [one], [one], {"val_accuracy": "max"}, 3.2)
    line = summary_line(summary, load_experiment(None))
    assert line == "1 trial in 3 s (1 ok); front of 1 model, search s1"
    two = TrialRecord("r2", "t2", "ok", {}, {"val_accuracy": 0.8})
    summary = SearchSummary("s1", "1", [one, two], [one, two], {"val_accuracy": "max"}, 3.2)
    assert summary_line(summary, load_experiment(None)).startswith(
        "2 trials in 3 s (2 ok); front of 2 models"
    )


def test_reading_an_experiment_or_an_export_imports_no_search_library(tmp_path: Path) -> None:
    """``nascomp.load_experiment`` and ``nascomp.load_exported`` imported Ray, Ray Tune,
    Optuna and MLflow (the API module imported the driver), and with MLflow its telemetry
    (a helper's sweep)."""
    probe = (
        "import json, sys, nascomp\n"
        "nascomp.load_experiment(None, ['search.trials=3'])\n"
        "nascomp.load_exported\n"
        "print(json.dumps(sorted(m for m in ('ray', 'mlflow', 'optuna') if m in sys.modules)))\n"
        "print(nascomp.SearchSummary.__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    heavy, name = done.stdout.splitlines()
    assert json.loads(heavy) == [] and name == "SearchSummary"


def test_run_search_turns_usage_telemetry_off_and_puts_it_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The command set MLflow's and ONNX Runtime's switches; a search from Python ran with
    both on, in the caller's process and in its trials (a helper's sweep)."""
    from nascomp.search import api, driver

    for name in ("MLFLOW_DISABLE_TELEMETRY", "ORT_DISABLE_TELEMETRY"):
        monkeypatch.delenv(name, raising=False)
    seen: dict[str, str | None] = {}

    def drive(*args: object, **kwargs: object) -> None:
        seen.update(
            {n: os.environ.get(n) for n in ("MLFLOW_DISABLE_TELEMETRY", "ORT_DISABLE_TELEMETRY")}
        )
        raise SearchError("stopped here")

    monkeypatch.setattr(driver, "run_search", drive)
    with pytest.raises(SearchError, match="stopped here"):
        api.run_search(None, address="127.0.0.1:1", echo=None)  # an address: no local Ray
    assert seen == {"MLFLOW_DISABLE_TELEMETRY": "true", "ORT_DISABLE_TELEMETRY": "1"}
    assert "MLFLOW_DISABLE_TELEMETRY" not in os.environ  # the caller's environment is back
    # A caller's own choice stays.
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")
    with pytest.raises(SearchError):
        api.run_search(None, address="127.0.0.1:1", echo=None)
    assert seen["MLFLOW_DISABLE_TELEMETRY"] == "false"


@pytest.mark.e2e
def test_an_echo_that_raises_is_said_once_and_the_search_goes_on(
    workdir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A caller's echo (a notebook widget, a logger) that raised in Ray Tune's callback was
    taken for a trial that failed to stop: one trial counted "[4/3]", Ray's tracebacks, and a
    TuneError whose message was a traceback (a helper's API sweep)."""
    from tests.search.conftest import tiny_experiment

    seen: list[str] = []

    def echo(line: str) -> None:
        seen.append(line)
        if line.startswith("["):
            raise RuntimeError("my echo broke")

    summary = nascomp.run_search(tiny_experiment(workdir, "search.trials=2"), echo=echo)
    assert len(summary.trials) == 2 and summary.count("ok") == 2
    assert sum(line.startswith("[") for line in seen) == 1  # then no more lines
    err = capfd.readouterr().err
    said = [line for line in err.splitlines() if line.startswith("nascomp: echo")]
    assert said == [
        f"nascomp: echo {echo.__qualname__} raised RuntimeError: my echo broke; the search "
        "goes on without progress lines"
    ]
    assert "Traceback" not in err and "TuneError" not in err


EARLY_CTRL_C = """
import os, signal, sys
import nascomp

class CtrlCAt:  # Ctrl-C as the first search imports a library's modules, the library half done
    def find_spec(self, name, path=None, target=None):
        if name == sys.argv[2]:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, CtrlCAt())
experiment = sys.argv[1]
try:
    nascomp.run_search(experiment, overrides=["search.trials=2"], echo=None)
    print("not interrupted")
except KeyboardInterrupt:
    print("interrupted", sys.argv[2] in sys.modules)
summary = nascomp.run_search(experiment, overrides=["search.trials=2"], echo=None)
print(summary.count("ok"))
"""


@pytest.mark.e2e
@pytest.mark.parametrize("library", ["torch.nn", "mlflow.tracking"])
def test_ctrl_c_while_the_first_search_imports_leaves_the_process_usable(
    tmp_path: Path, library: str
) -> None:
    """A notebook's Ctrl-C as the first run_search imported its libraries left torch or MLflow
    half-imported: every later call failed with "partially initialized module 'mlflow'" until
    the kernel restarted (a helper's API sweep); torch.nn: as ``nascomp.run_search`` is first
    looked up. The interrupt now waits for the imports."""
    experiment = yaml.safe_load(EXAMPLE.read_text())
    experiment["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    experiment["storage"] = str(tmp_path / "results")
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump(experiment))
    (tmp_path / "early.py").write_text(EARLY_CTRL_C)
    result = subprocess.run(
        [sys.executable, "early.py", "experiment.yaml", library],
        cwd=tmp_path,
        # Ctrl-C as a terminal gives it: a runner started in the background ignores SIGINT,
        # and its children would inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["interrupted", "True", "2"], result.stderr[-3000:]
