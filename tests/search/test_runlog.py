"""The buffered MLflow writes (search/tracking/runlog.py) on a real sqlite store; an outage is a
client whose calls fail for a while, as an unreachable server's do."""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from nascomp.search.resume import differences
from nascomp.search.tracking.runlog import JOURNAL, RunLog, read_journal
from nascomp.search.tune.callbacks import _error_text, _step


class Outage:
    """An MlflowClient whose calls raise while ``down`` (as with a server that is away)."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client
        self.down = False
        self.refuse: str | None = None  # a method the store answers with an error
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if self.down:
                raise ConnectionError(f"{name}: connection refused")
            if name == self.refuse:
                raise RuntimeError(f"{name}: INVALID_PARAMETER_VALUE")
            return method(*args, **kwargs)

        return call


@pytest.fixture
def store(tmp_path: Path) -> tuple[MlflowClient, str, str]:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    # artifacts in the test's folder: MLflow's default is ./mlruns of wherever pytest runs
    artifacts = (tmp_path / "mlartifacts").as_uri()
    experiment_id = client.create_experiment("runlog", artifact_location=artifacts)
    parent = client.create_run(experiment_id, tags={"nascomp.role": "search"}).info.run_id
    return client, experiment_id, parent


def _start(trial: str) -> dict:
    return {"op": "start", "trial": trial, "name": f"trial-{trial}", "params": {"lr": "0.1"}}


def _metrics(trial: str | None, step: int, value: float) -> dict:
    return {"op": "metrics", "trial": trial, "step": step, "ts": 1, "values": {"loss": value}}


def _end(trial: str, status: str = "FINISHED") -> dict:
    return {"op": "end", "trial": trial, "status": status, "tags": {"nascomp.status": "ok"}}


def _children(client: MlflowClient, experiment_id: str, parent: str) -> list:
    return client.search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'"
    )


def test_ops_make_one_nested_run_per_trial(store: tuple, tmp_path: Path) -> None:
    client, experiment_id, parent = store
    log = RunLog(client, experiment_id, parent, journal=tmp_path / JOURNAL, echo=lambda _: None)
    log.load()
    for op in (_start("t1"), _metrics("t1", 1, 0.5), _metrics(None, 1, 0.25), _end("t1")):
        assert log.submit(op)
    # A second attempt of the same trial continues its run.
    assert log.submit(_start("t1"))
    assert log.submit(_metrics("t1", 2, 0.4))
    assert log.submit(_end("t1"))
    (run,) = _children(client, experiment_id, parent)
    assert run.data.tags["nascomp.trial_id"] == "t1"
    assert run.data.params == {"lr": "0.1"}
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.4)]
    assert [m.value for m in client.get_metric_history(parent, "loss")] == [0.25]
    assert not (tmp_path / JOURNAL).exists()


class DownAfterCreate(Outage):
    """The store goes away right after it created a run, before the run's params are in (or,
    ``answer_lost``, before create_run's answer arrived)."""

    answer_lost = False

    def __getattr__(self, name: str) -> Any:
        call = super().__getattr__(name)
        if name != "create_run":
            return call

        def create(*args: Any, **kwargs: Any) -> Any:
            run = call(*args, **kwargs)
            self.down = True
            if self.answer_lost:
                raise ConnectionError("create_run: Connection aborted")
            return run

        return create


def test_a_start_cut_by_an_outage_completes_its_run_rather_than_making_another(
    store: tuple,
) -> None:
    client, experiment_id, parent = store
    flaky = DownAfterCreate(client)
    log = RunLog(flaky, experiment_id, parent, retry_s=0.0, echo=lambda _: None)
    log.load()
    start = {**_start("t1"), "config": {"format": 1, "config": {"lr": 0.1}}}
    assert not log.submit(start)  # created, then the store went away
    flaky.down = False
    assert log.flush(force=True)
    assert log.submit(_end("t1"))
    (run,) = _children(client, experiment_id, parent)
    assert run.data.params == {"lr": "0.1"}
    assert "trial_config.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert flaky.calls.count("create_run") == 1


class AnswerLost(DownAfterCreate):
    """create_run makes the run, then the connection drops before its answer arrives."""

    answer_lost = True


