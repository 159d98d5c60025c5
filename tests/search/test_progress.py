"""The progress a user sees while a search runs (search/tune/progress.py), driven by Tune's
callback events with a stand-in clock: what the status says, and when it is printed."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from nascomp.search.tune.progress import ProgressLine
from nascomp.search.tune.results import INFO_PREFIX
from nascomp.trainers.config import planned_epochs


@dataclass
class Trial:
    trial_id: str
    config: dict[str, Any] = field(default_factory=dict)
    last_result: dict[str, Any] = field(default_factory=dict)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


CONFIG = {"train.epochs": 4, "train.prune_epochs": 2, "train.qat_epochs": 1}


def test_planned_epochs_follow_the_phases_a_trial_runs() -> None:
    assert planned_epochs(CONFIG) == 4
    assert planned_epochs({**CONFIG, "prune.method": "structured", "prune.ratio": 0.5}) == 6
    assert planned_epochs({**CONFIG, "prune.method": "structured", "prune.ratio": 0.0}) == 4
    assert planned_epochs({**CONFIG, "quant.bits": 8}) == 5
    assert planned_epochs({"trial": "nb201_lookup"}) == 0


def test_plain_output_prints_the_status_every_interval_while_trials_run() -> None:
    lines: list[str] = []
    clock = Clock()
    progress = ProgressLine(4, {"val_accuracy": "max"}, lines.append, every_s=30, clock=clock)
    a, b = Trial("aaaa1", {**CONFIG, "quant.bits": 8}), Trial("bbbb2", CONFIG)
    progress.on_trial_start(0, [], a)
    clock.now += 5
    progress.on_trial_start(0, [], b)
    progress.on_trial_result(0, [], a, {"epoch": 3, "phase": "train"})
    progress.on_step_end(0, [])
    assert lines == []  # not yet 30 s
    clock.now += 30
    progress.on_step_end(0, [])
    assert lines == ["running: aaaa1 train 3/5 35s, bbbb2 starting 0/4 30s | 0/4 done"]
    a.last_result = {"nascomp_status": "ok", "val_accuracy": 0.91}
    clock.now += 5
    progress.on_trial_complete(0, [], a)
    assert lines[-1] == "[  1/4]   40.0s  trial aaaa1  ok         val_accuracy=0.9100"
    assert progress.status_text() == "running: bbbb2 starting 0/4 35s | 1/4 done, about 2m00s left"
    progress.on_step_end(0, [])
    assert len(lines) == 2  # a trial line counts as output: the next status waits 30 s


def test_a_busy_searchs_log_tells_the_time_left_and_keeps_its_columns() -> None:
    """A trial line every second: the status, said only after 30 s without one, never came
    in an overnight log (a soak test's 1,276 trials); past 2.8 h the seconds and past 999
    the count widened and shifted the columns."""
    lines: list[str] = []
    clock = Clock()
    progress = ProgressLine(3000, {"val_accuracy": "max"}, lines.append, clock=clock)
    for i in range(40):
        trial = Trial(f"t{i:04d}", CONFIG)
        progress.on_trial_start(0, [], trial)
        progress.on_trial_start(0, [], Trial("other", CONFIG))
        clock.now += 1
        trial.last_result = {"nascomp_status": "ok", "val_accuracy": 0.5}
        progress.on_trial_complete(0, [], trial)
        progress.on_step_end(0, [])
    statuses = [line for line in lines if line.startswith("running:")]
    assert len(statuses) == 1 and statuses[0].endswith("| 30/3000 done, about 49m30s left")
    assert lines[0] == "[   1/3000]    1.0s  trial t0000  ok         val_accuracy=0.5000"
    clock.now += 3 * 3600
    progress.n_done = 999
    progress.on_trial_complete(0, [], Trial("late", CONFIG, {"nascomp_status": "ok"}))
    assert lines[-1].startswith("[1000/3000]   3h00m  trial late  ok")  # 7 columns, as 1.0s


def test_trials_that_cannot_start_say_what_they_wait_for() -> None:
    """None runs, two are made and wait for resources (a cluster without a node that fits):
    a line every interval, on a terminal too, with the reason the driver gives."""
    lines: list[str] = []
    clock = Clock()
    progress = ProgressLine(
        2, {"val_accuracy": "max"}, lines.append, live=io.StringIO(), every_s=30, clock=clock,
        waiting=lambda: "no node has 4 CPUs",
    )  # fmt: skip
    pending = [Trial("aaaa1"), Trial("bbbb2")]
    for trial in pending:
        trial.status = "PENDING"  # type: ignore[attr-defined]
    progress.on_step_end(0, pending)
    assert lines == []  # not yet 30 s
    clock.now += 30
    progress.on_step_end(0, pending)
    assert lines == ["waiting: 2 trials to start; no node has 4 CPUs"]
    progress.on_step_end(0, pending)
    assert len(lines) == 1


def test_on_a_terminal_the_status_is_redrawn_in_place() -> None:
    lines: list[str] = []
    terminal = io.StringIO()
    clock = Clock()
    progress = ProgressLine(2, {"val_accuracy": "max"}, lines.append, live=terminal, clock=clock)
    trial = Trial("cccc3", CONFIG)
    progress.on_trial_start(0, [], trial)
    progress.on_trial_result(0, [], trial, {"epoch": 1, "phase": "train"})
    written = terminal.getvalue()
    assert written.count("\r\x1b[K") == 2 and written.endswith("cccc3 train 1/4 0s | 0/2 done")
    progress.on_step_end(0, [])
    assert lines == []  # no plain status lines when the terminal shows it
    trial.last_result = {"nascomp_status": "infeasible", "nascomp_reason": "too small"}
    progress.on_trial_complete(0, [], trial)
    assert lines == ["[  1/2]    0.0s  trial cccc3  infeasible too small"]


def test_a_search_sized_by_its_budget_counts_trials_without_a_total() -> None:
    lines: list[str] = []
    clock = Clock()
    progress = ProgressLine(None, {"val_accuracy": "max"}, lines.append, clock=clock)
    trial = Trial("dddd4", CONFIG)
    progress.on_trial_start(0, [], trial)
    clock.now += 12
    trial.last_result = {"nascomp_status": "ok", "val_accuracy": 0.5}
    progress.on_trial_complete(0, [], trial)
    assert lines == ["[  1]   12.0s  trial dddd4  ok         val_accuracy=0.5000"]
    assert progress.status_text() == "running: none | 1 done"


def test_with_a_budget_the_time_left_is_the_sooner_of_its_end_and_the_trials() -> None:
    clock, budget = Clock(), [300.0]
    progress = ProgressLine(
        10, {"val_accuracy": "max"}, [].append, clock=clock, budget_left=lambda: budget[0]
    )
    trial = Trial("eeee5", CONFIG)
    progress.on_trial_start(0, [], trial)
    # No trial has ended: only the budget gives an estimate.
    assert progress.status_text().endswith("| 0/10 done, about 5m00s left")
    clock.now += 60
    trial.last_result = {"nascomp_status": "ok", "val_accuracy": 0.5}
    progress.on_trial_complete(0, [], trial)
    # 60 s a trial, 9 to go: 9 minutes; the budget ends sooner.
    assert progress.status_text() == "running: none | 1/10 done, about 5m00s left"
    budget[0] = 1200.0
    assert progress.status_text() == "running: none | 1/10 done, about 9m00s left"
    budget[0] = 0.0
    assert (
        progress.status_text() == "running: none | 1/10 done, budget spent: the trials begun finish"
    )


def test_a_search_sized_by_its_budget_alone_shows_the_budget_left() -> None:
    budget: list[float | None] = [None]
    progress = ProgressLine(
        None, {"val_accuracy": "max"}, [].append, clock=Clock(), budget_left=lambda: budget[0]
    )
    assert progress.status_text() == "running: none | 0 done"  # no pace yet (CPU-hours)
    budget[0] = 75.0
    assert progress.status_text() == "running: none | 0 done, about 1m15s left"


def test_a_trial_that_breaks_a_constraint_says_so_in_its_line() -> None:
    from nascomp.spaces.constraints import parse_constraints

    lines: list[str] = []
    constraints = parse_constraints(["size_bytes <= 3000"], ["size_bytes", "val_accuracy"])
    progress = ProgressLine(
        2, {"val_accuracy": "max"}, lines.append, clock=Clock(), constraints=constraints
    )
    for trial_id, size in (("small", 2500), ("large", 6538)):
        trial = Trial(trial_id, CONFIG, {"nascomp_status": "ok", "val_accuracy": 0.9})
        trial.last_result["size_bytes"] = size
        progress.on_trial_start(0, [], trial)
        progress.on_trial_complete(0, [], trial)
    assert lines[0].endswith("ok         val_accuracy=0.9000")
    assert lines[1].endswith(
        "ok         val_accuracy=0.9000  (breaks size_bytes <= 3000: off the front)"
    )


def test_a_trial_timed_in_torch_for_want_of_an_onnx_file_says_so_in_its_line() -> None:
    lines: list[str] = []
    progress = ProgressLine(1, {"latency_ms": "min"}, lines.append, clock=Clock())
    result = {"nascomp_status": "ok", "latency_ms": 2.04}
    trial = Trial("cummax", CONFIG, {**result, f"{INFO_PREFIX}latency_fallback": "no ONNX file"})
    progress.on_trial_start(0, [], trial)
    progress.on_trial_complete(0, [], trial)
    assert lines[0].endswith("ok         latency_ms=2.0400  (no ONNX file)")


def test_a_trial_that_could_not_resume_its_checkpoint_says_so_in_its_line() -> None:
    lines: list[str] = []
    progress = ProgressLine(1, {"latency_ms": "min"}, lines.append, clock=Clock())
    result = {"nascomp_status": "ok", "latency_ms": 2.04, f"{INFO_PREFIX}restarted": "older"}
    trial = Trial("upgraded", CONFIG, result)
    progress.on_trial_start(0, [], trial)
    progress.on_trial_complete(0, [], trial)
    assert lines[0].endswith("ok         latency_ms=2.0400  (older)")


@dataclass
class Restored(Trial):
    status: str = "PENDING"


def test_a_resumed_search_counts_on_from_the_trials_tune_restored_as_ended() -> None:
    """The count came from the tracking store: a killed driver's last writes were still in
    its journal (the resume printed [2/10] after [5/10]), and a trial that ended after Tune's
    last snapshot, run again to its end, was counted a second time (ending at [9/8])."""
    lines: list[str] = []
    progress = ProgressLine(4, {"val_accuracy": "max"}, lines.append, clock=Clock())
    trials = [
        Restored("done1", status="TERMINATED"),
        Restored("fail2", status="ERROR"),
        Restored("again3", CONFIG, {"nascomp_status": "ok", "val_accuracy": 0.5}, "PENDING"),
        Restored("new4", CONFIG, {"nascomp_status": "ok", "val_accuracy": 0.7}, "PENDING"),
    ]
    progress.on_step_begin(0, trials)
    assert progress.n_done == 2
    progress.on_trial_complete(0, trials, trials[0])  # Tune's report of an ended one: no line
    for trial in trials[2:]:
        progress.on_trial_start(0, trials, trial)
        progress.on_trial_complete(0, trials, trial)
    assert [line[:7] for line in lines if line.startswith("[")] == ["[  3/4]", "[  4/4]"]
