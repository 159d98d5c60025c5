"""Ray Tune internals nascomp relies on (tested with the ray range in pyproject.toml)."""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterator
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


@contextlib.contextmanager
def search_reopened() -> Iterator[None]:
    """Within the block, a restored search asks its searcher for trials again.

    Tune's ``SearchGenerator`` (which ``tune.run`` wraps the searcher in) records ``finished``
    once its searcher answers FINISHED (nascomp's budget spent) and restores it with the
    snapshot (``set_state``, in ``fit``): a search interrupted after its budget was spent,
    resumed with more, then never asked for a trial, and ended "interrupted" at every resume.
    The searcher says again whether it has finished (a budget still spent answers FINISHED at
    its first ask)."""
    from ray.tune.search.search_generator import SearchGenerator

    restore = SearchGenerator.set_state

    def set_state(self: Any, state: dict) -> None:
        restore(self, {**state, "finished": False})

    SearchGenerator.set_state = set_state
    try:
        yield
    finally:
        SearchGenerator.set_state = restore


@contextlib.contextmanager
def without_result_analysis() -> Iterator[None]:
    """Skip Tune's result analysis within the block: nascomp's results are in MLflow, and of
    the ``ResultGrid`` that ``Tuner.fit`` returns it reads the trials' counts only.

    ``Tuner.restore`` builds an ``ExperimentAnalysis`` of the search so far, for a
    ``get_results`` before ``fit`` that nascomp never calls: it parses the whole experiment
    snapshot a second time and reads every trial's ``result.json`` into a pandas frame, 5.5 s
    at 1,276 trials on the 2-core VM. The one ``Tuner.fit`` returns reads the frames again, 2.0
    s at the end of that search; both grow with the trials. Within the block the restored
    analysis is left out (Tune catches its failure and keeps none) and the frames of the final
    one are empty; the trials, their last results and errors are as before."""
    from ray.tune.analysis.experiment_analysis import ExperimentAnalysis
    from ray.tune.impl import tuner_internal

    def none(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("nascomp reads no result analysis of a restored search")

    analysis, frames = tuner_internal.ExperimentAnalysis, ExperimentAnalysis._fetch_trial_dataframes
    tuner_internal.ExperimentAnalysis = none
    ExperimentAnalysis._fetch_trial_dataframes = lambda self: {}
    try:
        yield
    finally:
        tuner_internal.ExperimentAnalysis = analysis
        ExperimentAnalysis._fetch_trial_dataframes = frames


# Tune's experiment snapshot: three files, each named by the start of the driver that wrote it.
SNAPSHOT_FILES = ("experiment_state-*.json", "searcher-state-*.pkl", "search_gen_state-*.json")


def snapshot_problem(folder: Path) -> str | None:
    """Why Tune's snapshot in ``folder`` would not restore, or None: a file of it cut short
    (a full disk, a partial copy). Tune logs such a failure and carries on with no trials: the
    resume then started the search over, deleted the MLflow runs of the trials that had
    finished, and removed the intact earlier snapshot (a helper's sweep). The files are read
    as Tune reads them: the newest of each kind, ``tuner.pkl``. A pickle is never loaded: one
    cut short lacks its last opcode, STOP (walking every opcode with ``pickletools`` took 2.3 s
    per 20 MB, and a long search's searcher state reaches 190 MB)."""
    import json

    newest = [max(found) for p in SNAPSHOT_FILES if (found := list(folder.glob(p)))]
    tuner = folder / "tuner.pkl"
    for path in [*newest, *([tuner] if tuner.exists() else [])]:
        try:
            data = path.read_bytes()
            if path.name.startswith("experiment_state-"):
                json.loads(data)
            elif not data.endswith(b"."):  # cloudpickle's, whatever the suffix
                raise ValueError(f"{len(data):,} bytes that end before the pickle's STOP")
        except (OSError, ValueError) as exc:
            return f"{path} does not read as Ray Tune's snapshot ({type(exc).__name__}: {exc})"
    return None


def drop_earlier_snapshots(folder: Path, since: float) -> list[Path]:
    """Remove the snapshot files that earlier drivers of a resumed search left in ``folder``,
    once this driver's ``Tuner.fit`` has returned: a resume reads the newest name only (Tune's
    ``_find_newest_experiment_checkpoint``), and each resume left a dead copy of the snapshot
    behind (25 and 32 MB after one resume at 829 trials, about 190 MB at 5,000). Only where
    the newest file was written since ``since`` (this driver's start, a time.time()): this
    driver's own, not one whose name sorts last for another reason."""
    removed = []
    for pattern in SNAPSHOT_FILES:
        files = sorted(folder.glob(pattern))
        if not files or files[-1].stat().st_mtime < since:
            continue
        for path in files[:-1]:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def drop_driver_staging(experiment_name: str) -> list[Path]:
    """Remove Tune's driver-side staging copy of the search ``experiment_name`` from Ray's
    session folder on this machine (``<session>/artifacts/<start>/<name>``), once ``Tuner.fit``
    has returned and Tune has synced it to the search's folder. Tune never removes it: every
    trial's ``result.json``, ``progress.csv`` and params (55 KB a trial after a 1,276-trial
    search), and on a resume a copy of the whole result folder with every snapshot (375 MB in
    ``/tmp`` after each resume of an 830-trial search). Also the copies earlier drivers of the
    same search left in their own sessions beside this one, when they were killed before
    theirs returned (one driver runs a search at a time: ``search.resume.hold_folder``). Only
    this search's folder: a cluster's session may hold other drivers'. Returns what was
    removed."""
    import glob
    import shutil

    import ray

    node = ray._private.worker._global_node
    if node is None:
        return []
    sessions = Path(node.get_session_dir_path()).parent  # Ray's temp folder: session_* folders
    removed = []
    for staging in sessions.glob(f"session_*/artifacts/*/{glob.escape(experiment_name)}"):
        if staging.parents[2].is_symlink():  # session_latest: the same folder again
            continue
        shutil.rmtree(staging, ignore_errors=True)
        removed.append(staging)
        with contextlib.suppress(OSError):
            staging.parent.rmdir()  # its start's folder, once empty
    return removed


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


class SeveralRays(ValueError):
    """``auto`` found more than one Ray cluster to join on this machine."""


def auto_address() -> str:
    """The HOST:PORT of the cluster ``--address auto`` means, found as Ray finds it
    (``RAY_ADDRESS``, the cluster ``ray start`` recorded in Ray's temp folder, else a GCS
    running on this machine), with two differences at that last step. Ray takes any GCS there,
    the first of a set: a local Ray another ``nascomp search`` started for itself (which ends
    with that search, and took the second search's trials down with it, found by a helper's
    sweep) or, of several clusters, one at random from one call to the next. Here those local
    Rays are skipped, and several clusters left are :class:`SeveralRays`. ConnectionError when
    there is none. As found: ``ray.init`` turns a loopback host into the node's address itself
    (``loopback_driver``)."""
    from ray._private.services import find_bootstrap_address

    given = os.environ.get("RAY_ADDRESS")
    if given and given != "auto":
        return given
    recorded = find_bootstrap_address(None)
    if recorded:
        return recorded
    return choose_running(running_rays())


def choose_running(rays: dict[str, bool]) -> str:
    """Of this machine's running Rays (GCS address: whether a search's own local Ray), the one
    cluster to join; see :func:`auto_address`."""
    clusters = sorted(address for address, own in rays.items() if not own)
    if len(clusters) > 1:
        raise SeveralRays(f"several Ray clusters run on this machine: {', '.join(clusters)}")
    if clusters:
        return clusters[0]
    if rays:
        raise ConnectionError(
            f"Ray found only the local Ray of another nascomp search ({', '.join(sorted(rays))}),"
            " which ends with that search"
        )
    raise ConnectionError("Ray found no running instance")


# What the raylet of a search's own local Ray shows: its parent runs this module
# (search/tune/head.py), or its workers start through nascomp's worker_start.py.
_LOCAL_HEAD = "nascomp.search.tune.head"


def running_rays() -> dict[str, bool]:
    """The GCS address of each Ray node running on this machine, read from its raylet's command
    line as Ray's own lookup reads it, and whether it is the local Ray of a ``nascomp search``
    (:class:`nascomp.search.tune.head.LocalRay`)."""
    from ray._private.services import _is_raylet_process, psutil  # Ray's own copy of psutil

    found: dict[str, bool] = {}
    for process in psutil.process_iter(["cmdline", "ppid"]):
        try:
            cmdline = process.info["cmdline"]
            if not _is_raylet_process(cmdline):
                continue
            words = [word for argument in cmdline for word in argument.split(" ")]
            address = next(
                (w.split("=", 1)[1] for w in words if w.startswith("--gcs-address=")), ""
            )
            if address in ("", "None"):
                continue
            parent = psutil.Process(process.info["ppid"]).cmdline() if process.info["ppid"] else []
            own = _LOCAL_HEAD in parent or any(w == WORKER_START for w in words)
            found[address] = found.get(address, False) or own
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


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
            ensure_token_if_auth_enabled,
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
    # In token mode, the token read now (AuthenticationError when it cannot be): with
    # RAY_AUTH_MODE=token and no token, Ray's C++ client ends the process with exit status 1.
    ensure_token_if_auth_enabled(create_token_if_missing=False)


@contextlib.contextmanager
def loopback_driver(address: str | None) -> Iterator[None]:
    """Within the block, a ``ray.init`` that connects to ``address`` on the loopback
    interface (the local Ray that ``search/tune/head.py`` starts, listening there alone) stays
    on it; any other address is left as it is.

    Ray 2.60 on Linux turns a loopback address into the machine's own (``ray.init`` resolves
    ``127.0.0.1`` with ``services.resolve_ip_for_localhost``, which asks
    ``get_node_ip_address``) and would dial a port nothing listens on. That function answers
    the loopback address when ``ray_constants.ENABLE_RAY_CLUSTER`` is false, as on macOS; the
    local Ray's processes read it false from their environment (head.py). Once connected, the
    driver's node keeps its address, so the switch is needed only while ``ray.init`` runs."""
    from ray._private import ray_constants

    if not _on_loopback((address or "").rsplit(":", 1)[0].strip("[]")):
        yield
        return
    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def _on_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name, or nothing
        return False


def keep_token_private() -> None:
    """Make this user's Ray token file readable by this user alone. Ray 2.60 writes
    ``~/.ray/auth_token`` (or ``RAY_AUTH_TOKEN_PATH``) with the default umask, readable by
    every user of the machine; a cluster's head listens on every interface (Ray's gRPC servers
    bind no one address but the loopback one), and any local user can reach the loopback: the
    token is all that keeps others from running code there. A file of another user's, or none,
    is left as it is."""
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        status = path.stat()
        if status.st_uid == os.getuid() and status.st_mode & 0o077:
            path.chmod(0o600)
    except OSError:
        pass


def validate_cluster_config(config: dict[str, Any]) -> dict[str, Any]:
    """Check a cluster-launcher YAML the way ``ray up`` does, without starting anything: fill
    in the defaults, then validate against Ray's schema. ``ray up`` has no dry-run mode."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(config)
    validate_config(prepared)
    return prepared


def lean_local_node() -> None:
    """Make the next ``ray.init()`` in this process start a lean head node, for
    ``search/tune/head.py``'s child alone, whose only job is that ``ray.init``. Three cuts, each
    measured on a 2-core machine (docs/benchmarks.md, ``bench/ray_start.py``):

    - No log monitor and no autoscaler monitor, as ``ray start --head
      --include-log-monitor=False --no-monitor`` (``ray.init`` has neither switch). nascomp's
      drivers connect with ``log_to_driver=False`` (the log monitor only streams workers'
      output to drivers; the files stay in the session's logs), and one machine has nothing to
      scale. The two cost 0.9 to 1.7 CPU-s per search, mostly while the driver and the workers
      start.
    - No API server. With ``include_dashboard=False`` Ray still starts the dashboard's process
      with its usage-stats module alone, and ``ray.init`` waits until it has published its
      address: 0.85 s of the head's start and 1.0 CPU-s. Nothing of nascomp uses it (no
      dashboard, job or state API on this Ray). ``NASCOMP_RAY_API_SERVER=ray`` starts it.
    - Python workers started by ``worker_start.py`` rather than Ray's ``setup_worker.py``,
      which imports Ray once more in every worker whose actor has a runtime env, as each of Ray
      Tune's trial actors has: 0.47 CPU-s per worker start. That file says which runtime envs
      it starts itself. ``NASCOMP_RAY_SETUP_WORKER=ray`` keeps Ray's program.

    The two variables give the benchmark its baselines, and a way back should a Ray release
    change what these programs do."""
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

    from ray._private import node

    start_api_server = node.Node.start_api_server

    def without_api_server(self: Any, *, include_dashboard: bool | None, **kwargs: Any) -> None:
        if include_dashboard or os.environ.get("NASCOMP_RAY_API_SERVER") == "ray":
            start_api_server(self, include_dashboard=include_dashboard, **kwargs)
            return
        self._webui_url = ""  # what Ray records for a head started without the dashboard

    node.Node.start_api_server = without_api_server


def snapshots_every(floor_s: float) -> None:
    """Tune's experiment snapshot (with ``TUNE_GLOBAL_CHECKPOINT_S=auto``) every ``floor_s``
    seconds, or 19 times as long as the last snapshot took where that is longer: at most 5%
    of the driver's time, as Ray's own ``auto`` (whose floor is 10 s). The snapshot holds
    every trial, 38 KB each: taken every second, a 1,276-trial search wrote 56 GB and its
    driver's time per trial rose from 0.1 to 0.8 CPU-s (a soak test, 2026-12-05); a driver
    killed between snapshots loses the trials it started since the last one, so the floor
    stays short while the snapshot is small."""
    from ray.tune.execution import experiment_state

    manager = experiment_state._ExperimentCheckpointManager
    if getattr(manager, "nascomp_floor_s", None) is None:
        init = manager.__init__

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            if self._auto_checkpoint_enabled:
                self._checkpoint_period = manager.nascomp_floor_s

        def _update_auto_checkpoint_time(self: Any, time_taken: float) -> None:
            if self._auto_checkpoint_enabled:
                self._checkpoint_period = max(manager.nascomp_floor_s, time_taken * 19)

        manager.__init__ = __init__
        manager._update_auto_checkpoint_time = _update_auto_checkpoint_time
    manager.nascomp_floor_s = floor_s