def test_a_run_made_but_unanswered_is_completed_not_made_twice(store: tuple) -> None:
    """A server stopped mid-request had made the run: the retry made a second one for the
    trial (5 runs for 4 trials, tests/search/test_faults.py's blip, once in three CI runs)."""
    client, experiment_id, parent = store
    flaky = AnswerLost(client)
    log = RunLog(flaky, experiment_id, parent, retry_s=0.0, echo=lambda _: None)
    log.load()
    assert not log.submit(_start("t1"))  # made, its answer lost
    flaky.down = False
    assert log.flush(force=True)
    assert log.submit(_end("t1"))
    (run,) = _children(client, experiment_id, parent)
    assert run.data.params == {"lr": "0.1"} and run.info.status == "FINISHED"
    assert flaky.calls.count("create_run") == 1


def test_an_outage_buffers_to_the_journal_and_flushes_in_order(
    store: tuple, tmp_path: Path
) -> None:
    client, experiment_id, parent = store
    flaky = Outage(client)
    lines: list[str] = []
    journal = tmp_path / JOURNAL
    log = RunLog(flaky, experiment_id, parent, journal=journal, retry_s=0.0, echo=lines.append)
    log.load()
    assert log.submit(_start("t1"))
    flaky.down = True
    assert not log.submit(_metrics("t1", 1, 0.9))
    assert not log.submit(_metrics("t1", 2, 0.8))
    assert not log.submit(_end("t1"))
    assert [op["op"] for op in read_journal(journal)] == ["metrics", "metrics", "end"]
    assert log.offline_since is not None and "connection refused" in log.last_error
    assert "does not answer" in lines[0]
    assert not log.drain(timeout_s=0.2)  # still away: nothing lost, nothing written
    flaky.down = False
    assert log.flush()
    assert "answers again" in lines[-1]
    assert not journal.exists()
    (run,) = _children(client, experiment_id, parent)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    assert run.info.status == "FINISHED"


def test_a_new_driver_finds_the_runs_and_the_journal_of_the_old_one(
    store: tuple, tmp_path: Path
) -> None:
    client, experiment_id, parent = store
    journal = tmp_path / JOURNAL
    first = RunLog(client, experiment_id, parent, journal=journal, echo=lambda _: None)
    first.load()
    first.submit(_start("done"))
    first.submit(_end("done"))
    first.submit(_start("half"))
    # The old driver died while the server was away: two writes only in its journal.
    journal.write_text(json.dumps(_metrics("half", 1, 0.7)) + "\n" + json.dumps(_end("gone")))
    journal.write_text(journal.read_text() + '\n{"op": "metr')  # cut short by the kill

    second = RunLog(client, experiment_id, parent, journal=journal, echo=lambda _: None)
    runs = second.load()
    assert {r.data.tags["nascomp.trial_id"] for r in runs} == {"done", "half"}
    assert second.ended == {"done", "gone"}  # "gone" ends in the journal
    assert [op["op"] for op in second.pending] == ["metrics", "end"]
    second.pending.pop()  # "gone" has no run here; keep the test to "half"
    assert second.flush(force=True)
    half = second.run_ids["half"]
    assert [m.value for m in client.get_metric_history(half, "loss")] == [0.7]
    # The old driver had applied these before it died, but not yet cleared its journal:
    # replayed, they neither reopen nor re-close the finished run.
    done = second.run_ids["done"]
    end_time = client.get_run(done).info.end_time
    second.pending = [{**_start("done"), "replayed": True}, {**_end("done"), "replayed": True}]
    assert second.flush(force=True)
    assert client.get_run(done).info.status == "FINISHED"
    assert client.get_run(done).info.end_time == end_time
    second.submit(_start("half"))  # its next attempt: the same run, RUNNING again
    assert second.run_ids["half"] == half
    assert client.get_run(half).info.status == "RUNNING"
    assert len(_children(client, experiment_id, parent)) == 2


