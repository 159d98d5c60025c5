"""Which sampler a search's config makes, with which settings: known answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from nascomp.search.experiment import load_experiment
from nascomp.search.samplers import TPE_LOCAL_WARMUP_UNDER_BUDGET, make_sampler


@pytest.mark.parametrize(
    ("sets", "warmup"),
    [
        (["search.trials=20"], 10),  # at least 10
        (["search.trials=100"], 30),  # 30% of the trials
        # A budget alone: its 10,000-trial cap made 3,000 TPE trials, so no local move ever came.
        (["search.budget.wall_s=600"], TPE_LOCAL_WARMUP_UNDER_BUDGET),
        (["search.budget.wall_s=600", "search.trials=50"], 15),  # the trials given cap it
    ],
)
def test_tpe_local_hands_over_to_local_moves(tmp_path: Path, sets: list[str], warmup: int) -> None:
    # A file that leaves search.trials out, as a user's may (the quickstart gives 20).
    (tmp_path / "exp.yaml").write_text("search: {sampler: tpe_local}\n")
    experiment = load_experiment(tmp_path / "exp.yaml", sets)
    sampler = make_sampler(experiment.search)
    assert sampler._n_warmup == warmup


@pytest.mark.parametrize(
    ("trials", "population"), [(1, 2), (3, 3), (4, 4), (12, 4), (20, 6), (300, 50), (10_000, 50)]
)
def test_nsga2s_default_population_is_at_most_the_trials(trials: int, population: int) -> None:
    """A third of the trials, from 4 to 50, but never more than the trials (4 for 3 trials
    passed, where the same value given was refused: a helper's sweep) nor under NSGA-II's 2."""
    experiment = load_experiment(None, ["search.sampler=nsga2", f"search.trials={trials}"])
    assert make_sampler(experiment.search)._population_size == population
