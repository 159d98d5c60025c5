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


def test_a_small_space_searched_with_inheritance_is_noted_too() -> None:
    """inherit_epochs trains no grid first (moves need parents), and the note went with it:
    a 4-point space of 6 trials repeated points before trying them all, unsaid."""
    from nascomp.search.driver import _small_space_note
    from nascomp.search.experiment import load_experiment

    small = [
        "search.trials=6",
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
        "search.inherit_epochs=2",
    ]
    notes: list[str] = []
    _small_space_note(load_experiment(None, small), notes)
    assert notes == [
        "space: it holds 4 distinct points, fewer than search.trials (6): with "
        "search.inherit_epochs the sampler draws them, repeating some before others are tried "
        "(set search.trials: 4 to stop there)"
    ]


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