def test_a_run_its_driver_made_without_params_is_filled_by_the_next(
    store: tuple, tmp_path: Path
) -> None:
    """The store went away between a trial's create_run and its params: `nascomp replay` (a
    new driver) took the run for another attempt of the trial and wrote only its status and
    tags, so the finished run had no params and no trial_config.json, and export and
    reproduce failed on it (a helper's sweep, a server stopped mid-search)."""
    client, experiment_id, parent = store
    journal = tmp_path / JOURNAL
    made = client.create_run(
        experiment_id,
        run_name="trial-t1",
        tags={"mlflow.parentRunId": parent, "nascomp.trial_id": "t1", "nascomp.status": "running"},
    ).info.run_id
    start = {**_start("t1"), "config": {"format": 1, "config": {"lr": 0.1}}}
    journal.write_text(json.dumps(start) + "\n" + json.dumps(_end("t1")) + "\n")
    replay = RunLog(client, experiment_id, parent, journal=journal, echo=lambda _: None)
    replay.load()
    assert replay.flush(force=True)
    (run,) = _children(client, experiment_id, parent)
    assert run.info.run_id == made and run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1"}
    assert "trial_config.json" in {a.path for a in client.list_artifacts(made)}


def test_an_interrupt_cuts_the_wait_for_an_absent_store_short(store: tuple) -> None:
    """A Ctrl-C or SIGTERM while the search waits for the store at its end: a few seconds
    more, not the rest of flush_timeout_s (one Ctrl-C was only printed, and the search waited
    its 120 s before ending; a scheduler's SIGKILL follows SIGTERM within 30 s)."""
    client, experiment_id, parent = store
    flaky = Outage(client)
    log = RunLog(flaky, experiment_id, parent, retry_s=0.5, echo=lambda _: None)
    log.load()
    assert log.submit(_start("t1"))
    flaky.down = True
    assert not log.submit(_end("t1"))
    told: list[int] = []
    threading.Timer(0.3, told.append, args=[2]).start()
    started = time.monotonic()
    assert not log.drain(600.0, hurried=lambda: bool(told), hurry_s=1.0)
    assert 1.2 <= time.monotonic() - started < 10
    assert log.pending  # kept for replay or resume


def test_a_write_the_store_keeps_refusing_is_dropped_not_blocking(
    store: tuple, tmp_path: Path
) -> None:
    client, experiment_id, parent = store
    refusing = Outage(client)
    lines: list[str] = []
    log = RunLog(refusing, experiment_id, parent, retry_s=0.0, echo=lines.append)
    log.load()
    log.submit(_start("t1"))
    refusing.refuse = "set_terminated"
    assert not log.submit(_end("t1"))
    assert not log.flush()
    refusing.refuse = None
    log.pending.append(_metrics("t1", 1, 0.3))
    refusing.refuse = "set_terminated"
    assert log.flush()  # third refusal: dropped; the metrics behind it are written
    assert log.dropped == 1 and any("dropped a end write" in line for line in lines)
    run_id = log.run_ids["t1"]
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [0.3]


def test_delete_removes_a_run_no_trial_continues(store: tuple) -> None:
    client, experiment_id, parent = store
    log = RunLog(client, experiment_id, parent, echo=lambda _: None)
    log.load()
    log.submit(_start("orphan"))
    log.forget("orphan")
    run_id = log.run_ids["orphan"]
    assert log.submit({"op": "delete", "trial": "orphan"})
    assert _children(client, experiment_id, parent) == []
    # closed, not left RUNNING among the deleted runs as a trial still going on
    deleted = client.get_run(run_id).info
    assert (deleted.lifecycle_stage, deleted.status) == ("deleted", "KILLED")
    with pytest.raises(ValueError, match="unknown tracking op"):
        log._apply({"op": "rename", "trial": None})


