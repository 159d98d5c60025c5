"""pls weighing moves by what their points cost to train: the cost a finished trial records,
the history that keeps it, the model that predicts it, and a search that spends less for it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from nascomp.search.compat import ray as ray_compat
from nascomp.search.driver import _searcher, trial_base
from nascomp.search.samplers._common import COST_ATTR, scratch_cost
from nascomp.search.samplers.history import TrialHistory
from nascomp.search.samplers.inherit import INHERITED_ATTR
from nascomp.search.samplers.pareto_local import _MIN_COSTS, ParetoLocalSearchSampler
from nascomp.search.tune.results import STATUS_KEY
from tests.search.conftest import tiny_experiment

SPACE = {
    "width": CategoricalDistribution((8, 16, 32, 64, 128, 256)),
    "depth": CategoricalDistribution((1, 2, 3, 4)),
    "ratio": CategoricalDistribution((0.0, 0.2, 0.5, 0.7, 0.8)),
}


def _values(p: dict) -> list[float]:
    """Accuracy grows with width and depth, size with them too, pruning trades one for the
    other."""
    return [
        1 - 1 / math.sqrt(p["width"] * p["depth"]) - 0.05 * p["ratio"],
        p["width"] ** 2 * p["depth"] * (1 - p["ratio"]),
    ]


def _seconds(p: dict) -> float:
    """Training costs what the dense model computes: pruning comes after it."""
    return p["width"] ** 2 * p["depth"] / 64


def test_a_trial_records_its_cost_only_when_it_trained_every_epoch_from_scratch() -> None:
    assert scratch_cost({"train_seconds": 12.5}, inherited=False) == 12.5
    assert scratch_cost({"train_seconds": 12.5, "reused_epochs": 0.0}, inherited=False) == 12.5
    assert scratch_cost({"train_seconds": 3.0, "reused_epochs": 4.0}, inherited=False) is None
    assert scratch_cost({"train_seconds": 3.0}, inherited=True) is None
    assert scratch_cost({}, inherited=False) is None  # a lookup trial trains nothing
    for bad in (0.0, -1.0, math.nan, math.inf, "12"):
        assert scratch_cost({"train_seconds": bad}, inherited=False) is None


def test_the_history_keeps_the_costs_of_complete_trials_in_their_positions() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    recorded = []
    for number, params in enumerate([{"width": w, "depth": 1, "ratio": 0.0} for w in (8, 16, 32)]):
        study.enqueue_trial(params)
        trial = study.ask(SPACE)
        trial.set_user_attr(COST_ATTR, _seconds(params))
        if number == 1:  # stopped early: not complete, no cost kept
            study.tell(trial, state=TrialState.PRUNED)
            continue
        study.tell(trial, _values(params))
        recorded.append(_seconds(params))
    study.enqueue_trial({"width": 64, "depth": 1, "ratio": 0.0})
    trial = study.ask(SPACE)  # complete, but reused a trained student: no cost
    study.tell(trial, _values(trial.params))
    history = TrialHistory()
    history.update(study, SPACE)
    positions, log_seconds = history.costs()
    assert positions.tolist() == [0, 1] and len(history.done) == 3
    np.testing.assert_allclose(log_seconds, np.log(recorded))
    assert history.costs(last=1)[0].tolist() == [1]


def _fed(n: int) -> tuple[ParetoLocalSearchSampler, TrialHistory]:
    """A cost-aware sampler whose study holds ``n`` complete trials that recorded costs."""
    sampler = ParetoLocalSearchSampler(seed=0, cost_aware=True)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    rng = np.random.default_rng(0)
    for _ in range(n):
        params = {name: d.choices[rng.integers(len(d.choices))] for name, d in SPACE.items()}
        study.enqueue_trial(params)
        trial = study.ask(SPACE)
        trial.set_user_attr(COST_ATTR, _seconds(params))
        study.tell(trial, _values(params))
    return sampler, sampler._read(study, dict(sorted(SPACE.items())))


def test_the_cost_model_waits_for_enough_costs_then_ranks_points_by_them() -> None:
    space = dict(sorted(SPACE.items()))
    sampler, history = _fed(_MIN_COSTS - 1)
    assert sampler._cost_model(history, space) is None
    sampler, history = _fed(40)
    predict = sampler._cost_model(history, space)
    assert predict is not None
    points = [{"depth": d, "ratio": 0.5, "width": w} for w in (8, 32, 128) for d in (1, 4)]
    predicted = predict(points)
    truth = np.array([_seconds(p) for p in points])
    # the order of the true costs, and their ratios to within a factor of 2
    assert np.argsort(predicted).tolist() == np.argsort(truth).tolist()
    ratio = (predicted / predicted[0]) / (truth / truth[0])
    assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio
    # beyond what was recorded it predicts no more than the dearest trial seen
    _, log_seconds = history.costs()
    centre = np.exp(log_seconds.mean())
    far = predict([{"depth": 4, "ratio": 0.0, "width": 256}])[0] * centre
    assert far <= np.exp(log_seconds.max()) * (1 + 1e-9)


def _spent(cost_aware: bool, seed: int, n_trials: int = 30) -> tuple[float, int]:
    """Seconds a pls search of ``n_trials`` spends, and its front's size."""
    sampler = ParetoLocalSearchSampler(seed=seed, cost_aware=cost_aware)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    spent = 0.0
    for _ in range(n_trials):
        trial = study.ask(SPACE)
        spent += _seconds(trial.params)
        trial.set_user_attr(COST_ATTR, _seconds(trial.params))
        study.tell(trial, _values(trial.params))
    return spent, len(study.best_trials)


