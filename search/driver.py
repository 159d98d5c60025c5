"""The search driver: Ray Tune + OptunaSearch over the joint space, trials into MLflow."""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import random
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nascomp.search import interrupts
from nascomp.search.compat import ray as ray_compat
from nascomp.search.epoch_lines import TeacherEpochs
from nascomp.search.errors import (
    ConfigError,
    SearchError,
    SearchInterrupted,
    TrackingOutage,
    exception_line,
)
from nascomp.search.experiment import (
    Experiment,
    teacher_job,
    trial_constants,
)
from nascomp.search.front import plot
from nascomp.search.front.plot import write_html, write_plot
from nascomp.search.front.report import front_markdown, record_rows
from nascomp.search.front.selection import feasible_trials, select_front
from nascomp.search.paths import check_writable_folder, storage_probe
from nascomp.search.preflight import check_user_code
from nascomp.search.resume import (
    SearchFolder,
    budget_spent,
    check_store_holds,
    find_resumable,
    folder_name,
    hold_folder,
    record_experiment,
    record_tracking_uri,
    set_state,
    write_manifest,
)
from nascomp.search.samplers import make_sampler
from nascomp.search.samplers.inherit import Inheritance
from nascomp.search.samplers.space import DefineByRun, PointCost
from nascomp.search.shipping import runtime_env, user_code_paths
from nascomp.search.tracking import models
from nascomp.search.tracking.runlog import JOURNAL
from nascomp.search.tracking.store import Tracker, TrialRecord
from nascomp.search.tune.budget import BudgetClock, BudgetedLimiter, budget_key, running_clock
from nascomp.search.tune.callbacks import MlflowTrialCallback
from nascomp.search.tune.head import LocalRay, machine_cpus, set_ray_environment
from nascomp.search.tune.interrupt import InterruptMarker
from nascomp.search.tune.retention import CheckpointRetention
from nascomp.search.tune.searcher import ConstraintsFromAttr, NascompOptunaSearch
from nascomp.search.tune.warmup import WarmUp
from nascomp.spaces.constraints import parse_constraints
from nascomp.spaces.models import code_families
from nascomp.spaces.params import all_points
from nascomp.trainers.config import describe_trial
from nascomp.trainers.data import labels_digest
from nascomp.trainers.listing import code_files_digest, data_files_digest
from nascomp.trainers.settings import METRICS
from nascomp.trainers.teacher import (
    TeacherJob,
    cache_dir,
    cache_teacher,
    cache_unwritable,
    has_teacher,
    load_or_train_teacher,
)
from nascomp.trainers.trained import TRAINED_DIR, ReusedMoveCost


@dataclass
class SearchSummary:
    search_run_id: str
    experiment_id: str
    trials: list[TrialRecord]
    front: list[TrialRecord]
    objectives: dict[str, str]
    wall_seconds: float
    teacher: dict[str, float] = field(default_factory=dict)
    searcher: Any = None  # the live NascompOptunaSearch (its Optuna study), for inspection
    folder: Path | None = None  # Ray Tune's result folder of this search
    resumed: bool = False

    def count(self, status: str) -> int:
        return sum(record.status == status for record in self.trials)


def run_search(
    experiment: Experiment,
    *,
    address: str | None = None,
    echo: Any = print,
    resume: str | None = None,
    local_ray: LocalRay | None = None,
    banner: str | None = None,
) -> SearchSummary:
    """Run the whole search (or continue one: ``resume`` is a result folder or ``latest``);
    return what MLflow holds of it, front included. ``local_ray``: this machine's Ray, already
    starting in a child process (``nascomp search`` starts it before importing this module);
    without it and without an address, ``ray.init`` starts one here. The caller closes it.
    ``banner``: echoed once every check has passed, before the notes (a search that fails a
    check prints its one-line error alone)."""
    started = time.perf_counter()
    notes: list[str] = []
    # before any run or folder exists, and before this driver uses Ray (a local Ray starting in
    # a child process is killed unused when a check fails)
    experiment = check_user_code(experiment, notes)
    interrupts.check()  # one Python swallowed while the user's modules imported
    if experiment.space.distillation_possible() and not experiment.teacher.checkpoint:
        cache_dir()  # a file at $NASCOMP_CACHE: one line now, not a traceback after the teacher
        if (why := cache_unwritable()) is not None:  # a read-only home
            notes.append(
                f"the teacher cache cannot be written ({why}): a teacher trained now is "
                "not kept for later searches and reproductions; NASCOMP_CACHE picks its folder"
            )
    experiment = _sized_to_space(experiment, notes)
    _unread_sections_notes(experiment, notes)
    notes += experiment.space.unread_notes()
    notes += objectives_notes(experiment.objectives, experiment.data.max_test_samples)
    _fail_fast_http()
    tracker = Tracker(experiment.tracking.resolved_uri(), experiment.tracking.experiment)
    tracker.check_reachable()
    tracker.check_writable()
    tracker.check_experiment_active()
    check_writable_folder(experiment.storage, "storage")
    named = "--address" if address else "RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS")
    given = address
    address = check_ray_address(address, named=named)
    if not address:
        check_local_resources(experiment)
    previous = find_resumable(experiment, resume) if resume else None
    if previous is not None:
        if problem := ray_compat.snapshot_problem(previous.path):  # before anything changes
            raise SearchError(
                f"--resume: {problem}: the search cannot go on from it (its MLflow runs are "
                "kept); restore the file from a copy, or start the search anew"
            )
        uri = experiment.tracking.resolved_uri()
        check_store_holds(previous, tracker, uri)
        if previous.tracking_uri != uri:  # a store that moved, or one the search left
            notes.append(
                f"--resume: search {previous.search_run_id} last logged to "
                f"{previous.tracking_uri}; the rest logs to {uri} (give --tracking-uri "
                f"{previous.tracking_uri} to go on there)"
            )
    # Held until this function returns: no second driver may resume it meanwhile.
    held = hold_folder(previous.path) if previous is not None else None
    for line in ([banner] if banner else []) + [f"note: {note}" for note in notes]:
        echo(line)
    constants = trial_base(experiment)
    # A cluster's GPU trials and a driver without CUDA: the teacher trains on a GPU node once
    # Ray is connected (it trained here, on "cuda": a traceback, on cluster.yaml's own head).
    on_cluster = bool(address) and _teacher_needs_a_gpu_node(experiment)
    teacher_state, teacher_facts, teacher_epochs = (
        (None, {}, []) if on_cluster else _prepare_teacher(experiment, echo)
    )
    interrupts.check()

    import ray

    set_ray_environment()
    if local_ray is not None and not address:
        tracker.import_store_code()  # while the local Ray may still be starting
        address = local_ray.address()
    if given:
        found = "" if address == given else f" (found for {given})"
        echo(f"connecting to the Ray cluster at {address}{found}")
    main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main else None
    try:
        if address:
            # This machine's token, for a cluster that asks for one (ray.init sends it by
            # itself only when it finds the cluster, "auto"); a cluster without
            # authentication ignores it.
            ray_compat.use_local_token()
        held_stderr = _stderr_held() if given else contextlib.nullcontext()
        with held_stderr, ray_compat.loopback_driver(address):
            ray.init(
                address=address,
                runtime_env=runtime_env(experiment),  # the user's own modules, to every worker
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
            )
        if sigterm is not None:  # Ray's handler exits at once: the caller's stays (the CLI's
            signal.signal(signal.SIGTERM, sigterm)  # stops the search as Ctrl-C does)
        ray_compat.keep_token_private()  # a Ray ray.init started here wrote it
    except (ConnectionError, ray.exceptions.RayError) as exc:
        if not given:
            raise
        raise SearchError(
            f"{named} {given}: Ray refused the connection ({exception_line(exc)}); {_TOKEN_NEEDED}"
        ) from None
    if given:
        seen = _cluster_seen()
        echo(f"connected to {seen}" + ("" if f" at {given} " in seen else f" (given: {given})"))
    if given and (unfit := cluster_fit(experiment)):
        echo(f"note: {unfit}")
    # A new search stopped before its trials leaves no storage folder it made (empty by then).
    root = Path(experiment.storage).expanduser().resolve()
    root_made = previous is None and not root.exists()
    run = None
    try:  # from here on, Ray is shut down (disconnected) however the search ends
        interrupts.check()
        if given:
            check_storage_shared(Path(experiment.storage).expanduser().resolve(), echo)
        if on_cluster:
            teacher_state, teacher_facts, teacher_epochs = _teacher_on_a_gpu_node(experiment, echo)
        search_run_id, folder = _open_search(
            experiment, tracker, previous, teacher_facts, teacher_epochs, echo
        )
        try:
            held = held or hold_folder(folder)
            run = _SearchRun(experiment, tracker, search_run_id, folder, echo)
            interrupts.check()
            searcher = run.fit(
                constants, teacher_state, restore=previous is not None, local_ray=local_ray
            )
        except BaseException:
            if run is None or not run.began:
                _unopen_search(tracker, search_run_id, folder, resumed=previous is not None)
            raise
    except BaseException:
        if root_made and (run is None or not run.began):
            with contextlib.suppress(OSError):
                root.rmdir()  # only if empty: a file put there meanwhile keeps it
        raise
    finally:
        ray.shutdown()
        if held is not None:
            held.close()
    # The parent run's end read them, after the last trial's writes: read again only if it
    # did not run here (a big search's runs take seconds to read).
    trials = run.trials if run.trials is not None else tracker.trials(search_run_id)
    return SearchSummary(
        search_run_id=search_run_id,
        experiment_id=tracker.experiment_id(),
        trials=trials,
        front=select_front(trials, experiment.objectives, experiment.constraints),
        objectives=experiment.objectives,
        wall_seconds=time.perf_counter() - started,
        teacher=teacher_facts,
        searcher=searcher,
        folder=folder,
        resumed=previous is not None,
    )