def test_a_step_a_run_holds_is_logged_once(tmp_path: Path) -> None:
    """A trial re-sends epochs (resumed from a checkpoint whose report the driver never took):
    each step stays once in MLflow, those a previous driver wrote and queued included."""
    from types import SimpleNamespace

    from nascomp.search.tracking.store import Tracker
    from nascomp.search.tune.callbacks import MlflowTrialCallback
    from nascomp.search.tune.results import EARLIER_KEY

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "steps")
    experiment_id = tracker.experiment_id(create=True)
    parent = tracker.client.create_run(experiment_id).info.run_id
    journal = tmp_path / JOURNAL
    killed = RunLog(tracker.client, experiment_id, parent, journal=journal, echo=lambda _: None)
    killed.load()
    killed.submit(_start("t1"))
    for step in (1, 2):
        killed.submit(_metrics("t1", step, 1.0 / step))
    journal.write_text(json.dumps(_metrics("t1", 3, 0.3)) + "\n")  # never reached the store

    callback = MlflowTrialCallback(
        tracker, parent, {"loss": "min"}, [], journal=journal, echo=lambda _: None
    )
    callback.setup()
    assert callback.steps == {"t1": {1, 2, 3}}
    trial = SimpleNamespace(trial_id="t1")
    earlier = [{"epoch": e, "loss": 1.0 / e} for e in (1, 2, 3)]
    resent = {"epoch": 4, "loss": 0.25, EARLIER_KEY: json.dumps(earlier)}
    callback.on_trial_result(0, [trial], trial, resent)
    callback.on_trial_result(0, [trial], trial, {"epoch": 4, "loss": 0.25})  # again: dropped
    callback.log.flush(force=True)
    run_id = callback.log.run_ids["t1"]
    steps = [m.step for m in tracker.client.get_metric_history(run_id, "loss")]
    assert sorted(steps) == [1, 2, 3, 4]


def test_steps_are_epochs_and_the_final_report_the_step_after() -> None:
    assert _step({"epoch": 3, "training_iteration": 9}) == 3
    assert _step({"epochs": 12, "training_iteration": 5}) == 13
    assert _step({"training_iteration": 1}) == 1


def test_error_text_is_the_exceptions_own_line(tmp_path: Path) -> None:
    error = tmp_path / "error.txt"
    error.write_text(
        'Traceback (most recent call last):\n  File "x.py", line 1\n    boom()\n'
        "pydantic_core.ValidationError: 1 validation error for TrialConfig\ndata\n"
        "  Value error, dataset 'mnist': expected files\n    For further information visit\n"
    )

    class Trial:
        error_file = str(error)

    assert _error_text(Trial()) == (
        "pydantic_core.ValidationError: 1 validation error for TrialConfig"
    )
    error.write_text("Traceback:\n  frame\nFloatingPointError: loss is nan at step 3\n")
    assert _error_text(Trial()) == "FloatingPointError: loss is nan at step 3"
    # Ray's file of a trial tried twice; an exception whose name ends in neither Error nor
    # Exception, with details on the lines after its message
    failure = (
        "Failure # {n} (occurred at 2026-12-01_23-35-29)\n"
        "\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=1, ip=127.0.0.1, repr=trial_fn)\n"
        '  File "/x/onnx_export.py", line 381, in forward\n'
        "    logits = self.session.run(None, feed)[0]\n"
        "             ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
        "onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument: [ONNXRuntimeError] : "
        "2 : INVALID_ARGUMENT : Got invalid dimensions for input {n}\n"
        " index: 0 Got: 1024 Expected: 1\n"
        " Please fix either the inputs/outputs or the model.\n"
    )
    error.write_text(failure.format(n=1) + failure.format(n=2))
    assert _error_text(Trial()) == (
        "onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument: [ONNXRuntimeError] : 2 "
        ": INVALID_ARGUMENT : Got invalid dimensions for input 2"
    )


def test_differences_name_the_changed_fields_and_ignore_tracking() -> None:
    old = {"search": {"trials": 20, "seed": 0}, "tracking": {"uri": "a"}, "trial": "train"}
    new = {"search": {"trials": 30, "seed": 0}, "tracking": {"uri": "b"}, "trial": "train"}
    assert differences(old, new) == ["search.trials (20 -> 30)"]
    assert differences(old, old) == []
    # constraints as they read, not as written (a resume was refused for a space, a sweep)
    written = {"constraints": ["size_bytes <= 20000", "latency_ms < 2"]}
    again = {"constraints": ["latency_ms<2", "size_bytes<=2e4"]}
    assert differences(written, again) == []
    other = {"constraints": ["size_bytes <= 20001", "latency_ms < 2"]}
    assert differences(written, other) == [
        "constraints (['size_bytes <= 20000', 'latency_ms < 2'] -> ['size_bytes <= 20001', "
        "'latency_ms < 2'])"
    ]


