"""The result folder's manifest: where Ray Tune's resume leaves it alone, and older folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nascomp.search.errors import SearchError
from nascomp.search.experiment import load_experiment
from nascomp.search.resume import (
    LEGACY_MANIFEST,
    MANIFEST,
    SearchFolder,
    find_resumable,
    manifest_path,
    record_budget,
    record_tracking_uri,
    set_state,
    write_manifest,
)


def test_manifest_is_out_of_reach_of_tunes_state_sync(tmp_path: Path) -> None:
    """Ray Tune's resume copies every top-level .json / .pkl of the folder to its staging folder
    and uploads them back later (a stale copy, written in place). The manifest is not one."""
    write_manifest(tmp_path, load_experiment(None, []), "run0123456789")
    top_level = [p.name for p in tmp_path.iterdir() if p.is_file()]
    assert not [name for name in top_level if name.endswith((".json", ".pkl"))]
    assert (tmp_path / MANIFEST).is_file() and Path(MANIFEST).parent != Path(".")


def test_an_older_search_folder_is_read_and_moved_on_its_first_write(tmp_path: Path) -> None:
    experiment = load_experiment(None, [f"storage={tmp_path}"])
    folder = tmp_path / "nascomp-run012345678"
    write_manifest(folder, experiment, "run0123456789", state="interrupted")
    old = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).unlink()
    (folder / LEGACY_MANIFEST).write_text(json.dumps(old))  # as searches before wrote it

    assert manifest_path(folder) == folder / LEGACY_MANIFEST
    assert SearchFolder.read(folder).state == "interrupted"
    assert find_resumable(experiment, "latest").path == folder
    record_budget(folder, "wall_s", 60.0, 12.5)
    assert not (folder / LEGACY_MANIFEST).exists()
    assert manifest_path(folder) == folder / MANIFEST
    moved = SearchFolder.read(folder)
    assert (moved.state, moved.budget_spent, moved.search_run_id) == (
        "interrupted",
        12.5,
        "run0123456789",
    )
    set_state(folder, "finished")
    assert SearchFolder.read(folder).state == "finished"


def test_resume_without_a_folder_says_why_none_fits(tmp_path: Path) -> None:
    experiment = load_experiment(None, [f"storage={tmp_path}"])
    with pytest.raises(SearchError, match=r"\(no search has begun there\)"):
        find_resumable(experiment, "latest")
    done = tmp_path / "nascomp-run000000000001"
    write_manifest(done, experiment, "run000000000001", state="finished")
    with pytest.raises(SearchError, match=r"\(its 1 search\(es\) there all finished, a search"):
        find_resumable(experiment, "latest")
    stopped = tmp_path / "nascomp-run000000000002"
    write_manifest(stopped, experiment, "run000000000002", state="interrupted")
    changed = load_experiment(None, [f"storage={tmp_path}", "search.trials=8"])
    with pytest.raises(SearchError) as caught:
        find_resumable(changed, "latest")
    assert (
        "(1 unfinished search(es) differ from this experiment; the newest, "
        "nascomp-run000000000002, at search.trials (20 -> 8))"
    ) in str(caught.value)
    assert find_resumable(experiment, "latest").path == stopped


def test_a_folder_others_can_write_is_not_resumed(tmp_path: Path) -> None:
    """A resume unpickles Ray Tune's state: a searcher-state-*.pkl planted in a folder others
    could write ran their code (and the search then hung)."""
    experiment = load_experiment(None, [f"storage={tmp_path}"])
    stopped = tmp_path / "nascomp-run000000000004"
    write_manifest(stopped, experiment, "run000000000004", state="interrupted")
    planted = stopped / "searcher-state-2026-12-05_09-21-33.pkl"
    planted.write_bytes(b"not really a pickle")
    assert find_resumable(experiment, str(stopped)).path == stopped
    planted.chmod(0o666)
    with pytest.raises(SearchError, match=r"searcher-state-.*\.pkl may be written by every user"):
        find_resumable(experiment, str(stopped))
    planted.chmod(0o644)
    (stopped / "trial_1").mkdir()
    (stopped / "trial_1").chmod(0o777)
    with pytest.raises(SearchError, match=r"trial_1 may be written by every user; resuming"):
        find_resumable(experiment, "latest")


def test_an_interrupted_search_resumes_with_another_budget_of_its_unit(tmp_path: Path) -> None:
    """--resume --set search.budget.wall_s=1200 gives it more time; another unit is another
    experiment."""
    experiment = load_experiment(None, [f"storage={tmp_path}", "search.budget.wall_s=600"])
    stopped = tmp_path / "nascomp-run000000000003"
    write_manifest(stopped, experiment, "run000000000003", state="interrupted")
    more = load_experiment(None, [f"storage={tmp_path}", "search.budget.wall_s=1200"])
    assert find_resumable(more, "latest").path == stopped
    assert find_resumable(more, str(stopped)).path == stopped
    other = load_experiment(None, [f"storage={tmp_path}", "search.budget={cpu_hours: 1}"])
    with pytest.raises(SearchError, match=r"at search.budget.cpu_hours \(None -> 1.0\)"):
        find_resumable(other, str(stopped))


def test_a_search_folder_is_held_by_one_driver_at_a_time(tmp_path: Path) -> None:
    """A second driver resuming a search another runs would restart its trials and log each
    metric twice: it is refused with the holder's pid, until the holder lets go (a driver
    killed with SIGKILL lets go with its process)."""
    import os
    import subprocess
    import sys

    from nascomp.search.resume import hold_folder

    held = hold_folder(tmp_path)
    with pytest.raises(SearchError, match=rf"another driver \(pid {os.getpid()}\) is running"):
        hold_folder(tmp_path)
    held.close()
    hold_folder(tmp_path).close()
    # held by another process, then that process killed: free again
    script = (
        "import sys, time; from pathlib import Path; from nascomp.search.resume import "
        "hold_folder; h = hold_folder(Path(sys.argv[1])); print('held', flush=True); "
        "time.sleep(60)"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "held"
        with pytest.raises(SearchError, match=rf"\(pid {other.pid}\)"):
            hold_folder(tmp_path)
    finally:
        other.kill()
        other.wait()
    hold_folder(tmp_path).close()


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "Expecting value: line 1 column 1 (char 0)"),
        (
            '{"search_run_id": "x"}',
            "tracking_uri, experiment_name, experiment missing or of another type",
        ),
        ("[1, 2]", "no JSON object"),
    ],
)
def test_a_manifest_that_does_not_read_is_named_and_blocks_no_other_search(
    tmp_path: Path, text: str, why: str
) -> None:
    """Cut short (a full disk, a partial copy): one such folder under storage stopped the
    resume of every search there, with a KeyError's or TypeError's traceback."""
    experiment = load_experiment(None, [f"storage={tmp_path}"])
    good = tmp_path / "nascomp-run012345678"
    write_manifest(good, experiment, "run0123456789", state="interrupted")
    broken = tmp_path / "nascomp-000000000000"
    manifest_path(broken).parent.mkdir(parents=True)
    manifest_path(broken).write_text(text)
    assert find_resumable(experiment, "latest").path == good
    with pytest.raises(SearchError) as caught:
        find_resumable(experiment, str(broken))
    assert str(caught.value) == (
        f"{manifest_path(broken)} does not read as a nascomp manifest: {why}"
    )
    set_state(good, "finished")
    with pytest.raises(
        SearchError,
        match=r"1 folder\(s\) with a manifest that does not read, "
        r"skipped: nascomp-000000000000\); resume one",
    ):
        find_resumable(experiment, "latest")


def test_a_resume_into_a_store_without_its_runs_is_refused_before_creating_one(
    tmp_path: Path,
) -> None:
    from nascomp.search.resume import check_store_holds
    from nascomp.search.tracking.store import Tracker

    experiment = load_experiment(None, [f"storage={tmp_path}"])
    folder = tmp_path / "nascomp-run012345678"
    write_manifest(folder, experiment, "run0123456789", state="interrupted")
    other = tmp_path / "other.db"
    uri = f"sqlite:///{other}"
    with pytest.raises(SearchError, match=rf"{uri} holds no run of search run0123456789"):
        check_store_holds(SearchFolder.read(folder), Tracker(uri, "nascomp"), uri)
    assert not other.exists()


def test_a_resume_of_a_search_whose_run_was_deleted_says_how_to_restore_it(
    tmp_path: Path,
) -> None:
    """Deleted in the MLflow UI, its parent run failed the resume with MLflow's traceback
    ("must be in the 'active' state"), exit 1."""
    from nascomp.search.resume import check_store_holds
    from nascomp.search.tracking.store import Tracker

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracker = Tracker(uri, "nascomp")
    run = tracker.client.create_run(tracker.client.create_experiment("nascomp"))
    experiment = load_experiment(None, [f"storage={tmp_path}"])
    folder = tmp_path / "nascomp-deleted"
    write_manifest(folder, experiment, run.info.run_id, state="interrupted")
    check_store_holds(SearchFolder.read(folder), tracker, uri)
    tracker.client.delete_run(run.info.run_id)
    with pytest.raises(SearchError) as caught:
        check_store_holds(SearchFolder.read(folder), tracker, uri)
    assert str(caught.value) == (
        f"--resume {folder}: search {run.info.run_id} is deleted in {uri}; restore it to "
        f"resume (`MLFLOW_TRACKING_URI={uri} mlflow runs restore --run-id {run.info.run_id}`, "
        "or Restore in the MLflow UI's deleted runs), or start a new search"
    )


def test_a_moved_or_copied_result_folder_is_refused_and_storage_is_compared_as_a_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray Tune's saved state names the folder the search made: moved, its new trials failed
    ("Unable to set up cluster storage"); copied, they wrote into the original. And storage
    "r", resumed from another working folder as "work/r", is the same place."""
    import shutil

    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    experiment = load_experiment(None, ["storage=r"])
    folder = tmp_path / "work" / "r" / "nascomp-run012345678"
    write_manifest(folder, experiment, "run0123456789", state="interrupted")
    monkeypatch.chdir(tmp_path)
    elsewhere = load_experiment(None, ["storage=work/r"])
    assert find_resumable(elsewhere, "latest").path == folder
    assert find_resumable(elsewhere, str(folder)).path == folder
    copy = tmp_path / "copy" / folder.name
    shutil.copytree(folder, copy)
    with pytest.raises(SearchError) as caught:
        find_resumable(load_experiment(None, ["storage=copy"]), str(copy))
    assert str(caught.value) == (
        f"--resume {copy}: the search made this folder at {folder}, and Ray Tune's saved state "
        "names that one for the trials to come (a moved folder's new trials failed; a copy's "
        f"wrote into the original): resume the folder at {folder} (move it back there if it "
        "moved)"
    )


