"""Which trials make the front, and which one model a rule picks from it.

Plain functions of trial records (``nascomp.search.tracking.store.TrialRecord``: status,
metrics): the driver, the CLI and the tests use them on what MLflow holds.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from nascomp.search.front.pareto import front_order, knee_index, to_minimise
from nascomp.spaces.constraints import is_feasible, parse_constraints, parse_pick
from nascomp.trainers.settings import METRICS

if TYPE_CHECKING:
    from nascomp.search.tracking.store import TrialRecord


def feasible_trials(
    trials: list[TrialRecord], objectives: dict[str, str], constraints: Sequence[str] = ()
) -> list[TrialRecord]:
    """Trials that finished (not infeasible, pruned or failed), report every objective and meet
    every constraint."""
    parsed = parse_constraints(constraints, METRICS)
    return [
        t
        for t in trials
        if t.status == "ok"
        and all(m in t.metrics for m in objectives)
        and is_feasible(parsed, t.metrics)
    ]


def broke_constraints(trials: list[TrialRecord], constraints: Sequence[str] = ()) -> int:
    """How many trials ended ok but broke a constraint."""
    parsed = parse_constraints(constraints, METRICS)
    return sum(t.status == "ok" and not is_feasible(parsed, t.metrics) for t in trials)


def empty_front_reason(
    trials: list[TrialRecord],
    objectives: dict[str, str],
    constraints: Sequence[str] = (),
    budget: str | None = None,
) -> str:
    """Why no trial is on the front, in words: none finished (before a ``budget``, such as
    ``wall_s 30``, was spent, none began), every one that ended ok broke a constraint, or none
    reported every objective."""
    ok = [t for t in trials if t.status == "ok"]
    if not trials and budget is not None:
        return f"no trial began before search.budget ({budget}) was spent: give it more"
    if not trials:
        return "no trial finished"
    if not ok:
        counts = Counter(t.status for t in trials)
        ended = ", ".join(f"{n} {_STATUS_WORDS.get(s, s)}" for s, n in counts.most_common())
        return f"no trial ended ok ({ended})"
    broke = broke_constraints(ok, constraints)
    if broke == len(ok):
        return (
            f"all {broke} trial{'s' if broke != 1 else ''} that ended ok broke a constraint "
            f"({'; '.join(constraints)})"
        )
    missing = sorted({m for t in ok for m in objectives if m not in t.metrics})
    return f"no trial that ended ok reported every objective (missing: {', '.join(missing)})"


_STATUS_WORDS = {"pruned": "stopped early"}


def select_front(
    trials: list[TrialRecord], objectives: dict[str, str], constraints: Sequence[str] = ()
) -> list[TrialRecord]:
    """The Pareto front of the finished, feasible trials, best first by the first objective;
    of trials with one config (a small space's points drawn again), the first to end: the same
    model, whose timings alone differ, and the one the search's hypervolume curve counted
    (``search.tune.callbacks``)."""
    done = first_of_each_config(feasible_trials(trials, objectives, constraints))
    if not done:
        return []
    values = np.array([[t.metrics[m] for m in objectives] for t in done])
    return [done[i] for i in front_order(values, list(objectives.values()))]


def config_key(params: dict[str, Any]) -> str:
    """One config's identity: its params (as MLflow holds them, decoded) in one string."""
    return json.dumps(params, sort_keys=True, default=str)


def first_of_each_config(trials: list[TrialRecord]) -> list[TrialRecord]:
    """``trials`` (in their order) less those whose config an earlier-ended one has: a repeat
    is the same model, so it is neither a second point of the front nor a candidate of a
    pick (a repeat timed faster would otherwise dominate the front's copy of itself)."""
    seen: set[str] = set()
    kept: set[str] = set()
    for trial in sorted(trials, key=lambda t: t.ended_ms):
        key = config_key(trial.params) if trial.params else trial.run_id
        if key not in seen:
            seen.add(key)
            kept.add(trial.run_id)
    return [t for t in trials if t.run_id in kept]


def _refuse_unlogged(named: list[str | None], pool: list[TrialRecord]) -> None:
    """A metric of the rule that none of ``pool`` logs (latency in a NAS-Bench-201 lookup
    search) is named as such, not taken for a condition no trial meets."""
    unlogged = [m for m in dict.fromkeys(named) if pool and not any(m in t.metrics for t in pool)]
    if unlogged:
        raise ValueError(
            f"--pick: no trial of this search logs {unlogged[0]} (its trials log "
            f"{', '.join(sorted(set().union(*(t.metrics for t in pool))))})"
        )


def pick_trial(
    trials: list[TrialRecord],
    objectives: dict[str, str],
    how: str,
    constraints: Sequence[str] = (),
) -> TrialRecord:
    """One model: ``knee [where ...]`` of the front (pareto.knee_index; with conditions, of
    the front members that meet them), or ``max|min <metric> [where ...]`` among all finished
    feasible trials (the best such trial is on the front whenever the metric and the
    conditions are objectives). Ties go to the earlier front rank. Of trials with one config,
    the first to end alone is a candidate, as on the front."""
    pick = parse_pick(how, METRICS)
    front = select_front(trials, objectives, constraints)
    if pick.kind == "knee":
        if not front:
            reason = empty_front_reason(trials, objectives, constraints)
            raise ValueError(f"--pick knee: the front is empty: {reason}")
        _refuse_unlogged([c.metric for c in pick.where], front)
        members = [t for t in front if is_feasible(pick.where, t.metrics)]
        if not members:
            where = " and ".join(map(str, pick.where))
            raise ValueError(f"--pick knee: no member of the front has {where}")
        values = np.array([[t.metrics[m] for m in objectives] for t in members])
        return members[knee_index(to_minimise(values, list(objectives.values())))]
    # Front members first, so a tie goes to the better-ranked model.
    feasible = first_of_each_config(feasible_trials(trials, objectives, constraints))
    pool = front + [t for t in feasible if t not in front]
    _refuse_unlogged([pick.metric, *(c.metric for c in pick.where)], pool)
    pool = [t for t in pool if pick.metric in t.metrics and is_feasible(pick.where, t.metrics)]
    if not pool:
        if not feasible:  # none finished, all broke a constraint...: say which
            reason = empty_front_reason(trials, objectives, constraints)
            raise ValueError(f"--pick: no finished feasible trial: {reason}")
        where = " and ".join(map(str, pick.where))
        if not where:
            raise ValueError(f"--pick: no finished feasible trial reports {pick.metric}")
        raise ValueError(f"--pick: no finished feasible trial has {where}")
    sign = 1.0 if pick.kind == "max" else -1.0
    return max(pool, key=lambda t: sign * t.metrics[pick.metric])
