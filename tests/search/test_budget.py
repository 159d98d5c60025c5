"""search.budget: the clock's arithmetic, its record in the manifest, and a real tiny search
that ends by its budget."""

from __future__ import annotations

import json
import math
import os
import re
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from nascomp.search.driver import run_search
from nascomp.search.errors import ConfigError
from nascomp.search.experiment import BudgetConfig, SearchConfig, load_experiment
from nascomp.search.resume import MANIFEST, budget_spent, write_manifest
from nascomp.search.tune.budget import BudgetClock
from tests.search.conftest import nascomp, tiny_args, tiny_experiment
from tests.search.faults import (
    background_search,
    kill_session,
    output,
    search_runs,
    wait_for,
)


class Ticks:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _clock(tmp_path: Path, budget: dict, spent_before: float = 0.0) -> tuple[BudgetClock, Ticks]:
    write_manifest(tmp_path, load_experiment(None, []), "run0123456789")
    ticks = Ticks()
    clock = BudgetClock(
        BudgetConfig(**budget),
        cpus_per_trial=2.0,
        gpus_per_trial=0.0,
        folder=tmp_path,
        spent_before=spent_before,
        echo=lambda line: None,
        now=ticks,
    )
    return clock, ticks


def test_cpu_hours_are_trial_time_times_cpus(tmp_path: Path) -> None:
    clock, ticks = _clock(tmp_path, {"cpu_hours": 1.0}, spent_before=0.25)
    first, second = SimpleNamespace(trial_id="a"), SimpleNamespace(trial_id="b")
    clock.on_trial_start(0, [], first)
    ticks.t += 900  # a alone for 15 min on 2 CPUs: 0.5 CPU-hours
    clock.on_trial_start(0, [], second)
    ticks.t += 450  # both: 2 * 450 s * 2 CPUs = 0.5 CPU-hours more
    assert clock.spent() == pytest.approx(0.25 + 0.5 + 0.5)
    assert clock.exhausted()
    clock.on_trial_complete(0, [], first)
    assert budget_spent(tmp_path) == pytest.approx(1.25)  # written when a trial ends
    ticks.t += 3600  # only b runs
    assert clock.spent() == pytest.approx(1.25 + 2.0)


def test_wall_clock_counts_from_start_on_top_of_earlier_runs(tmp_path: Path) -> None:
    clock, ticks = _clock(tmp_path, {"wall_s": 60}, spent_before=40.0)
    ticks.t += 5  # before the trial phase: not counted
    clock.start()
    ticks.t += 19.5
    assert clock.spent() == pytest.approx(59.5) and not clock.exhausted()
    ticks.t += 0.5
    assert clock.exhausted()
    clock.save()
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["budget"] == {"unit": "wall_s", "limit": 60.0, "spent": 60.0}
    assert manifest["state"] == "running"  # the rest of the manifest is kept


@pytest.mark.parametrize("budget", [{"wall_s": 600}, {"cpu_hours": 1.0}])
def test_what_tune_does_after_its_last_step_is_not_charged(tmp_path: Path, budget: dict) -> None:
    """Ctrl-C: Tune's loop ends at once, then it stops the trials and snapshots (seconds)."""
    clock, ticks = _clock(tmp_path, budget)
    clock.start()
    clock.on_trial_start(0, [], SimpleNamespace(trial_id="a"))
    ticks.t += 10
    clock.on_step_end(0, [])  # the loop's last step: the interrupt came here
    at_interrupt = clock.spent()
    ticks.t += 11  # Tune stopping the trial and writing its last snapshot
    clock.stop()
    clock.save()
    assert clock.spent() == pytest.approx(at_interrupt)
    assert budget_spent(tmp_path) == pytest.approx(at_interrupt)
    expected = 10.0 if "wall_s" in budget else 10.0 * 2.0 / 3600
    assert at_interrupt == pytest.approx(expected)
    assert not clock.exhausted()


