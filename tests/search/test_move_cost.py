"""Moves weighed by their compute: what a move that only changes the compression costs with
trained students reused, and pls taking such moves more often when they are cheaper."""

from __future__ import annotations

import optuna
import pytest

from nascomp.search.experiment import load_experiment
from nascomp.search.samplers.pareto_local import ParetoLocalSearchSampler
from nascomp.trainers.trained import ReusedMoveCost


def test_a_compression_move_costs_the_phases_after_training() -> None:
    train = load_experiment(
        None, ["train.epochs=4", "train.prune_epochs=2", "train.qat_epochs=1"]
    ).train
    cost = ReusedMoveCost.of(train)
    assert cost.share == pytest.approx(4 / 8)  # (2 + 1 + 1) of (4 + 2 + 1 + 1) epochs
    parent = {"arch.n_stages": 2, "prune.ratio": 0.5, "quant.bits": 8, "distill.alpha": 0.5}
    assert cost(parent, {**parent, "quant.bits": 4}) == cost.share
    assert cost(parent, {**parent, "quant.bits": 4, "prune.ratio": 0.7}) == cost.share
    assert cost(parent, {**parent, "arch.n_stages": 3}) == 1.0
    assert cost(parent, {**parent, "distill.alpha": 0.7}) == 1.0  # distillation trains
    assert cost(parent, dict(parent)) == 1.0
    # inheriting: a move that trains costs its 1 epoch and the phases after it
    inheriting = ReusedMoveCost.of(train, inherit_epochs=1)
    assert inheriting.share == cost.share and inheriting.inherited == pytest.approx(5 / 8)
    assert inheriting(parent, {**parent, "arch.n_stages": 3}) == pytest.approx(5 / 8)
    assert inheriting(parent, {**parent, "quant.bits": 4}) == cost.share
    assert inheriting(parent, dict(parent)) == 1.0


def _objective(trial: optuna.Trial) -> tuple[float, float]:
    width = trial.suggest_categorical("arch.width", [8, 16, 32, 64])
    depth = trial.suggest_categorical("arch.depth", [1, 2, 3])
    bits = trial.suggest_categorical("quant.bits", [2, 4, 8, 32])
    ratio = trial.suggest_float("prune.ratio", 0.0, 0.9)
    accuracy = 1 - 1 / (width * depth) - 0.05 * (8 / bits) - 0.1 * ratio**2
    return accuracy, width * width * depth * bits * (1 - ratio)


def _compression_moves(cost: ReusedMoveCost | None, seed: int) -> int:
    """How many of a 40-trial pls search's model-chosen moves changed only the compression."""
    sampler = ParetoLocalSearchSampler(seed=seed, move_cost=cost)
    parents: dict[int, dict] = {}
    choose = sampler._model_choice

    def recording(trial, *args):  # type: ignore[no-untyped-def]
        child = choose(trial, *args)
        parents[trial.number] = dict(sampler._parents.get(trial.number, {}))
        return child

    sampler._model_choice = recording  # type: ignore[method-assign]
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(_objective, n_trials=40)
    count = 0
    for trial in study.trials:
        parent = parents.get(trial.number)
        if parent:
            changed = [k for k, v in trial.params.items() if parent.get(k) != v]
            count += all(k.startswith(("prune.", "quant.")) for k in changed)
    return count


def test_pls_takes_cheaper_moves_more_often() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    blind = sum(_compression_moves(None, seed) for seed in range(5))
    weighed = sum(_compression_moves(ReusedMoveCost(0.3), seed) for seed in range(5))
    # Measured: 81 of 150 moves without the weights, 113 with them.
    assert weighed >= blind + 20, (blind, weighed)
