"""Everything nascomp says to MLflow, in one module.

Layout: one parent run per search (tag ``nascomp.role=search``) holding the experiment file, the
space, the git commit and the final Pareto front; one child run per trial, nested with the
``mlflow.parentRunId`` tag, holding the trial's flat config as params, per-epoch metrics as
steps and the final metrics. Only the driver writes (a Ray Tune callback), so a sqlite store
sees a single writer.
"""

from __future__ import annotations

import functools
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from search.export import ARTIFACT, SKELETON
from search.runlog import PARENT_TAG, TRIAL_TAG, RunLog
from search.searcher import INFO_PREFIX
from spaces.config import METRICS
from spaces.constraints import is_feasible, parse_constraints
from trainers.config import decode_param

ROLE_TAG = "nascomp.role"
STATUS_TAG = "nascomp.status"
OBJECTIVES_TAG = "nascomp.objectives"
CONSTRAINTS_TAG = "nascomp.constraints"
FEASIBLE_TAG = "nascomp.feasible"
HYPERVOLUME = "hypervolume"  # the parent run's metric, one step per ended trial
SOURCE_TAG = "nascomp.reproduced_from"
TRIAL_ARTIFACTS = (ARTIFACT, SKELETON)  # logged from the final checkpoint
_PARAM_LIMIT = 6000  # MLflow's limit on a param value


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, unknown experiment...)."""


@dataclass(frozen=True)
class TrialRecord:
    run_id: str
    trial_id: str
    status: str
    params: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, str] = field(default_factory=dict)


class Tracker:
    def __init__(self, uri: str, experiment: str) -> None:
        self.uri = uri
        self.experiment = experiment

    @functools.cached_property
    def client(self) -> MlflowClient:
        # Lazy: a sqlite store is created on first use, and a search that fails its checks
        # (tracking server, Ray address) must leave nothing behind.
        return MlflowClient(tracking_uri=self.uri)

    # ------------------------------------------------------------------ store and experiment
    def check_reachable(self, timeout_s: float = 5.0) -> None:
        """Fail early, before any trial starts, when an HTTP tracking server does not answer."""
        if not self.uri.startswith(("http://", "https://")):
            return
        try:
            with urllib.request.urlopen(
                f"{self.uri.rstrip('/')}/health", timeout=timeout_s
            ) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingError(
                f"tracking server {self.uri} is unreachable ({exc}); start it or fix --tracking-uri"
            ) from None
        raise TrackingError(f"tracking server {self.uri} answered /health with an error")

    def experiment_id(self, create: bool = False) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        if not create:
            raise TrackingError(f"no experiment named {self.experiment!r} in {self.uri}")
        return self.client.create_experiment(
            self.experiment, artifact_location=self._artifact_root()
        )

    def _artifact_root(self) -> str | None:
        # With a sqlite file, keep artifacts next to it (not in whatever folder we run from),
        # so `nascomp ui` started anywhere finds them. A server chooses its own root.
        if self.uri.startswith("sqlite:///"):
            db = Path(self.uri[len("sqlite:///") :])
            return (db.parent / "mlartifacts" / self.experiment).resolve().as_uri()
        return None

    def runs_url(self, base_url: str | None = None) -> str:
        base = base_url or (self.uri if self.uri.startswith("http") else "http://127.0.0.1:5000")
        return f"{base.rstrip('/')}/#/experiments/{self.experiment_id()}/runs"

    # ------------------------------------------------------------------ the search's parent run
    def start_search(
        self,
        *,
        run_name: str,
        experiment_yaml: str,
        space: list[dict],
        objectives: dict[str, str],
        git_commit: str | None,
        constraints: list[str] | None = None,
    ) -> str:
        tags = {
            ROLE_TAG: "search",
            OBJECTIVES_TAG: json.dumps(objectives),
            CONSTRAINTS_TAG: json.dumps(list(constraints or [])),
        }
        if git_commit:
            tags["mlflow.source.git.commit"] = git_commit
        run = self.client.create_run(self.experiment_id(create=True), run_name=run_name, tags=tags)
        run_id = run.info.run_id
        self.client.log_text(run_id, experiment_yaml, "experiment.yaml")
        self.client.log_dict(run_id, {"params": space}, "space.json")
        return run_id

    def log_search_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()]
        )

    def finish_search(
        self,
        run_id: str,
        front: list[TrialRecord],
        objectives: dict[str, str],
        status: str,
        trials: list[TrialRecord] | None = None,
    ) -> None:
        """Log the front (JSON) and, given the feasible finished ``trials``, the Pareto plot."""
        if front:
            rows = [
                {
                    "rank": i + 1,
                    "run_id": r.run_id,
                    **{m: r.metrics.get(m) for m in objectives},
                    "params": r.params,
                }
                for i, r in enumerate(front)
            ]
            self.client.log_dict(
                run_id, {"objectives": objectives, "front": rows}, "pareto_front.json"
            )
        if trials:
            self._log_plot(run_id, trials, front, objectives)
        self.client.set_terminated(run_id, status)

    def _log_plot(
        self,
        run_id: str,
        trials: list[TrialRecord],
        front: list[TrialRecord],
        objectives: dict[str, str],
    ) -> None:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            path = write_plot(trials, front, objectives, Path(folder) / "pareto.png", run_id)
            self.client.log_artifact(run_id, str(path))

    # ------------------------------------------------------------------ reading back
    def latest_search(self) -> str:
        runs = self.client.search_runs(
            [self.experiment_id()],
            filter_string=f"tags.`{ROLE_TAG}` = 'search'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not runs:
            raise TrackingError(f"experiment {self.experiment!r} has no nascomp search yet")
        return runs[0].info.run_id

    def objectives(self, search_run_id: str) -> dict[str, str]:
        return json.loads(self.client.get_run(search_run_id).data.tags[OBJECTIVES_TAG])

    def constraints(self, search_run_id: str) -> list[str]:
        # Searches logged before constraints existed have no tag: no constraints.
        tag = self.client.get_run(search_run_id).data.tags.get(CONSTRAINTS_TAG)
        return json.loads(tag) if tag else []

    def trials(self, search_run_id: str) -> list[TrialRecord]:
        runs = self.client.search_runs(
            [self.experiment_id()],
            filter_string=f"tags.`{PARENT_TAG}` = '{search_run_id}'",
            order_by=["attributes.start_time ASC"],
            max_results=50000,
        )
        return [_record(run) for run in runs]

    def trial_record(self, run_id: str) -> TrialRecord:
        return _record(self.client.get_run(run_id))

    # ------------------------------------------------------------------ reproduce
    def log_reproduction(
        self, source: TrialRecord, metrics: dict[str, float], model: Any, example: Any
    ) -> str:
        import mlflow.pytorch

        run = self.client.create_run(
            self.experiment_id(),
            run_name=f"reproduce-{source.run_id[:8]}",
            tags={SOURCE_TAG: source.run_id, ROLE_TAG: "reproduce"},
        )
        run_id = run.info.run_id
        self.client.log_batch(run_id, params=_params(source.params))
        self.log_search_metrics(run_id, metrics)
        mlflow.set_tracking_uri(self.uri)
        with mlflow.start_run(run_id=run_id):
            # pickle, not MLflow's default pt2: torch.export fixes the batch size to the example's.
            info = mlflow.pytorch.log_model(
                model, name="model", input_example=example.numpy(), serialization_format="pickle"
            )
        self.client.set_terminated(run_id, "FINISHED")
        return info.model_uri

    def callback(
        self,
        search_run_id: str,
        objectives: dict[str, str] | None = None,
        constraints: list[str] | None = None,
        **options: Any,
    ) -> MlflowTrialCallback:
        return MlflowTrialCallback(
            self, search_run_id, objectives or {}, constraints or [], **options
        )

    def reopen_search(self, run_id: str) -> None:
        """A resumed search continues its parent run rather than opening another."""
        self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))


def write_plot(
    trials: list[TrialRecord],
    front: list[TrialRecord],
    objectives: dict[str, str],
    path: Path,
    search_run_id: str = "",
) -> Path:
    """The Pareto plot of ``trials`` (finished, feasible) with ``front`` ranked, as a PNG."""
    import numpy as np

    from search.plot import plot_front

    names = list(objectives)
    values = np.array([[t.metrics[m] for m in names] for t in trials])
    index = {t.run_id: i for i, t in enumerate(trials)}
    ranked = [index[t.run_id] for t in front if t.run_id in index]
    title = f"search {search_run_id[:12]}: {len(trials)} feasible trials, front of {len(ranked)}"
    return plot_front(values, names, list(objectives.values()), ranked, path, title=title)


class MlflowTrialCallback(Callback):
    """Ray Tune callback: one nested MLflow run per trial, metrics per epoch as steps; on the
    parent run, the hypervolume of the feasible front after every ended trial.

    Writes go through a :class:`search.runlog.RunLog`: a retried or resumed trial continues
    its run, and writes wait in a journal while the tracking server is away.
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
    ) -> None:
        self.tracker = tracker
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
        self._earlier: list | None = None  # runs found at setup, until the first step

    def setup(self, **info: Any) -> None:
        # A resumed search: its runs so far, and any journal a previous driver left.
        self._earlier = self.log.load()
        self.log.flush(force=True)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self._earlier is None:
            return
        earlier, self._earlier = self._earlier, None
        # Runs of trials that Tune's restored snapshot does not know: a killed driver started
        # them after its last snapshot, and Tune runs new trials in their place. Their runs
        # are deleted (MLflow keeps them as deleted) so that each trial has exactly one.
        known = {trial.trial_id for trial in trials}
        for run in earlier:
            trial_id = run.data.tags.get(TRIAL_TAG)
            if trial_id and trial_id not in known:
                self.log.forget(trial_id)
                self.log.submit({"op": "delete", "trial": trial_id})
            elif trial_id in self.log.ended:
                record = _record(run)
                self.progress.add(record.metrics if self._feasible(record) else None)

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
                "name": f"trial-{trial.trial_id}",
                "params": {k: str(v)[:_PARAM_LIMIT] for k, v in trial.config.items()},
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
        step = _step(result)
        values = {
            key: float(value)
            for key, value in result.items()
            if key in _LOGGED and isinstance(value, int | float) and not isinstance(value, bool)
        }
        if values:
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
        self.log.submit(
            {
                "op": "end",
                "trial": trial.trial_id,
                "status": "FAILED" if status == "failed" else "FINISHED",
                "tags": tags,
                "artifacts": _artifacts(trial),
            }
        )
        self._log_hypervolume(result if feasible else None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.log.ended or trial.trial_id not in self.open:
            return
        self.open.discard(trial.trial_id)
        tags = {STATUS_TAG: "failed", "nascomp.reason": _error_text(trial)}
        self.log.submit({"op": "end", "trial": trial.trial_id, "status": "FAILED", "tags": tags})
        self._log_hypervolume(None)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.log.flush()  # retries buffered writes, at most every retry_s

    def interrupted(self) -> None:
        """The search stops before these trials end: their runs wait, KILLED, for --resume."""
        for trial_id in sorted(self.open):
            tags = {STATUS_TAG: "interrupted"}
            self.log.submit({"op": "end", "trial": trial_id, "status": "KILLED", "tags": tags})
        self.open.clear()

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


def _artifacts(trial: Any) -> list[str]:
    """The trial's compressed model, from its final checkpoint (search.trainable)."""
    checkpoint = getattr(trial, "checkpoint", None)
    folder = getattr(checkpoint, "path", None)
    if not folder:
        return []
    return [
        str(path)
        for path in sorted(Path(folder).glob("model.nascomp*"))
        + sorted(Path(folder).glob("skeleton.json"))
    ]


class HypervolumeHistory:
    """The running hypervolume of the feasible finished trials, one value per ended trial.

    Reference rule (search/hypervolume.py): objectives minimised, divided by a fixed per-search
    scale (1 for accuracies, else the first feasible trial's value), reference = worst value
    seen + 10% of the range seen; so the curve never falls.
    """

    def __init__(self, objectives: dict[str, str]) -> None:
        self.names = list(objectives)
        self.modes = list(objectives.values())
        self.points: list[list[float]] = []
        self.scale: Any = None
        self.n_ended = 0

    def add(self, result: dict | None) -> float:
        """Count one ended trial (``result`` None when it is not a feasible finished one)."""
        import numpy as np

        from search.hypervolume import hypervolume, search_reference, search_scale
        from search.pareto import to_minimise

        self.n_ended += 1
        if result is not None and all(_is_number(result.get(m)) for m in self.names):
            self.points.append([float(result[m]) for m in self.names])
        if not self.points:
            return 0.0
        minimised = to_minimise(np.array(self.points), self.modes)
        if self.scale is None:
            self.scale = search_scale(minimised[0], self.names)
        scaled = minimised / self.scale
        return hypervolume(scaled, search_reference(scaled))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# Ray adds bookkeeping keys (time_this_iter_s, pid, ...) to each result; log ours only.
_LOGGED = {*METRICS, "loss", "train_accuracy", "epochs"}


def _params(config: dict[str, Any]) -> list[Param]:
    return [Param(key, str(value)[:_PARAM_LIMIT]) for key, value in sorted(config.items())]


def _record(run: Any) -> TrialRecord:
    tags = run.data.tags
    if run.info.status == RunStatus.to_string(RunStatus.FINISHED):
        status = tags.get(STATUS_TAG, "ok")
    elif run.info.status == RunStatus.to_string(RunStatus.FAILED):
        status = "failed"
    else:  # RUNNING, or KILLED by an interrupted search that --resume continues
        status = tags.get(STATUS_TAG, run.info.status.lower())
    return TrialRecord(
        run_id=run.info.run_id,
        trial_id=tags.get(TRIAL_TAG, ""),
        status=status,
        params={key: decode_param(value) for key, value in run.data.params.items()},
        metrics=dict(run.data.metrics),
        tags=dict(tags),
    )


_EXCEPTION_LINE = re.compile(r"[A-Za-z_][\w.]*(Error|Exception|Interrupt)(\([\w.]*\))?: ")


def _error_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        # The exception's own line ("SomeError: message"): not the last line, since some
        # exceptions print details after their message.
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
        raised = [line for line in lines if _EXCEPTION_LINE.match(line)]
        if raised or lines:
            return (raised or lines)[-1]
    return "trial failed"