def test_writes_within_batch_s_go_out_as_one_log_batch_per_run(
    store: tuple, tmp_path: Path
) -> None:
    client, experiment_id, parent = store
    counting = Outage(client)
    journal = tmp_path / JOURNAL
    log = RunLog(counting, experiment_id, parent, journal=journal, batch_s=3600, echo=print)
    log.load()
    counting.calls.clear()
    for op in (_start("a"), _start("b")):
        log.submit(op)
    assert counting.calls == [] and len(read_journal(journal)) == 2  # held, and on disk
    for epoch in (1, 2, 3):
        log.submit(_metrics("a", epoch, 1.0 / epoch))
        log.submit(_metrics("b", epoch, 2.0 / epoch))
        log.submit(_metrics(None, epoch, 0.1 * epoch))
    log.submit({"op": "tags", "trial": "a", "tags": {"nascomp.attempts": 2}})
    assert log.flush(force=True)
    # 2 runs created (create_run + params each), then 3 log_batch calls for 9 metrics ops
    # and a tags op: one per run (a, b and the parent).
    assert counting.calls.count("create_run") == 2
    assert counting.calls.count("log_batch") == 2 + 3
    assert not journal.exists()
    a = log.run_ids["a"]
    assert [m.step for m in client.get_metric_history(a, "loss")] == [1, 2, 3]
    assert client.get_run(a).data.tags["nascomp.attempts"] == "2"
    assert [m.value for m in client.get_metric_history(parent, "loss")] == pytest.approx(
        [0.1, 0.2, 0.3]
    )


def test_a_trials_writes_batch_past_other_trials_starts_and_ends(store: tuple) -> None:
    client, experiment_id, parent = store
    counting = Outage(client)
    log = RunLog(counting, experiment_id, parent, batch_s=3600, echo=print)
    log.load()
    counting.calls.clear()
    ops = [
        _start("a"),
        _metrics("a", 1, 0.9),
        _start("b"),
        _metrics("a", 2, 0.8),
        _metrics("b", 1, 0.7),
        _end("b"),
        _metrics("a", 3, 0.6),
        _end("a"),
    ]
    for op in ops:
        log.submit(op)
    assert log.flush(force=True)
    # Per trial: create_run, its params, ONE log_batch of all its metrics and end tags, and
    # set_terminated: 4 calls, whatever the other trial did in between.
    assert counting.calls.count("create_run") == 2
    assert counting.calls.count("log_batch") == 2 * 2
    assert counting.calls.count("set_terminated") == 2
    a = client.get_run(log.run_ids["a"])
    assert a.info.status == "FINISHED" and a.data.tags["nascomp.status"] == "ok"
    assert [m.step for m in client.get_metric_history(a.info.run_id, "loss")] == [1, 2, 3]


def test_a_resumed_search_deletes_the_runs_of_trials_tune_does_not_know(
    tmp_path: Path,
) -> None:
    """A driver killed after its last Tune snapshot leaves runs of trials Tune will not
    continue: one already in the store, one only in its journal. Both go; a known one stays."""
    from types import SimpleNamespace

    from nascomp.search.tracking.store import Tracker
    from nascomp.search.tune.callbacks import MlflowTrialCallback

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "resume")
    experiment_id = tracker.experiment_id(create=True)
    parent = tracker.client.create_run(experiment_id).info.run_id
    journal = tmp_path / JOURNAL
    killed = RunLog(tracker.client, experiment_id, parent, journal=journal, echo=lambda _: None)
    killed.load()
    for trial in ("known", "in-store"):
        killed.submit(_start(trial))
    killed.submit(_end("known"))
    journal.write_text(json.dumps(_start("in-journal")) + "\n")  # never reached the store

    callback = MlflowTrialCallback(
        tracker, parent, {"loss": "min"}, [], journal=journal, echo=lambda _: None
    )
    callback.setup()
    assert len(_children(tracker.client, experiment_id, parent)) == 3  # the journal replayed
    callback.on_step_begin(0, [SimpleNamespace(trial_id="known")])
    callback.log.flush(force=True)
    children = _children(tracker.client, experiment_id, parent)
    assert [run.data.tags["nascomp.trial_id"] for run in children] == ["known"]
    assert callback.log.ended == {"known"}


