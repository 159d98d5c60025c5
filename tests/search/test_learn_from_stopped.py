"""pls learns from trials stopped early: what the history keeps of them, and a model that uses
their low-fidelity results for choices no finished trial has made, scored at full training."""

from __future__ import annotations

import itertools
import math

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from nascomp.search.front.hypervolume import normalise
from nascomp.search.samplers._common import STOPPED_ATTR, stopped_at
from nascomp.search.samplers.history import TrialHistory
from nascomp.search.samplers.pareto_local import ParetoLocalSearchSampler

SPACE = {name: CategoricalDistribution((0, 1, 2)) for name in ("a", "b", "c")}


def _accuracy(p: dict[str, int]) -> float:
    """Trained to the end: ``a`` matters most, ``b`` a little, ``c`` not at all."""
    return 0.3 * p["a"] + 0.1 * p["b"]


def _size(p: dict[str, int]) -> float:
    return 10.0 * p["a"] + 5.0 * p["b"] + 1.0


def _study() -> optuna.Study:
    return optuna.create_study(directions=["maximize", "minimize"])


def _add(study: optuna.Study, params: dict[str, int], **how: object) -> None:
    """A trial at ``params``: finished (its true values), or stopped (``state``, with what it
    had ``reached`` if given)."""
    study.enqueue_trial(params)
    trial = study.ask(SPACE)
    assert trial.params == params
    if "reached" in how:
        trial.set_user_attr(STOPPED_ATTR, how["reached"])
    if "state" in how:
        study.tell(trial, state=how["state"])
    else:
        study.tell(trial, [_accuracy(params), _size(params)])


def test_stopped_at_is_validated_and_keeps_missing_values_as_none() -> None:
    assert stopped_at(0.25, [0.5, math.nan, None, 3]) == {
        "fidelity": 0.25,
        "values": [0.5, None, None, 3.0],
    }
    for fidelity in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="fidelity is in"):
            stopped_at(fidelity, [0.5])


def test_history_keeps_what_stopped_trials_reached_and_never_puts_them_on_the_front() -> None:
    study = _study()
    _add(study, {"a": 0, "b": 0, "c": 0})
    # Stopped at a quarter of its training, accuracy 0.5 then, its size known (minimised: -0.5)
    _add(
        study,
        {"a": 2, "b": 2, "c": 2},
        state=TrialState.PRUNED,
        reached=stopped_at(0.25, [0.5, 31]),
    )
    _add(study, {"a": 1, "b": 0, "c": 0}, state=TrialState.PRUNED)  # said nothing: not kept
    # A latency not measured yet: NaN in the model's rows
    _add(
        study,
        {"a": 1, "b": 1, "c": 0},
        state=TrialState.PRUNED,
        reached=stopped_at(0.5, [0.4, None]),
    )
    _add(study, {"a": 1, "b": 2, "c": 1}, state=TrialState.FAIL, reached=stopped_at(0.5, [0.1, 1]))
    history = TrialHistory()
    history.update(study, SPACE)

    points, values, fidelity = history.stopped()
    assert points == [{"a": 2, "b": 2, "c": 2}, {"a": 1, "b": 1, "c": 0}]
    assert np.array_equal(values, np.array([[-0.5, 31.0], [-0.4, np.nan]]), equal_nan=True)
    assert fidelity.tolist() == [0.25, 0.5]
    assert [t.number for t in history.done] == [0]  # stopped trials are never done
    assert history.feasible_front == [0]
    assert len(history.tried()) == 4  # every point but the failed one is tried
    last_points, _, last_fidelity = history.stopped(last=1)
    assert last_points == [{"a": 1, "b": 1, "c": 0}] and last_fidelity.tolist() == [0.5]


def _searched(learn: bool) -> tuple[ParetoLocalSearchSampler, TrialHistory, np.ndarray]:
    """Trained to the end: a in {0, 1}, every b, c. Stopped at half their training, each 0.2
    below its final accuracy: every a (2 included), b and c."""
    study = _study()
    for a, b, c in itertools.product((0, 1), (0, 1, 2), (0, 1, 2)):
        _add(study, {"a": a, "b": b, "c": c})
    for a, b, c in itertools.product((0, 1, 2), (0, 1, 2), (0, 1, 2)):
        if (a + b + c) % 2 == 0:
            p = {"a": a, "b": b, "c": c}
            reached = stopped_at(0.5, [_accuracy(p) - 0.2, _size(p)])
            _add(study, p, state=TrialState.PRUNED, reached=reached)
    sampler = ParetoLocalSearchSampler(seed=0, learn_from_stopped=learn)
    history = TrialHistory()
    history.update(study, SPACE)
    return sampler, history, np.arange(len(history.done))


def _predict(learn: bool, points: list[dict[str, int]]) -> tuple[np.ndarray, np.ndarray]:
    """The model's predicted accuracy of ``points`` (as the sampler scores them: trained to
    the end) and their true accuracy, both on the scale of the finished trials' values."""
    sampler, history, done = _searched(learn)
    low, high = history.values.min(axis=0), history.values.max(axis=0)
    model = sampler._fit_model(history, done, SPACE, low, high)
    mean, _ = model.predict_std(points)
    truth = np.array([[-_accuracy(p), _size(p)] for p in points])
    return mean[:, 0], normalise(truth, low, high)[:, 0]


