"""The one place where nascomp's space becomes Optuna distributions (define-by-run)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import optuna

from search.local_sampler import Constraints, ParetoLocalSampler
from search.pareto_local_sampler import Features, ParetoLocalSearchSampler
from spaces.config import SearchConfig
from spaces.params import Param


def suggest(trial: optuna.Trial, params: list[Param]) -> dict[str, Any]:
    """Sample every active parameter on ``trial``; return the fixed ones as constants.

    A conditional parameter is asked for only when its condition holds, so Optuna's history of
    the temperature is made of distilled trials alone.
    """
    chosen: dict[str, Any] = {}
    constants: dict[str, Any] = {}
    for param in params:
        if not param.is_active(chosen):
            continue
        if param.kind == "fixed":
            value = param.value
            constants[param.name] = value
        elif param.kind == "choice":
            value = trial.suggest_categorical(param.name, list(param.choices))
        elif param.kind == "int":
            step = int(param.step or 1)
            value = trial.suggest_int(
                param.name, int(param.low), int(param.high), step=step, log=param.log
            )
        else:
            value = trial.suggest_float(
                param.name, param.low, param.high, step=param.step, log=param.log
            )
        chosen[param.name] = value
    return constants


@dataclass(frozen=True)
class DefineByRun:
    """The ``space`` callable for Ray's OptunaSearch: samples, then adds the trial's constants.

    A class, not a closure: Tune pickles the searcher (and so this) into its experiment state.
    """

    params: list[Param]
    constants: dict[str, Any]

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        return {**suggest(trial, self.params), **self.constants}

    def config(self, trial: optuna.Trial) -> dict[str, Any]:
        """The trial's whole flat config, as Ray's OptunaSearch assembles it: the sampled
        values (Optuna's record of them) plus what :meth:`__call__` returns."""
        constants = self(trial)
        return {**trial.params, **constants}


def make_sampler(
    search: SearchConfig,
    constraints_func: Constraints | None = None,
    features: Features | None = None,
) -> optuna.samplers.BaseSampler:
    """The sampler ``search.sampler`` names; ``constraints_func`` reaches those that use one,
    ``features`` (``SpaceConfig.features()``) the one whose model takes them (``pls``)."""
    seed = search.seed
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if search.sampler == "tpe":
            return _tpe(seed, constraints_func)
        if search.sampler == "pls":
            # 10 balanced random start trials seed the model; then model-guided Pareto local search
            # (bench/search_efficiency.py chose both).
            return ParetoLocalSearchSampler(
                seed=seed,
                n_startup_trials=10,
                constraints_func=constraints_func,
                features=features,
            )
        if search.sampler == "tpe_local":
            # TPE finds the good regions in the first 30% of the budget, then local search
            # refines the front (bench/search_efficiency.py chose the split).
            return ParetoLocalSampler(
                seed=seed,
                n_warmup_trials=max(10, round(0.3 * search.trials)),
                warmup=_tpe(seed, constraints_func),
                constraints_func=constraints_func,
            )
        # The default population of 50 would make a 20-trial search pure random sampling.
        population = search.population_size or max(4, min(50, search.trials // 3))
        return optuna.samplers.NSGAIISampler(
            seed=seed, population_size=population, constraints_func=constraints_func
        )


def _tpe(seed: int, constraints_func: Constraints | None) -> optuna.samplers.TPESampler:
    # constant_liar keeps concurrent workers from sampling the same point.
    return optuna.samplers.TPESampler(
        seed=seed,
        multivariate=True,
        group=True,
        constant_liar=True,
        constraints_func=constraints_func,
    )