def test_a_cost_aware_search_spends_less_on_the_same_number_of_trials() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    blind = [_spent(False, seed) for seed in range(5)]
    aware = [_spent(True, seed) for seed in range(5)]
    # The 10 start trials are the same; the moves after them cost less.
    assert sum(s for s, _ in aware) < 0.85 * sum(s for s, _ in blind), (blind, aware)
    assert min(n for _, n in aware) >= 4  # still a front, not one cheap corner


def test_without_costs_a_cost_aware_search_chooses_as_a_blind_one() -> None:
    def params(cost_aware: bool) -> list[dict]:
        sampler = ParetoLocalSearchSampler(seed=3, cost_aware=cost_aware)
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        for _ in range(20):
            trial = study.ask(SPACE)  # no cost recorded: the model never has one to learn
            study.tell(trial, _values(trial.params))
        return [t.params for t in study.trials]

    assert params(True) == params(False)


def test_the_searcher_records_what_a_trial_from_scratch_cost(workdir: Path) -> None:
    experiment = tiny_experiment(workdir, "search.trials=6", "search.cost_aware=true")
    searcher = _searcher(experiment, trial_base(experiment), workdir)
    assert searcher.study.sampler._cost_aware is True
    results = [
        {"train_seconds": 4.0},  # from scratch
        {"train_seconds": 1.0, "reused_epochs": 2.0},  # reused a trained student
        {"train_seconds": 2.0},  # inherited its parent's weights (below)
        {"train_seconds": 5.0, STATUS_KEY: "pruned"},  # stopped early
    ]
    for number, extra in enumerate(results):
        searcher.suggest(f"t{number}")
        if number == 2:  # as Inheritance marks the trial while it is suggested
            ray_compat.optuna_trial(searcher, "t2").set_user_attr(
                INHERITED_ATTR, {"train.epochs": 1}
            )
        result = {name: 0.5 for name in experiment.metric_names()}
        searcher.on_trial_complete(f"t{number}", {STATUS_KEY: "ok", **result, **extra})
    costs = [t.user_attrs.get(COST_ATTR) for t in searcher.study.trials]
    assert costs == [4.0, None, None, None]


@pytest.mark.parametrize(
    ("overrides", "aware"),
    [((), False), (("search.cost_aware=true",), True), (("search.sampler=random",), None)],
)
def test_the_setting_reaches_pls(
    workdir: Path, overrides: tuple[str, ...], aware: bool | None
) -> None:
    experiment = tiny_experiment(workdir, *overrides)
    sampler = _searcher(experiment, trial_base(experiment), workdir).study.sampler
    assert getattr(sampler, "_cost_aware", None) is aware


@pytest.mark.parametrize("sampler", ["random", "tpe", "tpe_local", "nsga2"])
def test_cost_aware_is_refused_for_a_sampler_that_does_not_predict_gains(
    workdir: Path, sampler: str
) -> None:
    with pytest.raises(ValueError, match=r"search.cost_aware: true needs search.sampler: pls"):
        tiny_experiment(workdir, f"search.sampler={sampler}", "search.cost_aware=true")


def test_a_slow_choice_of_the_sampler_raises_no_ray_warning() -> None:
    """Ray warns when the define-by-run function takes over a second ("Ensure that actual
    computation, training takes place inside Tune's train functions"): ours is where ``pls``
    chooses (arranging a cost-aware start took 1 to 3 s), with no code of the user's in it."""
    import time
    import warnings

    from nascomp.search.tune.searcher import NascompOptunaSearch

    def slow(trial: optuna.Trial) -> None:
        trial.suggest_float("x", 0.0, 1.0)
        time.sleep(1.05)

    searcher = NascompOptunaSearch(space=slow, metric=["a", "b"], mode=["max", "min"], seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = searcher.suggest("t0")
    assert config is not None and 0.0 <= config["x"] <= 1.0
