"""Ray Tune internals nascomp relies on (tested with the ray range in pyproject.toml)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: head.py's child imports this module before Ray starts
    from optuna import Study
    from optuna.trial import TrialState


# Run by the raylet as a script; RayParams.setup_worker_path takes a file's path.
WORKER_START = str(Path(__file__).with_name("worker_start.py"))


def adopt_restored(tuner: Any, callbacks: list) -> Any:
    """Give a restored Tuner this driver's callbacks and return its searcher.

    ``Tuner.restore`` brings back the callbacks pickled when the search started, which hold the
    dead driver's MLflow client and journal, and takes no ``callbacks`` argument; nor does
    the Tuner expose its restored search algorithm. Both live on the private local tuner.
    """
    local = tuner._local_tuner
    local.get_run_config().callbacks = callbacks
    return local._tune_config.search_alg.searcher


def optuna_trial(search: Any, trial_id: str) -> Any | None:
    """The Optuna trial an ``OptunaSearch`` asked for ``trial_id``, if it is still open.
    OptunaSearch keeps the map privately and ends every trial itself as COMPLETE or FAIL; a
    subclass that must end one as PRUNED (or FAIL with a reason) needs the open trial."""
    if trial_id in search._completed_trials:
        return None
    return search._ot_trials.get(trial_id)


def tell(search: Any, trial_id: str, trial: Any, state: TrialState) -> None:
    """End ``trial`` with ``state`` in the searcher's study and mark it done, as OptunaSearch's
    own ``on_trial_complete`` does (it offers no state argument)."""
    search._ot_study.tell(trial, state=state)
    search._completed_trials.add(trial_id)


def study(search: Any) -> Study:
    """The Optuna study behind an ``OptunaSearch``: kept private, with no accessor."""
    return search._ot_study


def use_local_token() -> None:
    """Authenticate as a driver that found this machine's Ray itself would.

    A Ray that ``ray.init()`` starts turns token authentication on unless ``RAY_AUTH_MODE``
    says otherwise (Ray 2.60), creating ``~/.ray/auth_token`` if missing. A driver that then
    connects by an explicit address (``search/tune/head.py`` gives one) sends that token only
    in token mode, which ``ray.init`` turns on for ``address=None`` or ``"auto"`` alone, through
    this private function. Rays without token authentication have nothing to do. Its warning
    that token authentication is on is dropped, as ``ray.init(logging_level=ERROR)`` drops it
    when it starts the cluster in the driver."""
    import logging

    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:
        return
    logger = logging.getLogger(maybe_enable_token_auth_if_token_available.__module__)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    finally:
        logger.setLevel(level)


def validate_cluster_config(config: dict[str, Any]) -> dict[str, Any]:
    """Check a cluster-launcher YAML the way ``ray up`` does, without starting anything: fill
    in the defaults, then validate against Ray's schema. ``ray up`` has no dry-run mode."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(config)
    validate_config(prepared)
    return prepared


def lean_local_node() -> None:
    """Make the next ``ray.init()`` in this process start a head node without the log monitor
    and the autoscaler monitor, as ``ray start --head --include-log-monitor=False
    --no-monitor`` does (``ray.init`` has neither switch), and whose raylet starts Python
    workers through ``worker_start.py`` rather than Ray's ``setup_worker.py`` (which imports
    Ray once more in every worker before the worker imports it; that file says when each
    runs).

    nascomp's local Ray needs neither monitor: its drivers connect with ``log_to_driver=False`` (the
    log monitor only streams workers' output to drivers; the files stay in the session's
    logs), and a one-machine cluster has nothing to scale. The two processes cost 0.9 to 1.7
    CPU-s per search on a 2-core machine, most of it while the driver and the workers start
    (docs/benchmarks.md). Ray Tune gives every trial's actor a runtime env (a few environment
    variables), so Ray starts each trial's worker through its ``setup_worker.py``: 0.41 CPU-s
    more per worker start than ``worker_start.py`` (``bench/worker_start.py``).
    ``NASCOMP_RAY_SETUP_WORKER=ray`` keeps Ray's program (the bench's other side; a way back
    should a Ray release change what its program does). For ``search/tune/head.py``'s child
    alone, whose only job is that ``ray.init``."""
    from ray._private import parameter

    base = parameter.RayParams
    if getattr(base, "nascomp_lean", False):
        return

    class LeanParams(base):  # type: ignore[misc, valid-type]
        nascomp_lean = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("include_log_monitor", False)
            kwargs.setdefault("no_monitor", True)
            if os.environ.get("NASCOMP_RAY_SETUP_WORKER") != "ray":
                kwargs.setdefault("setup_worker_path", WORKER_START)
            super().__init__(*args, **kwargs)

    parameter.RayParams = LeanParams  # ray.init looks it up in the module when it runs