def _trial_ops(trial: str, loss: float, size: float) -> list[dict]:
    values = {"loss": loss, "size": size}
    final = {"op": "metrics", "trial": trial, "step": 3, "ts": 1, "values": values}
    start = {**_start(trial), "params": {"lr": str(loss)}}  # one config each
    return [start, _metrics(trial, 1, 9.0), final, _end(trial)]


def test_a_resumed_search_counts_the_trials_its_journal_ended(tmp_path: Path) -> None:
    """A driver stopped while the server was away: trial a is in the store, b's run is there
    but its end and metrics only in the journal, c only in the journal. The resumed search
    counted b as ended with no values and left c out, so its hypervolume curve fell and
    repeated a step (a helper's sweep, on a real mlflow server). All three count, in order."""
    from types import SimpleNamespace

    from nascomp.search.front.hypervolume import HypervolumeHistory
    from nascomp.search.tracking.store import Tracker
    from nascomp.search.tune.callbacks import MlflowTrialCallback

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "resume")
    experiment_id = tracker.experiment_id(create=True)
    parent = tracker.client.create_run(experiment_id).info.run_id
    journal = tmp_path / JOURNAL
    killed = RunLog(tracker.client, experiment_id, parent, journal=journal, echo=lambda _: None)
    killed.load()
    a, b, c = _trial_ops("a", 3.0, 1.0), _trial_ops("b", 1.0, 3.0), _trial_ops("c", 2.0, 2.0)
    for op in [*a, *b[:2]]:
        killed.submit(op)
    killed.flush(force=True)
    journal.write_text("".join(json.dumps(op) + "\n" for op in [*b[2:], *c]))

    objectives = {"loss": "min", "size": "min"}
    callback = MlflowTrialCallback(
        tracker, parent, objectives, [], journal=journal, echo=lambda _: None
    )
    callback.setup()
    callback.on_step_begin(0, [SimpleNamespace(trial_id=t) for t in "abcd"])
    expected = HypervolumeHistory(objectives)
    for loss, size in ((3.0, 1.0), (1.0, 3.0), (2.0, 2.0)):
        expected.add({"loss": loss, "size": size})
    assert callback.progress.n_ended == 3
    assert callback.progress.add(None) == expected.add(None)  # the next trial's step, value
    assert set(callback.finished) == {"a", "b", "c"}
    assert callback.front.order() and set(callback.front.order()) == {"a", "b", "c"}


def test_a_journal_overlays_the_stores_records_as_applying_it_would() -> None:
    from nascomp.search.tracking.store import TrialRecord, with_queued

    stored = [
        TrialRecord("r1", "a", "ok", {"lr": 0.1}, {"loss": 3.0}, {"nascomp.status": "ok"}),
        TrialRecord("r2", "b", "running", {"lr": 0.2}, {"loss": 9.0}),
        TrialRecord("r3", "gone", "running", {}, {}),
    ]
    ops = [
        {"op": "metrics", "trial": None, "step": 2, "ts": 1, "values": {"hypervolume": 0.5}},
        {"op": "metrics", "trial": "b", "step": 3, "ts": 1, "values": {"loss": 1.0}},
        {"op": "metrics", "trial": "b", "step": 2, "ts": 1, "values": {"loss": 5.0}},  # older
        _start("c"),
        {"op": "end", "trial": "c", "status": "FAILED", "tags": {"nascomp.status": "failed"}},
        {"op": "end", "trial": "b", "status": "FINISHED", "tags": {"nascomp.status": "ok"}},
        {"op": "delete", "trial": "gone"},
    ]
    records = with_queued(stored, ops)
    assert [(r.trial_id, r.status, r.metrics, r.run_id) for r in records] == [
        ("a", "ok", {"loss": 3.0}, "r1"),
        ("c", "failed", {}, ""),
        ("b", "ok", {"loss": 1.0}, "r2"),
    ]
    assert records[1].params == {"lr": 0.1}
    assert stored[1].metrics == {"loss": 9.0}  # the store's records are left as they were


class Slow(Outage):
    """A store that takes ``delay_s`` for every write (a remote server, a busy disk)."""

    def __init__(self, client: MlflowClient, delay_s: float) -> None:
        super().__init__(client)
        self.delay_s = delay_s

    def __getattr__(self, name: str) -> Any:
        call = super().__getattr__(name)

        def slow(*args: Any, **kwargs: Any) -> Any:
            time.sleep(self.delay_s)
            return call(*args, **kwargs)

        return slow


