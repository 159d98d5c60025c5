"""The search strategies, one module each, and :func:`make_sampler`, which picks one by name.

- ``pls`` (:mod:`.pareto_local`): model-guided Pareto local search, the default;
- ``tpe_local`` (:mod:`.local`): TPE, then local search around the front;
- ``nsga2``, ``tpe``, ``random``: Optuna's own samplers.

:mod:`.space` turns nascomp's space into Optuna distributions (the only place that does);
:mod:`._common` holds what the local searches share.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import optuna

from nascomp.search.experiment import SearchConfig
from nascomp.search.samplers._common import Constraints
from nascomp.search.samplers.local import ParetoLocalSampler
from nascomp.search.samplers.pareto_local import Features, ParetoLocalSearchSampler
from nascomp.trainers.trained import after_training

# tpe_local's TPE trials in a search that its budget alone sizes (30% of a count otherwise).
TPE_LOCAL_WARMUP_UNDER_BUDGET = 20


def make_sampler(
    search: SearchConfig,
    constraints_func: Constraints | None = None,
    features: Features | None = None,
    move_cost: Callable[[dict[str, Any], dict[str, Any]], float] | None = None,
    learn_from_stopped: bool = True,
    start_cost: Callable[[dict[str, Any]], float | None] | None = None,
) -> optuna.samplers.BaseSampler:
    """The sampler ``search.sampler`` names; ``constraints_func`` reaches those that use one,
    ``features`` (``SpaceConfig.features()``) the one whose model takes them (``pls``),
    ``move_cost`` (a move's compute relative to a full trial) the one that weighs it (``pls``,
    whose start design then pairs trials on one trained student),
    ``learn_from_stopped`` says whether its model learns from trials stopped early (``pls``;
    off only to measure what that brings, in bench/search_cost.py). ``search.cost_aware`` reaches
    ``pls``, and with it ``start_cost`` (a point's predicted cost of training, as
    ``trainers.predicted.TrainMacs``), which arranges its start design."""
    seed = search.seed
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # Optuna 5 deprecates constraints_func (for Trial.set_constraint) but still uses it;
        # the warning is for this code, not for the user of the search.
        # Optuna's text quotes the name: "`constraints_func` has been deprecated in v5.0.0".
        warnings.filterwarnings(
            "ignore", r"\W?constraints_func\W? has been deprecated", FutureWarning
        )
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
                move_cost=move_cost,
                learn_from_stopped=learn_from_stopped,
                cost_aware=search.cost_aware,
                # Trained students are reused where moves are weighed by their compute: half
                # the start design then reuses the other half's training.
                after_training=after_training if move_cost is not None else None,
                start_cost=start_cost if search.cost_aware else None,
            )
        if search.sampler == "tpe_local":
            # TPE finds the good regions in the first 30% of the trials, then local search
            # refines the front (bench/search_efficiency.py chose the split). A search sized
            # by its budget has no trial count: 30% of its 10,000 cap never ended.
            warmup = (
                TPE_LOCAL_WARMUP_UNDER_BUDGET
                if search.sized_by_budget
                else max(10, round(0.3 * search.trials))
            )
            return ParetoLocalSampler(
                seed=seed,
                n_warmup_trials=warmup,
                warmup=_tpe(seed, constraints_func),
                constraints_func=constraints_func,
            )
        # The default population of 50 would make a 20-trial search pure random sampling; at
        # most the trials, as a population given is (4 for 3 trials passed unsaid), and at
        # least the 2 NSGA-II needs.
        population = search.population_size or default_population(search.trials)
        return optuna.samplers.NSGAIISampler(
            seed=seed, population_size=population, constraints_func=constraints_func
        )


def default_population(trials: int) -> int:
    """NSGA-II's population when ``search.population_size`` is not given."""
    return max(2, min(trials, max(4, min(50, trials // 3))))


def _tpe(seed: int, constraints_func: Constraints | None) -> optuna.samplers.TPESampler:
    # constant_liar keeps concurrent workers from sampling the same point.
    return optuna.samplers.TPESampler(
        seed=seed,
        multivariate=True,
        group=True,
        constant_liar=True,
        constraints_func=constraints_func,
    )
