"""A trial's config comes back from MLflow value for value and type for type
(search/tracking/params.py), on a real sqlite store, through the same RunLog ops the search
writes; runs logged before the JSON artifact existed still read back from their params."""

from __future__ import annotations

from pathlib import Path

import pytest

from nascomp.search.errors import TrackingError
from nascomp.search.tracking.params import (
    CONFIG_ARTIFACT,
    PARAM_LIMIT,
    config_document,
    config_from_document,
    decode_param,
    display_params,
)
from nascomp.search.tracking.runlog import RunLog
from nascomp.search.tracking.store import Tracker

# Values that str() and a type guess get wrong: strings that look like numbers, literals or
# JSON; ints against floats; a value longer than MLflow's param limit.
TRICKY = {
    "arch.family": "custom",
    "arch.code": "007",
    "arch.scale": "1e-3",
    "arch.flag": "True",
    "arch.none_word": "None",
    "arch.json_word": "[1, 2]",
    "arch.quoted": "it's",
    "arch.width": 1.0,
    "arch.depth": 1,
    "arch.enabled": False,
    "arch.nothing": None,
    "arch.widths": [8, 16.5, "x"],
    "data.root": "/data/" + "d" * (PARAM_LIMIT + 500),
    "prune.ratio": 1e-05,
}


@pytest.fixture
def tracker(tmp_path: Path) -> Tracker:
    return Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "params")


def _logged(tracker: Tracker, config: dict, with_config: bool = True) -> str:
    parent = tracker.client.create_run(tracker.experiment_id(create=True)).info.run_id
    log = RunLog(tracker.client, tracker.experiment_id(), parent)
    op = {"op": "start", "trial": "t1", "name": "trial-t1", "params": display_params(config)}
    if with_config:
        op["config"] = config_document(config)
    assert log.submit(op)
    return log.run_ids["t1"]


def test_the_config_comes_back_exactly(tracker: Tracker) -> None:
    run_id = _logged(tracker, TRICKY)
    record = tracker.trial_record(run_id)
    back = tracker.trial_config(record)
    assert back == TRICKY == tracker.logged_config(record)
    assert {k: type(v) for k, v in back.items()} == {k: type(v) for k, v in TRICKY.items()}
    # The params stay for the UI: strings, cut at MLflow's limit.
    assert record.params["arch.width"] == 1.0 and len(record.tags) > 0
    assert len(tracker.client.get_run(run_id).data.params["data.root"]) == PARAM_LIMIT


def test_the_guess_from_params_is_what_the_artifact_fixes(tracker: Tracker) -> None:
    """Without the artifact (runs of older nascomp) the params are decoded by a guess, which
    loses types and long values: the reason for the artifact."""
    run_id = _logged(tracker, TRICKY, with_config=False)
    record = tracker.trial_record(run_id)
    assert tracker.logged_config(record) is None  # reproduce says the config is rebuilt
    guessed = tracker.trial_config(record)
    assert guessed["arch.width"] == 1.0 and guessed["prune.ratio"] == 1e-05
    assert guessed["arch.nothing"] is None and guessed["arch.enabled"] is False
    assert guessed["arch.code"] == 7  # the string "007" came back a number
    assert guessed["arch.flag"] is True
    assert len(guessed["data.root"]) == PARAM_LIMIT  # cut


def test_decode_param_known_answers() -> None:
    assert decode_param("3") == 3 and isinstance(decode_param("3"), int)
    assert decode_param("0.5") == 0.5
    assert decode_param("None") is None and decode_param("False") is False
    assert decode_param("['a', 'b']") == ["a", "b"]
    assert decode_param("residual") == "residual"


def test_numpy_scalars_are_stored_as_the_python_numbers_they_equal() -> None:
    import json

    import numpy as np

    config = {"a": np.int64(3), "b": np.float32(0.5), "c": (np.bool_(True), "x")}
    document = json.loads(json.dumps(config_document(config)))
    assert config_from_document(document) == {"a": 3, "b": 0.5, "c": [True, "x"]}
    assert type(config_from_document(document)["a"]) is int


