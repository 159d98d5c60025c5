"""The `nascomp` command as a user meets it: bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from tests.search.conftest import live_processes_with, nascomp, nascomp_here


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--set", "search.trails=3"], "search.trails: unknown key (did you mean 'trials'?)"),
        (["--trials", "0"], "search.trials"),
        (["--set", "space.quant.bits=[4, 9]"], "space.quant.bits"),
        (["--set", "space.prune.ratio=1.0"], "space.prune.ratio"),
        (["--set", "space.distill.temperature=0"], "space.distill.temperature"),
        (["--set", "space.arch.block=[]"], "space.arch.block"),
        (
            ["--set", "data.name=mnist", "--set", "data.root=/nonexistent/data"],
            "/nonexistent/data/MNIST/raw",
        ),
        (["missing.yaml"], "experiment file"),
        (["--resume"], "--resume: no unfinished search of this experiment"),
        (["--resume", "elsewhere"], "--resume elsewhere: no such folder; give a search's"),
        (["--resume", "."], "--resume .: no nascomp/manifest.json there"),
        (["--address", "127.0.0.1:99999"], "--address '127.0.0.1:99999': the port must be in"),
        (["--tracking-uri", "foo://bar"], "tracking.uri: 'foo://bar' has a scheme MLflow has"),
        (  # a traceback after the teacher trained; the password is not shown
            ["--tracking-uri", "postgresql://bob:pw99@127.0.0.1:1/db"],
            "tracking.uri: postgresql://127.0.0.1:1/db needs the postgresql driver",
        ),
        (
            ["--trials", "2", "--set", "search.trials=3"],
            "search.trials: given by --trials and by --set search.trials=3; give one",
        ),
        (
            ["--experiment", "a", "--set", "tracking.experiment=b"],
            "tracking.experiment: given by --experiment and by --set tracking.experiment=b",
        ),
        (["--tracking-uri", "./mlruns"], "tracking.uri: './mlruns' is a path, not a URI"),
        # a search into an in-memory store lost every run, exit 0; the others, tracebacks
        (["--tracking-uri", "sqlite://"], "tracking.uri: 'sqlite://' is an in-memory database"),
        (["--tracking-uri", "sqlite:///:memory:"], "'sqlite:///:memory:' is an in-memory data"),
        (["--experiment", ""], "tracking.experiment: empty; give the experiment's name, or"),
        (["--set", "tracking.experiment=' '"], "tracking.experiment: empty; give the experiment"),
        # empty: the working folder and the default store before, unsaid
        (["--set", "storage=' '"], "storage: empty; give a folder, or leave it out for"),
        (["--set", "tracking.uri=' '"], "tracking.uri: empty; give a tracking URI, or leave"),
        (["--seed", "-1"], "search.seed: Input should be greater than or equal to 0"),
        (
            ["--set", "teacher.arch={family: cnn, n_stages: [1, 2]}"],
            "teacher.arch: n_stages must be an int, got [1, 2]",
        ),
        (  # YAML's key 'family:custom' (no space): "family must be one of ...; got None"
            ["--set", "teacher={arch:{family:custom,builder:'m:f'}}"],
            "teacher.arch.family: missing; give one of cnn, custom, lenet300100, lenet5, mlp, "
            "nb201, timm, torchvision (a key 'family:custom': YAML needs a space after the colon",
        ),
        (  # a traceback (FloatingPointError) after the banner
            [
                "--set",
                "space.distill.enabled=[true]",
                "--set",
                "teacher.epochs=1",
                "--set",
                "teacher.lr=1e12",
                "--set",
                "teacher.optimizer=sgd",
            ],
            "teacher: training diverged: loss is nan in epoch 1 of 1 (teacher.lr 1e+12",
        ),
        (  # found as the teacher trains: it named no field
            ["--set", "teacher.arch.n_stages=6", "--set", "space.distill.enabled=[true]"],
            "teacher.arch: cnn: input height shrinks to 1",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, args: list[str], field: str
) -> None:
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's unix sockets
    try:
        result = nascomp(
            "search",
            *args,
            cwd=tmp_path,
            timeout=120,
            env={"MLFLOW_TRACKING_URI": "", "RAY_TMPDIR": ray_tmp},
        )
        # The local Ray starts before the experiment is checked (search/tune/head.py); a
        # failed check kills it, with every process it started, before the command exits,
        # and removes its session folder (logs and sockets: 120 KB a refusal).
        assert live_processes_with("RAY_TMPDIR", ray_tmp) == []
        assert list(Path(ray_tmp).glob("ray/session_2*")) == []
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nascomp: error: ")
    assert field in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    # No MLflow store or run created, no result folder.
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("uri", "said"),
    [
        (
            "sqlite:///file::memory:?cache=shared",
            "tracking.uri: 'sqlite:///file::memory:?cache=shared' is an in-memory database",
        ),
        (
            "sqlite://mlflow.db",
            "tracking.uri: 'sqlite://mlflow.db' is no sqlite store's address: write sqlite:///",
        ),
        ("databricks", "tracking.uri: databricks does not answer as an MLflow tracking store"),
        ("http://[::1", "tracking.uri: 'http://[::1' is not a valid address (Invalid IPv6 URL)"),
    ],
)
def test_tracking_uris_that_would_fail_late_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri: str, said: str
) -> None:
    """The store checks the search and the reading commands run (the two in-memory forms
    above go through the command): each of these was a traceback, or a file named
    'file::memory:' in the working folder; nothing is made here either."""
    from nascomp.search.errors import TrackingError
    from nascomp.search.experiment import TrackingConfig
    from nascomp.search.tracking.store import Tracker

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(TrackingError) as caught:
        Tracker(TrackingConfig(uri=uri).resolved_uri(), "x").check_reachable()
    assert str(caught.value).startswith(said) and "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_an_empty_tracking_uri_or_a_cache_that_is_a_file_is_refused(tmp_path: Path) -> None:
    """--tracking-uri "" (an unset variable) ran the search into ./mlflow.db; NASCOMP_CACHE at
    a file trained the teacher, then failed to save it with a traceback, leaving an empty
    mlflow.db behind."""
    for command in ("search", "pareto", "ui"):
        result = nascomp(command, "--tracking-uri", "", cwd=tmp_path, timeout=60)
        assert result.returncode == 2
        assert "argument --tracking-uri: give a tracking URI; got an empty one" in result.stderr
    (tmp_path / "cache").write_text("")
    result = nascomp(
        "search",
        "--set",
        "space.distill.enabled=[true]",
        cwd=tmp_path,
        timeout=120,
        env={"MLFLOW_TRACKING_URI": "", "NASCOMP_CACHE": str(tmp_path / "cache" / "sub")},
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"nascomp: error: NASCOMP_CACHE: {tmp_path / 'cache'} is a file; give a folder for "
        "nascomp's cache (unset, it is ~/.cache/nascomp)\n"
    )
    assert result.stdout == ""
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]


def test_a_tracking_uri_that_is_a_file_or_a_folder_says_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nascomp.search.errors import TrackingError
    from nascomp.search.tracking.store import Tracker

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlflow.db").write_bytes(b"")
    (tmp_path / "mlruns").mkdir()
    with pytest.raises(TrackingError, match=r"'mlflow.db' is a file, not a URI \(a sqlite file"):
        Tracker("mlflow.db", "x").check_reachable()
    with pytest.raises(TrackingError, match=r"'mlruns' is a folder: MLflow's file store"):
        Tracker("mlruns", "x").check_reachable()
    # Given by the environment, not the experiment: the error names the variable.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "mlruns")
    with pytest.raises(TrackingError, match=r"^MLFLOW_TRACKING_URI: 'mlruns' is a folder"):
        Tracker("mlruns", "x").check_reachable()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlruns")  # relative: made absolute
    with pytest.raises(TrackingError, match=r"^MLFLOW_TRACKING_URI: .*mlruns is a folder"):
        Tracker(f"sqlite:///{tmp_path / 'mlruns'}", "x").check_writable()
    with pytest.raises(TrackingError, match=r"^tracking.uri: 'mlflow.db' is a file"):
        Tracker("mlflow.db", "x").check_reachable()  # another URI than the variable's


def test_a_sqlite_store_this_user_cannot_write_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    """A search's store is checked with its other paths: MLflow's traceback came after the
    teacher had trained. Reading a store needs no write access, so pareto does not ask."""
    for uri, said in (
        ("sqlite:////proc/nope/m.db", "tracking.uri: this user cannot write in /proc"),
        (f"sqlite:///{tmp_path}", f"tracking.uri: {tmp_path} is a folder; give the store's"),
    ):
        result = nascomp("search", "--tracking-uri", uri, cwd=tmp_path, timeout=120)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"nascomp: error: {said}"), lines
        assert result.stdout == ""  # no banner for a search that never starts
    assert list(tmp_path.iterdir()) == []


def test_unreachable_tracking_server_fails_before_any_trial(tmp_path: Path) -> None:
    result = nascomp("search", "--tracking-uri", "http://127.0.0.1:9", cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "tracking server http://127.0.0.1:9 is unreachable" in result.stderr
    assert "teacher" not in result.stdout  # failed before the teacher or any trial
    assert list(tmp_path.iterdir()) == []


def test_pareto_without_a_store_creates_none(tmp_path: Path) -> None:
    result = nascomp(
        "pareto", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", cwd=tmp_path, timeout=120
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"nascomp: error: no MLflow store at {tmp_path / 'm.db'} (run `nascomp search` first)"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_sqlite_file_that_is_no_mlflow_store_is_refused_and_left_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's own database, a file that is no database and an empty one, given where the
    store goes: MLflow wrote its 60 tables into the first and the third, and failed with a
    traceback on the second. Searches refuse the first two before anything runs; the reading
    commands refuse all three. Every file is left byte for byte as it was."""
    import sqlite3

    from nascomp.search.cli import main

    theirs = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(theirs)) as db:
        db.execute("CREATE TABLE users (name TEXT)")
        db.execute("CREATE TABLE orders (id INTEGER)")
        db.commit()
    notes = tmp_path / "notes.db"
    notes.write_text("hello\n")
    empty = tmp_path / "empty.db"
    empty.touch()
    before = {path: path.read_bytes() for path in (theirs, notes, empty)}
    monkeypatch.chdir(tmp_path)  # where a search would write its results
    refusals = {
        theirs: f"tracking.uri: {theirs} is a SQLite database of other tables (orders, users), "
        "not an MLflow store; give an MLflow store's file, or a new path for one",
        notes: f"tracking.uri: {notes} is not a SQLite database (file is not a database); "
        "give an MLflow store's file, or a new path for one",
        empty: f"no MLflow store at {empty} (an empty database) (run `nascomp search` first)",
    }
    for path, message in refusals.items():
        for command in (["pareto"], ["export", "--rank", "1", "--to", str(tmp_path / "out")]):
            assert main([*command, "--tracking-uri", f"sqlite:///{path}"]) == 2
            assert capsys.readouterr().err.strip() == f"nascomp: error: {message}"
    for path in (theirs, notes):
        code = main(["search", "--tracking-uri", f"sqlite:///{path}", "--trials", "1"])
        assert code == 2
        assert capsys.readouterr().err.strip() == f"nascomp: error: {refusals[path]}"
    assert {path: path.read_bytes() for path in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db", "empty.db", "notes.db"]


def test_pareto_without_a_search(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    client.search_experiments()  # an empty store
    # In this process: the console script's own start is tested above.
    result = nascomp_here(capsys, "pareto", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
    assert result.returncode == 2
    hint = "(--experiment NAME: the experiment file's tracking.experiment)"
    assert (
        result.stderr.strip()
        == f"nascomp: error: no experiment named 'nascomp' in sqlite:///{tmp_path / 'm.db'} {hint}"
    )
    # an experiment file named its own: the error says which there are
    client.create_experiment("tab")
    result = nascomp_here(capsys, "pareto", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
    assert result.returncode == 2
    assert f"{tmp_path / 'm.db'}; experiments there: tab {hint}" in result.stderr


def test_pareto_says_a_search_is_unfinished_and_which_of_several_it_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On stderr, so --json stays parseable: a front read while its search runs (or after
    its driver was killed) is of the trials ended so far, and the latest of several searches
    is named."""
    from nascomp.search.tracking.store import Tracker

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracker = Tracker(uri, "nascomp")
    tracker.experiment_id(create=True)

    def search(name: str) -> str:
        return tracker.start_search(
            run_name=name,
            experiment_yaml="{}",
            space=[],
            objectives={"val_accuracy": "max"},
            git_commit=None,
        )

    first = search("search-1")
    tracker.client.set_terminated(first, "FINISHED")
    result = nascomp_here(capsys, "pareto", "--json", "--tracking-uri", uri)
    assert result.returncode == 0 and result.stderr == ""
    second = search("search-2")  # still RUNNING
    # A trial an interrupt stopped (its run KILLED, tagged interrupted) has not ended.
    stopped = tracker.client.create_run(
        tracker.experiment_id(),
        tags={
            "mlflow.parentRunId": second,
            "nascomp.trial_id": "0",
            "nascomp.status": "interrupted",
        },
    ).info.run_id
    tracker.client.set_terminated(stopped, "KILLED")
    result = nascomp_here(capsys, "pareto", "--json", "--tracking-uri", uri)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["search_run_id"] == second
    assert result.stderr.splitlines() == [
        f"note: search {second} is RUNNING (a driver runs it, or it was interrupted: "
        "`nascomp search ... --resume` continues it); this front is of its 0 trials ended so far",
        f"note: from search {second} (search-2), the latest of experiment 'nascomp'; "
        "--search-run ID reads another",
    ]
    named = nascomp_here(capsys, "pareto", "--search-run", first, "--tracking-uri", uri)
    assert named.returncode == 0 and named.stderr == ""
    # the start of its id, as reproduce takes a run's ("not in the tracking store" before)
    short = nascomp_here(
        capsys, "pareto", "--json", "--search-run", first[:8], "--tracking-uri", uri
    )
    assert short.returncode == 0, short.stderr
    assert json.loads(short.stdout)["search_run_id"] == first
    # A trial's id, or the start of its run's: the run it names, and its search ("not in the
    # tracking store" before, though it was there).
    experiment_id = tracker.experiment_id()
    trial = tracker.client.create_run(
        experiment_id, tags={"mlflow.parentRunId": first, "nascomp.trial_id": "5eed1234"}
    ).info.run_id
    for given in ("5eed1234", trial[:10]):
        wrong = nascomp_here(capsys, "pareto", "--search-run", given, "--tracking-uri", uri)
        assert wrong.returncode == 2
        assert wrong.stderr.strip() == (
            f"nascomp: error: run {given!r} is run {trial}, a trial of search {first}, not a "
            "search's run: give the search's id (`nascomp pareto` prints the latest search's)"
        )


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = nascomp("--help", cwd=tmp_path, timeout=120)
    assert result.returncode == 0
    for command in ("search", "pareto", "reproduce", "export", "ui"):
        assert command in result.stdout


def test_no_ray_cluster_at_the_address(tmp_path: Path) -> None:
    result = nascomp("search", "--address", "127.0.0.1:9", cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        "nascomp: error: --address 127.0.0.1:9: no Ray cluster answers there ("
    )
    assert list(tmp_path.iterdir()) == []  # no MLflow store, no teacher, no results
    # An address from the environment says so (a user who gave no --address wondered whose)
    from nascomp.search.driver import check_ray_address
    from nascomp.search.errors import SearchError

    with pytest.raises(SearchError, match=r"^RAY_ADDRESS 127\.0\.0\.1:9: no Ray cluster answers"):
        check_ray_address("127.0.0.1:9", named="RAY_ADDRESS")


def test_an_address_where_no_gcs_answers_is_refused_in_seconds(tmp_path: Path) -> None:
    """A port where an HTTP server listens (an MLflow server's, given by mistake): ray.init
    waited forever, deaf to Ctrl-C. Other forms got Ray's error, naming RAY_ADDRESS."""
    import http.server
    import threading

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"127.0.0.1:{server.server_port}"
        result = nascomp("search", "--address", address, cwd=tmp_path, timeout=120)
    finally:
        server.shutdown()
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"nascomp: error: --address {address}: a server answers there, but not a Ray "
        "cluster's GCS (no gRPC reply); give the GCS address, port 6379 by default (not the "
        "dashboard's or an HTTP server's port)"
    )
    for given, said in (
        ("http://127.0.0.1:8265", "expected HOST:PORT"),
        ("ray://127.0.0.1:10001", "Ray Client (ray://) is not supported"),
    ):
        result = nascomp("search", "--address", given, cwd=tmp_path, timeout=120)
        assert result.returncode == 2
        assert result.stderr.startswith(f"nascomp: error: --address '{given}': {said}")
    result = nascomp("search", cwd=tmp_path, timeout=120, env={"RAY_ADDRESS": "http://h:1"})
    assert result.stderr.startswith("nascomp: error: RAY_ADDRESS 'http://h:1': expected")
    assert list(tmp_path.iterdir()) == []  # no MLflow store, no teacher, no results


@pytest.mark.parametrize(
    ("kind", "body", "said"),
    [
        (
            "text/html",
            b"<html><body>OK</body></html>",
            "does not answer as an MLflow tracking store (MlflowException: API request to "
            "endpoint was successful but the response body",
        ),
        # MLflow's client reads {} as a search that found no experiment: it passed.
        (
            "application/json",
            b"{}",
            "is no MLflow tracking server: its /version answered '{}', not an MLflow version",
        ),
    ],
)
def test_a_web_server_that_is_not_mlflow_is_refused_in_one_line(
    tmp_path: Path, kind: str, body: bytes, said: str
) -> None:
    """A server answering 200 to every request (its /health too) passed the checks, and the
    search and the reading commands ended in MLflow's traceback (a helper's sweep)."""
    import http.server
    import threading

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_port}"
    try:
        results = [
            nascomp(*command, "--tracking-uri", uri, cwd=tmp_path, timeout=120)
            for command in (["search"], ["pareto"])
        ]
    finally:
        server.shutdown()
    for result in results:
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.startswith(f"nascomp: error: tracking.uri: {uri} {said}"), (
            result.stderr[-2000:]
        )
        assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_trial_bigger_than_this_machine_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    """Ray would wait forever for a trial's resources, after training the teacher."""
    cpus = len(os.sched_getaffinity(0))
    result = nascomp(
        "search", "--set", f"resources.cpus_per_trial={cpus + 1}", cwd=tmp_path, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"nascomp: error: resources.cpus_per_trial: each trial asks for {cpus + 1} CPUs, but "
        f"this machine has {cpus}; at most {cpus} here (or --address to run on a Ray cluster)"
    )
    assert list(tmp_path.iterdir()) == []  # no MLflow store, no teacher, no results
    if not torch.cuda.is_available():
        result = nascomp(
            "search", "--set", "resources.gpus_per_trial=0.5", cwd=tmp_path, timeout=120
        )
        assert result.returncode == 2
        assert (
            "resources.gpus_per_trial: each trial asks for 0.5 GPUs, but this machine has 0 "
            in (result.stderr)
        )
        assert list(tmp_path.iterdir()) == []


def test_replay_of_a_folder_that_is_not_a_search_exits_2(tmp_path: Path) -> None:
    result = nascomp("replay", str(tmp_path), cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"nascomp: error: {tmp_path}: no nascomp/manifest.json (not a nascomp search folder)"
    )
    assert list(tmp_path.iterdir()) == []


def test_reproduce_fp16_without_export_exits_2_before_touching_the_store(tmp_path: Path) -> None:
    result = nascomp(
        "reproduce",
        "0123456789abcdef0123456789abcdef",
        "--fp16",
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "nascomp: error: --fp16 writes model.fp16.onnx into the --export folder: give --export DIR"
    ], result.stderr
    assert not (tmp_path / "mlflow.db").exists()


def _an_empty_store(path: Path) -> None:
    """An MLflow sqlite store with its tables and no runs (an empty file is none: the reading
    commands refuse it)."""
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()


def test_results_and_exports_that_cannot_be_written_are_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    """A file where a folder is needed: one line naming the option, before the teacher, a
    trial or a run (nothing in the store, no result folder)."""
    (tmp_path / "afile").write_text("")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    search = nascomp(
        "search", "--set", "storage=afile/results", "--tracking-uri", store, cwd=tmp_path
    )
    assert search.returncode == 2, search.stderr
    assert search.stderr.strip().splitlines() == [
        f"nascomp: error: storage: {tmp_path / 'afile'} is a file; give a folder (got "
        "'afile/results')"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    # Reading commands: a run the store does not have, a plot into a folder.
    _an_empty_store(tmp_path / "mlflow.db")
    pareto = nascomp("pareto", "--search-run", "nonexistent", "--tracking-uri", store, cwd=tmp_path)
    assert pareto.returncode == 2, pareto.stderr
    assert pareto.stderr.startswith("nascomp: error: run 'nonexistent' is not in the tracking")
    assert "Traceback" not in pareto.stderr
    export = nascomp(
        "reproduce", "0" * 32, "--export", "afile", "--tracking-uri", store, cwd=tmp_path
    )
    assert export.returncode == 2, export.stderr
    assert export.stderr.strip() == (
        f"nascomp: error: --export: {tmp_path / 'afile'} is a file; give a folder (got 'afile')"
    )
    # A folder where the export's model.onnx goes: refused before the trial trains again.
    (tmp_path / "out" / "model.onnx").mkdir(parents=True)
    blocked = nascomp(
        "reproduce", "0" * 32, "--export", "out", "--tracking-uri", store, cwd=tmp_path
    )
    assert blocked.returncode == 2, blocked.stderr
    assert blocked.stderr.strip() == (
        "nascomp: error: --export: out/model.onnx is in the way of the export's model.onnx and "
        "is not a file; move it or give another folder"
    )
    # An unset variable in `--export "$OUT"`: not the working folder.
    empty = nascomp("reproduce", "0" * 32, "--export", "", "--tracking-uri", store, cwd=tmp_path)
    assert empty.returncode == 2
    # one line, as every bad input: argparse's usage block (six lines) came above it
    assert empty.stderr == (
        "nascomp reproduce: error: argument --export: give a folder; got an empty path (see "
        "nascomp reproduce --help)\n"
    )


def test_export_refuses_a_folder_it_cannot_fill_before_reading_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`nascomp export`'s --to: a file, or a folder whose model.onnx is not a file, is one line
    before the store is opened (none is made); without --to, a usage error."""
    from nascomp.search.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    (tmp_path / "out" / "model.onnx").mkdir(parents=True)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for folder, error in (
        ("afile", f"--to: {tmp_path / 'afile'} is a file; give a folder (got 'afile')"),
        (
            "out",
            "--to: out/model.onnx is in the way of the export's model.onnx and is not a file; "
            "move it or give another folder",
        ),
    ):
        assert main(["export", "0" * 32, "--to", folder, "--tracking-uri", store]) == 2
        assert capsys.readouterr().err.strip() == f"nascomp: error: {error}"
    assert not (tmp_path / "mlflow.db").exists()
    with pytest.raises(SystemExit) as caught:
        main(["export", "0" * 32, "--tracking-uri", store])
    assert caught.value.code == 2
    assert "the following arguments are required: --to" in capsys.readouterr().err


def test_a_folder_no_folder_can_be_made_in_is_refused_even_for_root(tmp_path: Path) -> None:
    """/proc: os.access says root may write there, but no folder can be made in it."""
    from nascomp.search.errors import ConfigError
    from nascomp.search.paths import check_writable_folder

    with pytest.raises(ConfigError, match=r"^--export: this user cannot write in /proc "):
        check_writable_folder("/proc/nascomp-export", "--export")
    check_writable_folder(tmp_path / "new" / "export", "--export")  # can be made: no error
    assert list(tmp_path.iterdir()) == []  # the check left nothing behind


def test_a_folder_given_with_a_tilde_is_the_users_home_not_a_folder_named_tilde(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--to '~/models'` (quoted, or from a script): the checks read ~ as the home and the files
    went to a folder named '~' in the working one."""
    from nascomp.search.cli import _parser

    monkeypatch.setenv("HOME", str(tmp_path))
    args = _parser().parse_args(["export", "0" * 32, "--to", "~/models"])
    assert args.to == tmp_path / "models"
    args = _parser().parse_args(["reproduce", "--rank", "1", "--export", "~/m"])
    assert args.export == tmp_path / "m"


def test_ui_on_a_port_in_use_is_refused_before_any_server_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another MLflow UI there would answer the health check and be taken for this one (a
    different store's URL, exit 0)."""
    import socket

    from nascomp.search.cli import main

    store = tmp_path / "m.db"
    _an_empty_store(store)
    before = store.read_bytes()
    capsys.readouterr()  # MLflow's lines as it made the store
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["ui", "--port", str(port), "--tracking-uri", f"sqlite:///{store}"])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"nascomp: error: --port {port}: 127.0.0.1:{port} is in use; give another port"
    )
    assert list(tmp_path.iterdir()) == [store] and store.read_bytes() == before  # as it was


@pytest.mark.parametrize(
    ("option", "said"),
    [
        # ended in "Port could not be cast to integer value" after the server had started
        (["--host", "127.0.0.1:80"], "--host: an address without a port (give the port with"),
        (["--host", " "], "--host: give an address to listen on (127.0.0.1: this machine"),
        # taken for nascomp, which hid the store's only searched experiment
        (["--experiment", ""], "--experiment: give the experiment's name; got an empty one"),
    ],
)
def test_ui_options_that_name_no_address_or_experiment_are_usage_errors(
    option: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from nascomp.search.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(["ui", *option])
    assert stopped.value.code == 2
    assert said in capsys.readouterr().err


def test_ui_host_problems_name_the_host_and_ipv6_hosts_are_bracketed(tmp_path: Path) -> None:
    """An address of another machine was told its port was in use; a name that does not
    resolve failed in the server's log 18 s later; an IPv6 address made no URL."""
    import socket

    from nascomp.search.cli import _bind_problem, _host, _url_host

    assert _bind_problem("203.0.113.9", 5000) == (
        "--host 203.0.113.9: not an address of this machine (127.0.0.1: this machine only; "
        "0.0.0.0: all of its addresses)"
    )
    assert (_bind_problem("nosuchhost.invalid", 5000) or "").startswith(
        "--host nosuchhost.invalid: no address of that name here ("
    )
    assert _host("[::1]") == _host("::1") == "::1" and _url_host("::1") == "[::1]"
    assert _url_host("127.0.0.1") == "127.0.0.1"
    try:
        taken = socket.socket(socket.AF_INET6)
        taken.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with taken:
        taken.listen()
        port = taken.getsockname()[1]
        assert (
            _bind_problem("::1", port)
            == f"--port {port}: [::1]:{port} is in use; give another port"
        )
    assert _bind_problem("::1", port) is None


def test_ui_serves_without_mlflows_job_runners_unless_the_user_asks_for_them() -> None:
    """MLflow 3's GenAI jobs run in six huey consumers that each import MLflow (a UI start
    2 to 3 times slower on 2 cores, bench/ui_start.py); the runs pages need none of them. A
    user who set the variable keeps their value, and the rest of the environment is passed."""
    from nascomp.search.cli import ui_server_env

    env = ui_server_env({"PATH": "/bin", "MLFLOW_TRACKING_TOKEN": "t"})
    assert env == {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "PATH": "/bin",
        "MLFLOW_TRACKING_TOKEN": "t",
        "PYTHONUNBUFFERED": "1",
    }
    for theirs in ("true", "false", "1"):
        env = ui_server_env({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": theirs})
        assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == theirs


def test_ui_of_a_store_that_is_not_there_is_refused_and_makes_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As pareto and reproduce do: a mistyped path must not become an empty store served."""
    from nascomp.search.cli import main

    assert main(["ui", "--tracking-uri", f"sqlite:///{tmp_path}/typo.db"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"nascomp: error: no MLflow store at {tmp_path}/typo.db (run `nascomp search` first)"
    )
    assert list(tmp_path.iterdir()) == []


def test_ui_of_a_file_store_is_the_one_line_search_gives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder or file:// store: the server started on it, 26 lines of MLflow's traceback,
    then "port taken?" of a free port (a helper's sweep)."""
    from nascomp.search.cli import main

    for uri in (str(tmp_path), tmp_path.as_uri()):
        assert main(["ui", "--tracking-uri", uri]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines == [
            f"nascomp: error: tracking.uri: {uri!r} is a folder: MLflow's file store is closed "
            "to new features (MLflow 3 refuses it); give sqlite:///PATH/mlflow.db, a database "
            "URL (postgresql://...) or an MLflow server's http(s):// address"
        ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "argument"),
    [
        (["reproduce", ""], "run_id"),  # MLflow's traceback before
        (["export", "", "--to", "out"], "run_id"),
        (["reproduce", "--search-run", "", "--rank", "1"], "--search-run"),
        (["pareto", "--search-run", " "], "--search-run"),  # the latest search, unsaid
    ],
)
def test_an_empty_run_id_is_a_usage_error(
    args: list[str], argument: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from nascomp.search.cli import main

    with pytest.raises(SystemExit) as caught:
        main(args)
    error = capsys.readouterr().err
    assert caught.value.code == 2 and f"argument {argument}: give a run id" in error


@pytest.mark.parametrize("command", ["pareto", "reproduce"])
def test_an_empty_pick_rule_is_a_usage_error(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from nascomp.search.cli import main

    with pytest.raises(SystemExit) as caught:
        main([command, "--pick", " "])
    assert caught.value.code == 2 and "argument --pick: give a rule" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["reproduce", "export"])
@pytest.mark.parametrize("name", ["", "team/model", "a:b", ".", "..", "a/../b"])
def test_a_registry_name_mlflow_refuses_is_a_usage_error_at_once(
    command: str, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """'.' and '..' passed, and MLflow refused them after the file was exported and logged
    (or the trial trained again): two tracebacks, exit 1 (a helper's sweep)."""
    from nascomp.search.cli import main

    with pytest.raises(SystemExit) as caught:
        main([command, "abc", "--register", name])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert f"nascomp {command}: error: argument --register: " in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["my model", "résumé #1", "v1.0", "a..b"])
def test_registry_names_mlflow_takes_pass(name: str) -> None:
    from nascomp.search.cli import _model_name

    assert _model_name(name) == name


def test_port_out_of_range_is_a_usage_error_at_once() -> None:
    from nascomp.search.cli import main

    with pytest.raises(SystemExit) as caught:
        main(["ui", "--port", "99999"])
    assert caught.value.code == 2


def test_the_first_line_says_how_many_trials_run_at_once_here() -> None:
    import os

    from nascomp.search.cli import _at_once
    from nascomp.search.experiment import load_experiment

    cpus = len(os.sched_getaffinity(0))
    two = load_experiment(None, ["search.concurrent=2", f"resources.cpus_per_trial={cpus}"])
    assert _at_once(two, local=True) == f"1 at once (2 asked; {cpus} CPUs hold 1)"
    assert _at_once(two, local=False) == "2 at once"  # a cluster: its nodes decide
    one_cpu = load_experiment(None, ["search.concurrent=2", "resources.cpus_per_trial=1"])
    assert _at_once(one_cpu, local=True) == (
        "2 at once" if cpus >= 2 else "1 at once (2 asked; 1 CPU hold 1)"
    )
    # fewer trials than asked at once: "1 trial, 2 at once" read as a contradiction
    single = load_experiment(None, ["search.trials=1", "resources.cpus_per_trial=1"])
    assert _at_once(single, local=True) == "one at a time"
    assert _at_once(load_experiment(None, ["search.trials=3", "search.concurrent=4"]), False) == (
        "all at once"
    )


def test_an_export_whose_onnx_file_often_disagrees_says_so() -> None:
    from nascomp.search.cli import onnx_note

    exported = {"onnx": "out/model.onnx"}
    assert onnx_note(exported, {"onnx_agreement": 0.95}) is None
    assert onnx_note({}, {"onnx_agreement": 0.0}) is None  # no file written: nothing to say
    assert onnx_note(exported, {}) is None  # a run logged before the metric
    assert onnx_note(exported, {"onnx_agreement": 0.0}) == (
        "note: model.onnx agrees with the evaluated model on 0.0% of the validation inputs "
        "(onnx_agreement), so its accuracy is not the logged one (its own is above): measure "
        "it on your data before shipping it"
    )


def test_a_pick_shows_the_metrics_its_rule_names() -> None:
    from nascomp.search.cli import _picked_on

    objectives = {"val_accuracy": "max", "size_bytes": "min"}
    assert _picked_on("knee", objectives) == ["val_accuracy", "size_bytes"]
    assert _picked_on("knee where params > 3", objectives) == [
        "val_accuracy",
        "size_bytes",
        "params",
    ]
    assert _picked_on("min latency_batch_ms where test_accuracy > 0.5", objectives) == [
        "val_accuracy",
        "size_bytes",
        "latency_batch_ms",
        "test_accuracy",
    ]


class _Store:
    """The reading side of a tracker, over records given here (the rule's known answers)."""

    def __init__(self, trials: list) -> None:
        self._trials = trials

    def latest_search(self) -> str:
        return "s"

    def trials(self, search_run: str) -> list:
        return self._trials

    def objectives(self, search_run: str) -> dict[str, str]:
        return {"val_accuracy": "max", "size_bytes": "min"}

    def constraints(self, search_run: str) -> list[str]:
        return []


def test_a_knee_of_two_models_says_it_is_a_tie_break(capsys: pytest.CaptureFixture[str]) -> None:
    from nascomp.search.cli import _pick
    from nascomp.search.tracking.store import TrialRecord

    def record(run_id: str, accuracy: float, size: float) -> TrialRecord:
        return TrialRecord(run_id, run_id, "ok", {}, {"val_accuracy": accuracy, "size_bytes": size})

    two = [record("small", 0.49, 6_000), record("good", 0.99, 42_000)]
    assert _pick(_Store(two), "knee").run_id in ("small", "good")
    assert "note: the front holds 2 models, so the knee is a tie-break" in capsys.readouterr().err
    three = [*two, record("middle", 0.95, 9_000)]
    assert _pick(_Store(three), "knee").run_id == "middle"
    assert _pick(_Store(two), "max val_accuracy").run_id == "good"
    assert capsys.readouterr().err == ""
    assert _pick(_Store(two), "KNEE").run_id in ("small", "good")  # any case
    assert "note: the front holds 2 models" in capsys.readouterr().err
    # conditions that leave 2 of the 3 members: the same tie-break, said so
    assert _pick(_Store(three), "knee where val_accuracy > 0.9").run_id in ("middle", "good")
    assert "note: the rule leaves 2 models, so the knee is a tie-break" in capsys.readouterr().err


def test_the_readmes_error_examples_are_what_nascomp_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each `$ nascomp ...` line of the README's error block and the line under it: the
    command's stderr, exactly (a new search field had left its allowed list out of date)."""
    import shlex

    from nascomp.search.cli import main

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text().splitlines()
    examples = [
        (line[2:], readme[i + 1]) for i, line in enumerate(readme) if line.startswith("$ nascomp ")
    ]
    assert len(examples) >= 2
    for command, printed in examples:
        capsys.readouterr()
        assert main(shlex.split(command)[1:]) == 2, command
        assert capsys.readouterr().err.strip() == printed, command


def test_a_process_group_of_zombies_alone_is_over() -> None:
    """`nascomp ui`'s stop waited until no signal reached the server's group: where no init
    reaps its helpers, their zombies kept it waiting 5 s more on every Ctrl-C."""
    import subprocess
    import time

    from nascomp.search.cli import _group_lives

    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert _group_lives(sleeper.pid)
        sleeper.kill()
        time.sleep(0.5)  # a zombie until waited on
        assert not _group_lives(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_an_ipv6_address_in_brackets_is_dialled_as_ipv6() -> None:
    """[::1]:PORT was looked up as a host name "[::1]": "Name or service not known"."""
    import socket

    from nascomp.search.driver import check_ray_address
    from nascomp.search.errors import SearchError

    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    with pytest.raises(SearchError) as caught:
        check_ray_address("[::1]:1")
    assert "Name or service not known" not in str(caught.value)
    assert str(caught.value).startswith("--address [::1]:1: no Ray cluster answers there (")
    with pytest.raises(SearchError) as caught:  # Ray refused it, after the teacher
        check_ray_address("::1:6379")
    assert (
        str(caught.value) == "--address '::1:6379': write an IPv6 address in brackets, [::1]:6379"
    )


def test_a_list_of_addresses_is_one_address_too_many() -> None:
    """It was told to write an IPv6 address in brackets, '[127.0.0.1:6379,127.0.0.1]:1'."""
    from nascomp.search.driver import check_ray_address
    from nascomp.search.errors import SearchError

    with pytest.raises(SearchError) as caught:
        check_ray_address("127.0.0.1:6379,127.0.0.1:1")
    assert str(caught.value) == (
        "--address '127.0.0.1:6379,127.0.0.1:1': one HOST:PORT (the cluster's GCS, port 6379 "
        "by default), not a list"
    )


def test_a_server_that_speaks_http2_but_never_answers_is_refused() -> None:
    """It passed the checks (a SETTINGS frame, then silence: a wedged GCS, an HTTP/2 proxy),
    and ray.init then waited without end. Ray's GCS client gives up after its 30 s."""
    import socket
    import threading

    from nascomp.search.driver import check_ray_address
    from nascomp.search.errors import SearchError

    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed at the test's end
                return
            conn.sendall(bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))  # an empty SETTINGS frame
            held.append(conn)  # read nothing, answer nothing, close nothing

    threading.Thread(target=serve, daemon=True).start()
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    try:
        with pytest.raises(SearchError) as caught:
            check_ray_address(address)
    finally:
        listener.close()
        for conn in held:
            conn.close()
    assert str(caught.value) == (
        f"--address {address}: a server answers there but gave no Ray GCS reply in time (a "
        "wedged GCS, or another HTTP/2 service's port?); check the cluster with `ray status "
        f"--address {address}`"
    )


# What MLflow's telemetry takes for a CI machine or a test run, where it stays off by itself.
_CI_MARKERS = ("PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CI", "CIRCLECI", "GITLAB_CI", "TRAVIS")


def test_no_usage_telemetry_files_in_the_users_home(tmp_path: Path) -> None:
    """MLflow 3 kept an installation id in ~/.config/mlflow for its telemetry, and ONNX Runtime
    (1.29 on) a device id and an event queue in ~/.cache/Microsoft, in a home the docs said
    nascomp leaves alone (a helper's sweep with an empty home); both sent usage reports."""
    home = tmp_path / "home"
    home.mkdir()
    store = tmp_path / "m.db"
    _an_empty_store(store)
    env = {k: v for k, v in os.environ.items() if k not in _CI_MARKERS}
    env |= {"HOME": str(home), "TMPDIR": str(tmp_path)}
    for name in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "ORT_DISABLE_TELEMETRY"):
        env.pop(name, None)
    exe = Path(sys.executable).with_name("nascomp")
    read = subprocess.run(
        [str(exe), "pareto", "--tracking-uri", f"sqlite:///{store}"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert "no experiment named 'nascomp'" in read.stderr, read.stderr  # MLflow read the store
    # A trial's ONNX Runtime session, in a process as a cluster's worker starts it (no CLI).
    trial = (
        "import io, torch\n"
        "from nascomp.compressors.onnx_export import session\n"
        "buffer = io.BytesIO()\n"
        "torch.onnx.export(torch.nn.Linear(4, 2), torch.zeros(1, 4), buffer, dynamo=False)\n"
        "print(session(buffer.getvalue()).get_inputs()[0].shape)\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", trial], capture_output=True, text=True, env=env, timeout=300
    )
    assert ran.returncode == 0 and "4" in ran.stdout, ran.stderr[-2000:]
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []
    assert not (tmp_path / ".ses").exists()  # ONNX Runtime's session file


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["search", "--bogus"],
            "nascomp search: error: unrecognized arguments: --bogus (see nascomp search --help)",
        ),
        (
            ["export", "abc", "--to", "d", "--frob"],
            "nascomp export: error: unrecognized arguments: --frob (see nascomp export --help)",
        ),
        # argparse said a missing argument (the command, replay's folder, export's --to)
        # before the unknown flag
        (["--bogus"], "nascomp: error: unrecognized arguments: --bogus (see nascomp --help)"),
        (
            ["replay", "--bogus"],
            "nascomp replay: error: unrecognized arguments: --bogus (see nascomp replay --help)",
        ),
        (
            ["export", "--trial=3", "--fp16", "--", "--x"],
            "nascomp export: error: unrecognized arguments: --trial=3 (see nascomp export --help)",
        ),
        # a missing argument is still said when every flag is known (--ran: --rank's prefix)
        (
            ["export", "--ran", "1"],
            "nascomp export: error: the following arguments are required: --to (see nascomp "
            "export --help)",
        ),
        (
            ["reproduce", "x", "--register", ""],
            "nascomp reproduce: error: argument --register: must name the registered model; got "
            "an empty name (see nascomp reproduce --help)",
        ),
        # --address "$HEAD" with HEAD unset: the search ran on a local Ray, unsaid
        (
            ["search", "--address", ""],
            "nascomp search: error: argument --address: expected HOST:PORT (the cluster's GCS, "
            "port 6379 by default) or auto; got an empty address (leave --address out for a "
            "local Ray) (see nascomp search --help)",
        ),
    ],
)
def test_usage_errors_are_one_line_from_the_commands_own_parser(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse printed its usage block above the error, and an unknown flag of a command was
    said by `nascomp` itself, whose --help lists none of the command's flags (a helper's
    sweep)."""
    from nascomp.search.cli import main

    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert capsys.readouterr().err == said + "\n"


@pytest.mark.parametrize("command", ["export", "reproduce"])
def test_a_stopped_trial_is_refused_before_the_commands_header(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``exporting RUN: ...`` was printed before the refusal of a trial mo_asha had stopped,
    as if the work had begun (a helper's sweep): one line, exit 2, nothing written."""
    from nascomp.search.tracking.store import Tracker

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracker = Tracker(uri, "nascomp")
    search = tracker.start_search(
        run_name="s", experiment_yaml="{}", space=[], objectives={}, git_commit=None
    )
    stopped = tracker.client.create_run(
        tracker.experiment_id(),
        tags={
            "mlflow.parentRunId": search,
            "nascomp.trial_id": "0",
            "nascomp.status": "pruned",
        },
    ).info.run_id
    tracker.client.set_terminated(stopped, "FINISHED")
    target = ["--to", str(tmp_path / "out")] if command == "export" else []
    result = nascomp_here(capsys, command, stopped[:8], *target, "--tracking-uri", uri)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        f"nascomp: error: run {stopped} is not a finished trial (status 'pruned'); "
        f"nothing to {command}\n"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("signum", ["SIGKILL", "SIGHUP"])
def test_ui_killed_or_hung_up_leaves_no_server_on_the_port(tmp_path: Path, signum: str) -> None:
    """Its terminal closed (SIGHUP) or killed (SIGKILL): nascomp died without stopping the
    `mlflow server` of its own process group, which went on serving, holding the port (a
    helper's sweep). SIGHUP now stops it as Ctrl-C does; after SIGKILL the guard the server
    runs under stops the group."""
    import signal
    import socket
    import time

    import mlflow

    from tests.search.raycluster import free_port

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.MlflowClient(store).create_experiment("nascomp")
    port = free_port()
    exe = Path(sys.executable).with_name("nascomp")
    ui = subprocess.Popen(
        [str(exe), "ui", "--tracking-uri", store, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # as a terminal's shell starts it
    )
    try:
        assert ui.stdout is not None
        lines = [ui.stdout.readline() for _ in range(2)]
        assert lines[1].startswith(f"MLflow UI: http://127.0.0.1:{port}/"), lines
        ui.send_signal(getattr(signal, signum))
        ui.wait(timeout=60)
        deadline = time.monotonic() + 30
        serving = True
        while serving and time.monotonic() < deadline:
            with socket.socket() as probe:
                serving = probe.connect_ex(("127.0.0.1", port)) == 0
            time.sleep(0.5)
        assert not serving, f"a server still answers on port {port} after {signum}"
    finally:
        if ui.poll() is None:
            ui.kill()
        for proc in Path("/proc").iterdir():  # a server left behind, by its process group
            with contextlib.suppress(OSError, ValueError):
                if f"--port\0{port}\0".encode() in (proc / "cmdline").read_bytes():
                    os.killpg(os.getpgid(int(proc.name)), signal.SIGKILL)


def test_the_ui_knows_whether_its_own_server_holds_the_port() -> None:
    """A second `nascomp ui` on a port, started before the first bound it, took the first's
    health answer for its own server's, which had died on the bound port, and exited 0
    (a helper's sweep): it now checks which process group listens."""
    import socket

    from nascomp.search.cli import _listening_in_group

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        assert _listening_in_group(port, os.getpgid(0)) is None  # bound, not listening yet
        listener.listen()
        assert _listening_in_group(port, os.getpgid(0)) is True
        assert _listening_in_group(port, os.getpgid(0) + 1) is False