def test_seconds_left_are_the_budget_over_the_pace_it_is_spent_at(tmp_path: Path) -> None:
    wall, ticks = _clock(tmp_path, {"wall_s": 60}, spent_before=40.0)
    wall.start()
    ticks.t += 15
    assert wall.seconds_left() == pytest.approx(5.0)
    ticks.t += 10
    assert wall.seconds_left() == 0.0  # spent: never negative
    cpu, ticks = _clock(tmp_path, {"cpu_hours": 1.0}, spent_before=0.5)
    assert cpu.seconds_left() is None  # nothing runs: no pace yet
    cpu.on_trial_start(0, [], SimpleNamespace(trial_id="a"))
    cpu.on_trial_start(0, [], SimpleNamespace(trial_id="b"))
    # 0.5 CPU-hours left, 2 trials of 2 CPUs each: 4 CPUs spend it in 450 s
    assert cpu.seconds_left() == pytest.approx(450.0)
    ticks.t += 225
    assert cpu.seconds_left() == pytest.approx(225.0)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "search.budget={wall_s: 60, cpu_hours: 1}",
            "search.budget: give one of wall_s, cpu_hours, gpu_hours, e.g. {wall_s: 600}; "
            "got wall_s, cpu_hours",
        ),
        ("search.budget={cpu_hour: 1}", "search.budget.cpu_hour: unknown key (did you mean"),
        ("search.budget=1h", "search.budget: give one of wall_s, cpu_hours, gpu_hours, e.g. "),
        ("search.budget=3600", "{wall_s: 600}; got 3600"),
        ("search.budget.wall_s=0", "search.budget.wall_s: Input should be greater than 0"),
        ("search.budget.gpu_hours=1", "search.budget.gpu_hours: needs resources.gpus_per_trial"),
    ],
)
def test_bad_budgets_are_one_line_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_experiment(None, [override])
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("override", "start"),
    [
        # checks across sections began "experiment: " and named their field after it
        ("search.budget.gpu_hours=1", "search.budget.gpu_hours: needs resources.gpus_per_trial"),
        ("trial=nb201_lookup", "space.arch.family: trial nb201_lookup needs 'nb201'"),
        # an unset variable's empty value ran the field's default unsaid
        ("search.trials=", "--set search.trials: empty value; give one, or search.trials=null"),
        ("storage=  ", "--set storage: empty value; give one, or storage=null for the field's"),
    ],
)
def test_errors_start_with_the_field_they_name(override: str, start: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_experiment(None, [override])
    assert str(error.value).startswith(start), str(error.value)


def test_trials_cap_a_budget_only_when_given() -> None:
    # The quickstart names 20 trials: they cap its budget.
    assert load_experiment(None, ["search.budget.wall_s=60"]).search.trials == 20
    assert SearchConfig.model_validate({"budget": {"wall_s": 60}}).trials == 10_000
    assert SearchConfig.model_validate({"budget": {"wall_s": 60}, "trials": 7}).trials == 7
    assert SearchConfig.model_validate({}).trials == 20


def test_a_budget_cleared_then_given_in_another_unit() -> None:
    """A file's cpu_hours swapped for wall seconds from the command line: KEY=null asks for the
    default, and a key set after it adds to that default (it was "'budget' is not a section")."""
    swapped = load_experiment(
        None,
        ["search.budget.cpu_hours=2", "search.budget=null", "search.budget.wall_s=100"],
    )
    assert (swapped.search.budget.unit, swapped.search.budget.limit) == ("wall_s", 100)
    arch = load_experiment(None, ["space.arch=null", "space.arch.base_channels=[8]"]).space.arch
    assert arch.family == "cnn" and arch.base_channels == [8]  # the default space, one leaf set


BUDGET_S = 8.0


def test_tiny_search_ends_by_its_budget(workdir: Path) -> None:
    experiment = tiny_experiment(workdir, "search.trials=1000", f"search.budget.wall_s={BUDGET_S}")
    lines: list[str] = []
    summary = run_search(experiment, echo=lines.append)

    assert 2 <= len(summary.trials) < 1000
    assert all(t.status in ("ok", "infeasible") for t in summary.trials)  # none cut short
    manifest = json.loads((summary.folder / MANIFEST).read_text())
    assert manifest["state"] == "finished"
    assert manifest["budget"]["spent"] >= BUDGET_S
    # No trial began once the budget was spent: the trials the search ran are those that had
    # ended when it said so, and those it said were begun. (Time past the budget is no test:
    # a begun trial's worker may take half a minute to start on a loaded machine.)
    _assert_no_trial_began_after_the_budget(lines)
    assert len(summary.trials) == sum(line.startswith("[") for line in lines)


def _assert_no_trial_began_after_the_budget(lines: list[str]) -> None:
    """The trials a search's output says ended (``[ n] ...`` lines) are those that had
    ended when it said the budget was spent and those it then said were begun."""
    said = next(i for i, line in enumerate(lines) if line.startswith("budget spent ("))
    ended_before = sum(line.startswith("[") for line in lines[:said])
    begun = int(re.search(r"no new trials; (\d+) begun finish$", lines[said]).group(1))
    assert ended_before + begun == sum(line.startswith("[") for line in lines), lines


# Room for new trials after the resume: a Ctrl-C at 6 s of budget stopped the driver only at
# 15.3 s on an AVX2-only 2-core machine (the two running trials, ~10 s each, ended first), and
# with 20 s the resumed search finished those two and started none.
RESUMED_BUDGET_S = 40.0


@pytest.mark.e2e
def test_interrupted_search_resumes_with_what_is_left(workdir: Path) -> None:
    args = tiny_args(
        workdir, "--set", "search.trials=1000", "--set", f"search.budget.wall_s={RESUMED_BUDGET_S}"
    )
    search = background_search(args, workdir)
    results = workdir / "results"

    def spent_so_far() -> float:
        folders = [f for f in results.glob("nascomp-*") if (f / MANIFEST).is_file()]
        return budget_spent(folders[0]) if folders else 0.0

    try:
        wait_for("6 s of the budget spent", lambda: spent_so_far() >= 6.0, 300, every_s=0.1)
        os.killpg(search.pid, signal.SIGINT)  # Ctrl-C
        assert search.wait(timeout=180) == 130, output(search)[-3000:]
    finally:
        kill_session(search)
    (folder,) = results.glob("nascomp-*")
    before = json.loads((folder / MANIFEST).read_text())
    assert before["state"] == "interrupted"
    spent_before = before["budget"]["spent"]
    assert 6.0 <= spent_before < RESUMED_BUDGET_S
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    n_trials_before = len(search_runs(uri)[1])

    resumed = nascomp("search", *args, "--resume", cwd=workdir, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"budget: {spent_before:.4g} of {RESUMED_BUDGET_S:g} wall_s spent before" in (
        resumed.stdout
    )
    after = json.loads((folder / MANIFEST).read_text())
    assert after["state"] == "finished"
    # The resumed run spent what was left, and began no trial after that: it ran the trials
    # that had ended when it said so, and those it said were begun (not a whole new budget).
    assert after["budget"]["spent"] >= RESUMED_BUDGET_S
    _assert_no_trial_began_after_the_budget(resumed.stdout.splitlines())
    n_trials_after = len(search_runs(uri)[1])
    assert n_trials_before < n_trials_after < 1000  # it went on, and the budget ended it


@pytest.mark.e2e
def test_a_search_interrupted_once_its_budget_was_spent_resumes_with_more(workdir: Path) -> None:
    """Ctrl-C while the begun trials finish after the budget was spent, then --resume with a
    larger budget, the docs' way to give a search more time: Tune had recorded its search as
    finished, so the resume started no trial and ended "interrupted" at every resume (a
    helper's sweep)."""
    args = tiny_args(workdir, "--set", "search.trials=1000", "--set", "train.epochs=4")
    search = background_search([*args, "--set", "search.budget.wall_s=3"], workdir)
    try:
        wait_for("the budget spent", lambda: "budget spent (" in output(search), 300)
        os.killpg(search.pid, signal.SIGINT)  # Ctrl-C while its begun trials train
        assert search.wait(timeout=180) == 130, output(search)[-3000:]
    finally:
        kill_session(search)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    n_trials_before = len(search_runs(uri)[1])  # the begun trials' runs among them
    (folder,) = (workdir / "results").glob("nascomp-*")
    # Room for new trials once the two begun ones end: the Ctrl-C stops the driver only once
    # they stop, and on a loaded machine the 3 s budget had become 40 s or more by then.
    limit = float(math.ceil(budget_spent(folder)) + RESUMED_BUDGET_S)
    more = ["--set", f"search.budget.wall_s={limit}"]
    resumed = nascomp("search", *args, *more, "--resume", cwd=workdir, timeout=600)
    said = resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert resumed.returncode == 0, said
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["state"] == "finished"
    runs = search_runs(uri)
    assert len(runs[1]) > n_trials_before, said  # new trials, in the new budget
    # The record says the budget it ran under: the manifest and the run's experiment.yaml
    # kept the first (3 s) one.
    assert manifest["experiment"]["search"]["budget"]["wall_s"] == limit
    (parent,) = runs[0]
    recorded = MlflowClient(uri).download_artifacts(parent.info.run_id, "experiment.yaml")
    yaml_text = Path(recorded).read_text()
    assert f"wall_s: {limit}" in yaml_text and "wall_s: 3" not in yaml_text
    _assert_no_trial_began_after_the_budget(resumed.stdout.splitlines())


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"trials": 20}, "20 trials"),
        ({"trials": 1}, "1 trial"),
        ({"budget": {"wall_s": 300}}, "a budget of 300 wall_s"),
        (
            {"budget": {"cpu_hours": 1.5}, "trials": 12},
            "at most 12 trials within a budget of 1.5 cpu_hours",
        ),
    ],
)
def test_the_first_line_says_what_ends_the_search(fields: dict, text: str) -> None:
    from nascomp.search.cli import search_size

    assert search_size(SearchConfig(**fields)) == text
    # The quickstart gives its trials: a budget set on top of it is capped by them.
    quickstart = load_experiment(None, ["search.budget={wall_s: 300}"]).search
    assert search_size(quickstart) == "at most 20 trials within a budget of 300 wall_s"


@pytest.mark.parametrize(
    ("n_trials", "seconds", "resumed", "text"),
    [
        (12, 40.2, False, "12 trials in 40 s"),
        (1, 57.0, False, "1 trial in 57 s"),
        (41, 16.4, True, "41 trials in all, 16 s since --resume"),
    ],
)
def test_the_summary_counts_the_search_and_times_this_run(
    n_trials: int, seconds: float, resumed: bool, text: str
) -> None:
    from nascomp.search.cli import _trials_took

    assert _trials_took(n_trials, seconds, resumed) == text
