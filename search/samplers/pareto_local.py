"""``pls``: Pareto local search (Paquete & Stützle) as an Optuna sampler.

After ``n_startup_trials`` from a start sampler, every trial evaluates one
untried single-parameter neighbour of a member of the current non-dominated set of the finished,
feasible trials. A member whose neighbours have all been tried (or are running) is *explored*;
parents are taken from unexplored members, the sparsest part of the front first (crowding
distance; the extremes count as infinitely sparse), and the neighbour is drawn at random among
the parent's untried ones. When every member of the front is explored, the search widens to the
next non-dominated rank (the second front, then the third, ...), whose neighbours are the
"two-step" neighbours of the front; only when every rank is exhausted does it sample at random.

That describes ``parent_order="crowding"``. The default, ``parent_order="model"``, scores every
untried neighbour of the rank's members at once with a kernel ridge model of each objective
(:class:`RidgeModel`: one-hot main effects plus pairwise interactions of parameters, and of the
blocks a space adds through ``features``, such as an NB201 cell's paths) and takes the one
predicted to add the most hypervolume to the front (objectives scaled so the trials span [0, 1];
reference point 1.1, or 10% beyond the worst candidate where that is further out, so a candidate
predicted to extend the front past the most expensive trial counts too). Exchanges (two
parameters with the same choices swapping values: on a cell, the same ops rearranged) are scored
with them but taken only when no single-parameter neighbour is predicted to add any. When no
candidate is, it takes the one whose optimistic prediction (posterior mean minus ``optimism``
posterior standard deviations) adds the most, or misses the front by least: a neighbour the
model already knows well (one that only changes a parameter that has looked irrelevant) then
ranks below one it is unsure of.

Trials stopped early (``search.scheduler: mo_asha``) are never parents and never on the front,
but the model learns from what they had reached when stopped (their objectives at the rung,
``_common.STOPPED_ATTR``), with their fraction of training as an input (:class:`_WithFidelity`);
every candidate is scored as trained to the end. Without this, a search whose rungs stop 60% of
its trials leaves 60% of what it measured unread.

Where the space knows which points compute the same function (``Features.canonical``; on an
NB201 cell, an op on an edge that gets nothing from the input or gives nothing to the output
does nothing), a candidate that computes a function already tried is skipped: such a trial could
only repeat a known accuracy, at best at the cost of the function's canonical form (the cell
without its dead ops). That form is the one exception: a front member's canonical form, when
untried, is a candidate, scored like a single move. Without this, about 30% of a 200-trial NB201
search went to cells that differed from a tried one only on dead edges. And since a move that
changes nothing is never tried, revivals (:func:`revivals`) are candidates too, scored like
single moves: two moves whose first changes nothing, so ops reach both ``none`` edges of a cut
path at once, which single moves could otherwise only do by way of a wasted trial.

The default start is a balanced random design rather than plain random sampling: over the
start trials, each categorical parameter takes every choice equally often (shuffled rounds of
its choices, independently per parameter; a Latin hypercube for categories), numbers are drawn
at random, and no start trial repeats an earlier trial's choices (:meth:`_distinct`). Ten
random trials leave about 3 of NB201's 30 (edge, op) pairs unseen, and a start
that never tried, say, ``skip_connect`` on 3<-0 can spend many trials before the model is
willing to.

Two things make the start cheaper where training is what a trial costs. Where trained
students are reused (``after_training`` names the parameters read after the train phase), the
second half of the start takes the train-phase choices of finished first-half trials and draws
only the rest (pruning, bits): each of those trials reuses a trained student and costs the epochs
after training. With a cost prior (``start_cost``: ``search.cost_aware`` gives each point's MACs
as it trains), the start design's combinations are arranged to cost least, each choice still
appearing as often (:meth:`ParetoLocalSearchSampler._arrange`).

Why: on NAS-Bench-201 the exact front's cells are mostly one edge away from other good cells,
so walking the front's neighbourhood systematically (and never twice) finds them in far fewer
trials than copying a random front member and mutating it (``tpe_local``), which re-draws
parents already explored and leaves sparse parts of the front unvisited. Where single moves
stall (a front built around a residual through two skips, say, where the exact front has one
direct skip), an exchange moves the cell's ops to where they work better at the same cost, and
the path features let the model tell which arrangement will. Measured in docs/benchmarks.md
("Search efficiency (issue 4)").

Neighbours of a parent: each categorical parameter changed to each other choice; each numeric
one moved by +-10% and +-25% of its range (in log space for log parameters, rounded to its step,
clipped, duplicates dropped). Only parameters present in every trial (the intersection search
space) are enumerated; conditional ones are copied from the parent when it had them (changed
with probability 1 / its number of parameters, as in ``tpe_local``) or drawn at random.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState
from threadpoolctl import ThreadpoolController

from nascomp.search.front.hypervolume import (
    NORMALISED_REF,
    contributions,
    gains_3d,
    hypervolume,
    normalise,
)
from nascomp.search.front.pareto import crowding_distance, non_dominated_mask, non_dominated_sort
from nascomp.search.samplers import _common as common
from nascomp.search.samplers._common import Constraints
from nascomp.search.samplers.history import TrialHistory

_NUMERIC_STEPS = (-0.25, -0.1, 0.1, 0.25)  # neighbour moves, as fractions of a numeric range
Params = dict[str, Any]
Move = tuple[Params, tuple, tuple | None]  # a point, its key, the key of its function (or None)
# Trials the ranks and the model look at besides the front (the most recent ones): bounds the
# time per suggestion of a long search (docs/scaling.md).
MAX_HISTORY = 1000
_RIDGE_ALPHA = 0.1  # bench/search_efficiency.py: 1e-2 and 1.0 did worse
_PAIR_ALPHA = 3.0  # penalty of the pairwise interaction features (1.0 and 10.0 did worse)
_OPTIMISM = 1.0  # posterior sds of optimism when no neighbour is predicted to gain
# Arrangements of the start design's combinations that ``start_cost`` compares (``_arrange``).
_START_DESIGNS = 32
# Trials that recorded their cost from scratch before ``cost_aware`` predicts costs: the start
# design gives ten, or five where its second half reuses the first's training (``_pair``).
_MIN_COSTS = 5
PARENT_ORDERS = ("crowding", "hv", "random", "model")
# A stopped trial's fraction of training done, in the model's copy of its point (never a
# parameter name: those are a space's dotted names).
_FIDELITY = "<fidelity>"


_BLAS: ThreadpoolController | None = None


def _one_blas_thread() -> contextlib.AbstractContextManager:
    """BLAS limited to one thread for an ask: its matrices are at most ~1,000 x 200, which
    threads do not speed up, and on a busy machine OpenBLAS's spinning threads made asks 3 to
    7 times slower (19 against 63 to 145 ms at 10,000 trials, load 2; bench/sampler_scaling.py)."""
    global _BLAS
    if _BLAS is None:
        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


class Features(Protocol):
    """Extra feature blocks a space gives the model (e.g. ``spaces.nb201.PathEncoding``).

    ``params`` names the parameters it reads; it is used only when all of them are in the
    search space. Calling it on n points returns blocks of shape (n, width), each treated like a
    parameter's one-hot block: a main effect, and pairwise interactions with every other block.
    """

    params: tuple[str, ...]

    def __call__(self, trials: Sequence[Params]) -> list[np.ndarray]: ...

    def canonical(self, params: Params) -> Params:
        """The cheapest point that computes the same function as ``params`` (for a cell, the
        same cell without ops that cannot reach the output). The search never spends a trial on
        a function it has tried, except on that cheaper form of a front member."""
        ...


class ParetoLocalSearchSampler(common.ParentSampler):
    def __init__(
        self,
        *,
        seed: int | None = None,
        n_startup_trials: int = 10,
        startup: BaseSampler | None = None,
        parent_order: str = "model",
        pair_alpha: float | None = _PAIR_ALPHA,
        optimism: float = _OPTIMISM,
        max_history: int | None = MAX_HISTORY,
        constraints_func: Constraints | None = None,
        features: Features | None = None,
        exchanges: bool = True,
        move_cost: Callable[[Params, Params], float] | None = None,
        learn_from_stopped: bool = True,
        cost_aware: bool = False,
        after_training: Callable[[str], bool] | None = None,
        start_cost: Callable[[Params], float | None] | None = None,
    ) -> None:
        if parent_order not in PARENT_ORDERS:
            raise ValueError(f"parent_order must be one of {PARENT_ORDERS}, not {parent_order!r}")
        self._rng = np.random.default_rng(seed)
        self._random = RandomSampler(seed=seed)
        self._startup = startup or RandomSampler(seed=seed)
        self._balanced_start = startup is None
        # parameter name -> the start trials' choice indices (balanced_start)
        self._design: dict[str, list[int]] = {}
        self._n_startup = n_startup_trials
        self._parent_order = parent_order
        self._pair_alpha = pair_alpha
        self._optimism = optimism
        if max_history is not None and max_history < 1:
            raise ValueError(f"max_history must be at least 1 or None, not {max_history!r}")
        self._max_history = max_history
        self._constraints_func = constraints_func
        self._features = features
        self._exchanges = exchanges
        # (parent params, neighbour) -> its compute relative to a full trial; positive gains
        # are divided by it, so the model ranks moves by gain per compute (None: all cost 1).
        self._move_cost = move_cost
        # Whether the model learns from trials stopped early (their STOPPED_ATTR), with their
        # fraction of training as an input.
        self._learn_from_stopped = learn_from_stopped
        # Whether positive gains are also divided by the point's predicted cost of training
        # from scratch, learned from the trials' COST_ATTR (``_cost_model``).
        self._cost_aware = cost_aware
        # Which parameters a trial reads only after its train phase (its trained student is
        # then reused): with it, the start design pairs its second half with finished trials of
        # its first half (``_pair``).
        self._after_training = after_training
        # start trial number -> the params of the first-half trial it shares its training with
        self._partners: dict[int, Params] = {}
        self._partnered: set[int] = set()  # first-half trials already given a partner
        # A point's predicted cost of training from scratch (a prior, e.g. its MACs): with it,
        # the start design's combinations are arranged to cost least (``_arrange``).
        self._start_cost = start_cost
        self._arranged = False
        self._search_space = IntersectionSearchSpace(include_pruned=True)
        # trial id -> the parent's params once sample_relative chose a neighbour for the trial
        self._parents: dict[int, Params] = {}
        # trial id -> the neighbour handed out, so a concurrent ask cannot get it again before
        # the trial has written its params to storage
        self._pending: dict[int, tuple] = {}
        self._history: TrialHistory | None = None  # what was read of the study, not pickled

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A sampler pickled by an older nascomp (Tune's experiment state, for a search resumed
        # after an upgrade) lacks the newer settings: give it those that keep its behaviour.
        state.setdefault("_features", None)
        state.setdefault("_exchanges", False)
        state.setdefault("_balanced_start", False)
        state.setdefault("_design", {})
        state.setdefault("_move_cost", None)
        state.setdefault("_learn_from_stopped", False)
        state.setdefault("_cost_aware", False)
        state.setdefault("_after_training", None)
        state.setdefault("_partners", {})
        state.setdefault("_partnered", set())
        state.setdefault("_start_cost", None)
        state.setdefault("_arranged", False)
        state["_history"] = None
        self.__dict__.update(state)

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the searcher, sampler included, into every experiment checkpoint: the
        # history is rebuilt from the study on the next ask rather than pickled with it.
        return {**self.__dict__, "_history": None}

    def _first(self) -> BaseSampler:
        return self._startup

    def _in_startup(self, trial: FrozenTrial) -> bool:
        return trial.number < self._n_startup

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._startup.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if self._in_startup(trial):
            return self._startup.infer_relative_search_space(study, trial)
        space = self._search_space.calculate(study)
        return {name: dist for name, dist in sorted(space.items()) if not dist.single()}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> Params:
        if self._in_startup(trial):
            self._pair(study, trial)
            self._arrange(study, trial)
            self._distinct(study, trial)
            return self._startup.sample_relative(study, trial, search_space)
        if not search_space:
            return {}
        with _one_blas_thread():
            return self._suggest(study, trial, search_space)

    def _suggest(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> Params:
        history = self._read(study, search_space)
        tried = history.tried() | set(self._pending.values())
        ranks = self._ranks(history)
        if self._parent_order == "model":
            return self._model_choice(trial, history, ranks, search_space, tried)
        for rank in ranks:
            for parent in self._by_priority(study, [history.done[i] for i in rank]):
                untried = [
                    child
                    for child in neighbours(parent.params, search_space)
                    if common.key(child, search_space) not in tried
                ]
                if untried:
                    child = untried[int(self._rng.integers(len(untried)))]
                    self._parents[trial.number] = parent.params
                    self._pending[trial.number] = common.key(child, search_space)
                    return child
        return {}  # every rank's neighbourhood is exhausted: the rest is drawn at random

    def _without_parent(
        self, study: Study, trial: FrozenTrial, name: str, dist: BaseDistribution
    ) -> Any:
        partner = self._partners.get(trial.number)
        if (
            partner is not None
            and self._after_training is not None
            and not self._after_training(name)
            and name in partner
            and common.contains(dist, partner[name])
        ):
            return partner[name]
        if (
            self._balanced_start
            and self._in_startup(trial)
            and isinstance(dist, CategoricalDistribution)
        ):
            choices = dist.choices
            return choices[self._start_design(name, len(choices))[trial.number]]
        sampler = self._startup if self._in_startup(trial) else self._random
        return sampler.sample_independent(study, trial, name, dist)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._pending.pop(trial.number, None)
        self._partners.pop(trial.number, None)
        super().after_trial(study, trial, state, values)

    # ------------------------------------------------------------------ helpers
    def _pair(self, study: Study, trial: FrozenTrial) -> None:
        """With ``after_training``, a start trial of the design's second half takes the
        train-phase parameters (architecture, distillation, ...) of the earliest finished
        first-half trial not yet paired, and draws only those read after training (pruning,
        bits) from the design: it then reuses that trial's trained student and costs the epochs
        after training, not a trial. Without a finished partner (all still running, stopped or
        failed) it is an ordinary start trial.

        Why: a start trial trains from scratch, and ten of them took about 40% of the search's
        budget in bench/search_cost.py before the model had chosen anything; what pruning and
        bits do is learned as well from one trained student as from two."""
        if self._after_training is None or not self._balanced_start:
            return
        first_half = self._n_startup - self._n_startup // 2
        if trial.number < first_half:
            return
        for done in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if (
                done.number < first_half
                and done.number not in self._partnered
                and not self._would_repeat(study, done, trial.number)
            ):
                self._partnered.add(done.number)
                self._partners[trial.number] = dict(done.params)
                return

    def _would_repeat(self, study: Study, partner: FrozenTrial, number: int) -> bool:
        """Would start trial ``number``, paired with ``partner`` (its training, the design's
        choices of what is read after it), repeat an earlier trial's point? Never where a
        parameter read after training is a number (the trial draws its own); the partner
        itself where the design gives it the partner's choice of each (in a space that
        searches no compression, always); and any earlier trial with the same choices: a start
        trial asked while this partner still trained took the design's own row, which may be
        the partner's training with this row's pruning and bits."""
        assert self._after_training is not None
        point: dict[str, Any] = {}
        for name, dist in partner.distributions.items():
            if dist.single():
                continue
            if not self._after_training(name):
                point[name] = partner.params[name]
                continue
            if not isinstance(dist, CategoricalDistribution):
                return False
            point[name] = dist.choices[self._start_design(name, len(dist.choices))[number]]
        return any(
            {n: v for n, v in done.params.items() if not done.distributions[n].single()} == point
            for done in study.get_trials(deepcopy=False)
            if done.number < number
        )

    def _arrange(self, study: Study, trial: FrozenTrial) -> None:
        """With ``start_cost``, once the first start trial has shown the space (at the second
        ask): of :data:`_START_DESIGNS` arrangements of the start design's remaining trials,
        the one whose points ``start_cost`` predicts to cost least in all. An arrangement
        permutes each categorical parameter's choices among the remaining trials, so each
        choice still appears as often; only which choices meet in one trial changes, so a
        widest layer, a deepest stack and a largest kernel no longer all land on one trial.
        Parameters the first trial did not draw take its values in the prediction. With
        ``after_training`` only the first half is arranged (the second reuses its training),
        within itself, so the first half still holds every choice it held.

        Why: on the MNIST example's space the start trials' CPU-seconds spanned 1 to 100 (one
        trial of ten took 29 to 42% of a search's 240 in bench/search_cost.py, twice the nine
        others together; docs/benchmarks.md); a start whose
        trials cost little reaches the model-guided search sooner."""
        if self._start_cost is None or self._arranged or trial.number < 1:
            return
        self._arranged = True
        first = next((t for t in study.get_trials(deepcopy=False) if t.number == 0), None)
        if first is None or not self._balanced_start:
            return
        end = self._n_startup
        if self._after_training is not None:
            end -= self._n_startup // 2
        positions = list(range(trial.number, end))
        names = [
            name
            for name, dist in first.distributions.items()
            if isinstance(dist, CategoricalDistribution) and name in self._design
        ]
        if len(positions) < 2 or not names:
            return
        cost = self._start_cost

        def total(design: dict[str, list[int]]) -> float:
            spent = 0.0
            for position in positions:
                point = dict(first.params)
                for name in names:
                    choices = first.distributions[name].choices  # type: ignore[attr-defined]
                    point[name] = choices[design[name][position]]
                predicted = cost(point)
                if predicted is None:  # a model that cannot be built: a wasted trial
                    return math.inf
                spent += predicted
            return spent

        designs = [{name: self._design[name] for name in names}]
        for _ in range(_START_DESIGNS - 1):
            design = {}
            for name in names:
                rounds = list(self._design[name])
                order = self._rng.permutation(len(positions))
                kept = [rounds[position] for position in positions]
                for position, i in zip(positions, order, strict=True):
                    rounds[position] = kept[int(i)]
                design[name] = rounds
            designs.append(design)
        self._design.update(min(designs, key=total))

    def _distinct(self, study: Study, trial: FrozenTrial) -> None:
        """Keep start trial ``trial`` from repeating an earlier trial's point. Its design row
        repeats a trial whose parameters are all categorical when it gives each of them that
        trial's choice (a trial that drew a number is left out: the row draws its own).
        Such a row swaps one parameter's choice with a later start trial's, so every choice
        still appears as often; where no swap helps (the last start trial), it takes another
        choice of one parameter; where no choice helps either, every point of the kind has
        been tried and the row is left as it is.

        Why: the design draws each parameter's rounds independently, so in a space of
        categorical choices nothing kept two trials apart: with four binary parameters (16
        points) 16 of 20 seeds repeated a point among their ten start trials, up to four
        times (a sweep of the start design), each a trial that could only repeat a result."""
        if not self._balanced_start or trial.number in self._partners or trial.number < 1:
            return
        k = trial.number
        trials = study.get_trials(deepcopy=False)
        # the points to keep apart from: the choices of those that drew no number (a
        # parameter with one choice is the same in every trial)
        points = [
            {
                name: done.params[name]
                for name, dist in done.distributions.items()
                if not dist.single()
            }
            for done in trials
            if done.number < k
            and all(
                isinstance(dist, CategoricalDistribution) or dist.single()
                for dist in done.distributions.values()
            )
        ]
        choices = {
            name: dist.choices
            for done in trials
            for name, dist in done.distributions.items()
            if isinstance(dist, CategoricalDistribution) and name in self._design
        }

        def repeats() -> bool:
            return any(
                all(
                    name in choices and choices[name][self._design[name][k]] == value
                    for name, value in point.items()
                )
                for point in points
            )

        if not points or not choices or not repeats():
            return
        names = list(choices)
        for i in self._rng.permutation(len(names)):
            rounds = self._design[names[int(i)]]
            for j in range(k + 1, min(self._n_startup, len(rounds))):
                if rounds[j] == rounds[k]:
                    continue
                rounds[k], rounds[j] = rounds[j], rounds[k]
                if not repeats():
                    return
                rounds[k], rounds[j] = rounds[j], rounds[k]
        for i in self._rng.permutation(len(names)):
            rounds, before = self._design[names[int(i)]], self._design[names[int(i)]][k]
            for index in range(len(choices[names[int(i)]])):
                rounds[k] = index
                if not repeats():
                    return
            rounds[k] = before

    def _start_design(self, name: str, n_choices: int) -> list[int]:
        """The choice index of parameter ``name`` in each start trial: shuffled rounds of all
        its choices, so each appears equally often (to within one)."""
        if name not in self._design:
            rounds: list[int] = []
            while len(rounds) < self._n_startup:
                rounds.extend(int(i) for i in self._rng.permutation(n_choices))
            self._design[name] = rounds
        return self._design[name]

    def _read(self, study: Study, space: dict[str, BaseDistribution]) -> TrialHistory:
        """The study's trials as of now, read incrementally (:class:`TrialHistory`)."""
        if self._history is None:
            self._history = TrialHistory()
        self._history.update(study, space, self._canonical(space))
        return self._history

    def _canonical(self, space: dict[str, BaseDistribution]) -> Callable[[Params], Params] | None:
        features = self._usable_features(space)
        return features.canonical if features is not None else None

    def _usable_features(self, space: dict[str, BaseDistribution]) -> Features | None:
        """The space's feature blocks when every parameter they read is enumerated."""
        features = self._features
        if features is not None and not set(features.params) <= set(space):
            return None
        return features

    def _ranks(self, history: TrialHistory) -> list[np.ndarray]:
        """Finished trials that hold every enumerated parameter (positions in
        ``history.done``), split into non-dominated ranks; only feasible ones when any is
        feasible (else the least violating), so an infeasible point never becomes a parent
        while a feasible one exists."""
        if not history.done:
            return []
        violation, values = history.violations, history.values
        if violation.min() <= 0.0:
            pool = np.flatnonzero(violation <= 0.0)
            front = np.array(history.feasible_front, dtype=int)
        else:
            pool = np.flatnonzero(violation <= violation.min())
            front = pool[non_dominated_mask(values[pool])]
        pool = self._window(pool, front)
        fronts = non_dominated_sort(values[pool])
        return [pool[fronts == r] for r in range(fronts.max() + 1)]

    def _window(self, pool: np.ndarray, front: np.ndarray) -> np.ndarray:
        """At most ``max_history`` trials besides the front: the front (``front``, positions
        in ``pool``'s numbering) and the most recent others. The ranks and the model then cost
        the same at 10,000 trials as at ``max_history`` (docs/scaling.md), while every front
        member stays a parent."""
        if self._max_history is None or len(pool) <= self._max_history:
            return pool
        return np.union1d(front, pool[-self._max_history :])

    def _by_priority(self, study: Study, rank: list[FrozenTrial]) -> list[FrozenTrial]:
        """The rank's members, most promising first (random tie-break): sparsest (crowding),
        largest exclusive hypervolume (hv), or in random order."""
        tie_break = self._rng.random(len(rank))
        values = common.minimised(rank, study.directions)
        if self._parent_order == "crowding":
            score = crowding_distance(values)
        elif self._parent_order == "hv":
            unit = normalise(values, values.min(axis=0), values.max(axis=0))
            score = contributions(unit, np.full(values.shape[1], NORMALISED_REF))
        else:
            score = np.zeros(len(rank))
        return [rank[i] for i in np.lexsort((tie_break, -score))]

    def _model_choice(
        self,
        trial: FrozenTrial,
        history: TrialHistory,
        ranks: list[np.ndarray],
        space: dict[str, BaseDistribution],
        tried: set[tuple],
    ) -> Params:
        """Among the untried neighbours of the first rank that has any, the one a ridge model of
        each objective predicts to add the most hypervolume to the front. Exchanges (two
        parameters with the same choices swapping their values) are candidates too, but taken
        only when no single-parameter neighbour is predicted to add any. When no candidate is,
        the one whose optimistic prediction (mean minus ``optimism`` posterior standard
        deviations, objectives minimised) adds the most or misses least. With
        ``features.canonical``, candidates that compute a tried function are left out, and
        revivals and each member's canonical form, if untried, are scored as single moves."""
        if not ranks:
            return {}
        done = np.concatenate(ranks)
        values = history.values[done]
        low, high = values.min(axis=0), values.max(axis=0)
        features = self._usable_features(space)
        model = self._fit_model(history, done, space, low, high)
        front = normalise(history.values[ranks[0]], low, high)
        canonical = features.canonical if features is not None else None
        known = history.functions()
        cost_model = self._cost_model(history, space) if self._cost_aware else None
        for rank in ranks:
            members = [history.done[i] for i in rank]
            pairs, single = self._candidates(members, space, tried, canonical, known, history.memo)
            if not pairs:
                continue
            mean, std = model.predict_std([child for _, child in pairs])
            ref = _reference(mean)
            score = _gains(front, mean, ref)
            is_single = np.array(single)
            if np.any(score[is_single] > 0):
                score = np.where(is_single, score, -np.inf)
            elif self._optimism > 0 and not np.any(score > 0):
                score = _gains(front, mean - self._optimism * std, ref)
            cost = np.ones(len(pairs))
            if self._move_cost is not None:
                cost = np.array([self._move_cost(parent.params, child) for parent, child in pairs])
            if cost_model is not None:
                cost = cost * cost_model([child for _, child in pairs])
            score = np.where(score > 0, score / cost, score)
            best = np.lexsort((self._rng.random(len(pairs)), -score))[0]
            parent, child = pairs[best]
            self._parents[trial.number] = parent.params
            self._pending[trial.number] = common.key(child, space)
            return child
        return {}

    def _fit_model(
        self,
        history: TrialHistory,
        done: np.ndarray,
        space: dict[str, BaseDistribution],
        low: np.ndarray,
        high: np.ndarray,
    ) -> RidgeModel | _Joined:
        """The model of each objective (scaled so ``low`` -> 0, ``high`` -> 1) on the trials
        ``done`` (positions in ``history.done``), and, with ``learn_from_stopped``, on what
        the trials stopped early had reached, for the objectives they measured: their
        fraction of training is then an input (:class:`_WithFidelity`), and candidates are
        scored as trained to the end."""
        features = self._usable_features(space)
        points = [history.point(i) for i in done]
        y = normalise(history.values[done], low, high)
        stopped = self._stopped_rows(history, low, high) if self._learn_from_stopped else None
        model = RidgeModel(space, pair_alpha=self._pair_alpha, features=features)
        if stopped is None:
            return self._fit_cached(model, history, done, points, y)
        stopped_points, stopped_y, levels, measured = stopped
        learner = RidgeModel(
            space, pair_alpha=self._pair_alpha, features=_WithFidelity(features, levels)
        )

        # feature blocks (and explicit features) built once per trial, as _fit_cached does
        def stopped_blocks(points: list[Params], fidelity: np.ndarray) -> list[np.ndarray]:
            return learner.blocks(_with_fidelity(points, fidelity))

        def design(blocks: list[np.ndarray]) -> list[np.ndarray]:
            return [learner.design(blocks)]

        name, last = f"blocks+fidelity{levels}", self._max_history
        pairs = zip(
            history.rows(name, done, learner.blocks),
            history.stopped_rows(name, stopped_blocks, last),
            strict=True,
        )
        blocks = [np.concatenate(pair) for pair in pairs]
        explicit = None
        if learner.primal(blocks):
            name = f"design+fidelity{levels}"
            explicit = np.concatenate(
                [
                    history.rows(name, done, lambda p: design(learner.blocks(p)))[0],
                    history.stopped_rows(name, lambda p, f: design(stopped_blocks(p, f)), last)[0],
                ]
            )
        learner.fit(
            points + stopped_points,
            np.concatenate([y[:, measured], stopped_y[:, measured]]),
            blocks=blocks,
            design=explicit,
        )
        rest = [m for m in range(y.shape[1]) if m not in measured]
        if not rest:
            return learner
        model = self._fit_cached(model, history, done, points, y[:, rest])
        return _Joined(y.shape[1], [(measured, learner), (rest, model)])

    def _cost_model(
        self, history: TrialHistory, space: dict[str, BaseDistribution]
    ) -> Callable[[list[Params]], np.ndarray] | None:
        """What training each point from scratch is predicted to cost, relative to the
        geometric mean of the trials that recorded theirs (the ``max_history`` most recent):
        a ridge model of their log-seconds on the objectives' features, its predictions kept
        within the range recorded. None until :data:`_MIN_COSTS` trials recorded a cost.

        Trial costs differ by an order of magnitude across an architecture space (4 to 77
        CPU-s on the MNIST example, bench/search_cost.py); divided by it, a gain is ranked per
        second of compute, as ``move_cost`` ranks it per epoch."""
        positions, log_cost = history.costs(last=self._max_history)
        if len(positions) < _MIN_COSTS:
            return None
        features = self._usable_features(space)
        model = RidgeModel(space, pair_alpha=self._pair_alpha, features=features)
        points = [history.point(i) for i in positions]
        centre = float(log_cost.mean())
        self._fit_cached(model, history, positions, points, (log_cost - centre)[:, None])
        low, high = float(log_cost.min()) - centre, float(log_cost.max()) - centre
        return lambda children: np.exp(np.clip(model.predict(children)[:, 0], low, high))

    def _fit_cached(
        self,
        model: RidgeModel,
        history: TrialHistory,
        done: np.ndarray,
        points: list[Params],
        y: np.ndarray,
    ) -> RidgeModel:
        """``model`` fit to ``done``'s ``points`` and ``y``, their feature blocks (and, solved
        in the primal, their explicit features) built once per trial."""
        blocks = history.rows("blocks", done, model.blocks)
        design = None
        if model.primal(blocks):
            design = history.rows("design", done, lambda p: [model.design(model.blocks(p))])[0]
        return model.fit(points, y, blocks=blocks, design=design)

    def _stopped_rows(
        self, history: TrialHistory, low: np.ndarray, high: np.ndarray
    ) -> tuple[list[Params], np.ndarray, tuple[float, ...], list[int]] | None:
        """What the stopped trials (the ``max_history`` most recent) reached, as model rows:
        their points with their fidelity, their objectives scaled like the finished trials',
        the fidelities seen, and the objectives every one of them measured (None: no such
        trial, or no such objective)."""
        points, values, fidelity = history.stopped(last=self._max_history)
        measured = [m for m in range(values.shape[1]) if np.all(np.isfinite(values[:, m]))]
        if not points or not measured:
            return None
        levels = tuple(sorted(set(fidelity.tolist())))
        return _with_fidelity(points, fidelity), normalise(values, low, high), levels, measured

    def _candidates(
        self,
        rank: list[FrozenTrial],
        space: dict[str, BaseDistribution],
        tried: set[tuple],
        canonical: Callable[[Params], Params] | None,
        known: set[tuple],
        memo: dict[tuple, list[Move]] | None = None,
    ) -> tuple[list[tuple[FrozenTrial, Params]], list[bool]]:
        """The untried points the rank's members lead to, each once, as (parent, point), and
        whether each is scored as a single move: single-parameter neighbours, exchanges (not
        single), and with ``canonical`` revivals and each member's canonical form. A point that
        computes a known function is left out, except a member's canonical form.

        A member's moves depend on its params alone: ``memo`` (kept per study and space by
        :class:`TrialHistory`) holds them by (kind, trial number), so a member that stays on
        the front for many asks has them enumerated and keyed once."""
        memo = {} if memo is None else memo
        pairs: list[tuple[FrozenTrial, Params]] = []
        single: list[bool] = []
        seen = set(tried)
        swaps = _exchangeable(space)
        generators: dict[str, Callable[[Params], list[Params]]] = {
            "neighbours": lambda p: neighbours(p, space),
            "exchanges": lambda p: exchanges(p, space, swaps),
        }
        kinds = [("neighbours", True)]
        if self._exchanges:
            kinds.append(("exchanges", False))
        if canonical is not None:
            generators["revivals"] = lambda p: revivals(p, space, canonical)
            generators["canonical"] = lambda p: [canonical(p)]
            kinds.append(("revivals", True))

        def moves(kind: str, parent: FrozenTrial) -> list[Move]:
            if (kind, parent.number) not in memo:
                point = {name: parent.params[name] for name in space}
                memo[kind, parent.number] = [
                    (
                        child,
                        common.key(child, space),
                        common.key(canonical(child), space) if canonical is not None else None,
                    )
                    for child in generators[kind](point)
                ]
            return memo[kind, parent.number]

        def add(parent: FrozenTrial, move: Move, is_single: bool, any_function: bool) -> None:
            child, key, function = move
            if key in seen or (not any_function and function is not None and function in known):
                return
            seen.add(key)
            pairs.append((parent, child))
            single.append(is_single)

        for kind, is_single in kinds:
            for parent in rank:
                for move in moves(kind, parent):
                    add(parent, move, is_single, any_function=False)
        if canonical is not None:  # a member's cheaper form, scored as a single move
            for parent in rank:
                add(parent, moves("canonical", parent)[0], True, any_function=True)
        return pairs, single