def test_the_model_learns_a_choice_only_stopped_trials_made() -> None:
    a2, a1 = {"a": 2, "b": 1, "c": 0}, {"a": 1, "b": 1, "c": 0}
    learned, truth = _predict(True, [a2, a1])
    blind, _ = _predict(False, [a2, a1])
    # Minimised, scaled accuracy: lower is better. Only stopped trials ever had a = 2; the
    # model that hears them ranks it above a = 1, as it truly is, and the one that does not
    # cannot.
    assert learned[0] < learned[1] and truth[0] < truth[1]
    assert blind[0] >= blind[1]
    # Scored at full training: the 0.2 lost by stopping early is not held against a = 2
    # (within a tenth of the finished trials' range; 0.2 is 0.4 of that range here).
    assert abs(learned[0] - truth[0]) < 0.1
    assert abs(learned[1] - truth[1]) < 0.1


def test_objectives_the_stopped_trials_did_not_measure_come_from_finished_trials_alone() -> None:
    study = _study()
    for a in (0, 1):
        for b in (0, 1, 2):
            _add(study, {"a": a, "b": b, "c": 0})
    p = {"a": 2, "b": 0, "c": 1}
    _add(study, p, state=TrialState.PRUNED, reached=stopped_at(0.5, [0.9, None]))
    history = TrialHistory()
    history.update(study, SPACE)
    done = np.arange(len(history.done))
    low, high = history.values.min(axis=0), history.values.max(axis=0)
    candidates = [{"a": 2, "b": 1, "c": 0}, {"a": 0, "b": 2, "c": 0}]
    joined = ParetoLocalSearchSampler(seed=0)._fit_model(history, done, SPACE, low, high)
    alone = ParetoLocalSearchSampler(seed=0, learn_from_stopped=False)._fit_model(
        history, done, SPACE, low, high
    )
    mean, std = joined.predict_std(candidates)
    mean_alone, std_alone = alone.predict_std(candidates)
    assert np.allclose(mean[:, 1], mean_alone[:, 1]) and np.allclose(std[:, 1], std_alone[:, 1])
    assert not np.allclose(mean[:, 0], mean_alone[:, 0])  # accuracy heard the stopped trial


def _search(learn: bool) -> list[tuple]:
    """25 asks of pls over the 27 points, every third trial stopped half-way (its latency not
    measured yet, so the model of that objective reads finished trials only)."""
    sampler = ParetoLocalSearchSampler(seed=1, n_startup_trials=5, learn_from_stopped=learn)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
    for i in range(25):
        trial = study.ask()
        p = {name: trial.suggest_categorical(name, (0, 1, 2)) for name in SPACE}
        if i % 3 == 1:
            reached = stopped_at(0.5, [_accuracy(p) - 0.2, _size(p), None])
            trial.set_user_attr(STOPPED_ATTR, reached)
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, [_accuracy(p), _size(p), float(p["c"])])
    return [tuple(t.params[name] for name in SPACE) for t in study.trials]


def test_a_search_with_stopped_trials_never_repeats_a_point_and_heeds_them() -> None:
    heard, unheard = _search(True), _search(False)
    assert len(set(heard)) == len(heard) == 25
    assert heard[:5] == unheard[:5]  # the start design knows nothing of models
    assert heard != unheard


def test_a_model_fit_as_trials_arrive_equals_one_fit_from_scratch() -> None:
    """The feature blocks and explicit features of the stopped trials are built once per
    trial and kept; a model fit as trials arrive, reading them from that cache, predicts what
    a model fit once on a fresh history predicts. 400 trials over 256 points, a third stopped
    at a quarter of training, then also at a half (a new fidelity level: the model's inputs
    change); a window of 100 of each, more rows than features: the fit is in the primal."""
    space = {name: CategoricalDistribution((0, 1, 2, 3)) for name in "abcd"}
    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0)
    )
    sampler = ParetoLocalSearchSampler(seed=0, max_history=100)
    incremental = TrialHistory()
    candidates = [{"a": 3, "b": 0, "c": 1, "d": 2}, {"a": 1, "b": 3, "c": 3, "d": 0}]

    def fit(history: TrialHistory) -> tuple[np.ndarray, np.ndarray, object]:
        done = np.arange(len(history.done))[-100:]
        low, high = history.values.min(axis=0), history.values.max(axis=0)
        model = sampler._fit_model(history, done, space, low, high)
        mean, std = model.predict_std(candidates)
        return mean, std, model

    for i in range(400):
        trial = study.ask(space)
        p = trial.params
        accuracy, size = 0.3 * p["a"] + 0.1 * p["b"] * p["c"], 10.0 * p["a"] + p["d"] + 1.0
        if i % 3 == 0:
            fidelity = 0.25 if i < 200 else (0.25, 0.5)[i % 2]
            trial.set_user_attr(STOPPED_ATTR, stopped_at(fidelity, [accuracy * fidelity, size]))
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, [accuracy, size])
        incremental.update(study, space)
        if i >= 20 and i % 7 == 0:
            fit(incremental)
    fresh = TrialHistory()
    fresh.update(study, space)
    (mean, std, model), (fresh_mean, fresh_std, _) = fit(incremental), fit(fresh)
    assert np.allclose(mean, fresh_mean, atol=1e-9) and np.allclose(std, fresh_std, atol=1e-9)
    assert len(incremental.stopped()[0]) == 134
    assert model._weights is not None  # type: ignore[attr-defined]  # solved in the primal
