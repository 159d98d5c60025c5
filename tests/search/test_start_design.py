"""``pls``'s start design when trained students are reused (its second half shares the first
half's training) and when a cost prior is given (its combinations arranged to cost least);
and the prior itself, ``trainers.predicted.TrainMacs`` through ``PointCost``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from nascomp.compressors.measure import count_macs
from nascomp.search.experiment import load_experiment
from nascomp.search.samplers.pareto_local import ParetoLocalSearchSampler
from nascomp.search.samplers.space import PointCost, with_fixed
from nascomp.spaces.models import build_model
from nascomp.trainers.config import TrialConfig
from nascomp.trainers.predicted import TrainMacs

REPO = Path(__file__).resolve().parents[2]
TRAIN = ("width", "depth")  # read by the train phase
AFTER = ("prune",)  # read after it
CHOICES = {"width": [8, 16, 32], "depth": [1, 2, 3]}


def _after_training(name: str) -> bool:
    return name in AFTER


def _suggest(trial: optuna.Trial) -> dict[str, float]:
    params = {name: trial.suggest_categorical(name, choices) for name, choices in CHOICES.items()}
    return {**params, "prune": trial.suggest_float("prune", 0.0, 0.75)}


def _values(params: dict[str, float]) -> tuple[float, float]:
    return params["width"] * params["depth"] * (1 - params["prune"]), params["width"]


def _cost(point: dict[str, float]) -> float:
    return float(point["width"] ** 2 * point["depth"])


def _start(seed: int, **settings: object) -> optuna.Study:
    sampler = ParetoLocalSearchSampler(seed=seed, n_startup_trials=10, **settings)  # type: ignore[arg-type]
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(lambda trial: _values(_suggest(trial)), n_trials=10)
    return study


def _train(trial: optuna.trial.FrozenTrial) -> tuple:
    return tuple(trial.params[name] for name in TRAIN)


@pytest.mark.parametrize("seed", range(4))
def test_the_second_half_of_the_start_reuses_the_first_halfs_training(seed: int) -> None:
    """Trials 5 to 9 take the train-phase choices of trials 0 to 4 (one each, in order) and
    draw only the settings read after training afresh; the first half still holds every choice
    of each train-phase parameter. Without ``after_training`` the same seed gives a second
    half of its own."""
    trials = _start(seed, after_training=_after_training).trials
    assert [_train(t) for t in trials[5:]] == [_train(t) for t in trials[:5]]
    for name in TRAIN:
        assert {t.params[name] for t in trials[:5]} == set(CHOICES[name])
    assert len({t.params["prune"] for t in trials}) == 10

    plain = _start(seed).trials
    assert [_train(t) for t in plain[5:]] != [_train(t) for t in plain[:5]]


@pytest.mark.parametrize("seed", range(4))
def test_a_pairing_that_would_repeat_its_partner_is_not_made(seed: int) -> None:
    """With one two-choice setting read after training (named ``prune`` here, as
    ``_after_training`` reads it), a second-half trial drawing its partner's choice would be
    that partner again: it pairs with another whose choice differs, or with none. A space
    that searches nothing after training pairs no trial."""

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        width = trial.suggest_categorical("width", [4, 8, 16, 32, 64])
        depth = trial.suggest_categorical("depth", [1, 2, 3, 4, 5])
        setting = trial.suggest_categorical("prune", [4, 8])
        return float(width * depth), float(setting)

    sampler = ParetoLocalSearchSampler(
        seed=seed, n_startup_trials=10, after_training=_after_training
    )
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=10)
    assert sampler._partnered  # some were paired
    points = [tuple(t.params.values()) for t in study.trials]
    assert len(set(points)) == len(points)

    bare = ParetoLocalSearchSampler(seed=seed, n_startup_trials=10, after_training=_after_training)
    plain = optuna.create_study(directions=["maximize", "minimize"], sampler=bare)
    plain.optimize(lambda t: (float(t.suggest_categorical("width", [4, 8])), 0.0), n_trials=10)
    assert bare._partnered == set()


@pytest.mark.parametrize("seed", range(12))
def test_no_start_trial_repeats_another_with_trials_running_and_one_stopped(seed: int) -> None:
    """Two trials at once, the third stopped (mo_asha): a second-half trial asked while its
    would-be partner trained took the design's own row, which could be that partner's
    training with a later trial's pruning; the later trial, paired with that partner, then ran
    the same point (a helper's sweep: two start trials of one search alike, key for key).
    A pairing is now checked against every earlier trial, not its partner alone."""

    def suggest(trial: optuna.Trial) -> None:
        trial.suggest_categorical("width", [4, 8, 16])
        trial.suggest_categorical("depth", [1, 2, 3])
        trial.suggest_categorical("prune", [4, 8])

    sampler = ParetoLocalSearchSampler(
        seed=seed, n_startup_trials=10, after_training=_after_training
    )
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    running: list[optuna.Trial] = []
    for _ in range(10):
        trial = study.ask()
        suggest(trial)
        running.append(trial)
        if len(running) == 2:  # the earlier one ends as the next is asked
            done = running.pop(0)
            if done.number == 2:
                study.tell(done, state=TrialState.PRUNED)
            else:
                params = done.params
                study.tell(done, (float(params["width"] * params["depth"]), float(params["prune"])))
    points = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(points)) == len(points), points


def test_a_start_trial_pairs_only_with_a_finished_trial() -> None:
    """With the first half still running, a second-half trial draws from the design as any
    start trial; once some have finished it pairs with the earliest finished one not yet
    paired, skipping a trial that failed (it left no trained student)."""
    sampler = ParetoLocalSearchSampler(seed=0, n_startup_trials=10, after_training=_after_training)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    running = []
    for _ in range(6):
        trial = study.ask()
        _suggest(trial)
        running.append(trial)
    assert running[5].number not in sampler._partners  # nobody had finished
    study.tell(running[0], state=TrialState.FAIL)
    study.tell(running[2], _values(running[2].params))
    study.tell(running[1], _values(running[1].params))
    paired = study.ask()
    _suggest(paired)
    assert tuple(paired.params[n] for n in TRAIN) == tuple(running[1].params[n] for n in TRAIN)
    again = study.ask()
    _suggest(again)
    assert tuple(again.params[n] for n in TRAIN) == tuple(running[2].params[n] for n in TRAIN)


def test_a_cost_prior_arranges_the_start_to_cost_less_with_the_same_choices() -> None:
    """Given ``start_cost``, the start trials after the first hold the same choices of each
    parameter as without it (each choice as often), combined so that they cost no more in all,
    and less over five seeds (one of them drew a cheapest arrangement by itself); the first
    trial, drawn before the space was known, is the same."""
    totals = []
    for seed in range(5):
        plain = _start(seed).trials
        arranged = _start(seed, start_cost=_cost).trials
        assert arranged[0].params == plain[0].params
        for name in CHOICES:
            kept = Counter(t.params[name] for t in plain)
            assert Counter(t.params[name] for t in arranged) == kept
        totals.append((sum(_cost(t.params) for t in arranged), sum(_cost(t.params) for t in plain)))
        assert totals[-1][0] <= totals[-1][1]
    assert sum(a for a, _ in totals) < 0.85 * sum(p for _, p in totals)


def test_with_pairing_only_the_first_half_is_arranged() -> None:
    """Both at once: the first half keeps its own choices (every one of each train-phase
    parameter), arranged to cost no more (less over five seeds), and the second half reuses
    it."""
    totals = []
    for seed in range(5):
        plain = _start(seed, after_training=_after_training).trials
        both = _start(seed, after_training=_after_training, start_cost=_cost).trials
        for name in TRAIN:
            kept = Counter(t.params[name] for t in plain[:5])
            assert Counter(t.params[name] for t in both[:5]) == kept
        assert [_train(t) for t in both[5:]] == [_train(t) for t in both[:5]]
        totals.append(
            (sum(_cost(t.params) for t in both[:5]), sum(_cost(t.params) for t in plain[:5]))
        )
        assert totals[-1][0] <= totals[-1][1]
    assert sum(a for a, _ in totals) < 0.9 * sum(p for _, p in totals)


def test_a_prior_that_cannot_build_a_point_keeps_it_out_of_the_start() -> None:
    """``start_cost`` None (a model that cannot be built): an arrangement holding that
    combination is never chosen while one without it is among those compared."""

    def unbuildable(point: dict[str, float]) -> float | None:
        return None if point["width"] == 32 and point["depth"] == 3 else 1.0

    for seed in range(3):
        trials = _start(seed, start_cost=unbuildable).trials
        assert all(_train(t) != (32, 3) for t in trials[1:])


def test_train_macs_counts_the_dense_student_of_a_point(data_root: Path, tmp_path: Path) -> None:
    """The MNIST example's point, with its fixed ``arch.family`` and the search's constants
    added by ``PointCost``: the MACs of the model built from it, the same whatever its pruning
    and bits; None for an architecture that cannot be built."""
    experiment = load_experiment(
        REPO / "examples" / "mnist.yaml",
        [f"data.root={data_root}", "data.max_train_samples=200", "data.image_size=16"],
    )
    from nascomp.search.driver import trial_base

    constants = trial_base(experiment)
    macs = TrainMacs()
    cost = PointCost(experiment.space.params(), constants, macs)
    point = {
        "arch.n_stages": 2,
        "arch.blocks_per_stage": 1,
        "arch.base_channels": 16,
        "arch.kernel_size": 3,
        "arch.block": "residual",
        "prune.method": "none",
        "quant.bits": 32,
        "distill.enabled": False,
    }
    assert with_fixed(experiment.space.params(), point)["arch.family"] == "cnn"
    cfg = TrialConfig.from_flat({**with_fixed(experiment.space.params(), point), **constants})
    data = cfg.data.load(threads=1)
    model = build_model(cfg.arch, data.input_shape, data.n_classes, data.input_dtype)
    expected = count_macs(model, data.input_shape, data.input_dtype)
    assert cost(point) == expected > 0
    compressed = {**point, "prune.method": "structured", "prune.ratio": 0.5, "quant.bits": 4}
    assert cost(compressed) == expected
    # One model counted per architecture: distillation's floats made each point its own, and
    # the driver's torch threads are left as they were (it counts on one)
    threads = torch.get_num_threads()
    distilled = {**point, "distill.enabled": True, "distill.temperature": 3.3}
    assert cost(distilled) == expected and len(macs._cache) == 1
    assert torch.get_num_threads() == threads
    assert cost({**point, "arch.base_channels": 32}) > expected
    assert cost({**point, "arch.n_stages": 99}) is None
    # Data that passes the config's checks but cannot be read (four empty IDX files): no
    # prior, and no exception into the sampler's ask.
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images", "train-labels", "t10k-images", "t10k-labels"):
        (raw / f"{name}-idx{3 if 'images' in name else 1}-ubyte").write_bytes(b"")
    broken = PointCost(
        experiment.space.params(), {**constants, "data.root": str(tmp_path)}, TrainMacs()
    )
    assert broken(point) is None


def test_a_search_gives_pls_the_prior_and_pairing(tmp_path: Path, data_root: Path) -> None:
    """What the driver hands ``pls``: the MACs prior with ``search.cost_aware`` only, the
    pairing with ``search.reuse_training`` (on by default)."""
    from nascomp.search.driver import _searcher

    def sampler(*overrides: str) -> ParetoLocalSearchSampler:
        experiment = load_experiment(
            REPO / "examples" / "mnist.yaml",
            [f"data.root={data_root}", "search.sampler=pls", *overrides],
        )
        searcher = _searcher(experiment, {}, tmp_path)
        return searcher._sampler  # type: ignore[attr-defined,no-any-return]

    default = sampler()
    assert default._after_training is not None and default._start_cost is None
    costed = sampler("search.cost_aware=true", "search.reuse_training=false")
    assert costed._after_training is None and isinstance(costed._start_cost, PointCost)


def _binary(trial: optuna.Trial) -> tuple[float, float]:
    x = [trial.suggest_categorical(name, [0, 1]) for name in ("a", "b", "c", "d")]
    trial.suggest_categorical("method", ["none"])  # one choice: the same in every trial
    return float(x[0] + 2 * x[1]), float(x[2] + 2 * x[3])


@pytest.mark.parametrize("seed", range(8))
def test_a_start_of_categorical_choices_never_repeats_a_point(seed: int) -> None:
    """Four binary choices (16 points): the ten start trials are ten points, and each choice
    still appears five times. The design's rounds were drawn per parameter alone, so with
    two choices trial 2k+1 was trial 2k's complement in each, and 16 of 20 seeds repeated a
    point (a sweep)."""
    sampler = ParetoLocalSearchSampler(seed=seed, n_startup_trials=10)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(_binary, n_trials=10)
    points = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(points)) == 10, points
    for name in "abcd":
        assert Counter(t.params[name] for t in study.trials) == {0: 5, 1: 5}, name


def _conditional(trial: optuna.Trial) -> tuple[float, float]:
    method = trial.suggest_categorical("method", ["none", "unstructured"])
    ratio = trial.suggest_float("ratio", 0.1, 0.9) if method == "unstructured" else 0.0
    bits = trial.suggest_categorical("bits", [8, 32])
    return bits * (1 - ratio), ratio


@pytest.mark.parametrize("seed", range(4))
def test_a_start_point_without_a_number_is_not_repeated_either(seed: int) -> None:
    """``method: none`` draws no ratio, so it has two points (8 and 32 bits): the start tries
    each once and gives its other trials the method whose ratio makes each one new, rather
    than repeat a point to keep the choices balanced."""
    sampler = ParetoLocalSearchSampler(seed=seed, n_startup_trials=10)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(_conditional, n_trials=10)
    unpruned = [t.params["bits"] for t in study.trials if t.params["method"] == "none"]
    assert sorted(unpruned) == [8, 32]