class RidgeModel:
    """Kernel ridge regression of every objective on the parameters, intercept not shrunk.

    Features: one-hot categoricals and numbers scaled to [0, 1] (``_features``), plus the blocks
    ``features`` adds (:class:`Features`), penalty ``alpha``; with ``pair_alpha``, also the
    products of the features of every two different blocks (for categoricals: one indicator per
    pair of choices), penalty ``pair_alpha``.
    Solved in the dual (n trials x n trials), so the pairwise features are never built: the
    kernel of two points is ``sum_p a_p / alpha + sum_{p<q} a_p a_q / pair_alpha`` where
    ``a_p`` is the inner product of block ``p``'s features. When there are more trials than
    features (main effects and pairs: ~210 on the quickstart space, thousands on NB201's
    cells), the same fit is solved in the primal instead, features x features: at 1,000 trials
    a 214 x 214 system against a 1,001 x 1,001 one (bench/sampler_scaling.py). Both give the
    same predictions and standard deviations (tested).

    The same fit is the posterior mean of a Gaussian process with that kernel (times a scale
    ``s2``), noise variance ``s2`` and a flat prior on the intercept; :meth:`predict` can
    return the posterior standard deviation of each objective's mean too, with ``s2`` the
    maximum-likelihood scale ``y' (K + I)^-1 y / n`` per objective.
    """

    def __init__(
        self,
        space: dict[str, BaseDistribution],
        *,
        alpha: float = _RIDGE_ALPHA,
        pair_alpha: float | None = None,
        features: Callable[[Sequence[Params]], list[np.ndarray]] | None = None,
        solver: str = "auto",
    ) -> None:
        if solver not in ("auto", "primal", "dual"):
            raise ValueError(f"solver must be auto, primal or dual, not {solver!r}")
        self._solver = solver
        self._space = space
        self._alpha = alpha
        self._pair_alpha = pair_alpha
        self._features = features
        self._train: list[np.ndarray] = []
        self._dual = np.zeros((0, 0))
        self._intercept = np.zeros(0)
        self._inverse = np.zeros((0, 0))
        self._scale = np.zeros(0)
        self._weights: np.ndarray | None = None  # primal: feature weights, intercept last

    def fit(
        self,
        params: list[Params],
        y: np.ndarray,
        blocks: list[np.ndarray] | None = None,
        design: np.ndarray | None = None,
    ) -> RidgeModel:
        """Fit to ``params`` and their objectives ``y`` (n, n objectives); ``blocks`` and
        ``design``, when given, are ``self.blocks(params)`` and ``self.design(blocks)``
        computed earlier (a cache of them)."""
        y = np.asarray(y, dtype=float).reshape(len(params), -1)
        self._train = blocks if blocks is not None else self.blocks(params)
        n = len(params)
        if self.primal(self._train):
            return self._fit_primal(y, self.design(self._train) if design is None else design)
        self._weights = None
        system = np.zeros((n + 1, n + 1))
        system[:n, :n] = self._kernel(self._train, self._train) + np.eye(n)
        system[:n, n] = system[n, :n] = 1.0
        self._inverse = np.linalg.inv(system)
        solution = self._inverse[:, :n] @ y
        self._dual, self._intercept = solution[:n], solution[n]
        self._scale = np.sqrt(np.maximum(np.sum(y * self._dual, axis=0), 0.0) / n)
        return self

    def primal(self, blocks: list[np.ndarray]) -> bool:
        """Whether a fit to these blocks' points is solved in the primal: with ``solver``
        auto, when there are fewer features than points."""
        if self._solver != "auto":
            return self._solver == "primal"
        return self._width(blocks) < (blocks[0].shape[0] if blocks else 0)

    def _fit_primal(self, y: np.ndarray, design: np.ndarray) -> RidgeModel:
        """Ridge on the explicit features (penalty 1, the kernel's scales folded into them)
        with an unpenalised intercept; the posterior covariance of the weights is
        ``s2 (X'X + P)^-1``. The residuals are what the dual's coefficients would be."""
        penalty = np.eye(design.shape[1])
        penalty[-1, -1] = 0.0
        self._inverse = np.linalg.inv(design.T @ design + penalty)
        self._weights = self._inverse @ (design.T @ y)
        residual = y - design @ self._weights
        self._scale = np.sqrt(np.maximum(np.sum(y * residual, axis=0), 0.0) / len(y))
        return self

    def predict(self, params: list[Params]) -> np.ndarray:
        """Predicted objectives, (len(params), n objectives)."""
        blocks = self.blocks(params)
        if self._weights is not None:
            return self.design(blocks) @ self._weights
        return self._kernel(blocks, self._train) @ self._dual + self._intercept

    def predict_std(self, params: list[Params]) -> tuple[np.ndarray, np.ndarray]:
        """Predicted objectives and the posterior standard deviation of each, both
        (len(params), n objectives)."""
        blocks = self.blocks(params)
        if self._weights is not None:
            design = self.design(blocks)
            variance = np.maximum(np.sum((design @ self._inverse) * design, axis=1), 0.0)
            return design @ self._weights, np.sqrt(variance)[:, None] * self._scale
        cross = np.c_[self._kernel(blocks, self._train), np.ones(len(params))]
        mean = cross[:, :-1] @ self._dual + self._intercept
        prior = self._combine([np.sum(b * b, axis=1) for b in blocks])
        variance = np.maximum(prior - np.sum((cross @ self._inverse) * cross, axis=1), 0.0)
        return mean, np.sqrt(variance)[:, None] * self._scale

    def blocks(self, params: Sequence[Params]) -> list[np.ndarray]:
        """The model's feature blocks of ``params``: one (len(params), width) array each."""
        extra = self._features(params) if self._features is not None else []
        return [*_blocks(params, self._space), *extra]

    def _width(self, blocks: list[np.ndarray]) -> int:
        """How many explicit features the kernel has: every block's, and every product of
        two blocks' with ``pair_alpha``."""
        widths = np.array([block.shape[1] for block in blocks])
        pairs = (widths.sum() ** 2 - np.sum(widths**2)) // 2 if self._pair_alpha is not None else 0
        return int(widths.sum() + pairs)

    def design(self, blocks: list[np.ndarray]) -> np.ndarray:
        """The explicit features whose inner products are the kernel, and a column of ones."""
        n = blocks[0].shape[0] if blocks else 0
        parts = [block / math.sqrt(self._alpha) for block in blocks]
        if self._pair_alpha is not None:
            scale = math.sqrt(self._pair_alpha)
            for i, left in enumerate(blocks):
                for right in blocks[i + 1 :]:
                    parts.append(np.einsum("ni,nj->nij", left, right).reshape(n, -1) / scale)
        return np.hstack([*parts, np.ones((n, 1))])

    def _kernel(self, left: list[np.ndarray], right: list[np.ndarray]) -> np.ndarray:
        """:meth:`_combine` of each block's inner products, added up in place as each is made:
        the same sums in the same order as summing the stacked list, bit for bit (tested), but
        without stacking B n x n arrays, twice. In NAS-Bench-201's cell space (the model in the
        dual) that took most of a suggestion from 1,000 trials on: 125 to 140 ms against 30 to
        40 ms for 1,000 x 1,000 kernels of 6 to 12 blocks (docs/scaling.md)."""
        main = square = None
        for a, b in zip(left, right, strict=True):
            inner = a @ b.T
            if main is None:
                main = inner
                square = np.square(inner) if self._pair_alpha is not None else None
                continue
            main += inner
            if square is not None:
                square += np.square(inner)
        if main is None:
            return self._combine([])
        kernel = main / self._alpha
        if square is not None:
            pairs = (main**2 - square) / 2.0
            kernel = kernel + pairs / self._pair_alpha
        return kernel

    def _combine(self, inner: list[np.ndarray]) -> np.ndarray:
        main = np.sum(inner, axis=0)
        kernel = main / self._alpha
        if self._pair_alpha is not None:
            pairs = (main**2 - np.sum(np.square(inner), axis=0)) / 2.0
            kernel = kernel + pairs / self._pair_alpha
        return kernel