# Tune's experiment snapshot: every second while it is cheap, at most 5% of the driver's time
# once it is not (compat.ray.snapshots_every).
SNAPSHOT_FLOOR_S = 1.0
# How long an interrupted search waits for an absent tracking store at its end, at most
# (tracking.flush_timeout_s otherwise): its writes are in the journal, and a job scheduler's
# grace period after SIGTERM is often 30 s.
INTERRUPT_WAIT_S = 5.0


def _open_search(
    experiment: Experiment,
    tracker: Tracker,
    previous: SearchFolder | None,
    teacher_facts: dict[str, float],
    teacher_epochs: list[dict[str, float]],
    echo: Any,
) -> tuple[str, Path]:
    """The search's parent run and result folder: reopened when resuming, else new, with the
    experiment's manifest and the teacher's facts and training curve."""
    storage = Path(experiment.storage).expanduser().resolve()
    if previous is not None:
        search_run_id, folder = previous.search_run_id, previous.path
        tracker.reopen_search(search_run_id)
        record_tracking_uri(folder, experiment.tracking.resolved_uri())
        budget = experiment.model_dump(mode="json")["search"]["budget"]
        if previous.experiment.get("search", {}).get("budget") != budget:
            # a new limit: the manifest and the run's experiment.yaml say what it runs under
            record_experiment(folder, experiment)
            tracker.log_experiment_yaml(search_run_id, _experiment_yaml(experiment))
        echo(f"resuming search {search_run_id} from {folder}")
    else:
        search_run_id = tracker.start_search(
            run_name=f"search-{time.strftime('%Y%m%d-%H%M%S')}",
            experiment_yaml=_experiment_yaml(experiment),
            space=experiment.space.describe(),
            objectives=experiment.objectives,
            git_commit=_git_commit(),
            constraints=experiment.constraints,
            data_files=data_files_digest(experiment.data.name, experiment.data.root),
            code_files=code_files_digest(user_code_paths(experiment)),
        )
        folder = storage / folder_name(search_run_id)
        try:
            write_manifest(folder, experiment, search_run_id)
            if teacher_facts:
                facts = {k: v for k, v in teacher_facts.items() if isinstance(v, float)}
                tracker.log_search_metrics(search_run_id, facts)
            for epoch in teacher_epochs:  # the teacher's training curve, on the parent run
                tracker.log_search_metrics(
                    search_run_id,
                    {
                        "teacher_loss": epoch["loss"],
                        "teacher_train_accuracy": epoch["train_accuracy"],
                    },
                    step=int(epoch["epoch"]),
                )
        except BaseException:
            _unopen_search(tracker, search_run_id, folder, resumed=False)
            raise
    return search_run_id, folder


def _unopen_search(tracker: Tracker, search_run_id: str, folder: Path, *, resumed: bool) -> None:
    """A search stopped (Ctrl-C, an error) after its parent run was opened and before Tune
    began its trials: the CLI says there is nothing to resume, and the run stayed RUNNING,
    the store's latest search, an empty front for ``pareto``, and a ``--resume`` of a folder
    without Tune's state. A new search's run is deleted (MLflow keeps it in its trash) and
    its folder removed; a resumed one's run is KILLED again, as it was, and can be resumed.
    Best effort: a store that does not answer keeps the run as it is."""
    with contextlib.suppress(Exception):
        tracker.client.set_terminated(search_run_id, "KILLED")
        if not resumed:
            tracker.client.delete_run(search_run_id)
    if not resumed:
        shutil.rmtree(folder, ignore_errors=True)


def _experiment_yaml(experiment: Experiment) -> str:
    return yaml.safe_dump(experiment.model_dump(mode="json"), sort_keys=False)


def end_status(*, ended: int, trials: int, budget_spent: bool, interrupted: bool) -> str:
    """The parent run's status once Tune returns: FINISHED when every trial ended or the
    budget is spent, KILLED otherwise and whenever Ctrl-C came (``interrupted``: seen by
    :class:`InterruptMarker`, or a trial began and never ended). Tune's Ctrl-C handler ends its
    loop and returns, counting the trials it stopped as terminated, those whose actors were
    still starting included: by its count alone, a search stopped before its trials began was
    over, with an empty front (exit 4), and their runs never resumed."""
    if interrupted:
        return "KILLED"
    return "FINISHED" if ended >= trials or budget_spent else "KILLED"


