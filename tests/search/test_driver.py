"""run_search in-process, to look inside the live Optuna study it drove."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.study import StudyDirection
from optuna.trial import TrialState

from nascomp.search.driver import end_status, run_search
from tests.search.conftest import tiny_experiment

pytestmark = pytest.mark.e2e


def test_search_stays_multi_objective_and_counts_infeasible(workdir: Path) -> None:
    # 4 and 5 stages cannot fit an 8x8 digit (8 -> 4 -> 2 -> 1 is the end): infeasible points.
    experiment = tiny_experiment(
        workdir,
        "search.trials=6",
        "space.arch.n_stages=[1, 4, 5]",
        "space.distill.enabled=false",
    )
    summary = run_search(experiment, echo=lambda line: None)

    study: optuna.Study = summary.searcher.study
    # Three objectives reached Optuna: a `metric=` in TuneConfig would have made this one.
    assert study.directions == [
        StudyDirection.MAXIMIZE,
        StudyDirection.MINIMIZE,
        StudyDirection.MINIMIZE,
    ]
    complete = study.get_trials(states=[TrialState.COMPLETE])
    failed = study.get_trials(states=[TrialState.FAIL])
    assert len(complete) + len(failed) == 6
    assert all(len(t.values) == 3 for t in complete)
    assert all(t.user_attrs["nascomp_status"] == "infeasible" for t in failed)
    assert all(t.params["arch.n_stages"] in (4, 5) for t in failed)
    assert all(t.params["arch.n_stages"] == 1 for t in complete)

    # MLflow agrees: every trial is a finished run; infeasible ones say so and why.
    assert len(summary.trials) == 6
    assert summary.count("infeasible") == len(failed) >= 1
    assert summary.count("ok") == len(complete) >= 1
    assert summary.count("failed") == 0
    infeasible_ids = {t.run_id for t in summary.trials if t.status == "infeasible"}
    assert summary.front and not infeasible_ids & {t.run_id for t in summary.front}


def test_a_space_smaller_than_its_trials_trains_each_point_first(workdir: Path) -> None:
    """4 points and 6 trials asked: the search says so, and its first 4 trials are the 4
    points (pls's start design alone repeats combinations of a small space)."""
    experiment = tiny_experiment(
        workdir,
        "search.trials=6",
        "space.arch.n_stages=1",
        "space.arch.blocks_per_stage=1",
        "space.arch.kernel_size=3",
        "space.arch.block=plain",
        "space.prune.method=none",
        "space.quant.bits=[8, 32]",
        "space.distill.enabled=false",
    )
    lines: list[str] = []
    summary = run_search(experiment, echo=lines.append)
    assert (
        "note: space: it holds 4 distinct points, fewer than search.trials (6): each is trained "
        "once first, then trained again as the sampler draws it (set search.trials: 4 to stop "
        "there)"
    ) in lines
    # In the order the sampler drew them: the runs' start order is the order their actors
    # started, which a reused actor can change under load (the CI's run saw 3 of 4).
    first = sorted(summary.searcher.study.trials, key=lambda t: t.number)[:4]
    points = {(t.params["arch.base_channels"], t.params["quant.bits"]) for t in first}
    assert len(summary.trials) == 6 and len(points) == 4


_SMALL = [
    "space.arch.n_stages=[1, 2]",
    "space.arch.blocks_per_stage=1",
    "space.arch.base_channels=8",
    "space.arch.width_mult=1.0",
    "space.arch.kernel_size=3",
    "space.arch.block=plain",
    "space.prune.method=none",
    "space.quant.bits=[8, 32]",
    "space.distill.enabled=false",
    "train.epochs=4",
]


def test_an_exhaustive_nb201_search_lists_its_15625_cells_as_a_grid() -> None:
    """Listing stopped past 10,000 points: trials 16,000 over NAS-Bench-201's cells drew at
    random, without the note (a helper's sweep)."""
    from nascomp.search.driver import _sized_to_space, grid_points
    from nascomp.search.experiment import load_experiment

    example = Path(__file__).resolve().parents[2] / "examples" / "nb201.yaml"
    experiment = load_experiment(example, ["search.trials=16000"])
    points = grid_points(experiment)
    assert points is not None and len(points) == 15625
    assert len({tuple(sorted(p.items())) for p in points}) == 15625
    notes: list[str] = []
    _sized_to_space(experiment, notes)
    assert notes[0].startswith("space: it holds 15625 distinct points, fewer than search.trials")
    assert grid_points(load_experiment(example, ["search.trials=15624"])) is None


def test_a_small_space_searched_with_inheritance_is_noted_too() -> None:
    """inherit_epochs trains no grid first (moves need parents), and the note went with it:
    a 4-point space of 6 trials repeated points before trying them all, unsaid."""
    from nascomp.search.driver import _sized_to_space
    from nascomp.search.experiment import load_experiment

    notes: list[str] = []
    experiment = load_experiment(None, [*_SMALL, "search.trials=6", "search.inherit_epochs=2"])
    assert _sized_to_space(experiment, notes).search.trials == 6
    assert notes == [
        "space: it holds 4 distinct points, fewer than search.trials (6): with "
        "search.inherit_epochs the sampler draws them, repeating some before others are tried "
        "(set search.trials: 4 to stop there)"
    ]


def test_a_budget_sized_search_of_a_small_space_ends_once_each_point_is_trained() -> None:
    """Sized by its budget alone, a 4-point space was trained 108 times in 40 s, unsaid: a
    point trained again counts once. A count the user gives is kept, and so is a budget-sized
    search with inheritance (its trials of one point start from different weights)."""
    from nascomp.search.driver import _sized_to_space
    from nascomp.search.experiment import load_experiment

    notes: list[str] = []
    budget = "search.budget.wall_s=40", "search.trials=null"  # the quickstart names 20
    sized = _sized_to_space(load_experiment(None, [*_SMALL, *budget]), notes)
    assert sized.search.trials == 4 and not sized.search.sized_by_budget
    assert sized.search.budget.limit == 40
    assert notes == [
        "space: it holds 4 distinct points: this search, sized by its budget, ends once each "
        "is trained (set search.trials to train them again within the budget)"
    ]
    notes.clear()
    given = load_experiment(None, [*_SMALL, *budget, "search.trials=6"])
    assert _sized_to_space(given, notes).search.trials == 6
    assert notes[0].startswith("space: it holds 4 distinct points, fewer than search.trials (6)")
    notes.clear()
    inheriting = load_experiment(None, [*_SMALL, *budget, "search.inherit_epochs=2"])
    assert _sized_to_space(inheriting, notes).search.sized_by_budget
    assert notes == [
        "space: it holds 4 distinct points, and the budget sizes the search: with "
        "search.inherit_epochs the sampler draws them, repeating some before others are tried "
        "(set search.trials: 4 to stop there)"
    ]
    notes.clear()
    large = load_experiment(None, [*budget])  # the quickstart's space: more points than the cap
    assert _sized_to_space(large, notes).search.sized_by_budget and notes == []


@pytest.mark.parametrize(
    ("ended", "budget_spent", "interrupted", "status"),
    [
        (4, False, False, "FINISHED"),  # every trial ended
        (2, True, False, "FINISHED"),  # the budget ran out first
        (2, False, False, "KILLED"),
        # Ctrl-C before any trial's actor started: Tune counts all 4 as terminated
        (4, False, True, "KILLED"),
        (2, True, True, "KILLED"),
    ],
)
def test_a_search_stopped_by_ctrl_c_is_never_finished(
    ended: int, budget_spent: bool, interrupted: bool, status: str
) -> None:
    assert (
        end_status(ended=ended, trials=4, budget_spent=budget_spent, interrupted=interrupted)
        == status
    )


def test_a_second_interrupt_while_the_state_is_saved_leaves(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An impatient second Ctrl-C cut the search's end short: its parent run stayed RUNNING
    and the message said there was nothing to resume. The first now says what it waits for."""
    import signal

    from nascomp.search.driver import _patient_while_saving

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), _patient_while_saving():
        signal.raise_signal(signal.SIGTERM)  # told what it waits for, goes on
        assert "saving the search's state for --resume" in capsys.readouterr().err
        signal.raise_signal(signal.SIGINT)  # leaves
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def _stopped_before_tune(*args: object, **kwargs: object) -> None:
    raise KeyboardInterrupt  # Ctrl-C after the parent run opened, before Tune's loop


def test_an_interrupt_before_the_trials_began_leaves_no_search(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C there said "nothing to resume", and the parent run stayed RUNNING: the store's
    latest search, an empty front, and a --resume that died in Tune's restore (a helper's
    sweep). The run goes to MLflow's trash and the folder is removed."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    from nascomp.search import driver
    from nascomp.search.errors import SearchError

    experiment = tiny_experiment(workdir)
    monkeypatch.setattr(driver, "_trainable", _stopped_before_tune)
    with pytest.raises(KeyboardInterrupt):
        run_search(experiment, echo=lambda line: None)
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("nascomp").experiment_id
    (run,) = client.search_runs([experiment_id], run_view_type=ViewType.ALL)
    assert (run.info.status, run.info.lifecycle_stage) == ("KILLED", "deleted")
    assert not client.search_runs([experiment_id])  # no active search left
    assert not (workdir / "results").exists()  # the storage folder it made, too
    with pytest.raises(SearchError, match="no search has begun there"):
        run_search(experiment, echo=lambda line: None, resume="latest")


def test_a_search_killed_before_tune_saved_its_state_resumes_from_the_start(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A driver killed (SIGKILL, a lost machine) between opening the search and Tune's first
    snapshot left a folder without Tune's state: every --resume died in Tune's restore with
    a traceback. The resume now starts the trials, in the same parent run."""
    from mlflow.tracking import MlflowClient

    from nascomp.search import driver

    experiment = tiny_experiment(workdir, "search.trials=2")
    with monkeypatch.context() as killed:  # as a kill -9 there: nothing undone
        killed.setattr(driver, "_trainable", _stopped_before_tune)
        killed.setattr(driver, "_unopen_search", lambda *args, **kwargs: None)
        with pytest.raises(KeyboardInterrupt):
            run_search(experiment, echo=lambda line: None)
    (folder,) = (workdir / "results").glob("nascomp-*")
    assert not (folder / "tuner.pkl").exists()
    lines: list[str] = []
    summary = run_search(experiment, echo=lines.append, resume="latest")
    assert summary.resumed and summary.folder == folder
    assert f"note: {folder.name} holds no Ray Tune state" in "\n".join(lines)
    assert len(summary.trials) == 2 and all(t.status == "ok" for t in summary.trials)
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("nascomp").experiment_id
    parents = client.search_runs([experiment_id], "tags.`nascomp.role` = 'search'")
    assert [(p.info.run_id, p.info.status) for p in parents] == [
        (summary.search_run_id, "FINISHED")
    ]


def test_an_interrupted_search_frees_its_garbage_before_ray_shuts_down(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tune's garbage after a Ctrl-C holds Ray's handles (trials stopped while they waited
    for a node): freed by the collector while the other thread's ray.shutdown ran, one ended
    the driver with exit 1 and Ray's "The core worker has already been shutdown" (a helper's
    cluster sweep: 7 of 15 tries). Here the search's Tune loop leaves cyclic garbage and is
    interrupted; the garbage must be gone when Ray's shutdown begins."""
    import gc
    import weakref

    from nascomp.search import driver
    from nascomp.search.errors import SearchInterrupted

    freed: list[bool] = []
    seen_at_shutdown: list[bool] = []

    class Cycle:
        def __init__(self) -> None:
            self.me = self

    class InterruptedTuner:
        def fit(self) -> None:
            cycle = Cycle()
            weakref.finalize(cycle, freed.append, True)
            del cycle  # garbage only the collector frees, as Tune's controller is
            raise KeyboardInterrupt

    real_shutdown = driver._shutdown_ray

    def shutdown(local_ray: object) -> None:
        seen_at_shutdown.append(bool(freed))
        real_shutdown(local_ray)

    monkeypatch.setattr(driver._SearchRun, "_new_tuner", lambda *args: InterruptedTuner())
    monkeypatch.setattr(driver, "_shutdown_ray", shutdown)
    experiment = tiny_experiment(workdir)
    gc.disable()  # no automatic pass frees it by chance
    try:
        with pytest.raises(SearchInterrupted):
            run_search(experiment, echo=lambda line: None)
    finally:
        gc.enable()
    assert seen_at_shutdown == [True]
