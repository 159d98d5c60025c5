"""Durable, buffered MLflow writes of one search's runs.

Ray Tune's MLflow callback keeps its trial-to-run map in memory (a resumed search opens new
runs) and blocks or fails when the server does not answer. Here:

- a trial's run is found by its ``nascomp.trial_id`` tag under the search's parent run, so a
  retried attempt, or a driver restarted with ``--resume``, continues the same run;
- every write is an operation (a small JSON-able dict) in a queue, sent every ``batch_s``
  seconds as one ``log_batch`` per run (each run's ops in the order they came). When the
  tracking server does not answer, the queue is kept, in memory and in a journal file inside
  Ray's result folder, and retried every few seconds: trials keep training and nothing is lost;
- ``nascomp replay FOLDER`` applies the journal of a search whose server never came back.

Operations: ``start`` (find or create the trial's run, log its params and its exact config),
``metrics`` (one step; ``trial`` None means the parent run), ``tags``, ``end`` (final tags,
artifacts, terminal status), ``delete`` (a run no trial will continue) and ``finish`` (the
parent run's front, plot and status, done by ``finisher``).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag

from nascomp.search.tracking.params import CONFIG_ARTIFACT

PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "nascomp.trial_id"
JOURNAL = "mlflow-pending.jsonl"
_BATCH_METRICS, _BATCH_TAGS = 1000, 100  # MLflow's limits per log_batch
_BATCHABLE = ("metrics", "tags")
_MAX_ATTEMPTS = 3  # an op the (reachable) store keeps refusing is dropped after this many
Op = dict[str, Any]


class RunLog:
    """The queue of MLflow writes of one search (see the module docstring)."""

    def __init__(
        self,
        client: Any,
        experiment_id: str,
        parent_run_id: str,
        *,
        journal: Path | None = None,
        retry_s: float = 5.0,
        batch_s: float = 0.0,
        finisher: Callable[[str], None] | None = None,
        echo: Callable[[str], Any] = print,
    ) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.journal = journal
        self.retry_s = retry_s
        self.batch_s = batch_s
        self._last_flush = time.monotonic()
        self.finisher = finisher
        self.echo = echo
        self.pending: list[Op] = []
        self.run_ids: dict[str, str] = {}
        self.ended: set[str] = set()  # trials whose run holds its final result
        self.offline_since: float | None = None
        self.last_error = ""
        self.dropped = 0
        self._retry_at = 0.0
        self._attempts = 0
        self._failing: Op | None = None  # the op the store refused last
        self._loaded = False  # after load(), run_ids holds every run of the search
        self._closed_in_store: set[str] = set()  # trials whose run had ended at load()
        self._unfilled: set[str] = set()  # trials whose run is created, its params not yet in
        self._made_before: set[str] = set()  # those of them a previous driver made (load)
        # trials whose create_run failed: the store may have made the run all the same
        self._unanswered: set[str] = set()
        # With a writer thread (start_writer), the caller's thread only queues: this lock
        # guards the queue and the journal, never a write to the store.
        self._threading()

    def _threading(self) -> None:
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one flush at a time
        self._writer: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()

    def __getstate__(self) -> dict[str, Any]:
        """Ray Tune pickles its callbacks, and this with them: locks and threads stay out."""
        state = self.__dict__.copy()
        for name in ("_lock", "_flushing", "_writer", "_stop", "_wake"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._threading()

    # ------------------------------------------------------------------ state from the store
    def load(self) -> list[Any]:
        """Read the trial runs already under the parent (a resumed search) and any journal a
        previous driver left; return those runs, oldest end first."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_run_id}'",
            max_results=50000,
        )
        for run in runs:
            trial = run.data.tags.get(TRIAL_TAG)
            if not trial:
                continue
            self.run_ids[trial] = run.info.run_id
            if run.info.status in ("FINISHED", "FAILED") and run.data.tags.get(
                "nascomp.status"
            ) not in (None, "running", "interrupted"):
                self.ended.add(trial)
            elif not self._filled(run):
                # Made by a driver whose store went away before the params and the config
                # were in: the trial's start (in the journal, or its next attempt) fills it.
                # It was taken for another attempt, which writes only the status and tags:
                # replay left a finished run without its params and trial_config.json.
                self._unfilled.add(trial)
                self._made_before.add(trial)
        self._loaded = True
        self._closed_in_store = set(self.ended)
        if self.journal is not None and self.journal.is_file():
            # A driver killed mid-flush leaves ops it had applied: replaying those must not
            # reopen or re-close a run (metrics repeat with their own time stamp and step,
            # which the store keeps once).
            left = [{**op, "replayed": True} for op in read_journal(self.journal)]
            self.ended.update(op["trial"] for op in left if _is_final(op))
            self.pending = left + self.pending
        return sorted(runs, key=lambda run: run.info.end_time or 0)

    def _filled(self, run: Any) -> bool:
        """Whether an unended trial's run holds its params and its config (written one after
        the other when the run is made)."""
        if not run.data.params:
            return False
        try:
            listed = self.client.list_artifacts(run.info.run_id)
        except Exception:  # artifacts this process cannot list: the params say it was filled
            return True
        return CONFIG_ARTIFACT in {item.path for item in listed}

    def logged_steps(self, keys: tuple[str, ...]) -> dict[str, set[int]]:
        """After ``load``: the steps of ``keys`` each unended trial's run holds, with those of
        its metrics ops still queued (a previous driver's journal)."""
        steps: dict[str, set[int]] = {}
        for trial, run_id in self.run_ids.items():
            if trial in self.ended:
                continue
            for key in keys:
                history = self.client.get_metric_history(run_id, key)
                steps.setdefault(trial, set()).update(metric.step for metric in history)
        for op in self.pending:
            if op["op"] == "metrics" and op.get("trial"):
                steps.setdefault(op["trial"], set()).add(int(op["step"]))
        return steps

    def trials(self) -> set[str]:
        """Every trial with a run in the store or an op in the queue (the ops of a previous
        driver's journal included: replayed, they create runs that ``load`` did not see)."""
        return set(self.run_ids) | {op["trial"] for op in self.pending if op.get("trial")}

    def forget(self, trial: str) -> None:
        """``trial`` is no longer part of the search (its run is about to be deleted)."""
        self.ended.discard(trial)

    # ------------------------------------------------------------------ writing
    def submit(self, op: Op) -> bool:
        """Queue ``op``; apply the queue when ``batch_s`` has passed since the last time (with
        a writer thread, that thread applies it). Returns False while the store does not
        answer."""
        with self._lock:
            self.pending.append(op)
            if _is_final(op):
                self.ended.add(op["trial"])
            if self.journal is not None and (self.offline_since is not None or self.batch_s > 0):
                _append(self.journal, op)  # a killed driver loses nothing it was holding
        if self._writer is None:
            self.flush()
        elif self.batch_s <= 0:
            self._wake.set()
        return self.offline_since is None

    # ------------------------------------------------------------------ the writer thread
    @property
    def in_background(self) -> bool:
        """Whether a writer thread applies the queue (``start_writer``)."""
        return self._writer is not None

    def start_writer(self, period_s: float = 0.2) -> None:
        """From now on a thread of its own applies the queue, every ``period_s`` (``batch_s``
        and ``retry_s`` hold as before), and ``submit`` only queues: Ray Tune's loop, which
        submits, no longer waits for the store. On a sqlite store the writes took about
        0.1 s of the loop per trial, during which a finished trial's next one could not
        start (docs/benchmarks.md). ``stop_writer`` before ``drain``."""
        if self._writer is not None:
            return
        self._stop.clear()
        self._writer = threading.Thread(
            target=self._write, args=(period_s,), name="nascomp-mlflow-writes", daemon=True
        )
        self._writer.start()

    def stop_writer(self) -> None:
        """Stop the writer thread once its current flush is done; the queue stays queued."""
        if self._writer is None:
            return
        self._stop.set()
        self._wake.set()
        self._writer.join()
        self._writer = None

    def _write(self, period_s: float) -> None:
        while not self._stop.is_set():
            self._wake.wait(period_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.flush()
            except Exception as exc:  # not the store's refusal (flush keeps those): a bug
                self.echo(
                    f"tracking: background writes stopped ({type(exc).__name__}: {exc}); "
                    "the queue is written when the search ends"[:300]
                )
                return

    def flush(self, *, force: bool = False) -> bool:
        """Apply the queued ops; stop when the store refuses one and retry after ``retry_s``.
        Without ``force``, waits for ``batch_s`` since the last flush. True when nothing is
        left.

        Each trial's ops keep their order, but trials do not wait for one another: one
        trial's metrics and tags since the last flush go out as one ``log_batch`` (with its
        end's tags when it ended), however the other trials' starts and ends fall between.
        A ``finish`` waits for everything queued before it.
        """
        if not self.pending:
            return True
        now = time.monotonic()
        if not force and (now < self._retry_at or now < self._last_flush + self.batch_s):
            return False
        if not self._flushing.acquire(blocking=False):
            return False  # the other thread is flushing
        try:
            return self._flush(now)
        finally:
            self._flushing.release()

    def _flush(self, now: float) -> bool:
        self._last_flush = now
        # Ops queued meanwhile (by another thread) are appended: the indices of the ones
        # being applied stay valid, and the queue is only rebuilt under the lock.
        while self.pending:
            done: set[int] = set()
            try:
                self._apply_pending(done)
            except _Refused as refused:
                self._remove(done)
                if self._give_up_on(refused):
                    continue
                self._went_offline(refused.cause, now)
                return False
            self._remove(done)
        self._attempts = 0
        if self.offline_since is not None:
            away = time.time() - self.offline_since
            self.echo(f"tracking: the store answers again after {away:.0f} s; all writes flushed")
            self.offline_since = None
        with self._lock:
            if self.journal is not None and not self.pending:
                self.journal.unlink(missing_ok=True)
        return not self.pending

    def _remove(self, done: set[int]) -> None:
        with self._lock:
            self.pending = [op for i, op in enumerate(self.pending) if i not in done]

    def _apply_pending(self, done: set[int]) -> None:
        """Apply the ops up to the first ``finish`` (included), trial by trial."""
        stop = next((i for i, op in enumerate(self.pending) if op["op"] == "finish"), None)
        lanes: dict[str | None, list[int]] = {}
        for i in range(len(self.pending) if stop is None else stop):
            lanes.setdefault(self.pending[i].get("trial"), []).append(i)
        for indices in lanes.values():
            self._apply_lane(indices, done)
        if stop is not None:
            self._guard(stop, self._apply, self.pending[stop])
            done.add(stop)

    def _apply_lane(self, indices: list[int], done: set[int]) -> None:
        """One trial's (or the parent's) ops, in order; metrics and tags held for one call."""
        held: list[int] = []
        for i in indices:
            op = self.pending[i]
            if op["op"] in _BATCHABLE:
                held.append(i)
                continue
            if op["op"] == "end":
                self._guard(held[0] if held else i, self._end, op, [self.pending[j] for j in held])
                done.update((*held, i))
                held = []
                continue
            self._send(held, done)
            held = []
            self._guard(i, self._apply, op)
            done.add(i)
        self._send(held, done)

    def _send(self, held: list[int], done: set[int]) -> None:
        if held:
            ops = [self.pending[i] for i in held]
            self._guard(held[0], self._log_batch, ops[0].get("trial"), ops, {})
            done.update(held)

    def _guard(self, index: int, apply: Callable[..., None], *args: Any) -> None:
        try:
            apply(*args)
        except Exception as exc:  # any refusal is retried, then reported
            raise _Refused(self.pending[index], exc) from exc

    def _log_batch(self, trial: str | None, ops: list[Op], more_tags: dict[str, Any]) -> None:
        """Metrics and tags of ``ops`` (and ``more_tags``) for one run, in as few calls as
        MLflow's limits per ``log_batch`` allow."""
        run_id = self.parent_run_id if trial is None else self._run_id(trial)
        metrics = [
            Metric(k, float(v), op["ts"], op["step"])
            for op in ops
            if op["op"] == "metrics"
            for k, v in op["values"].items()
        ]
        tags = [t for op in ops if op["op"] == "tags" for t in _tags(op["tags"])]
        tags += _tags(more_tags)
        # A tag set again since the last flush (the parent's description) goes once, its last.
        tags = list({tag.key: tag for tag in tags}.values())
        calls = max(-(-len(metrics) // _BATCH_METRICS), -(-len(tags) // _BATCH_TAGS), 1)
        for i in range(calls):
            self.client.log_batch(
                run_id,
                metrics=metrics[i * _BATCH_METRICS : (i + 1) * _BATCH_METRICS],
                tags=tags[i * _BATCH_TAGS : (i + 1) * _BATCH_TAGS],
            )

    def _end(self, op: Op, held: list[Op]) -> None:
        if op.get("replayed") and op["trial"] in self._closed_in_store:
            self._log_batch(op["trial"], held, {})
            return
        self._log_batch(op["trial"], held, op.get("tags", {}))
        run_id = self._run_id(op["trial"])
        for path in op.get("artifacts", []):
            if Path(path).is_file():
                self.client.log_artifact(run_id, path)
            elif Path(path).is_dir():  # an MLflow model folder keeps its name in the run
                self.client.log_artifacts(run_id, path, artifact_path=Path(path).name)
        self.client.set_terminated(run_id, op["status"])

    def drain(
        self,
        timeout_s: float,
        hurried: Callable[[], bool] | None = None,
        hurry_s: float = 0.0,
    ) -> bool:
        """Keep retrying every ``retry_s`` for up to ``timeout_s``; True when everything was
        written. Once ``hurried()`` is true (an interrupt meanwhile), at most ``hurry_s``
        more."""
        deadline = time.monotonic() + timeout_s
        while not self.flush(force=True):
            retry_at = time.monotonic() + self.retry_s
            while True:
                now = time.monotonic()
                if hurried is not None and hurried():
                    deadline, hurried = min(deadline, now + hurry_s), None
                if now >= deadline:
                    return False
                if now >= retry_at:
                    break
                time.sleep(min(0.2, retry_at - now, deadline - now))
        return True

    def _went_offline(self, exc: Exception, now: float) -> None:
        self.last_error = _reason(exc)
        self._retry_at = now + self.retry_s
        if self.offline_since is None:
            self.offline_since = time.time()
            self.echo(
                f"tracking: the store does not answer ({self.last_error}); "
                f"trials go on, their results are buffered and retried every {self.retry_s:g} s"
            )
        if self.journal is not None:
            with self._lock:
                write_journal(self.journal, self.pending)

    def _give_up_on(self, refused: _Refused) -> bool:
        """A store that answers but refuses the same op again and again: drop that op rather
        than block every later write behind it."""
        if _is_connectivity(refused.cause):
            return False  # the store is away: wait for it, however long
        if refused.op is self._failing:
            self._attempts += 1
        else:
            self._failing, self._attempts = refused.op, 1
        if self._attempts < _MAX_ATTEMPTS or not self._store_answers():
            return False
        with self._lock:
            self.pending = [op for op in self.pending if op is not refused.op]
        self._failing, self._attempts = None, 0
        self.dropped += 1
        self.echo(
            f"tracking: dropped a {refused.op['op']} write the store refuses: {refused.cause}"[:300]
        )
        return True

    def _store_answers(self) -> bool:
        uri = str(getattr(self.client, "tracking_uri", "") or "")
        if not uri.startswith(("http://", "https://")):
            return True
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    # ------------------------------------------------------------------ applying one op
    def _apply(self, op: Op) -> None:
        kind = op["op"]
        if kind == "start" and op.get("replayed") and op["trial"] in self._closed_in_store:
            return
        if kind == "finish":
            if self.finisher is not None:
                self.finisher(op["status"])
            return
        if kind == "start":
            self._start(op)
            return
        if kind == "delete":
            run_id = self._run_id(op["trial"])
            # closed first: a deleted run left RUNNING read as a trial still going on
            self.client.set_terminated(run_id, "KILLED")
            self.client.delete_run(run_id)
            self.run_ids.pop(op["trial"], None)
        else:
            raise ValueError(f"unknown tracking op {kind!r}")

    def _start(self, op: Op) -> None:
        trial = op["trial"]
        run_id = self.run_ids.get(trial)
        if run_id is None and (not self._loaded or trial in self._unanswered):
            run_id = self._find(trial)
            if run_id is not None and trial in self._unanswered:
                # Made by the create_run whose answer was lost (a server stopped mid-request):
                # completed, not made a second time.
                self.run_ids[trial] = run_id
                self._unfilled.add(trial)
        self._unanswered.discard(trial)
        if run_id is None:
            tags = {PARENT_TAG: self.parent_run_id, TRIAL_TAG: trial, **op.get("tags", {})}
            try:
                run = self.client.create_run(self.experiment_id, run_name=op["name"], tags=tags)
            except Exception:
                self._unanswered.add(trial)
                raise
            # Known at once: when the store goes away before the params are in, the retried op
            # completes this run instead of creating a second one for the trial.
            self.run_ids[trial] = run.info.run_id
            self._unfilled.add(trial)
        elif trial not in self._unfilled or trial in self._made_before:
            # Another attempt of the same trial (a retry, or a resumed search): same run.
            self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            self.client.log_batch(run_id, tags=_tags(op.get("tags", {})))
        if trial in self._unfilled:
            run_id = self.run_ids[trial]
            params = [Param(k, v) for k, v in sorted(op.get("params", {}).items())]
            self.client.log_batch(run_id, params=params)  # the same values again are accepted
            if "config" in op:  # the exact config, which reproduce reads (tracking/params.py)
                self.client.log_dict(run_id, op["config"], CONFIG_ARTIFACT)
            self._unfilled.discard(trial)
            self._made_before.discard(trial)
        self.run_ids[trial] = run_id

    def _run_id(self, trial: str) -> str:
        run_id = self.run_ids.get(trial) or self._find(trial)
        if run_id is None:
            raise KeyError(f"no MLflow run for trial {trial}")
        self.run_ids[trial] = run_id
        return run_id

    def _find(self, trial: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`{PARENT_TAG}` = '{self.parent_run_id}' and tags.`{TRIAL_TAG}` = '{trial}'"
            ),
            max_results=1,
        )
        return runs[0].info.run_id if runs else None


_AWAY = (
    "Max retries exceeded",
    "Connection refused",
    "Connection aborted",
    "timed out",
    "Failed to establish",
    "Temporary failure in name resolution",
)


def _is_connectivity(exc: Exception) -> bool:
    """The store did not answer (as opposed to answering with an error)."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return any(sign in str(exc) for sign in _AWAY)


class _Refused(Exception):
    """The store did not take ``op`` (``cause`` says why)."""

    def __init__(self, op: Op, cause: Exception) -> None:
        super().__init__(str(cause))
        self.op, self.cause = op, cause


def _tags(tags: dict[str, Any]) -> list[RunTag]:
    return [RunTag(k, str(v)[:5000]) for k, v in tags.items()]


def write_journal(path: Path, ops: list[Op]) -> None:
    """Atomically replace ``path`` with ``ops``, one JSON object per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text("".join(json.dumps(op) + "\n" for op in ops))
    os.replace(partial, path)


def _append(path: Path, op: Op) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(op) + "\n")


def read_journal(path: Path) -> list[Op]:
    """The ops of a journal; a last line cut short by a killed driver is skipped."""
    ops = []
    for line in path.read_text().splitlines():
        try:
            ops.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return ops


def _is_final(op: Op) -> bool:
    """An ``end`` that closes the trial for good (not the pause of an interrupted search)."""
    return op["op"] == "end" and op["status"] != "KILLED"


# What a socket said, inside the text of urllib3's and MLflow's wrappers around it:
# "HTTPConnectionPool(host=..., port=...): Max retries exceeded with url: ... (Caused by
# NewConnectionError(...: Failed to establish a new connection: [Errno 111] Connection refused"
_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")
_POOL_TEXT = re.compile(r"HTTPS?ConnectionPool\(host='([^']+)', port=(\d+)\): Max retries exceeded")


def _reason(exc: BaseException) -> str:
    """Why a write failed, in a few words where the socket said it (``Connection refused``):
    the whole text of urllib3's retry error was some 400 characters on every outage line."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:  # the socket's own error, if chained
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__ or cause.__context__
    found = _ERRNO_TEXT.search(str(exc))
    if found:
        return found[1].strip()
    pool = _POOL_TEXT.search(str(exc))
    if pool:  # urllib3 gave up without a socket error in its text (an artifact upload's)
        caused = re.search(r"Caused by (\w+)\(", str(exc))
        return f"no answer from {pool[1]}:{pool[2]}" + (f" ({caused[1]})" if caused else "")
    first = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return first if len(first) <= 300 else first[:300] + " ..."  # said it is cut