def test_an_older_manifests_folder_moved_is_refused_by_its_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manifest written before it named its folder: moved, the folder was resumed, and each
    new trial failed in Ray Tune's storage set-up (a helper's upgrade sweep). Its experiment's
    storage says where the search made it, given absolute or relative."""
    import shutil

    def older(folder: Path, storage: str) -> None:
        write_manifest(folder, load_experiment(None, [f"storage={storage}"]), "run0123456789")
        data = json.loads((folder / MANIFEST).read_text())
        del data["folder"]
        (folder / MANIFEST).write_text(json.dumps(data))

    results = tmp_path / "results"
    made = results / "nascomp-run012345678"
    older(made, str(results))
    assert find_resumable(load_experiment(None, [f"storage={results}"]), str(made)).path == made
    moved = tmp_path / "moved" / made.name
    shutil.move(results, moved.parent)
    with pytest.raises(SearchError, match=f"made this folder at {made}, and Ray Tune"):
        find_resumable(load_experiment(None, [f"storage={results}"]), str(moved))

    monkeypatch.chdir(tmp_path)
    relative = tmp_path / "r" / made.name
    older(relative, "r")
    assert find_resumable(load_experiment(None, ["storage=r"]), str(relative)).path == relative
    shutil.move(relative.parent, tmp_path / "s")
    with pytest.raises(SearchError, match=r"at r/nascomp-run012345678 \(relative to the folder"):
        find_resumable(load_experiment(None, ["storage=r"]), str(tmp_path / "s" / made.name))


def test_a_resume_records_the_store_it_logs_to_for_replay(tmp_path: Path) -> None:
    """Resumed into a store that moved, the manifest kept the first one, where `nascomp
    replay` then wrote a dead driver's buffered writes."""
    experiment = load_experiment(None, [f"storage={tmp_path}", "tracking.uri=sqlite:///a.db"])
    folder = tmp_path / "nascomp-run012345678"
    write_manifest(folder, experiment, "run0123456789", state="interrupted")
    record_tracking_uri(folder, "sqlite:///b.db")
    read = SearchFolder.read(folder)
    assert (read.tracking_uri, read.state) == ("sqlite:///b.db", "interrupted")
    assert read.experiment == experiment.model_dump(mode="json")  # what --resume compares


