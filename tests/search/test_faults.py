"""Faults, for real: signals to real processes (a trial's worker, the driver), a tracking server
that goes away, a trial that diverges. Each test is bounded in time and checks what MLflow and
Ray's result folder hold afterwards: every trial once, nothing lost, nothing duplicated."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
from pathlib import Path

import pytest

from nascomp.search.tune.trainable import newest, trial_checkpoints
from tests.search.conftest import nascomp, tiny_args
from tests.search.faults import (
    MlflowServer,
    background_search,
    ended,
    kill_session,
    metric_steps,
    output,
    search_runs,
    trial_reports,
    wait_for,
)

pytestmark = pytest.mark.e2e


def _sqlite(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'mlflow.db'}"


def _check_one_finished_run_per_trial(uri: str, n_trials: int) -> tuple[object, list]:
    parents, children = search_runs(uri)
    assert len(parents) == 1, [p.info.run_id for p in parents]
    assert parents[0].info.status == "FINISHED"
    assert len(children) == n_trials
    assert len({c.data.tags["nascomp.trial_id"] for c in children}) == n_trials
    assert all(c.info.status == "FINISHED" for c in children), [
        (c.data.tags.get("nascomp.trial_id"), c.info.status) for c in children
    ]
    for child in children:
        # Each epoch's metrics once: a retried or resumed attempt continued, it did not redo.
        steps = metric_steps(uri, child.info.run_id, "val_accuracy")
        repeated = sorted({step for step in steps if steps.count(step) > 1})
        assert not repeated, (child.data.tags["nascomp.trial_id"], repeated, steps[-3:])
    hypervolume = metric_steps(uri, parents[0].info.run_id, "hypervolume")
    assert hypervolume == list(range(1, n_trials + 1))
    return parents[0], children


def test_worker_killed_mid_training_resumes_in_the_same_run(workdir: Path) -> None:
    # every epoch reported and checkpointed: the kill comes between two of them
    args = tiny_args(
        workdir,
        "--set",
        "search.trials=3",
        "--set",
        "train.epochs=40",
        "--set",
        "search.checkpoint_every_s=0",
    )
    search = background_search(args, workdir)
    results = workdir / "results"

    def training() -> tuple[str, int, int] | None:
        for trial, rows in trial_reports(results).items():
            if "nascomp_status" not in rows[-1] and rows[-1].get("epoch", 0) >= 3:
                return trial, rows[-1]["pid"], rows[-1]["epoch"]
        return None

    try:
        victim, pid, epoch = wait_for("a trial in its 3rd epoch", training, 300, every_s=0.05)
        os.kill(pid, signal.SIGKILL)
        assert search.wait(timeout=400) == 0, output(search)[-3000:]
    finally:
        kill_session(search)

    _, children = _check_one_finished_run_per_trial(_sqlite(workdir), 3)
    run = next(c for c in children if c.data.tags["nascomp.trial_id"] == victim)
    assert run.data.tags["nascomp.attempts"] == "2"
    assert run.data.tags["nascomp.status"] in ("ok", "infeasible")
    # The second attempt ran in another process and began after the killed one's last epoch.
    rows = trial_reports(results)[victim]
    later = [r for r in rows if r["pid"] != pid]
    assert later, "no report after the kill"
    assert min(r["epoch"] for r in later if "epoch" in r) > 1
    assert min(r["epoch"] for r in later if "epoch" in r) >= epoch - 1
    steps = metric_steps(_sqlite(workdir), run.info.run_id, "val_accuracy")
    assert set(range(1, int(run.data.metrics["epochs"]) + 1)) <= set(steps)


@pytest.mark.parametrize(
    "stops", [("sigkill",), ("ctrl-c", "sigterm")], ids=["sigkill", "ctrl-c-then-sigterm"]
)
def test_driver_stopped_then_resumed(workdir: Path, stops: tuple[str, ...]) -> None:
    """The driver stopped while a trial trains, by each stop in turn (the second stops the
    resumed search), then resumed to the end: the trials ended before a stop are not rerun,
    and every trial ends once, in the one parent run."""
    args = tiny_args(
        workdir,
        "--set",
        "search.trials=5",
        "--set",
        "train.epochs=30",
        "--set",
        "search.checkpoint_every_s=0",
        "--seed",
        "3",
    )
    results = workdir / "results"
    uri = _sqlite(workdir)
    done_before: dict[str, int] = {}  # each trial ended before a stop: its run's end time
    parent_id = None
    for stop in stops:
        search = background_search([*args, "--resume"] if parent_id else args, workdir)
        wanted = max(2, len(done_before) + 1)

        def ended_and_one_training(wanted: int = wanted) -> bool:
            training = [
                t
                for t, rows in trial_reports(results).items()
                if "nascomp_status" not in rows[-1] and rows[-1].get("epoch", 0) >= 2
            ]
            if not training or not (workdir / "mlflow.db").is_file():
                return False
            _, children = search_runs(uri)
            return sum(c.info.status == "FINISHED" for c in children) >= wanted

        try:
            wait_for(f"{wanted} trials ended and 1 training", ended_and_one_training, 400, 0.05)
            if stop == "sigkill":
                kill_session(search, signal.SIGKILL)  # the driver and its local Ray, at once
            else:
                # what Ctrl-C in its terminal sends; SIGTERM (kill, timeout, a job scheduler)
                # ended the search in Ray's handler: status 1, a native stack dump, no resume
                # hint
                sent = signal.SIGINT if stop == "ctrl-c" else signal.SIGTERM
                os.killpg(search.pid, sent)
                assert search.wait(timeout=180) == 130, output(search)[-3000:]
                assert "--resume" in output(search) and "SIGTERM received" not in output(search)
        finally:
            kill_session(search)
        parents, before = search_runs(uri)
        assert len(parents) == 1
        if parent_id:
            assert f"resuming search {parent_id}" in output(search)
            assert parents[0].info.run_id == parent_id
        parent_id = parents[0].info.run_id
        ended_now = {
            c.data.tags["nascomp.trial_id"]: c.info.end_time
            for c in before
            if c.data.tags.get("nascomp.status") in ("ok", "infeasible")
        }
        assert ended_now.items() >= done_before.items()  # none of them ran again
        assert len(ended_now) >= wanted
        done_before = ended_now
    epochs_before = {
        t: sum("epoch" in r for r in rows) for t, rows in trial_reports(results).items()
    }

    resumed = nascomp("search", *args, "--resume", cwd=workdir, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resuming search {parent_id}" in resumed.stdout

    parent, children = _check_one_finished_run_per_trial(uri, 5)
    assert parent.info.run_id == parent_id  # continued, not a second parent
    by_trial = {c.data.tags["nascomp.trial_id"]: c for c in children}
    reports = trial_reports(results)
    for trial, end_time in done_before.items():
        assert by_trial[trial].info.end_time == end_time  # finished trials were not rerun
        assert sum("epoch" in r for r in reports[trial]) == epochs_before[trial]
    # The Optuna study came back with the search: it holds every trial, before and after.
    (folder,) = results.glob("nascomp-*")
    # Tune's staging copy of the search (on a resume, of the whole folder) is left in no Ray
    # session, the killed driver's included; the resumed snapshot alone is in the search's.
    (latest,) = Path(os.environ["RAY_TMPDIR"]).rglob("session_latest")
    assert (latest / "artifacts").is_dir()
    assert not list(latest.parent.glob("session_*/artifacts/*/nascomp-*"))
    (state,) = folder.glob("searcher-state-*.pkl")
    assert len(list(folder.glob("experiment_state-*.json"))) == 1
    study = pickle.loads(state.read_bytes())["_ot_study"]
    assert len(study.trials) == 5
    assert all(t.state.is_finished() for t in study.trials)


def test_ctrl_c_once_every_trial_began_is_an_interrupt(workdir: Path) -> None:
    """Tune's Ctrl-C handler returns from fit and counts the trials it stopped as terminated:
    with no trial left to start, that once read as a finished search (exit 0, its runs left
    RUNNING, and --resume refused)."""
    args = tiny_args(
        workdir,
        "--set",
        "search.trials=2",
        "--set",
        "train.epochs=40",
        "--set",
        "search.checkpoint_every_s=0",
        "--seed",
        "5",
    )
    search = background_search(args, workdir)
    results = workdir / "results"

    def both_training() -> bool:
        reports = trial_reports(results)
        return len(reports) == 2 and all(
            "nascomp_status" not in rows[-1] and rows[-1].get("epoch", 0) >= 1
            for rows in reports.values()
        )

    try:
        wait_for("both trials training", both_training, 400, every_s=0.05)
        os.killpg(search.pid, signal.SIGINT)
        assert search.wait(timeout=180) == 130, output(search)[-3000:]
        assert "--resume" in output(search)
    finally:
        kill_session(search)
    (folder,) = results.glob("nascomp-*")
    assert json.loads((folder / "nascomp" / "manifest.json").read_text())["state"] == "interrupted"
    (parent,), children = search_runs(_sqlite(workdir))
    assert {c.data.tags["nascomp.status"] for c in children} == {"interrupted"}
    # Its description's front is not final: the search resumes (it said "final" before).
    assert parent.data.tags["mlflow.note.content"].startswith("**Pareto front (so far)**")

    resumed = nascomp("search", *args, "--resume", cwd=workdir, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    _check_one_finished_run_per_trial(_sqlite(workdir), 2)


def test_ctrl_c_reaches_the_trials_at_their_next_epoch(workdir: Path) -> None:
    """Reports 15 s apart: Tune's stop reached a trial only at its next report and killed it
    after 5 s, so what it had trained since its last report was lost. On Ctrl-C the trials
    now report their next epoch, whose checkpoint --resume continues from."""
    args = tiny_args(
        workdir,
        "--set",
        "search.trials=2",
        "--set",
        "train.epochs=2000",
        "--set",
        "search.checkpoint_every_s=15",
        "--seed",
        "5",
    )
    search = background_search(args, workdir)
    results = workdir / "results"

    def both_reported() -> dict[str, int]:
        reports = trial_reports(results)
        epochs = {t: rows[-1].get("epoch", 0) for t, rows in reports.items()}
        return epochs if len(epochs) == 2 and all(epochs.values()) else {}

    try:
        reported = wait_for("both trials' first report", both_reported, 400, every_s=0.05)
        os.killpg(search.pid, signal.SIGINT)
        assert search.wait(timeout=180) == 130, output(search)[-3000:]
    finally:
        kill_session(search)
    (folder,) = results.glob("nascomp-*")
    assert not (folder / "nascomp" / "interrupted").exists()  # cleared for --resume
    for trial, epoch in reported.items():
        state, final = newest(trial_checkpoints(folder, trial))
        assert final is None and state is not None
        assert state["epoch"] > epoch, (trial, epoch, state["epoch"])


def test_tracking_server_blip_buffers_and_flushes(workdir: Path) -> None:
    server = MlflowServer(workdir / "server")
    server.start()
    args = tiny_args(
        workdir,
        "--set",
        "search.trials=4",
        "--set",
        "train.epochs=15",
        "--tracking-uri",
        server.uri,
        "--set",
        "tracking.retry_s=1",
    )
    search = background_search(args, workdir)
    results = workdir / "results"
    try:
        wait_for("a first trial to end", lambda: ended(trial_reports(results)), 300, 0.1)
        server.stop()
        # Trials go on training while the server is away.
        at_stop = len(ended(trial_reports(results)))
        wait_for(
            "another trial to end", lambda: len(ended(trial_reports(results))) > at_stop, 300, 0.2
        )
        server.start()
        assert search.wait(timeout=400) == 0, output(search)[-3000:]
    finally:
        kill_session(search)
        server.stop()
    text = output(search)
    assert "does not answer" in text and "answers again" in text
    server.start()
    try:
        _check_one_finished_run_per_trial(server.uri, 4)
        # `nascomp ui` on a server: nothing to start, the runs page's URL on the server.
        shown = nascomp("ui", "--tracking-uri", server.uri, cwd=workdir, timeout=120)
        assert shown.returncode == 0, shown.stderr[-2000:]
        assert shown.stdout.startswith(
            f"the store is a tracking server already: {server.uri}/#/experiments/"
        )
    finally:
        server.stop()
    assert not list(results.glob("nascomp-*/mlflow-pending.jsonl"))
    # Down, it is one line in seconds (MLflow's retries took 4 minutes to a traceback).
    down = nascomp("ui", "--tracking-uri", server.uri, cwd=workdir, timeout=60)
    assert down.returncode == 2
    assert down.stderr.startswith(f"nascomp: error: tracking server {server.uri} is unreachable")


def _search_logging_to_a_server(
    workdir: Path, epochs: int, flush_timeout_s: int = 3
) -> tuple[MlflowServer, subprocess.Popen]:
    """A 3-trial search in the background logging to a real ``mlflow server``, which it
    retries every second and waits ``flush_timeout_s`` for at its end."""
    server = MlflowServer(workdir / "server")
    server.start()
    args = tiny_args(
        workdir,
        "--set",
        "search.trials=3",
        "--set",
        f"train.epochs={epochs}",
        "--tracking-uri",
        server.uri,
        "--set",
        "tracking.retry_s=1",
        "--set",
        f"tracking.flush_timeout_s={flush_timeout_s}",
    )
    return server, background_search(args, workdir)


def test_tracking_server_gone_for_good_then_replay(workdir: Path) -> None:
    server, search = _search_logging_to_a_server(workdir, epochs=10)
    results = workdir / "results"
    try:
        wait_for("a first trial to end", lambda: ended(trial_reports(results)), 300, 0.1)
        server.stop()
        assert search.wait(timeout=400) == 3, output(search)[-3000:]
    finally:
        kill_session(search)
    text = output(search)
    assert "nascomp replay" in text, text[-2000:]
    (folder,) = results.glob("nascomp-*")
    assert (folder / "mlflow-pending.jsonl").is_file()

    server.start()
    try:
        replayed = nascomp("replay", str(folder), cwd=workdir, timeout=300)
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        _check_one_finished_run_per_trial(server.uri, 3)
        again = nascomp("replay", str(folder), cwd=workdir, timeout=300)
        # Replaying again is no error (a script may replay without asking first) and no write.
        assert again.returncode == 0, again.stdout + again.stderr
        assert "nothing to replay: every write of this search is in" in again.stdout
        _check_one_finished_run_per_trial(server.uri, 3)
    finally:
        server.stop()


def test_ctrl_c_while_the_tracking_server_is_away_is_an_interrupt_that_says_both(
    workdir: Path,
) -> None:
    """Ctrl-C with the server away: the wait for it is said at once (it was minutes of
    silence), and the exit is the interrupt's (130), saying how to resume and how to replay
    (it was 3, naming replay alone, though --resume continues the search). It waits 5 s at
    most, not the 600 s of flush_timeout_s: the writes are in the journal, and a scheduler's
    SIGTERM would be followed by SIGKILL in the middle of the wait (a helper's sweep)."""
    server, search = _search_logging_to_a_server(workdir, epochs=30, flush_timeout_s=600)
    results = workdir / "results"
    try:
        wait_for("a first trial to end", lambda: ended(trial_reports(results)), 300, 0.1)
        server.stop()
        wait_for("the outage noticed", lambda: "does not answer" in output(search), 120, 0.2)
        os.killpg(search.pid, signal.SIGINT)
        assert search.wait(timeout=240) == 130, output(search)[-3000:]
    finally:
        kill_session(search)
        server.stop()
    text = output(search)
    assert "tracking: waiting up to 5 s (an interrupt; the journal keeps the rest)" in text
    (folder,) = results.glob("nascomp-*")
    assert f"search interrupted; its state is saved in {folder}; tracking server" in text
    assert "--resume continues it" in text and f"nascomp replay {folder}" in text
    assert (folder / "mlflow-pending.jsonl").is_file()
    assert json.loads((folder / "nascomp" / "manifest.json").read_text())["state"] == "interrupted"


def test_diverging_trial_fails_with_its_reason_and_the_search_goes_on(workdir: Path) -> None:
    # An absurd learning rate makes the loss overflow to NaN in the first epoch (SGD; BatchNorm
    # alone would absorb a merely huge one): each trial ends failed, with why.
    args = tiny_args(
        workdir,
        "--set",
        "search.trials=2",
        "--set",
        "train.optimizer=sgd",
        "--set",
        "train.lr=1e38",
    )
    done = nascomp("search", *args, cwd=workdir, timeout=600)
    # The search ran to its end, but with no model on its front: exit code 4, one line why.
    assert done.returncode == 4, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 failed" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == (
        "nascomp: error: the front is empty: no trial ended ok (2 failed)"
    )
    _, children = search_runs(_sqlite(workdir))
    assert len(children) == 2
    for child in children:
        assert child.info.status == "FAILED"
        assert child.data.tags["nascomp.status"] == "failed"
        assert "FloatingPointError" in child.data.tags["nascomp.reason"]
