"""The driver's warm-up (search/tune/warmup.py): when it runs, and what each step prepares."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import mlflow.pyfunc
import numpy as np
import pytest

from nascomp.search.tracking.models import identity_onnx, save_onnx_model
from nascomp.search.tune.warmup import WarmUp, ready

CALLS: list[str] = []


def _first() -> None:
    CALLS.append("first")


def _failing() -> None:
    CALLS.append("failing")
    raise RuntimeError("no MLflow here")


def _trials(*statuses: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(status=status) for status in statuses]


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ((), False),  # nothing started yet
        (("PENDING",), False),
        (("RUNNING", "PENDING"), False),  # a pause would delay the second trial's start
        (("RUNNING",), True),
        (("RUNNING", "RUNNING"), True),
        (("TERMINATED", "RUNNING"), True),
        (("TERMINATED", "ERROR"), False),  # nothing runs: nothing to overlap
        (("PAUSED", "RUNNING"), True),
    ],
)
def test_ready_when_a_trial_runs_and_none_waits_to_start(
    statuses: tuple[str, ...], expected: bool
) -> None:
    assert ready(_trials(*statuses)) is expected


def test_the_steps_run_once_when_ready_and_a_failing_one_stops_nothing() -> None:
    CALLS.clear()
    warm = WarmUp([_failing, _first])
    warm.on_step_end(iteration=1, trials=_trials("RUNNING", "PENDING"))
    assert CALLS == []
    warm.on_step_end(iteration=2, trials=_trials("RUNNING", "RUNNING"))
    assert CALLS == ["failing", "first"]
    warm.on_step_end(iteration=3, trials=_trials("RUNNING", "RUNNING"))
    assert CALLS == ["failing", "first"]


def test_it_pickles_with_its_steps() -> None:
    """Tune saves the run config's callbacks with the experiment."""
    copy = pickle.loads(pickle.dumps(WarmUp([_first])))
    assert copy.steps == [_first] and not copy.done


def test_the_warm_up_model_is_one_pyfunc_serves(tmp_path: Path) -> None:
    """models.warm_up saves this model and its failures are ignored: a model MLflow or
    onnxruntime refused would silently leave the first trial's cost where it was."""
    shape = [2, 3]
    path = save_onnx_model(identity_onnx(shape), tmp_path, np.zeros(shape, dtype=np.float32))
    batch = np.arange(6, dtype=np.float32).reshape(shape)
    served = mlflow.pyfunc.load_model(str(path)).predict(batch)  # {output name: array}
    np.testing.assert_array_equal(next(iter(served.values())), batch)


@pytest.mark.parametrize(
    ("step", "loaded"),
    [
        ("nascomp.search.tracking.models", ["mlflow.pyfunc", "mlflow.onnx", "onnxruntime"]),
        ("nascomp.search.front.plot", ["matplotlib.pyplot", "plotly.graph_objects"]),
    ],
)
def test_each_step_loads_what_it_prepares_and_leaves_no_scratch_folder(
    tmp_path: Path, step: str, loaded: list[str]
) -> None:
    """In a fresh interpreter (whether a module is loaded depends on what ran before), with
    a temporary folder of its own."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    code = (
        "import sys, importlib\n"
        f"importlib.import_module({step!r}).warm_up()\n"
        f"print([m for m in {loaded!r} if m not in sys.modules])\n"
    )
    # matplotlib's cache has a folder of its own: where it cannot write one, it makes a
    # temporary folder that outlives the process.
    env = {**os.environ, "TMPDIR": str(scratch), "MPLCONFIGDIR": str(tmp_path / "mpl")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.strip() == "[]"
    # Folders only: importing onnxruntime leaves a small file of its own there.
    assert [path for path in scratch.iterdir() if path.is_dir()] == []