class _WithFidelity:
    """Feature blocks (those of ``features``, if any) plus one for how much of its training a
    point had when measured: one-hot over the fractions the stopped trials reached
    (``levels``), all zero for a trial trained to the end and for every candidate, which the
    model therefore scores as trained to the end.

    With pairwise interactions, the fidelity block's products with each parameter's let the
    model learn that a choice trains slower (ranks lower at epoch 1 than at the end); its main
    effect absorbs how much lower every objective is at a fidelity. One model with the budget
    as an input is how FABOLAS (Klein et al., 2017) learns from training on data subsets; the
    budget here is the fraction of the training epochs.
    """

    def __init__(self, features: Features | None, levels: Sequence[float]) -> None:
        self.features = features
        self.levels = list(levels)

    def __call__(self, params: Sequence[Params]) -> list[np.ndarray]:
        blocks = list(self.features(params)) if self.features is not None else []
        fidelity = np.zeros((len(params), len(self.levels)))
        for row, point in enumerate(params):
            if point.get(_FIDELITY) is not None:
                fidelity[row, self.levels.index(point[_FIDELITY])] = 1.0
        return [*blocks, fidelity]


def _with_fidelity(points: Sequence[Params], fidelity: np.ndarray) -> list[Params]:
    """``points`` with their fraction of training done, as :class:`_WithFidelity` reads it."""
    return [{**point, _FIDELITY: float(f)} for point, f in zip(points, fidelity, strict=True)]


