"""The Ray Tune callback that writes a search into MLflow: one nested run per trial.

It decides what to write and when; ``nascomp.search.tracking`` does the writing (the store
client and its durable, batched queue), so this module never imports MLflow itself.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune import Callback

from nascomp.search.front.hypervolume import HypervolumeHistory, is_number
from nascomp.search.front.pareto import RunningFront, to_minimise
from nascomp.search.front.report import front_markdown, objectives_line
from nascomp.search.front.selection import config_key
from nascomp.search.tracking.models import finish_onnx_model
from nascomp.search.tracking.params import config_document, decode_param, display_params
from nascomp.search.tracking.runlog import RunLog
from nascomp.search.tracking.store import (
    FEASIBLE_TAG,
    HYPERVOLUME,
    NOTE_TAG,
    RUN_NAME_TAG,
    STATUS_TAG,
    Tracker,
    TrialRecord,
    record_of,
    with_queued,
)
from nascomp.search.tune.results import INFO_PREFIX, earlier_epochs
from nascomp.spaces.constraints import is_feasible, parse_constraints
from nascomp.trainers.config import describe_trial
from nascomp.trainers.settings import METRICS

# Ray adds bookkeeping keys (time_this_iter_s, pid, ...) to each result; log ours only.
# reused_epochs: the train-phase epochs a trial took from an earlier one (trainers.trained).
_LOGGED = {*METRICS, "loss", "train_accuracy", "epochs", "reused_epochs", "pruned_fraction"}
# Keys of every epoch report and of the final one: their steps are the steps a run holds.
_STEP_KEYS = ("loss", "epochs")


class MlflowTrialCallback(Callback):
    """Ray Tune callback: one nested MLflow run per trial, metrics per epoch as steps; on the
    parent run, the hypervolume of the feasible front after every ended trial.

    Writes go through a :class:`nascomp.search.tracking.runlog.RunLog`: a retried or resumed
    trial continues its run, and writes wait in a journal while the tracking server is away.
    """

    def __init__(
        self,
        tracker: Tracker,
        search_run_id: str,
        objectives: dict[str, str],
        constraints: list[str],
        *,
        journal: Path | None = None,
        finisher: Callable[[str], None] | None = None,
        echo: Any = print,
        background: bool = False,
    ) -> None:
        self.tracker = tracker
        # Writes applied by a thread of the run log's own from setup on (RunLog.start_writer):
        # whoever ends the search stops it (RunLog.stop_writer) before draining.
        self.background = background
        self.search_run_id = search_run_id
        self.objectives = dict(objectives)
        self.constraints = parse_constraints(constraints, METRICS)
        self.progress = HypervolumeHistory(self.objectives)
        self.log = RunLog(
            tracker.client,
            tracker.experiment_id(),
            search_run_id,
            journal=journal,
            finisher=finisher,
            echo=echo,
        )
        self.open: set[str] = set()  # trials started and not yet ended
        # the trials found at setup (the store's, with a journal's), until the first step
        self._earlier: list[TrialRecord] | None = None
        # Finished feasible trials (objective values, model line): the parent run's
        # description shows their front as the search goes.
        self.finished: dict[str, tuple[dict[str, float], str]] = {}
        self.front = RunningFront(len(self.objectives))  # of the finished, keyed by trial id
        # Each config's first feasible trial to end: a repeat of it (a small space's point
        # drawn again) is the same model and counts for neither the hypervolume nor the
        # front, as in the final front (search.front.selection.first_of_each_config).
        self.first_of_config: dict[str, str] = {}
        # The steps each open trial's run holds or has queued: a step comes again when a
        # trial resumes from a checkpoint whose report the driver never took (it re-sends
        # its epochs, search.tune.trainable.EpochReports) or restarts from its first epoch,
        # and MLflow would keep it twice.
        self.steps: dict[str, set[int]] = {}
        self.echo = echo
        self.n_finished = 0

    def setup(self, **info: Any) -> None:
        # A resumed search: its runs so far, and any journal a previous driver left, as the
        # store will hold them once that journal is applied (the store may still be away).
        runs = self.log.load()
        queued = [op for op in self.log.pending if op.get("replayed")]
        self._earlier = with_queued([record_of(run) for run in runs], queued)
        self.steps = self.log.logged_steps(_STEP_KEYS)
        self.log.flush(force=True)
        if self.background:
            self.log.start_writer()

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self._earlier is None:
            return
        earlier, self._earlier = self._earlier, None
        # Runs of trials that Tune's restored snapshot does not know: a killed driver started
        # them after its last snapshot, and Tune runs new trials in their place. Their runs
        # are deleted (MLflow keeps them as deleted) so that each trial has exactly one. That
        # includes runs only the killed driver's journal held, which setup's flush created.
        known = {trial.trial_id for trial in trials}
        for trial_id in sorted(self.log.trials() - known):
            self.log.forget(trial_id)
            self.log.submit({"op": "delete", "trial": trial_id})
        for record in earlier:
            trial_id = record.trial_id
            if trial_id in known and trial_id in self.log.ended:
                counted = self._feasible(record) and self._first(trial_id, record.params)
                self.progress.add(record.metrics if counted else None)
                self._remember(trial_id, record.metrics if counted else None, record.params)

    def _feasible(self, record: TrialRecord) -> bool:
        if record.status != "ok":
            return False
        return record.tags.get(FEASIBLE_TAG, "true") == "true"

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.log.ended:
            return  # its result is in MLflow already: Tune is only replaying it
        self.open.add(trial.trial_id)
        self.log.submit(
            {
                "op": "start",
                "trial": trial.trial_id,
                "name": f"trial-{trial.trial_id} | {describe_trial(trial.config)}",
                "params": display_params(trial.config),
                "config": config_document(trial.config),
                "tags": {STATUS_TAG: "running"},
            }
        )

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        failures = getattr(trial, "num_failures", 0)
        self.log.submit(
            {
                "op": "tags",
                "trial": trial.trial_id,
                "tags": {
                    "nascomp.attempts": failures + 1,
                    "nascomp.last_failure": _error_text(trial),
                },
            }
        )

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if trial.trial_id in self.log.ended:
            return
        logged = self.steps.setdefault(trial.trial_id, set())
        for report in [*earlier_epochs(result), result]:  # epochs held back, then its own
            values = {
                key: float(value)
                for key, value in report.items()
                if key in _LOGGED and isinstance(value, int | float) and not isinstance(value, bool)
            }
            step = _step(report)
            if values and step not in logged:
                logged.add(step)
                self.log.submit(
                    {
                        "op": "metrics",
                        "trial": trial.trial_id,
                        "step": step,
                        "ts": int(time.time() * 1000),
                        "values": values,
                    }
                )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.log.ended:
            return
        self.open.discard(trial.trial_id)
        self.steps.pop(trial.trial_id, None)
        result = trial.last_result or {}
        status = result.get("nascomp_status", "ok")
        tags: dict[str, Any] = {STATUS_TAG: status}
        if result.get("nascomp_reason"):
            tags["nascomp.reason"] = str(result["nascomp_reason"])
        if result.get("nascomp_node_id"):
            tags["nascomp.node_id"] = str(result["nascomp_node_id"])
        tags.update(
            {
                f"nascomp.{key[len(INFO_PREFIX) :]}": str(value)
                for key, value in result.items()
                if key.startswith(INFO_PREFIX)
            }
        )
        if status == "ok" and self.constraints:
            feasible = is_feasible(self.constraints, result)
            tags[FEASIBLE_TAG] = str(feasible).lower()
        else:
            feasible = status == "ok"
        if status == "ok":
            # The runs table shows names: lead with the objectives, then the model.
            line = objectives_line(result, list(self.objectives))
            tags[RUN_NAME_TAG] = f"{line} | {describe_trial(trial.config)}"
        self.log.submit(
            {
                "op": "end",
                "trial": trial.trial_id,
                "status": "FAILED" if status == "failed" else "FINISHED",
                "tags": tags,
                "artifacts": _artifacts(trial, self.echo),
            }
        )
        params = {k: decode_param(v) for k, v in display_params(trial.config).items()}
        counted = feasible and self._first(trial.trial_id, params)
        self._log_hypervolume(result if counted else None)
        self._remember(trial.trial_id, result if counted else None, trial.config)

    def _first(self, trial_id: str, params: dict[str, Any]) -> bool:
        """Whether the feasible trial ``trial_id`` is the first of its config to end (itself
        again, when a resumed trial ends twice)."""
        first = self.first_of_config.setdefault(config_key(params), trial_id)
        return first == trial_id

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.log.ended or trial.trial_id not in self.open:
            return
        self.open.discard(trial.trial_id)
        self.steps.pop(trial.trial_id, None)
        tags = {STATUS_TAG: "failed", "nascomp.reason": _error_text(trial)}
        self.log.submit({"op": "end", "trial": trial.trial_id, "status": "FAILED", "tags": tags})
        self._log_hypervolume(None)
        self._remember(trial.trial_id, None, trial.config)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if not self.log.in_background:
            self.log.flush()  # retries buffered writes, at most every retry_s

    def interrupted(self) -> None:
        """The search stops before these trials end: their runs wait, KILLED, for --resume."""
        for trial_id in sorted(self.open):
            tags = {STATUS_TAG: "interrupted"}
            self.log.submit({"op": "end", "trial": trial_id, "status": "KILLED", "tags": tags})
        self.open.clear()

    def _remember(self, trial_id: str, result: dict | None, config: dict) -> None:
        """Count an ended trial; a feasible finished one may change the front the parent
        run's description shows, which is then rewritten."""
        self.n_finished += 1
        names = list(self.objectives)
        if result is None or not all(is_number(result.get(m)) for m in names):
            return
        again = trial_id in self.finished
        self.finished[trial_id] = ({m: float(result[m]) for m in names}, describe_trial(config))
        if again:  # its earlier values may have pushed others off the front: start over
            self.front = RunningFront(len(names))
            for key, (values, _) in self.finished.items():
                self.front.add(key, self._minimised(values))
        elif not self.front.add(trial_id, self._minimised(self.finished[trial_id][0])):
            return
        rows = [(self.log.run_ids.get(i), *self.finished[i]) for i in self.front.order()]
        note = front_markdown(
            rows,
            self.objectives,
            self.log.experiment_id,
            final=False,
            n_trials=self.n_finished,
        )
        self.log.submit({"op": "tags", "trial": None, "tags": {NOTE_TAG: note}})

    def _minimised(self, values: dict[str, float]) -> np.ndarray:
        row = np.array([[values[m] for m in self.objectives]])
        return to_minimise(row, list(self.objectives.values()))[0]

    def _log_hypervolume(self, result: dict | None) -> None:
        value = self.progress.add(result)
        self.log.submit(
            {
                "op": "metrics",
                "trial": None,
                "step": self.progress.n_ended,
                "ts": int(time.time() * 1000),
                "values": {HYPERVOLUME: value},
            }
        )