class _SearchRun:
    """One driver's part of a search: the Tuner (new or restored), its callbacks, and the
    end: front, plot and status on the parent run, through the same buffered writes."""

    def __init__(
        self,
        experiment: Experiment,
        tracker: Tracker,
        search_run_id: str,
        folder: Path,
        echo: Any,
    ) -> None:
        self.experiment, self.tracker, self.echo = experiment, tracker, echo
        self.search_run_id, self.folder = search_run_id, folder
        self.trials: list[TrialRecord] | None = None  # read by the parent run's end
        self.began = False  # whether fit reached Tune's loop (and with it, the run's end)
        self.callback = MlflowTrialCallback(
            tracker,
            search_run_id,
            experiment.objectives,
            experiment.constraints,
            journal=folder / JOURNAL,
            finisher=self.finish_parent,
            echo=echo,
            background=True,  # Tune's loop only queues MLflow writes
        )
        self.callback.log.retry_s = experiment.tracking.retry_s
        self.callback.log.batch_s = experiment.tracking.batch_s

    def fit(
        self,
        constants: dict[str, Any],
        teacher_state: dict | None,
        *,
        restore: bool,
        local_ray: LocalRay | None = None,
    ) -> NascompOptunaSearch:
        from ray import tune
        from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

        from nascomp.search.tune.progress import ProgressLine

        ray_compat.snapshots_every(SNAPSHOT_FLOOR_S)
        if restore and not tune.Tuner.can_restore(str(self.folder)):
            # The driver was killed after opening the search and before Tune saved anything:
            # Tune's restore failed with a traceback on every --resume.
            self.echo(
                f"note: {self.folder.name} holds no Ray Tune state (the search stopped before "
                "its first trial began): its trials start now"
            )
            restore = False
        trainable = _trainable(self.experiment, teacher_state, self.folder)
        search = self.experiment.search
        # A budget alone sizes the search: its trials cap is no total to show.
        total = None if search.sized_by_budget else search.trials
        clock = self._budget_clock()
        interrupt = InterruptMarker(self.folder)  # Ctrl-C, told to the trials
        callbacks = [
            self.callback,
            ProgressLine(
                total,
                self.experiment.objectives,
                self.echo,
                # Redrawn in place only where a person watches a terminal.
                live=sys.stdout if self.echo is print and sys.stdout.isatty() else None,
                budget_left=clock.seconds_left if clock is not None else None,
                waiting=functools.partial(cluster_fit, self.experiment),
                constraints=parse_constraints(self.experiment.constraints, METRICS),
            ),
            CheckpointRetention(),
            # While the first trials train: the first MLflow model of a trial (a lookup
            # trial ships none) and the first plots, instead of on the trials' path.
            WarmUp(
                [models.warm_up, plot.warm_up]
                if self.experiment.trial == "train"
                else [plot.warm_up]
            ),
            interrupt,
            # Tune's own trial logs (progress.csv, result.json in each trial's folder), which
            # Tune's tools read (ray.tune.ExperimentAnalysis of the search's folder); the
            # driver reads none of them (compat.ray.without_result_analysis), and
            # search.tune.head turns Tune's automatic loggers off.
            CSVLoggerCallback(),
            JsonLoggerCallback(),
        ]
        if clock is not None:
            callbacks.append(clock)
        if restore:
            with ray_compat.without_result_analysis():
                tuner = tune.Tuner.restore(
                    str(self.folder), trainable=trainable, resume_unfinished=True
                )
            # Tune restores the callbacks pickled at the start; ours must be this driver's.
            searcher = ray_compat.adopt_restored(tuner, callbacks)
        else:
            searcher = _searcher(self.experiment, constants, self.folder)
            tuner = self._new_tuner(trainable, searcher, callbacks)
        status = "FAILED"
        started = time.time()
        sigint = signal.getsignal(signal.SIGINT)
        sigterm = signal.getsignal(signal.SIGTERM)
        self.began = True  # from here on, the end below closes the parent run
        try:
            try:
                with (
                    running_clock(clock) if clock is not None else contextlib.nullcontext(),
                    ray_compat.without_result_analysis(),
                    ray_compat.search_reopened() if restore else contextlib.nullcontext(),
                ):
                    grid = tuner.fit()
            finally:
                # Tune leaves its Ctrl-C handler behind when no Ctrl-C came: one while the
                # front is written would end nothing. Its trials have stopped by now.
                if sigint is not None and threading.current_thread() is threading.main_thread():
                    signal.signal(signal.SIGINT, sigint)
                if sigterm is not None and threading.current_thread() is threading.main_thread():
                    signal.signal(signal.SIGTERM, sigterm)
                interrupt.clear()
            if restore:
                ray_compat.drop_earlier_snapshots(self.folder, since=started)
            ray_compat.drop_driver_staging(self.folder.name)
            status = end_status(
                ended=grid.num_terminated + grid.num_errors,
                trials=self.experiment.search.trials,
                budget_spent=clock is not None and clock.exhausted(),
                interrupted=interrupt.interrupted or bool(self.callback.open),
            )
            if clock is not None:
                self.echo(f"budget: {clock.describe()} spent")
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            if status != "FINISHED" or (clock is not None and clock.exhausted()):
                # Tune's garbage then holds Ray's handles (of trials it stopped while they
                # waited for a node). Freed by the collector in this thread while the other
                # one's ray.shutdown ran, one ended the process ("The core worker has already
                # been shutdown", exit 1: 7 of 15 Ctrl-C on a cluster where no node fit a
                # trial; 0 of 12 with this, 2 of 6 with a 0.35 s pause in its place). Freed
                # here, before: about 0.3 s, so not after a search whose trials all ended.
                gc.collect()
            # Tune is done with Ray: it disconnects and its processes stop (about 1 s when
            # ray.init started them here; at once for a local Ray in a child process) while
            # the parent run's front and plots are written (about 1 s).
            shutdown = threading.Thread(
                target=_shutdown_ray, args=(local_ray,), name="nascomp-ray-shutdown"
            )
            shutdown.start()
            try:
                with _patient_while_saving() as told:
                    self.end(status, interrupted=lambda: bool(told))
            except KeyboardInterrupt:
                # Told twice to leave now: Tune's last snapshot is the state to resume from.
                raise SearchInterrupted(
                    f"search interrupted before its state was saved; continue it from "
                    f"{self.folder}'s last snapshot with the same command and --resume"
                ) from None
            finally:
                shutdown.join()
        return searcher

    def _budget_clock(self) -> BudgetClock | None:
        """The clock of ``search.budget``, counting on from what earlier runs spent."""
        budget = self.experiment.search.budget
        if not budget.given:
            return None
        spent_before = budget_spent(self.folder)
        if spent_before:
            self.echo(f"budget: {spent_before:.4g} of {budget.limit:g} {budget.unit} spent before")
        if spent_before >= budget.limit:
            # A resume given a limit at or below what was spent starts nothing: said, not left
            # to the end line (a search resumed at 2 wall_s ended at 5.7 times it, unsaid).
            self.echo(
                f"note: search.budget.{budget.unit} {budget.limit:g} is spent already: no new "
                "trial starts, the begun ones finish; give a larger limit to search on"
            )
        return BudgetClock(
            budget,
            cpus_per_trial=self.experiment.resources.cpus_per_trial,
            gpus_per_trial=self.experiment.resources.gpus_per_trial,
            folder=self.folder,
            spent_before=spent_before,
            echo=self.echo,
        )

    def _new_tuner(self, trainable: Any, searcher: NascompOptunaSearch, callbacks: list) -> Any:
        from ray import tune
        from ray.tune.search import ConcurrencyLimiter

        from nascomp.search.tune.trainable import trial_dirname

        search = self.experiment.search
        limiter = (
            BudgetedLimiter(searcher, search.concurrent, budget_key(self.folder))
            if search.budget.given
            else ConcurrencyLimiter(searcher, max_concurrent=search.concurrent)
        )
        return tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=limiter,
                scheduler=_scheduler(self.experiment, self.echo),
                num_samples=search.trials,
                reuse_actors=True,
                # trial_<id>: a restarted trial finds its checkpoints from its id alone.
                trial_dirname_creator=trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=self.folder.name,
                storage_path=str(self.folder.parent),
                callbacks=callbacks,
                # A trial whose worker dies restarts from its last epoch's checkpoint. Tune
                # keeps them all; CheckpointRetention deletes the ones no snapshot can name
                # any more (search/tune/retention.py; docs/scaling.md: checkpoint storage).
                failure_config=tune.FailureConfig(max_failures=search.max_failures),
                verbose=0,
            ),
        )

    def end(self, status: str, interrupted: Callable[[], bool] | None = None) -> None:
        """Close the open runs, then the parent run; wait a while for an absent server (5 s
        at most once ``interrupted()``: a Ctrl-C or SIGTERM during the wait)."""
        log = self.callback.log
        log.stop_writer()  # what is left is written here, in this thread
        if status != "FINISHED":
            self.callback.interrupted()
        log.submit({"op": "finish", "status": status})
        timeout_s = self.experiment.tracking.flush_timeout_s
        why = "tracking.flush_timeout_s"
        if status == "KILLED" and timeout_s > INTERRUPT_WAIT_S:
            # An interrupt does not wait long for an absent store: the journal keeps the
            # writes for --resume or replay, and a scheduler's SIGTERM (Kubernetes, Slurm: 30 s
            # of grace) would SIGKILL a driver still waiting, in the middle of its end.
            timeout_s, why = INTERRUPT_WAIT_S, "an interrupt; the journal keeps the rest"
        # A first try before the wait is said: a store that went away as the last trial
        # ended is found here, and minutes of silence read as a hang.
        written = log.flush(force=True)
        if not written and log.offline_since is not None and log.pending:
            leave = "" if status == "KILLED" else f"Ctrl-C ends it within {INTERRUPT_WAIT_S:g} s, "
            self.echo(
                f"tracking: waiting up to {timeout_s:g} s ({why}) for the "
                f"store to take {len(log.pending)} buffered writes; they are kept in "
                f"{self.folder / JOURNAL} meanwhile ({leave}Ctrl-C twice leaves now)"
            )
        if not written and not log.drain(timeout_s, interrupted, INTERRUPT_WAIT_S):
            set_state(self.folder, "interrupted" if status == "KILLED" else "unlogged")
            folder = shlex.quote(str(self.folder))
            away = (
                f"tracking server {self.tracker.shown_uri} has not answered since "
                f"{time.strftime('%H:%M:%S', time.localtime(log.offline_since))} "
                f"({log.last_error}); {len(log.pending)} writes are kept in "
                f"{self.folder / JOURNAL}"
            )
            if status == "KILLED":  # interrupted too: how to go on first (exit 130)
                raise SearchInterrupted(
                    f"search interrupted; its state is saved in {self.folder}; {away}: the "
                    "same command with --resume continues it and writes them once the "
                    f"server is back (or, to keep the search as it is: nascomp replay {folder})"
                )
            if interrupted is not None and interrupted():  # told to stop while it waited
                raise SearchInterrupted(
                    f"search interrupted while it waited for the tracking server, its trials "
                    f"all ended; {away}: nascomp replay {folder} writes them once the server "
                    "is back (or the same command with --resume)"
                )
            raise TrackingOutage(f"{away}; when it is back, run: nascomp replay {folder}")
        set_state(self.folder, "finished" if status == "FINISHED" else "interrupted")
        if status == "KILLED":
            raise SearchInterrupted(
                f"search interrupted; its state is saved in {self.folder}; continue it with "
                "the same command and --resume"
            )

    def finish_parent(self, status: str) -> None:
        self.trials = finish_search(self.tracker, self.search_run_id, status)