def _timed_submits(log: RunLog, ops: list[dict]) -> float:
    started = time.perf_counter()
    for op in ops:
        log.submit(op)
    return time.perf_counter() - started


def test_with_a_writer_thread_the_caller_only_queues(store: tuple, tmp_path: Path) -> None:
    client, experiment_id, parent = store
    ops = [_start("t1"), _metrics("t1", 1, 0.5), _end("t1")]
    inline = RunLog(Slow(client, 0.2), experiment_id, parent, echo=lambda _: None)
    assert _timed_submits(inline, ops) >= 0.6  # each submit waited for its writes
    log = RunLog(Slow(client, 0.2), experiment_id, parent, journal=tmp_path / JOURNAL)
    log.load()
    log.start_writer(period_s=0.01)
    try:
        assert log.in_background
        assert _timed_submits(log, [_start("t2"), _metrics("t2", 1, 0.5), _end("t2")]) < 0.2
        deadline = time.monotonic() + 20
        while log.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not log.pending  # the thread wrote them
    finally:
        log.stop_writer()
    assert not log.in_background
    runs = {r.data.tags["nascomp.trial_id"]: r for r in _children(client, experiment_id, parent)}
    assert runs["t2"].info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(runs["t2"].info.run_id, "loss")] == [0.5]
    assert not (tmp_path / JOURNAL).exists()


def test_ops_queued_while_the_thread_writes_are_neither_lost_nor_reordered(
    store: tuple, tmp_path: Path
) -> None:
    client, experiment_id, parent = store
    log = RunLog(client, experiment_id, parent, journal=tmp_path / JOURNAL, batch_s=0.02)
    log.load()
    log.start_writer(period_s=0.005)
    try:
        log.submit(_start("t1"))
        for step in range(1, 151):
            log.submit(_metrics("t1", step, step / 1000))
            if step % 50 == 0:
                time.sleep(0.05)  # let the thread take some while more arrive
        log.submit(_end("t1"))
    finally:
        log.stop_writer()
    # Whatever the thread had not written waits, in memory and in the journal, for the drain.
    if log.pending:
        assert read_journal(tmp_path / JOURNAL)[-len(log.pending) :] == log.pending
    assert log.drain(5.0)
    (run,) = _children(client, experiment_id, parent)
    history = client.get_metric_history(run.info.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(s, s / 1000) for s in range(1, 151)]
    assert run.info.status == "FINISHED"


def test_an_outage_seen_by_the_thread_keeps_the_queue_in_the_journal(
    store: tuple, tmp_path: Path
) -> None:
    client, experiment_id, parent = store
    away = Outage(client)
    lines: list[str] = []
    log = RunLog(away, experiment_id, parent, journal=tmp_path / JOURNAL, echo=lines.append)
    log.retry_s = 0.05
    log.load()
    away.down = True
    log.start_writer(period_s=0.01)
    try:
        log.submit(_start("t1"))  # queued; the thread finds the store away
        deadline = time.monotonic() + 10
        while log.offline_since is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert log.offline_since is not None
        log.submit(_metrics("t1", 1, 0.5))
        assert [op["op"] for op in read_journal(tmp_path / JOURNAL)] == ["start", "metrics"]
        away.down = False
        deadline = time.monotonic() + 10
        while log.pending and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        log.stop_writer()
    assert not log.pending and log.offline_since is None
    assert any("does not answer" in line for line in lines)
    assert any("answers again" in line for line in lines)
    (run,) = _children(client, experiment_id, parent)
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [0.5]


def test_a_run_log_with_a_writer_pickles_without_it(store: tuple) -> None:
    client, experiment_id, parent = store
    log = RunLog(client, experiment_id, parent, echo=print)
    log.start_writer(period_s=0.01)
    try:
        copy = pickle.loads(pickle.dumps(log))  # Ray Tune pickles its callbacks
    finally:
        log.stop_writer()
    assert not copy.in_background
    copy.submit(_start("t1"))  # no writer: written at once, as before
    assert not copy.pending
    assert len(_children(client, experiment_id, parent)) == 1