def _step(result: dict) -> int:
    """An epoch's report is its epoch; the final one (which counts ``epochs``) the step after
    the last epoch. Not Tune's training_iteration: after a restore it restarts from the
    snapshot's count, and a resumed trial's steps would collide."""
    if "epoch" in result:
        return int(result["epoch"])
    if "epochs" in result:
        return int(result["epochs"]) + 1
    return int(result.get("training_iteration", 0))


def _artifacts(trial: Any, echo: Callable[[str], Any] = print) -> list[str]:
    """The trial's compressed model, how its inputs were made and its ONNX MLflow model (a
    folder, made here from the file the worker staged), from its final checkpoint
    (nascomp.search.tune.trainable)."""
    checkpoint = getattr(trial, "checkpoint", None)
    folder = getattr(checkpoint, "path", None)
    if not folder or not Path(folder).is_dir():
        return []
    try:
        onnx_model = finish_onnx_model(Path(folder))
    except Exception as exc:  # a bad file costs its run the MLflow model, not the search
        echo(f"trial {trial.trial_id}: its ONNX file is not logged as an MLflow model ({exc})")
        onnx_model = None
    return [
        str(path)
        for path in sorted(Path(folder).glob("model.nascomp*"))
        + sorted(Path(folder).glob("skeleton.json"))
        + sorted(Path(folder).glob("preprocess.json"))
        + ([onnx_model] if onnx_model is not None else [])
    ]


_EXCEPTION_LINE = re.compile(r"[A-Za-z_][\w.]*(Error|Exception|Interrupt)(\([\w.]*\))?: ")


def _error_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        return _exception_line(Path(path).read_text().splitlines()) or "trial failed"
    return "trial failed"


def _exception_line(lines: list[str]) -> str:
    """The exception's own line ("SomeError: message") of the last traceback in ``lines``:
    the first unindented line after its last frame, whatever the exception is called
    (``onnxruntime...InvalidArgument: ...``), not the last line, since some exceptions print
    details after their message; without a frame, the last line that looks like one."""
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    if frames:
        for line in lines[frames[-1] + 1 :]:
            if line.strip() and not line[0].isspace():
                return line
    lines = [line for line in lines if line.strip()]
    raised = [line for line in lines if _EXCEPTION_LINE.match(line)]
    return (raised or lines or [""])[-1]