def finish_search(tracker: Tracker, search_run_id: str, status: str) -> list[TrialRecord]:
    """The parent run's end: the feasible front, the Pareto plot and the status. Returns the
    trials it read (every trial's run has ended by then)."""
    objectives = tracker.objectives(search_run_id)
    constraints = tracker.constraints(search_run_id)
    trials = tracker.trials(search_run_id)
    front = select_front(trials, objectives, constraints)
    done = feasible_trials(trials, objectives, constraints)
    note = front_markdown(
        record_rows(front, describe_trial),
        objectives,
        tracker.experiment_id(),
        final=status != "KILLED",  # an interrupted search's front is so far: it resumes
        n_trials=sum(t.status not in ("running", "interrupted") for t in trials),
    )
    if not done:
        tracker.finish_search(
            search_run_id, front, objectives, status, note=note, constraints=constraints
        )
        return trials
    with tempfile.TemporaryDirectory() as folder:
        files = [
            write_plot(done, front, objectives, Path(folder) / "pareto.png", search_run_id),
            write_html(
                done,
                front,
                objectives,
                Path(folder) / "pareto.html",
                describe=lambda t: describe_trial(t.params),
            ),
        ]
        tracker.finish_search(
            search_run_id,
            front,
            objectives,
            status,
            files=files,
            note=note,
            constraints=constraints,
        )
    return trials


def _shutdown_ray(local_ray: LocalRay | None) -> None:
    import ray

    ray.shutdown()
    if local_ray is not None:
        local_ray.close()


def _searcher(
    experiment: Experiment, constants: dict[str, Any], folder: Path
) -> NascompOptunaSearch:
    from nascomp.trainers.predicted import TrainMacs

    constraints = parse_constraints(experiment.constraints, METRICS)
    constraints_func = ConstraintsFromAttr(len(constraints)) if constraints else None
    epochs = experiment.search.inherit_epochs
    inherit = Inheritance(str(folder.resolve() / TRAINED_DIR), epochs) if epochs else None
    # The objectives go to the searcher only: a metric in TuneConfig would silently turn the
    # search single-objective (NOTES.md).
    return NascompOptunaSearch(
        space=DefineByRun(experiment.space.params(), constants, inherit),
        points_to_evaluate=grid_points(experiment),
        metric=experiment.metric_names(),
        mode=experiment.modes(),
        sampler=make_sampler(
            experiment.search,
            constraints_func,
            experiment.space.features(),
            move_cost=_move_cost(experiment),
            start_cost=(
                PointCost(experiment.space.params(), constants, TrainMacs())
                if experiment.trial == "train"
                else None
            ),
        ),
        constraints=constraints,
    )