class _Joined:
    """Models of different objectives (columns), predicting as one."""

    def __init__(self, n_objectives: int, parts: list[tuple[list[int], RidgeModel]]) -> None:
        self.n_objectives, self.parts = n_objectives, parts

    def predict_std(self, params: list[Params]) -> tuple[np.ndarray, np.ndarray]:
        mean = np.zeros((len(params), self.n_objectives))
        std = np.zeros_like(mean)
        for columns, model in self.parts:
            mean[:, columns], std[:, columns] = model.predict_std(params)
        return mean, std


def _blocks(params: list[Params], space: dict[str, BaseDistribution]) -> list[np.ndarray]:
    """Per parameter (names sorted), the (n, its width) block of ``_features``."""
    out = []
    for name in sorted(space):
        sub = {name: space[name]}
        out.append(
            np.array([_features(p, sub) for p in params], dtype=float).reshape(len(params), -1)
        )
    return out


def _features(params: Params, space: dict[str, BaseDistribution]) -> list[float]:
    """One-hot categoricals and numbers scaled to [0, 1] (log space for log parameters)."""
    out: list[float] = []
    for name in sorted(space):
        dist, value = space[name], params[name]
        if isinstance(dist, CategoricalDistribution):
            out.extend(float(choice == value) for choice in dist.choices)
        else:
            f = math.log if dist.log else float
            out.append((f(value) - f(dist.low)) / ((f(dist.high) - f(dist.low)) or 1.0))
    return out


