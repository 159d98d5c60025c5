"""The Python API: what ``import nascomp`` offers notebooks and scripts.

    import nascomp
    summary = nascomp.run_search("experiment.yaml", overrides=["search.trials=8"])
    for record in summary.front:
        print(record.run_id, record.metrics["val_accuracy"])
    model = nascomp.load_exported("model/")   # after `nascomp reproduce --export model/`

Errors are those of :mod:`nascomp.search.errors` (a bad experiment is a ``ConfigError`` whose
message names the field and what is allowed), raised, not printed.

A search leaves the calling process as it found it: its environment variables (Ray's and
MLflow's settings), signal handlers, torch's thread count and the random generators' states
(the teacher is trained in this process) are put back when ``run_search`` returns or raises.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import random
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nascomp.search import experiment as _experiment
from nascomp.search.errors import SearchError, SearchInterrupted, TrackingError
from nascomp.search.experiment import Experiment
from nascomp.search.export import load_exported
from nascomp.search.interrupts import signals_held

if TYPE_CHECKING:
    from nascomp.search.driver import SearchSummary

ExperimentSource = str | Path | Mapping[str, Any] | Experiment | None


def __getattr__(name: str) -> Any:
    """``SearchSummary`` on first use: the driver imports Ray, Ray Tune, Optuna and MLflow,
    which ``load_experiment`` and ``load_exported`` do not need."""
    if name == "SearchSummary":
        from nascomp.search.driver import SearchSummary

        return SearchSummary
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# The command line's words in the driver's messages, as a caller of run_search names them
# (not an option of another tool's command the message quotes: mlflow's --experiment-id).
_API_WORDS = (
    (
        re.compile(r"put it before the flag: nascomp search (\S+) --resume"),
        r"pass it as the experiment: run_search('\1', resume='latest')",
    ),
    (re.compile(r"e\.g\. --set '([^']*)'"), r"e.g. overrides=['\1']"),
    (re.compile(r"--resume alone"), "resume='latest'"),
    (re.compile(r"--set(?![\w-])"), "overrides"),
    (re.compile(r"--resume(?![\w-])"), "resume"),
    (re.compile(r"--address(?![\w-])"), "address"),
    (re.compile(r"--tracking-uri(?![\w-])"), "tracking.uri"),
    (re.compile(r"--experiment(?![\w-])"), "tracking.experiment"),
)


@contextlib.contextmanager
def _in_api_words() -> Iterator[None]:
    """A ConfigError, SearchError or TrackingError said in run_search's words: the driver's
    and the store's messages name the command line's flags (``--resume X: no such folder``,
    ``fix --tracking-uri``), which a notebook never gave."""
    try:
        yield
    except (_experiment.ConfigError, SearchError, TrackingError) as exc:
        message = str(exc)
        for pattern, words in _API_WORDS:
            message = pattern.sub(words, message)
        if message == str(exc):
            raise
        raise type(exc)(message) from None


@_in_api_words()
def load_experiment(
    experiment: ExperimentSource = None, overrides: Sequence[str] = ()
) -> Experiment:
    """A validated :class:`Experiment` from a YAML path, a mapping shaped like the YAML file
    (paths in it may be ``Path`` objects), an ``Experiment`` (validated again, as a copy) or
    None (the built-in quickstart). ``overrides`` are ``--set`` items:
    ``"search.trials=8"``."""
    if isinstance(overrides, str | bytes):
        raise _experiment.ConfigError(
            f"overrides: expected a list of KEY.PATH=VALUE strings; got the string {overrides!r}"
            " (write [...] around it)"
        )
    overrides = [] if overrides is None else overrides
    if not isinstance(overrides, Sequence) or not all(isinstance(o, str) for o in overrides):
        raise _experiment.ConfigError(
            f"overrides: expected a list of KEY.PATH=VALUE strings; got {overrides!r}"
        )
    if isinstance(experiment, Experiment):
        # Validated again: fields set after load_experiment (experiment.search.trials = 0)
        # are checked like any others, not met deep in the search.
        experiment = experiment.model_dump(mode="json")
    if isinstance(experiment, Mapping):
        raw = _paths_as_text(copy.deepcopy(dict(experiment)))
        for item in overrides:
            _experiment.apply_override(raw, item)
        return _experiment.validate_experiment(raw)
    if experiment is not None and not isinstance(experiment, str | Path):
        raise _experiment.ConfigError(
            f"experiment: expected a YAML path, a mapping or an Experiment; "
            f"got {type(experiment).__name__}"
        )
    return _experiment.load_experiment(experiment, list(overrides))


def _paths_as_text(value: Any) -> Any:
    """``value`` with every ``Path`` (any ``os.PathLike``) in it as its text, as the YAML file
    gives paths: ``{"data": {"root": Path(...)}}`` was refused ("Input should be a valid
    string")."""
    if isinstance(value, dict):
        return {key: _paths_as_text(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_paths_as_text(item) for item in value]
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def run_search(
    experiment: ExperimentSource = None,
    *,
    overrides: Sequence[str] = (),
    address: str | None = None,
    resume: str | None = None,
    echo: Callable[[str], Any] | None = print,
) -> SearchSummary:
    """Run a whole search (as ``nascomp search`` does) and return its summary: every trial's
    record and the Pareto front, read back from MLflow. ``address`` is a Ray cluster
    (``auto``, ``HOST:PORT``), ``resume`` a result folder or ``latest``; ``echo`` receives the
    progress lines (None silences them)."""
    if echo is None:
        echo = _silent
    elif not callable(echo):  # found after the teacher had trained, a bare TypeError
        raise _experiment.ConfigError(
            f"echo: a function given each progress line, or None; got {echo!r}"
        )
    else:
        echo = _guarded(echo)
    checked = load_experiment(experiment, overrides)
    if resume is not None and not isinstance(resume, str | Path):
        raise _experiment.ConfigError(f"resume: a result folder or 'latest'; got {resume!r}")
    # 6379: an AttributeError; "" (an unset variable's value) ran on a local Ray
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise _experiment.ConfigError(
            f"address: a Ray cluster's 'HOST:PORT' or 'auto' (a str), or None; got {address!r}"
        )
    _check_no_ray_here(address)
    with process_state_kept(), _in_api_words():
        # MLflow's INFO lines ("Creating initial MLflow database tables...") are not the
        # search's: its logger reads this at import, and is set here where a notebook
        # imported it already.
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        # No usage telemetry from the search, as from the command (unless the caller set
        # these): MLflow reads its variable at each call, and the local Ray and its trials
        # inherit both. Put back with the rest of the environment.
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        # A Ctrl-C waits for the libraries' first import to end, then acts: cut short, it left
        # torch or MLflow half-imported, and every later call in the process failed.
        with signals_held():
            from nascomp.search.tune.head import starting_local_ray

        mlflow_log = logging.getLogger("mlflow")
        level = mlflow_log.level
        mlflow_log.setLevel(max(level, logging.WARNING))
        try:
            with starting_local_ray(address) as local_ray:  # comes up while the driver imports
                with signals_held():
                    from nascomp.search.driver import run_search as drive

                summary = drive(
                    checked, address=address, echo=echo, resume=resume, local_ray=local_ray
                )
        except SearchInterrupted as exc:
            # The driver's words are the command line's; from Python, it is resume=.
            raise SearchInterrupted(
                str(exc).replace(
                    "the same command and --resume", "run_search(..., resume='latest')"
                )
            ) from None
        finally:
            mlflow_log.setLevel(level)
    echo(summary_line(summary, checked))
    return summary


def _guarded(echo: Callable[[str], Any]) -> Callable[[str], None]:
    """``echo`` as the search calls it: if it raises (a notebook's widget, a logger), one
    line on stderr says so and the search goes on without progress lines. Raised in Ray
    Tune's callbacks, it was taken for a trial that failed to stop: the same trial counted
    "[4/3]", Ray's tracebacks, and a TuneError whose message was a traceback."""
    broken: list[BaseException] = []

    def call(line: str) -> None:
        if broken:
            return
        try:
            echo(line)
        except Exception as exc:
            broken.append(exc)
            name = getattr(echo, "__qualname__", type(echo).__name__)
            print(
                f"nascomp: echo {name} raised {type(exc).__name__}: {exc}; the search goes on "
                "without progress lines",
                file=sys.stderr,
                flush=True,
            )

    return call


def _silent(line: str) -> None:
    """``echo=None``: no progress lines."""


def _check_no_ray_here(address: str | None) -> None:
    """A process that called ``ray.init()`` itself (a notebook's cell): Ray refuses a second
    connection, which came as Ray's own error after every check had passed."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        raise SearchError(
            "Ray is already initialised in this process (ray.init was called): run_search "
            "connects on its own; call ray.shutdown() first"
            + ("" if address else ", or pass address= of that cluster")
        )


@contextlib.contextmanager
def process_state_kept() -> Iterator[None]:
    """Put back what a search changes in the calling process: environment variables (Ray's
    PYTHONBREAKPOINT, MLflow's request retries), the SIGINT and SIGTERM handlers (Ray's
    SIGTERM handler exits the process), torch's thread count and the states of Python's,
    NumPy's and torch's random generators (the teacher trains here, and seeds them),
    ``sys.path`` (the working folder goes first, for the user's modules: later, a ``data.py``
    there shadowed an installed package in the notebook), the ``ray`` logger's level
    (``ray.init`` sets it) and Python's fault handler (which Ray's connection turns on)."""
    import faulthandler

    import numpy as np
    import torch

    environment = dict(os.environ)
    main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    threads = torch.get_num_threads()
    states = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
    # torch.manual_seed reseeds every GPU's generator too: theirs, where CUDA is in use here
    # (a lazily initialised CUDA keeps its seeds until first use; nothing to put back then)
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    path = list(sys.path)
    ray_level = logging.getLogger("ray").level
    faults = faulthandler.is_enabled()
    try:
        yield
    finally:
        sys.path[:] = path
        logging.getLogger("ray").setLevel(ray_level)
        if not faults:
            faulthandler.disable()
        os.environ.clear()
        os.environ.update(environment)
        for signum, handler in handlers.items():
            if handler is not None:
                signal.signal(signum, handler)
        torch.set_num_threads(threads)
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def summary_line(summary: SearchSummary, experiment: Experiment) -> str:
    """The search's end in one line, as ``nascomp search`` says it: the trials by status,
    the front's size (or why it is empty, and the commonest failure) and its search id."""
    from collections import Counter

    from nascomp.search.driver import counted
    from nascomp.search.front.selection import empty_front_reason

    counts = ", ".join(
        f"{summary.count(status)} {status}"
        for status in ("ok", "infeasible", "pruned", "failed")
        if summary.count(status)
    )
    trials = counted(len(summary.trials), "trial")
    head = f"{trials} in {summary.wall_seconds:.0f} s ({counts or 'none ended'})"
    if summary.front:
        models = counted(len(summary.front), "model")
        return f"{head}; front of {models}, search {summary.search_run_id}"
    budget = experiment.search.budget.shown()
    why = empty_front_reason(summary.trials, summary.objectives, experiment.constraints, budget)
    failed = Counter(
        t.tags.get("nascomp.reason", "") for t in summary.trials if t.status == "failed"
    )
    common = f"; most failed with: {failed.most_common(1)[0][0]}" if failed else ""
    return f"{head}; the front is empty: {why}{common}"


__all__ = ["Experiment", "SearchSummary", "load_experiment", "load_exported", "run_search"]