def grid_points(experiment: Experiment) -> list[dict[str, Any]] | None:
    """Every point of a space no larger than ``search.trials``, in an order drawn from the
    search's seed: the first trials, enqueued before the sampler is asked (a sampler draws a
    small space's points again before it has tried them all: pls's balanced start design
    repeats combinations). None for a larger or endless space, and with weight inheritance,
    whose moves need parents."""
    if experiment.search.inherit_epochs:
        return None
    return _space_points(experiment)


# The largest space listed as a grid: NAS-Bench-201's 15,625 cells fit (0.3 s and 4 MB to
# list them); the cap was 10,000, and an exhaustive NB201 search drew at random (a helper's
# sweep). A budget-sized search's trials (BUDGET_TRIALS_CAP) are fewer.
GRID_POINTS_CAP = 20_000


def _space_points(experiment: Experiment) -> list[dict[str, Any]] | None:
    """Every point of a space no larger than ``search.trials``, in an order drawn from the
    search's seed; None for a larger or endless space."""
    points = all_points(experiment.space.params(), min(experiment.search.trials, GRID_POINTS_CAP))
    if points is not None:
        random.Random(experiment.search.seed).shuffle(points)
    return points


# Metrics a search is usually meant to raise; any other objective is a cost to lower.
_RAISED = ("accuracy", "agreement")


def objectives_notes(objectives: dict[str, str], test_samples: int | None = None) -> list[str]:
    """Notes on objectives that are allowed but rarely meant: one chosen on the test split
    (the front's test figures then overstate what new inputs get; ``test_samples``: the
    split's cap, ``data.max_test_samples``), and a direction opposite to the metric's usual
    one (``val_accuracy: min`` searches for the worst models)."""
    notes = []
    tested = [name for name in objectives if name.startswith("test_")]
    if tested:
        split = (
            "the test split"
            if test_samples is None
            else (f"at most {test_samples:,} samples of the test split (data.max_test_samples)")
        )
        notes.append(
            f"objectives: {', '.join(tested)} {'selects' if len(tested) == 1 else 'select'} "
            f"on {split}, so the front's test "
            "figures overstate what new inputs get; select on val_* and read test_* afterwards"
        )
    for name, mode in objectives.items():
        raised = name.endswith(_RAISED)
        if (raised and mode == "min") or (not raised and mode == "max"):
            usual = "max" if raised else "min"
            notes.append(
                f"objectives.{name}: {mode} searches for the {'worst' if raised else 'largest'} "
                f"such models; {usual} is the usual direction"
            )
    return notes


def _sized_to_space(experiment: Experiment, notes: list[str]) -> Experiment:
    """A note when the space holds fewer points than ``search.trials``: each is trained once
    first (``grid_points``), then the sampler draws them again, which a search of that many
    trials avoids. A count the user gave is not cut: a benchmark may repeat one point on
    purpose. A search its budget alone sizes ends once each point is trained: a point trained
    again counts once (by its first trial), so the rest of the budget bought nothing (a 4-point
    space trained 108 times in a 40 s budget, unsaid; a helper's sweep). Not with weight
    inheritance, whose trials of one point differ by the weights they start from."""
    points = _space_points(experiment)
    search = experiment.search
    if points is None or len(points) >= search.trials:
        return experiment
    n = len(points)
    held = f"space: it holds {n} distinct point{'s' if n != 1 else ''}"
    if search.sized_by_budget and not search.inherit_epochs:
        notes.append(
            f"{held}: this search, sized by its budget, ends once each is trained (set "
            "search.trials to train them again within the budget)"
        )
        return experiment.model_copy(update={"search": search.model_copy(update={"trials": n})})
    how = (
        # moves need parents: no grid first, and the sampler may repeat a point before it
        # has tried them all
        "with search.inherit_epochs the sampler draws them, repeating some before others are tried"
        if search.inherit_epochs
        else "each is trained once first, then trained again as the sampler draws it"
    )
    fewer = (
        "and the budget sizes the search"
        if search.sized_by_budget
        else f"fewer than search.trials ({search.trials})"
    )
    notes.append(f"{held}, {fewer}: {how} (set search.trials: {n} to stop there)")
    return experiment


def _unread_sections_notes(experiment: Experiment, notes: list[str]) -> None:
    """Notes for settings the user gave that no part of this search reads (as the space's own
    say for its leaves): the teacher's when no trial distils (a garbage teacher.checkpoint
    passed unsaid), the rungs' without the scheduler that reads them, the NAS-Bench-201
    table's when trials train."""
    teacher = experiment.teacher
    if (
        experiment.trial == "train"
        and not experiment.space.distillation_possible()
        and teacher.model_fields_set - {"checkpoint_sha256"}
    ):
        named = ", ".join(sorted(teacher.model_fields_set - {"checkpoint_sha256"}))
        notes.append(
            f"teacher: never read: no trial distils (space.distill.enabled is false), so its "
            f"settings ({named}) are not checked or used"
        )
    if experiment.trial == "nb201_lookup":
        # a lookup trains, reads and measures nothing: the table holds the figures
        given = [
            name
            for name in ("train", "data", "measure")
            if name in experiment.model_fields_set and getattr(experiment, name).model_fields_set
        ]
        if given:
            notes.append(
                f"{', '.join(given)}: never read: trial nb201_lookup reads NAS-Bench-201's "
                "table, which holds each network's trained accuracies"
            )
        # what only trained trials give: a trained student to reuse, seconds to learn costs from
        asked = [
            f"search.{name}"
            for name in ("reuse_training", "cost_aware")
            if name in experiment.search.model_fields_set and getattr(experiment.search, name)
        ]
        if asked:
            notes.append(
                f"{', '.join(asked)}: never read: trial nb201_lookup trains nothing (no trained "
                "student to reuse, no training time to learn costs from)"
            )
    elif experiment.nb201.model_fields_set - {"table_sha256"}:
        notes.append(
            "nb201: never read: trial is train (trial: nb201_lookup reads it), so its settings "
            f"({', '.join(sorted(experiment.nb201.model_fields_set - {'table_sha256'}))}) are "
            "not checked or used"
        )
    search = experiment.search
    if search.scheduler == "none" and "rungs" in search.model_fields_set:
        notes.append("search.rungs: never read: search.scheduler is none (mo_asha reads it)")


def _move_cost(experiment: Experiment) -> ReusedMoveCost | None:
    """With trained students reused, a move that only changes the compression costs a share
    of a trial: ``pls`` weighs its predicted gain by that (trainers.trained)."""
    if experiment.trial != "train" or not experiment.search.reuse_training:
        return None
    return ReusedMoveCost.of(experiment.train, experiment.search.inherit_epochs)