def _reference(points: np.ndarray) -> np.ndarray:
    """The reference point of the gains, in the space where the trials span [0, 1]: 1.1 (10%
    beyond the worst trial, as the bench's rule), moved out to 10% beyond any candidate that is
    worse than that.

    With a fixed 1.1, a candidate more accurate than every trial but more expensive than all of
    them by more than 10% of their range would add nothing, however accurate it is predicted to
    be; the front's accurate end could then grow only through cells cheaper than the most
    expensive trial so far (on NAS-Bench-201, the search would stay among small cells)."""
    return np.maximum(NORMALISED_REF, points.max(axis=0) + (NORMALISED_REF - 1.0))


def _gains(front: np.ndarray, points: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per row of ``points``, the hypervolume it alone would add to ``front`` (reference
    ``ref``); when it adds none, minus how far it is from doing so (the additive epsilon), so
    near misses rank first."""
    if front.shape[1] == 2:
        gain = _gains_2d(front, points, ref)
    else:
        gain = gains_3d(front, points, ref) if front.shape[1] == 3 else None
        if gain is None:  # four or more objectives, or a front too large for the grid
            base = hypervolume(front, ref)
            gain = np.array([hypervolume(np.vstack([front, p]), ref) - base for p in points])
    miss = -np.min(np.max(points[:, None, :] - front[None, :, :], axis=2), axis=1)
    return np.where(gain > 0, gain, miss)


def _gains_2d(front: np.ndarray, points: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Exact two-objective hypervolume gains, all points at once: below the front's staircase
    (height ``h_j`` over ``[x_j, x_j+1)``), a point ``(x, y)`` adds ``max(0, h_j - y)`` times
    the part of the step right of ``x``."""
    inside = front[np.all(front < ref, axis=1)]
    inside = inside[non_dominated_mask(inside)] if len(inside) else inside
    inside = inside[np.argsort(inside[:, 0], kind="stable")]
    starts = np.r_[-np.inf, inside[:, 0]]
    ends = np.r_[inside[:, 0], ref[0]]
    heights = np.r_[ref[1], inside[:, 1]]
    x, y = points[:, :1], points[:, 1:]
    widths = np.clip(ends - np.maximum(starts, x), 0.0, None)
    return np.sum(widths * np.clip(heights - y, 0.0, None), axis=1)


def neighbours(params: Params, space: dict[str, BaseDistribution]) -> list[Params]:
    """Every point that differs from ``params`` in one parameter of ``space``, in a fixed order
    (parameter names sorted, then each one's moves)."""
    out = []
    for name in sorted(space):
        for value in _moves(params[name], space[name]):
            out.append({**{n: params[n] for n in space}, name: value})
    return out


def exchanges(
    params: Params,
    space: dict[str, BaseDistribution],
    swaps: list[tuple[str, str]] | None = None,
) -> list[Params]:
    """Every point where two categorical parameters of ``space`` with the same choices swap
    their (different) values, in a fixed order. On a cell of ops (NB201's 6 edges), an exchange
    keeps the ops and so the cost and rearranges where they sit, which a single-parameter move
    cannot do without passing through a worse cell. ``swaps``: ``_exchangeable(space)``, when
    the caller has it already."""
    out = []
    for first, second in _exchangeable(space) if swaps is None else swaps:
        if params[first] != params[second]:
            out.append(
                {**{n: params[n] for n in space}, first: params[second], second: params[first]}
            )
    return out


def _exchangeable(space: dict[str, BaseDistribution]) -> list[tuple[str, str]]:
    """The pairs of categorical parameters with the same choices, names sorted."""
    names = sorted(space)
    return [
        (first, second)
        for i, first in enumerate(names)
        for second in names[i + 1 :]
        if isinstance(space[first], CategoricalDistribution) and space[first] == space[second]
    ]


def revivals(
    params: Params, space: dict[str, BaseDistribution], canonical: Callable[[Params], Params]
) -> list[Params]:
    """Every point two single-parameter moves from ``params`` whose first move alone changes
    nothing (the same canonical form: on a cell, an op put on a dead edge) and whose function
    no single move reaches. On a cell: a path cut by two ``none`` edges, made live with ops on
    both. Since a move that changes nothing is never tried, no single move can get there."""
    base = common.key(canonical(params), space)
    firsts = [(first, common.key(canonical(first), space)) for first in neighbours(params, space)]
    near = {base} | {function for _, function in firsts}
    out: dict[tuple, Params] = {}
    for first, function in firsts:
        if function == base:
            for second in neighbours(first, space):
                if common.key(canonical(second), space) not in near:
                    out.setdefault(common.key(second, space), second)
    return list(out.values())


def _moves(value: Any, dist: BaseDistribution) -> list[Any]:
    if isinstance(dist, CategoricalDistribution):
        return [choice for choice in dist.choices if choice != value]
    if isinstance(dist, FloatDistribution | IntDistribution):
        moved = [_shift(value, dist, fraction) for fraction in _NUMERIC_STEPS]
        return list(dict.fromkeys(m for m in moved if m != value))
    raise TypeError(f"cannot enumerate the neighbours of a {type(dist).__name__}")


def _shift(value: float, dist: FloatDistribution | IntDistribution, fraction: float) -> Any:
    """``value`` moved by ``fraction`` of the range (log space for log parameters), snapped to
    the step (at least one step, so an integer always moves) and clipped to the bounds."""
    to_space, from_space = (math.log, math.exp) if dist.log else (float, float)
    low, high = to_space(dist.low), to_space(dist.high)
    moved = from_space(to_space(value) + fraction * (high - low))
    step = dist.step or (1 if isinstance(dist, IntDistribution) else None)
    if step is not None:
        n_steps = round((moved - value) / step)
        n_steps = n_steps or int(math.copysign(1, fraction))
        moved = value + n_steps * step
    moved = min(dist.high, max(dist.low, moved))
    return round(moved) if isinstance(dist, IntDistribution) else float(moved)