def test_an_outage_is_told_in_the_words_the_socket_used() -> None:
    """urllib3's retry error was some 400 characters on every outage line."""
    from nascomp.search.tracking.runlog import _reason

    wrapped = Exception(
        "API request to endpoint /api/2.0/mlflow/runs/log-batch failed with error: "
        "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded with url: "
        "/api/2.0/mlflow/runs/log-batch (Caused by NewConnectionError('<urllib3.connection."
        "HTTPConnection object at 0x7f>: Failed to establish a new connection: [Errno 111] "
        "Connection refused'))"
    )
    assert _reason(wrapped) == "Connection refused"
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as socket_error:
            raise RuntimeError("the store failed") from socket_error
    except RuntimeError as chained:
        assert _reason(chained) == "Connection refused"
    assert _reason(ValueError("x" * 400)) == "ValueError: " + "x" * 288 + " ..."
    assert _reason(KeyError("run")) == "KeyError: 'run'"
    # An artifact upload's failure names no socket error: the server and urllib3's cause.
    upload = RuntimeError(
        "API request to http://127.0.0.1:5731/api/2.0/mlflow-artifacts/artifacts/1/dd81/"
        "artifacts/onnx_model/python_env.yaml failed with exception HTTPConnectionPool("
        "host='127.0.0.1', port=5731): Max retries exceeded with url: /api/2.0/mlflow-artifacts"
        "/artifacts/1/dd81 (Caused by ResponseError('too many 503 error responses'))"
    )
    assert _reason(upload) == "no answer from 127.0.0.1:5731 (ResponseError)"


def test_the_parent_describes_the_running_front_in_rank_order(tmp_path: Path) -> None:
    """The callback keeps the front incrementally: the parent run's description after each
    trial lists exactly the non-dominated finished trials, best first; a trial remembered
    again (its values changed) is re-ranked from scratch, freeing those it had dominated."""
    from nascomp.search.tracking.store import NOTE_TAG, Tracker
    from nascomp.search.tune.callbacks import MlflowTrialCallback

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "front")
    parent = tracker.client.create_run(tracker.experiment_id(create=True)).info.run_id
    objectives = {"val_accuracy": "max", "size_bytes": "min"}
    callback = MlflowTrialCallback(
        tracker, parent, objectives, [], journal=tmp_path / JOURNAL, echo=lambda _: None
    )
    callback.setup()

    def remember(trial_id: str, accuracy: float, size: int) -> list[str]:
        result = {"val_accuracy": accuracy, "size_bytes": size}
        callback._remember(trial_id, result, {"arch.family": "mlp", "arch.hidden": [size]})
        callback.log.flush(force=True)
        note = tracker.client.get_run(parent).data.tags.get(NOTE_TAG, "")
        rows = [line.split(" | ") for line in note.splitlines() if line.startswith("| ")]
        return [row[3].split(" / ")[0] for row in rows[1:]]  # each row's model: "mlp SIZE"

    assert remember("a", 0.90, 400) == ["mlp 400"]
    assert remember("b", 0.80, 200) == ["mlp 400", "mlp 200"]
    assert remember("c", 0.70, 300) == ["mlp 400", "mlp 200"]  # dominated by b: unchanged
    assert remember("d", 0.95, 100) == ["mlp 100"]  # dominates a, b and c
    assert callback.front.order() == ["d"]
    assert remember("d", 0.60, 500) == ["mlp 400", "mlp 200"]  # d again, dominated
    assert callback.front.order() == ["a", "b"]  # c stays dominated by b


def test_the_stores_lock_is_this_users_and_done_without_when_it_cannot_be_had(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock files were in the temp folder itself, where another user's file of the same
    store could not be opened: every command ended in a traceback (a helper's sweep)."""
    from nascomp.search.tracking.store import _store_init_lock

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with _store_init_lock("sqlite:////x/m.db"):
        (lock,) = (tmp_path / f"nascomp-locks-{os.getuid()}").iterdir()
        assert lock.name.startswith("store-") and oct(lock.parent.stat().st_mode)[-3:] == "700"
    # A folder that cannot be made (here a file in its place): no lock, no traceback.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "other"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / f"nascomp-locks-{os.getuid()}").write_text("not a folder")
    entered = False
    with _store_init_lock("sqlite:////x/m.db"):
        entered = True
    assert entered