def _trainable(experiment: Experiment, teacher_state: dict | None, folder: Path) -> Any:
    from ray import tune

    from nascomp.search.tune.trainable import lookup_trial_fn, trial_fn

    resources = {
        "cpu": experiment.resources.cpus_per_trial,
        "gpu": experiment.resources.gpus_per_trial,
    }
    if experiment.trial == "nb201_lookup":
        return tune.with_resources(lookup_trial_fn, resources)
    # mo_asha decides at every epoch, so it must hear of every epoch when it ends.
    every_s = 0.0 if experiment.search.scheduler != "none" else experiment.search.checkpoint_every_s
    # Trained students kept for trials that only compress them otherwise (trainers.trained).
    trained = str(folder / TRAINED_DIR) if experiment.search.reuse_training else None
    digest = None
    if experiment.data.name == "custom":  # the user's factory: every process calls it
        # read by the checks before (cached in this process): the trials must read the same
        data = experiment.data.load(threads=trial_constants(experiment)["threads"])
        digest = labels_digest(data)
    return tune.with_resources(
        tune.with_parameters(
            trial_fn,
            teacher_state=teacher_state,
            every_s=every_s,
            trained_dir=trained,
            families=code_families() or None,  # registered by the user's code, in this process
            data_digest=digest,
        ),
        resources,
    )


def _scheduler(experiment: Experiment, echo: Any) -> Any:
    if experiment.search.scheduler == "none":
        return None
    assert experiment.trial == "train", "the experiment's schema refuses mo_asha on a lookup"
    from nascomp.search.tune.scheduler import MultiObjectiveAsha
    from nascomp.trainers.predicted import PREDICTED_METRICS, predict_costs

    rungs = experiment.search.rungs
    scheduler = MultiObjectiveAsha(
        experiment.objectives,
        max_epochs=experiment.train.epochs,
        grace_period=rungs.grace_period,
        reduction_factor=rungs.reduction_factor,
        # Sizes and counts at a rung are the ones the trial will ship with, not its dense ones.
        predict=predict_costs,
    )
    per_epoch = {"val_accuracy", "val_balanced_accuracy", "train_accuracy", *PREDICTED_METRICS}
    ranked = [
        f"{m} (predicted final)" if m in PREDICTED_METRICS else m
        for m in experiment.objectives
        if m in per_epoch
    ]
    echo(
        f"mo_asha: rungs at epochs {scheduler.rungs or 'none (train.epochs too small)'}, "
        f"ranking by {', '.join(ranked) or 'nothing reported per epoch'}"
    )
    if inherit := experiment.search.inherit_epochs:
        # Judged among themselves: they start from trained weights (search.tune.scheduler).
        own = list(scheduler.rungs_for(inherit)) or "none"
        echo(f"mo_asha: trials that inherit weights train {inherit} epochs, rungs at {own}")
    if not experiment.search.budget.given and scheduler.rungs:
        # Sized in trials, the search ends after as many trials whatever the rungs save.
        echo(
            f"note: stopped trials count in search.trials ({experiment.search.trials}); "
            "give search.budget (e.g. {wall_s: 600}) to spend the epochs they save on more trials"
        )
    return scheduler


def trial_base(experiment: Experiment) -> dict[str, Any]:
    """The fixed part of every trial's flat config: what MLflow logs besides the sampled keys."""
    constants = trial_constants(experiment)
    if experiment.trial == "nb201_lookup":
        # A lookup neither trains nor measures: its config is the cell and where to look it up.
        return {
            "trial": "nb201_lookup",
            "nb201.dataset": experiment.nb201.dataset,
            "nb201.table": experiment.nb201.table,
            "nb201.table_sha256": experiment.nb201.table_sha256,
            "seed": constants["seed"],
        }
    return constants


def _prepare_teacher(
    experiment: Experiment, echo: Any
) -> tuple[dict | None, dict[str, float], list[dict[str, float]]]:
    """The teacher's weights, facts about it, and its epochs when it was trained now (each
    echoed as it ends: a teacher can take minutes before the first trial starts)."""
    if experiment.trial != "train" or not experiment.space.distillation_possible():
        return None, {}, []
    lines = TeacherEpochs(echo)
    state, facts = load_or_train_teacher(teacher_job(experiment), lines)
    if experiment.teacher.checkpoint:
        how = f"loaded from teacher.checkpoint {experiment.teacher.checkpoint}"
    elif facts.get("teacher_cached"):
        how = "loaded from cache"
    else:
        how = f"trained in {facts['teacher_train_seconds']:.1f} s"
    accuracy = facts.get("teacher_val_accuracy")
    echo(f"teacher {how}" + (f", val_accuracy {accuracy:.4f}" if accuracy is not None else ""))
    if accuracy is not None and accuracy < 0.5:  # the data are read (once) for K alone then
        n_classes = experiment.data.load(threads=trial_base(experiment)["threads"]).n_classes
        if (note := chance_note(accuracy, n_classes)) is not None:
            echo(note)
    return state, facts, lines.epochs


# A teacher whose validation accuracy is at most this many times chance (1/K) taught nothing.
CHANCE_FACTOR = 1.5


def chance_note(accuracy: float, n_classes: int) -> str | None:
    """A note for a teacher that scores no better than chance: every distilled student learned
    its noise, unsaid (teacher.lr 30 with SGD: 0.0972 on digits' 10 classes)."""
    if accuracy > CHANCE_FACTOR / n_classes:
        return None
    return (
        f"note: the teacher scores no better than chance ({accuracy:.4f}; 1/K is "
        f"{1 / n_classes:.4f}): every distilled student learns its noise; check teacher.lr, "
        "teacher.epochs or teacher.checkpoint"
    )


def _teacher_needs_a_gpu_node(experiment: Experiment) -> bool:
    """Whether the teacher has to be trained, on the trials' CUDA device, which this machine
    lacks: a cluster's head often has no GPU (cluster.yaml's has none)."""
    if experiment.trial != "train" or not experiment.space.distillation_possible():
        return False
    job = teacher_job(experiment)
    if job.device != "cuda":
        return False
    import torch

    return not torch.cuda.is_available() and not has_teacher(job)


def _teacher_on_a_gpu_node(
    experiment: Experiment, echo: Any
) -> tuple[dict, dict[str, float], list[dict[str, float]]]:
    """:func:`_prepare_teacher`'s answer, the teacher trained by a Ray task that asks for
    what one trial does (so on a node like the trials', on their device), then kept in this
    machine's cache too (``reproduce`` here finds it). Its epochs are echoed when it ends."""
    import ray

    job = teacher_job(experiment)
    resources = experiment.resources
    echo("teacher: this machine has no CUDA device; training it on a GPU node of the cluster")
    task = ray.remote(_teacher_task).options(
        num_cpus=resources.cpus_per_trial, num_gpus=resources.gpus_per_trial
    )
    try:
        state, facts, epochs = ray.get(task.remote(job))
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        raise (cause if isinstance(cause, Exception) else exc) from None
    cache_teacher(job, state, {k: v for k, v in facts.items() if k != "teacher_cached"})
    lines = TeacherEpochs(echo)
    for epoch in epochs:
        lines(epoch)
    how = (
        "loaded from the node's cache"
        if facts.get("teacher_cached")
        else f"trained in {facts['teacher_train_seconds']:.1f} s"
    )
    echo(f"teacher {how}, val_accuracy {facts['teacher_val_accuracy']:.4f}")
    return state, facts, epochs


