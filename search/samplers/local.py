"""``tpe_local``: TPE first, then Pareto local search around the front (an Optuna sampler).

The first ``n_warmup_trials`` trials come from the ``warmup`` sampler (TPE by default: good at
finding the promising regions of a space quickly). After that, each trial copies a parent drawn
uniformly from the current Pareto front of the finished, feasible trials and changes one of its
parameters (a categorical to another choice, a number by a Gaussian step of 15% of its range);
a candidate already tried or running is redrawn with one more changed parameter each time, so
no trial is spent twice on one point.

Why: joint architecture spaces are mostly categorical, and the front's neighbours are where
better trade-offs hide. TPE's per-dimension densities and NSGA-II's crossover of distant
parents spend much of a small budget away from the front, and both repeat points (TPE repeated
about 15% of its trials on NAS-Bench-201). Measured against the exact NAS-Bench-201 front in
docs/benchmarks.md ("Search efficiency (issue 4)").

Parameters present in every trial (the intersection search space) are sampled together, so
duplicates can be rejected; conditional ones (e.g. ``prune.ratio`` only when pruning) are copied
from the parent when it had them (changed with probability 1 / its number of parameters) or
drawn at random.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
)
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from nascomp.search.front.pareto import non_dominated_mask
from nascomp.search.samplers import _common as common
from nascomp.search.samplers._common import Constraints

_MAX_REDRAWS = 50


class ParetoLocalSampler(common.ParentSampler):
    def __init__(
        self,
        *,
        seed: int | None = None,
        n_warmup_trials: int = 10,
        warmup: BaseSampler | None = None,
        constraints_func: Constraints | None = None,
    ) -> None:
        self._rng = np.random.default_rng(seed)
        self._random = RandomSampler(seed=seed)
        self._warmup = warmup or RandomSampler(seed=seed)
        self._n_warmup = n_warmup_trials
        self._constraints_func = constraints_func
        self._search_space = IntersectionSearchSpace(include_pruned=True)
        # trial id -> the parent's params, or None while the warmup sampler serves the trial
        self._parents: dict[int, dict[str, Any] | None] = {}

    def _first(self) -> BaseSampler:
        return self._warmup

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        front = self._front(study) if trial.number >= self._n_warmup else []
        self._parents[trial.number] = (
            front[int(self._rng.integers(len(front)))].params if front else None
        )
        self._warmup.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if self._parents.get(trial.number) is None:
            return self._warmup.infer_relative_search_space(study, trial)
        space = self._search_space.calculate(study)
        return {name: dist for name, dist in space.items() if not dist.single()}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        parent = self._parents.get(trial.number)
        if parent is None:
            return self._warmup.sample_relative(study, trial, search_space)
        if not search_space or not set(search_space) <= set(parent):
            return {}
        tried = common.tried(study, search_space)
        names = list(search_space)
        for n_changes in range(1, _MAX_REDRAWS + 1):
            changed = set(self._rng.choice(names, size=min(n_changes, len(names)), replace=False))
            child = {
                name: common.perturb(parent[name], dist, self._rng)
                if name in changed
                else parent[name]
                for name, dist in search_space.items()
            }
            if common.key(child, search_space) not in tried:
                return child
        return {}  # the neighbourhood is exhausted: the rest is drawn at random

    # ------------------------------------------------------------------ helpers
    def _front(self, study: Study) -> list[FrozenTrial]:
        """The non-dominated finished trials among the feasible ones (else the least
        violating)."""
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not done:
            return []
        violation = np.array([common.violation(t) for t in done])
        pool = [t for t, v in zip(done, violation, strict=True) if v <= violation.min()]
        if violation.min() <= 0:
            pool = [t for t, v in zip(done, violation, strict=True) if v <= 0]
        values = common.minimised(pool, study.directions)
        return [pool[i] for i in np.flatnonzero(non_dominated_mask(values))]
