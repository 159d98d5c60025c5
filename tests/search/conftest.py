"""Fixtures for tests that run real searches: local Ray, real Optuna, MLflow on a sqlite file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nascomp.search.experiment import Experiment, load_experiment

# A search small enough for a test: digits, 4 trials, 2 epochs per phase, a tiny teacher.
TINY = [
    "search.trials=4",
    "search.concurrent=2",
    "train.epochs=2",
    "train.prune_epochs=1",
    "train.qat_epochs=1",
    "teacher.epochs=2",
    "teacher.arch.base_channels=16",
    "measure.n_warmup=1",
    "measure.n_repeat=3",
    "measure.latency_batch_size=8",
    "space.arch.n_stages=[1, 2]",
    "space.arch.base_channels=[8, 16]",
]


@pytest.fixture(scope="session")
def teacher_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One teacher cache for the session: the teacher trains once, as in real use."""
    return tmp_path_factory.mktemp("nascomp-cache")


@pytest.fixture
def workdir(tmp_path: Path, teacher_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh working folder with its own MLflow store, Ray temp dir and results folder."""
    # Ray's unix sockets live under its temp dir and must stay under ~100 characters.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NASCOMP_CACHE", str(teacher_cache))
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield tmp_path
    shutil.rmtree(ray_tmp, ignore_errors=True)


def tiny_args(workdir: Path, *extra: str) -> list[str]:
    """CLI arguments for a tiny search logging into ``workdir``."""
    sets = [arg for item in TINY for arg in ("--set", item)]
    return [
        *sets,
        "--tracking-uri",
        f"sqlite:///{workdir / 'mlflow.db'}",
        "--set",
        f"storage={workdir / 'results'}",
        *extra,
    ]


def tiny_experiment(workdir: Path, *overrides: str) -> Experiment:
    """The tiny search logging into ``workdir``, for ``run_search`` in this process."""
    return load_experiment(
        None,
        [
            *TINY,
            *overrides,
            f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}",
            f"storage={workdir / 'results'}",
        ],
    )


def nascomp_here(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess:
    """``nascomp ARGS`` through ``main`` in this process, for commands that only read a store
    (``pareto``): what the console script prints and returns, without its interpreter start
    and imports (6 to 8 s a call on the 2-core machine). The console script itself is what
    :func:`nascomp` runs."""
    from nascomp.search.cli import main

    capsys.readouterr()  # what the test printed before is not the command's
    code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["nascomp", *args], code, out, err)


def nascomp(
    *args: str, cwd: Path, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the real `nascomp` console script as a user would."""
    exe = Path(sys.executable).with_name("nascomp")
    return subprocess.run(
        [str(exe), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def live_processes_with(variable: str, value: str) -> list[int]:
    """Live processes (zombies aside) whose environment sets ``variable=value``: a search's
    children and Ray's processes inherit the environment it was started with."""
    marker = f"{variable}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if state != "Z" and marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found