def _teacher_task(job: TeacherJob) -> tuple[dict, dict[str, float], list[dict[str, float]]]:
    """The teacher of ``job`` on a worker: its weights (on the CPU), facts and epochs."""
    epochs: list[dict[str, float]] = []
    state, facts = load_or_train_teacher(job, epochs.append)
    return state, facts, epochs


@contextlib.contextmanager
def _patient_while_saving() -> Iterator[list[int]]:
    """While the search ends (its runs closed, the parent run's front written, its state
    saved for --resume), a Ctrl-C or SIGTERM says what it waits for; a second one leaves.
    An impatient second Ctrl-C used to cut that short: the parent run stayed RUNNING and the
    message said there was nothing to resume, though there was. Yields the signals told so
    far (a wait for an absent store then ends within 5 s)."""
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    told: list[int] = []

    def wait_or_leave(signum: int, frame: Any) -> None:
        if told:
            raise KeyboardInterrupt
        told.append(signum)
        print(
            "nascomp: saving the search's state for --resume (a moment; again to leave now)",
            file=sys.stderr,
            flush=True,
        )

    previous = {s: signal.signal(s, wait_or_leave) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield told
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _stderr_held() -> Iterator[None]:
    """This process's stderr (file descriptor 2) held in a temporary file, and written out
    only if the block succeeds. Ray's C++ client writes past ``sys.stderr``: while a cluster
    refuses this machine's token it logs a warning a second, 20 in all, before ``ray.init``
    gives up, and the one-line error that follows says why."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if ok:
                held.seek(0)
                if text := held.read():
                    os.write(2, text)


def check_ray_address(
    address: str | None, timeout_s: float = 5.0, named: str = "--address"
) -> str | None:
    """Fail in seconds with one line when a HOST:PORT cluster does not answer, or what
    answers there is no Ray cluster's GCS (``named``: where the address came from); return
    the address to connect to.

    ray.init would otherwise retry the GCS for minutes, or, given a port where another server
    listens (an MLflow server's, a dashboard's), wait forever, deaf to Ctrl-C. Other forms
    (``http://``, Ray Client's ``ray://``, which needs ``ray[client]``) are refused here:
    Ray's own error named RAY_ADDRESS, after the teacher had trained. "auto" is looked up as
    Ray looks it up, and the HOST:PORT found is checked and returned: a cluster that refused
    this machine's token, or none at all, was Ray's error after the teacher had trained.
    """
    if not address:
        return address
    if address == "auto":
        try:
            found = ray_compat.auto_address()
        except ray_compat.SeveralRays as exc:
            raise SearchError(
                f"{named} auto: {exc}; give the one to join, {named} HOST:PORT (or RAY_ADDRESS)"
            ) from None
        except (ConnectionError, ValueError) as exc:
            raise SearchError(
                f"{named} auto: no Ray cluster found on this machine ({exception_line(exc)}); "
                "start one with `ray start --head`, or give its GCS address HOST:PORT"
            ) from None
        _check_host_port(found, timeout_s, f"{named} auto, found at", looked_up=True)
        return found
    _check_host_port(address, timeout_s, named)
    return address


def _check_host_port(address: str, timeout_s: float, named: str, looked_up: bool = False) -> None:
    host, _, port = address.rpartition(":")
    if address.startswith("ray://"):
        raise SearchError(
            f"{named} {address!r}: Ray Client (ray://) is not supported: give the cluster's "
            "GCS address HOST:PORT (port 6379 by default), and run nascomp on a node of the "
            "cluster or through ray job submit"
        )
    if "://" in address or not host or not port.isdigit():
        raise SearchError(
            f"{named} {address!r}: expected HOST:PORT (the cluster's GCS, port 6379 by "
            "default, not an http:// address) or auto"
        )
    if "," in address:  # several addresses: Ray joins one cluster by one GCS address
        raise SearchError(
            f"{named} {address!r}: one HOST:PORT (the cluster's GCS, port 6379 by default), "
            "not a list"
        )
    if ":" in host and not host.startswith("["):  # Ray refuses ::1:6379 after the teacher
        raise SearchError(
            f"{named} {address!r}: write an IPv6 address in brackets, [{host}]:{port}"
        )
    if not 1 <= int(port) <= 65535:  # "no Ray cluster answers" blamed the cluster
        raise SearchError(f"{named} {address!r}: the port must be in 1..65535")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:6379, an IPv6 address's form
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
            speaks = _speaks_http2(sock, timeout_s)
    except OSError as exc:
        reason = exc.strerror or exc
        if looked_up:  # a stale record, or another user's Ray that serves its own machine only
            raise SearchError(
                f"{named} {address}: no Ray cluster answers there ({reason}); Ray looks for "
                "auto in RAY_ADDRESS, the cluster `ray start` recorded, else any GCS process "
                "on this machine: give the cluster's GCS address HOST:PORT"
            ) from None
        # named: the flag or RAY_ADDRESS, which a user who gave no --address cannot guess
        raise SearchError(f"{named} {address}: no Ray cluster answers there ({reason})") from None
    if not speaks and not _truthy(os.environ.get("RAY_USE_TLS")):
        raise SearchError(
            f"{named} {address}: a server answers there, but not a Ray cluster's GCS (no gRPC "
            "reply); give the GCS address, port 6379 by default (not the dashboard's or an "
            "HTTP server's port)"
        )
    _check_gcs_call(address, named)


_TOKEN_NEEDED = (
    "a cluster with token authentication needs its token on this machine: ~/.ray/auth_token, "
    "or RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH"
)
_TOKEN_REFUSED = (
    f"the cluster refused this machine's Ray token (none, or not its own); {_TOKEN_NEEDED} "
    "(Ray reads it once per process: from Python, start a new one)"
)
# gRPC's statuses for a method the server does not have, and for a call it never answered.
_UNIMPLEMENTED = 12
_DEADLINE_EXCEEDED = 4


def _check_gcs_call(address: str, named: str) -> None:
    """Ask what answers at ``address`` for its cluster's id, as every Ray client first does
    (Ray's own GCS client): another gRPC server, a raylet's port say, lacks the call, and
    ``ray.init`` then retried for 20 s before blaming the token, after the teacher had
    trained. A cluster that refuses this machine's token is named here too, before the
    teacher. Other failures are left to ``ray.init``, whose error the driver words."""
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError, RpcError

    try:
        ray_compat.use_local_token()
    except AuthenticationError as exc:  # RAY_AUTH_TOKEN_PATH names no file, or an empty one
        raise SearchError(
            f"{named} {address}: this machine's Ray token cannot be read ({exception_line(exc)})"
        ) from None
    try:
        with _stderr_held():  # Ray's C++ client logs its failure past sys.stderr
            GcsClient(address=address)
    except AuthenticationError:
        raise SearchError(f"{named} {address}: {_TOKEN_REFUSED}") from None
    except RpcError as exc:
        if exc.rpc_code == _UNIMPLEMENTED:
            raise SearchError(
                f"{named} {address}: a gRPC server answers there, but not a Ray cluster's GCS "
                "(it lacks the GCS's calls: a raylet's or another service's port?); give the "
                "GCS address, port 6379 by default"
            ) from None
        if exc.rpc_code == _DEADLINE_EXCEEDED:  # ray.init then waited without end
            raise SearchError(
                f"{named} {address}: a server answers there but gave no Ray GCS reply in time "
                "(a wedged GCS, or another HTTP/2 service's port?); check the cluster with "
                f"`ray status --address {address}`"
            ) from None


# HTTP/2's client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS) answers with a
# SETTINGS frame of its own at once; an HTTP/1 server answers with text or closes.
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS_FRAME = 4


def _speaks_http2(sock: socket.socket, timeout_s: float) -> bool:
    """Whether the server at the other end of ``sock`` answers HTTP/2's preface with a
    SETTINGS frame (the first frame a gRPC server sends), within ``timeout_s``."""
    sock.settimeout(timeout_s)
    try:
        sock.sendall(_HTTP2_HELLO)
        head = b""
        while len(head) < 9:  # a frame header: length (3 bytes), type, flags, stream id
            chunk = sock.recv(9 - len(head))
            if not chunk:
                break
            head += chunk
    except OSError:  # reset, or silent until the timeout
        return False
    return len(head) == 9 and head[3] == _SETTINGS_FRAME


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _cluster_seen() -> str:
    """``the Ray cluster at 10.0.0.5:6379 (2 nodes: 8 CPUs, 1 GPU)``: the cluster joined,
    which ``auto`` does not say (it may find another user's Ray on a shared machine)."""
    import ray

    gcs = ray.get_runtime_context().gcs_address
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    total: dict[str, float] = {}
    for node in nodes:
        for kind in ("CPU", "GPU"):
            total[kind] = total.get(kind, 0) + node["Resources"].get(kind, 0)
    has = ", ".join(counted(total[kind], kind) for kind in ("CPU", "GPU") if total.get(kind))
    nodes_text = f"{len(nodes)} node{'' if len(nodes) == 1 else 's'}"
    return f"the Ray cluster at {gcs} ({nodes_text}: {has or 'no CPU or GPU'})"


def check_storage_shared(storage: Path, echo: Any, timeout_s: float = 60.0) -> None:
    """On a cluster of several nodes, refuse a ``storage`` folder that a node does not see as
    this machine does, or cannot write in: trials write their checkpoints there and the driver
    reads the models back from it, so on a node's own disk a trial's model was missing at the
    end, and on a read-only mount the node's trials trained to the end and then failed. A
    marker file written here is read by a task on each node, which writes a file beside it. A
    node that does not answer within ``timeout_s`` is noted, not refused."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [node for node in ray.nodes() if node.get("Alive")]
    if len(nodes) < 2:
        return
    made = not storage.exists()
    storage.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    marker = storage / f".nascomp-shared-{token[:8]}"
    marker.write_text(token)
    try:
        probe = ray.remote(num_cpus=0)(storage_probe)
        refs = [
            probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            ).remote(str(marker), token)
            for node in nodes
        ]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        answers = dict(zip(ready, ray.get(ready), strict=True))
    finally:
        marker.unlink(missing_ok=True)
    where = [node["NodeManagerAddress"] for node in nodes]
    found = [(at, answers.get(ref)) for at, ref in zip(where, refs, strict=True)]
    unseen = [at for at, answer in found if answer == "unseen"]
    unwritable = [f"{at} ({answer})" for at, answer in found if answer not in (None, "", "unseen")]
    silent = [at for at, answer in found if answer is None]
    if unseen or unwritable:
        if made:
            storage.rmdir()  # refused: nothing of the search is left
        wrong = []
        if unseen:
            wrong.append(
                f"is not this machine's folder on node{'s' * (len(unseen) > 1)} {', '.join(unseen)}"
            )
        if unwritable:
            wrong.append(
                f"cannot be written from node{'s' * (len(unwritable) > 1)} {', '.join(unwritable)}"
            )
        raise SearchError(
            f"storage: {storage} {' and '.join(wrong)}: trials write their checkpoints there and "
            "the driver reads the models back; give a folder of a file system every node mounts "
            "at the same path, writable by the user the nodes run as (--set "
            "storage=/shared/nascomp-results)"
        )
    if silent:
        echo(
            f"note: storage: node{'s' * (len(silent) > 1)} {', '.join(silent)} did not answer "
            f"in {timeout_s:g} s: not checked that {'they see' if len(silent) > 1 else 'it sees'} "
            f"{storage}"
        )


def cluster_fit(experiment: Experiment) -> str:
    """Why no node of the connected Ray cluster fits one trial now ("" when one does): its
    trials would wait, silently, until a node that does joins (an autoscaler may add one)."""
    import ray

    resources = experiment.resources
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    asks = {"CPU": resources.cpus_per_trial, "GPU": resources.gpus_per_trial}
    if any(all(node.get(kind, 0) >= n for kind, n in asks.items()) for node in nodes):
        return ""
    largest = max(nodes, key=lambda node: (node.get("CPU", 0), node.get("GPU", 0)), default={})
    wanted = ", ".join(counted(n, kind) for kind, n in asks.items() if n)
    has = ", ".join(counted(largest.get(kind, 0), kind) for kind, n in asks.items() if n)
    return (
        f"resources: each trial asks for {wanted}, and no node of the cluster has them now "
        f"(the largest has {has}); the trials wait until a node that does joins"
    )


def counted(n: float, kind: str) -> str:
    """``1 trial``, ``12 trials``."""
    return f"{n:g} {kind}{'' if n == 1 else 's'}"


def check_local_resources(experiment: Experiment) -> None:
    """A search on this machine alone (no cluster) whose trial asks for more CPUs or GPUs
    than the machine has would never start a trial: Ray would wait for them, after training
    the teacher with as many threads. Say so before anything runs."""
    resources = experiment.resources
    cpus = machine_cpus()
    asked = resources.cpus_per_trial
    if cpus and asked > cpus:
        raise ConfigError(
            f"resources.cpus_per_trial: each trial asks for {asked:g} CPUs, but this machine "
            f"has {cpus}; at most {cpus} here (or --address to run on a Ray cluster)"
        )
    if resources.gpus_per_trial > 0:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        asked = resources.gpus_per_trial
        if asked > gpus:
            raise ConfigError(
                f"resources.gpus_per_trial: each trial asks for {asked:g} "
                f"GPU{'' if asked == 1 else 's'}, but this machine has {gpus} CUDA "
                f"GPU{'' if gpus == 1 else 's'} (0 trains on the CPU; --address runs on a Ray "
                "cluster)"
            )


def _fail_fast_http() -> None:
    # MLflow's client retries a silent server for minutes (7 retries, exponential backoff),
    # and the Tune loop that calls it would stall with it: trials could not even end. The
    # runlog buffers and retries instead, without blocking.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the `nascomp search` command")