def test_the_experiments_with_searches_come_latest_search_first(tmp_path: Path) -> None:
    """What ``nascomp ui`` and the reading commands fall back on when no experiment is named
    nascomp: experiments holding a search, the one whose search started last first."""
    import time

    from nascomp.search.tracking.store import ROLE_TAG, Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}", "nascomp")
    client = tracker.client
    for name in ("older", "plain", "newer"):
        experiment_id = client.create_experiment(name)
        tags = {} if name == "plain" else {ROLE_TAG: "search"}
        client.create_run(experiment_id, tags=tags)
        time.sleep(0.01)  # start times in milliseconds
    assert tracker.searched_experiments() == ["newer", "older"]
    assert tracker.default_experiment() is None  # two: the reading commands ask


def test_replay_names_where_the_writes_went_and_records_a_store_that_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing to replay, `replay --tracking-uri X` said every write was in X (a helper
    gave `databricks`); a replay into a store that moved left the manifest naming the old
    one. The new store, given relative, is recorded absolute, as a search records its own."""
    import shutil

    from nascomp.search.replay import replay
    from nascomp.search.tracking.runlog import JOURNAL
    from nascomp.search.tracking.store import Tracker

    monkeypatch.chdir(tmp_path)
    first = f"sqlite:///{tmp_path / 'a.db'}"
    tracker = Tracker(first, "nascomp")
    parent = tracker.client.create_run(tracker.experiment_id(create=True)).info.run_id
    experiment = load_experiment(None, [f"storage={tmp_path}", f"tracking.uri={first}"])
    folder = tmp_path / "nascomp-search"
    write_manifest(folder, experiment, parent, state="unlogged")
    assert replay(folder, "databricks") == (0, first)

    shutil.copy(tmp_path / "a.db", tmp_path / "b.db")  # the store moved
    start = {"op": "start", "trial": "t1", "name": "trial-t1", "params": {"lr": "0.1"}}
    (folder / JOURNAL).write_text(json.dumps(start) + "\n")
    moved = f"sqlite:///{tmp_path / 'b.db'}"
    assert replay(folder, "sqlite:///b.db") == (1, moved)
    read = SearchFolder.read(folder)
    assert (read.tracking_uri, read.state) == (moved, "finished")
    assert replay(folder) == (0, moved)