def test_a_document_of_another_format_is_refused() -> None:
    assert config_from_document(config_document({"a": 1})) == {"a": 1}
    with pytest.raises(ValueError, match=CONFIG_ARTIFACT):
        config_from_document({"format": 99, "config": {}})


def test_a_float_shows_its_15_significant_digits_and_the_document_keeps_it_exact() -> None:
    """A step range's draw low + k * step is 0.9000000000000001 for 0.9: MLflow shows 0.9."""
    drawn = 0.2 + 7 * 0.1
    assert drawn != 0.9
    config = {"prune.ratio": drawn, "train.lr": 3e-3, "arch.width": 1.0, "x": float("nan")}
    shown = display_params(config)
    assert shown == {"prune.ratio": "0.9", "train.lr": "0.003", "arch.width": "1.0", "x": "nan"}
    assert config_document(config)["config"]["prune.ratio"] == drawn
    assert display_params({"train.lr": 0.123456789012345678})["train.lr"] == "0.123456789012346"


def test_a_run_is_found_by_the_start_of_its_id(tracker: Tracker) -> None:
    """`nascomp reproduce 609fa130`, the id a trial line shows, or the start of a run id."""
    experiment = tracker.experiment_id(create=True)
    ids = [tracker.client.create_run(experiment).info.run_id for _ in range(3)]
    for run_id in ids:
        assert tracker.resolve_run_id(run_id[:8]) == run_id
        assert tracker.resolve_run_id(run_id) == run_id
    # the id a trial line prints is Ray Tune's trial id, the run's nascomp.trial_id tag
    tracker.client.set_tag(ids[1], "nascomp.trial_id", "609fa130")
    assert tracker.resolve_run_id("609fa130") == ids[1]
    assert tracker.resolve_run_id("609FA130") == ids[1]
    assert tracker.resolve_run_id("not-hex") == "not-hex"  # left to the lookup's own error
    assert tracker.resolve_run_id("ffff0000") == "ffff0000"  # none starts so
    # pasted as a trial line shows it, or with a space: MLflow's traceback before
    assert tracker.resolve_run_id("trial 609fa130") == ids[1]
    assert tracker.resolve_run_id(f" {ids[2]} ") == ids[2]
    with pytest.raises(TrackingError, match=r"^'not-hex!' is not a run id: give the 32 hex"):
        tracker.trial_record(tracker.resolve_run_id("not-hex!"))


def test_a_search_run_prefix_counts_search_runs_alone(tracker: Tracker) -> None:
    """`--search-run 3f`: a trial's run whose id also starts with 3f made it ambiguous."""
    experiment = tracker.experiment_id(create=True)
    search = tracker.client.create_run(experiment, tags={"nascomp.role": "search"}).info.run_id
    trials = []
    while not any(t[0] == search[0] for t in trials):  # a trial run sharing its first character
        trials.append(tracker.client.create_run(experiment).info.run_id)
    with pytest.raises(TrackingError, match=rf"^run '{search[0]}': \d+ runs' ids start with it"):
        tracker.resolve_run_id(search[0])
    assert tracker.resolve_run_id(search[0], role="search") == search
    searches = [search]
    while len({run[0] for run in searches}) == len(searches):  # two searches alike
        run = tracker.client.create_run(experiment, tags={"nascomp.role": "search"})
        searches.append(run.info.run_id)
    with pytest.raises(TrackingError, match=rf"^run '{searches[-1][0]}': 2 search runs' ids"):
        tracker.resolve_run_id(searches[-1][0], role="search")


def _open_store(uri: str) -> str:
    try:
        tracker = Tracker(uri, "race")
        tracker.check_reachable()  # reads the tables of a store another may be making
        tracker.client.search_experiments()
    except Exception as exc:  # the failure is the finding
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def test_searches_started_together_create_one_store(tmp_path: Path) -> None:
    """MLflow's database store creates a new database's tables unlocked: two searches started
    together in a folder without mlflow.db crashed in its migrations ("duplicate column name:
    step", 4 times in 4 tries with two processes). Three processes at once, three times."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as pool:
        for attempt in range(3):
            uri = f"sqlite:///{tmp_path / f'race{attempt}.db'}"
            assert pool.map(_open_store, [uri] * 3) == ["ok"] * 3
