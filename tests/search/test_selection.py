"""Scheduler promotions, --pick and the plot on hand-made results: no Ray run needed."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from ray.tune.schedulers import TrialScheduler

from nascomp.search.driver import select_front
from nascomp.search.front.hypervolume import HypervolumeHistory
from nascomp.search.front.plot import write_plot
from nascomp.search.front.selection import broke_constraints, empty_front_reason, pick_trial
from nascomp.search.tracking.store import TrialRecord
from nascomp.search.tune.scheduler import MultiObjectiveAsha, promotes, rung_epochs

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP
OBJECTIVES = {"val_accuracy": "max", "latency_ms": "min"}


def test_rungs() -> None:
    assert rung_epochs(1, 2, 10) == [1, 2, 4, 8]
    assert rung_epochs(1, 3, 10) == [1, 3, 9]
    assert rung_epochs(2, 2, 8) == [2, 4]
    assert rung_epochs(1, 1.5, 4) == [1, 2, 3]  # 1, 1.5 -> 2, 2.25 -> 2 (dropped), 3.4 -> 3
    assert rung_epochs(3, 2, 3) == []


def test_promotions_by_pareto_rank_and_crowding() -> None:
    asha = MultiObjectiveAsha({"val_accuracy": "max", "size_bytes": "min"}, max_epochs=8)
    assert asha.rungs == [1, 2, 4]
    # Arrivals at rung 1 (accuracy, size): a trial goes on while the rung holds fewer than 2,
    # when it is on the rung's front, or when fewer than max(1, n // 2) are placed above it.
    arrivals = [
        ("a", (0.50, 100.0), CONTINUE),  # alone at the rung
        ("b", (0.40, 200.0), STOP),  # dominated by a; keep 1 of 2
        ("c", (0.90, 900.0), CONTINUE),  # on the front {a, c}: never stopped
        ("d", (0.30, 50.0), CONTINUE),  # on the front {a, c, d}
        ("e", (0.45, 150.0), STOP),  # second front; a, c and d above it, keep 2 of 5
        ("f", (0.60, 120.0), CONTINUE),  # on the front {a, c, d, f}
    ]
    for trial_id, (accuracy, size), expected in arrivals:
        got = asha.decide(trial_id, 1, {"val_accuracy": accuracy, "size_bytes": size})
        assert got == expected, trial_id


def test_promotes_known_answer() -> None:
    # Minimised values; front {0, 1, 2} with 0 and 2 the ends; 3 dominated.
    values = np.array([[0.0, 3.0], [1.0, 1.0], [3.0, 0.0], [2.0, 2.0]])
    assert promotes(values, 0, 2) and promotes(values, 2, 2)
    assert promotes(values, 1, 2)  # the front's middle: on the rung's front, never stopped
    assert not promotes(values, 3, 2)  # three above it, keep 2
    assert not promotes(values, 3, 4 / 3)  # keep 3 of 4: three are above it


def test_rung_ranks_only_objectives_reported_per_epoch() -> None:
    asha = MultiObjectiveAsha(
        {"val_accuracy": "max", "latency_ms": "min", "size_bytes": "min"}, max_epochs=4
    )
    result = {"epoch": 1, "val_accuracy": 0.5, "size_bytes": 10.0}
    assert asha.ranked_objectives(result) == ["val_accuracy", "size_bytes"]


def test_stopped_trials_are_marked_pruned_for_searcher_and_tracker() -> None:
    asha = MultiObjectiveAsha({"val_accuracy": "max"}, max_epochs=4)

    class FakeTrial:
        def __init__(self, trial_id: str, result: dict) -> None:
            self.trial_id, self.last_result, self.config = trial_id, result, {}

    good = FakeTrial("good", {"epoch": 1, "val_accuracy": 0.9})
    bad = FakeTrial("bad", {"epoch": 1, "val_accuracy": 0.1})
    assert asha.on_trial_result(None, good, dict(good.last_result)) == CONTINUE
    assert asha.on_trial_result(None, bad, dict(bad.last_result)) == STOP
    asha.on_trial_complete(None, bad, dict(bad.last_result))
    asha.on_trial_complete(None, good, dict(good.last_result))
    assert bad.last_result["nascomp_status"] == "pruned"
    assert "nascomp_status" not in good.last_result
    # A final result (it carries the status) is never ranked.
    final = {"epoch": 2, "val_accuracy": 0.0, "nascomp_status": "ok"}
    assert asha.on_trial_result(None, FakeTrial("x", final), final) == CONTINUE


def _record(run_id: str, status: str = "ok", **metrics: float) -> TrialRecord:
    return TrialRecord(run_id, run_id, status, {}, dict(metrics))


# A hand-made search: front = a, b, c, d (accuracy up, latency up); e dominated; f pruned with
# a tempting truncated value; g infeasible.
TRIALS = [
    _record("a", val_accuracy=0.70, latency_ms=1.0, size_bytes=10_000),
    _record("b", val_accuracy=0.85, latency_ms=1.5, size_bytes=40_000),
    _record("c", val_accuracy=0.88, latency_ms=3.0, size_bytes=60_000),
    _record("d", val_accuracy=0.90, latency_ms=6.0, size_bytes=90_000),
    _record("e", val_accuracy=0.80, latency_ms=2.0, size_bytes=20_000),
    _record("f", "pruned", val_accuracy=0.99, latency_ms=0.5),
    _record("g", "infeasible"),
]


def test_front_excludes_pruned_infeasible_and_constraint_violators() -> None:
    assert [t.run_id for t in select_front(TRIALS, OBJECTIVES)] == ["d", "c", "b", "a"]
    constrained = select_front(TRIALS, OBJECTIVES, ["size_bytes <= 50000"])
    # c and d violate the constraint; e stays dominated by b.
    assert [t.run_id for t in constrained] == ["b", "a"]


def test_a_config_trained_twice_is_on_the_front_once() -> None:
    """The same config drawn again (a small space): the same model, its latency measured
    anew; the first trial stands for it."""
    config = {"arch.n_stages": 1, "quant.bits": 8}
    first = TrialRecord("r1", "t1", "ok", dict(config), {"val_accuracy": 0.9, "latency_ms": 1.1})
    again = TrialRecord("r2", "t2", "ok", dict(config), {"val_accuracy": 0.9, "latency_ms": 1.0})
    other = TrialRecord(
        "r3", "t3", "ok", {**config, "quant.bits": 4}, {"val_accuracy": 0.8, "latency_ms": 0.5}
    )
    assert [t.run_id for t in select_front([first, again, other], OBJECTIVES)] == ["r1", "r3"]
    # Not a candidate of a pick either: the faster repeat was picked, off the front.
    assert pick_trial([first, again, other], OBJECTIVES, "min latency_ms").run_id == "r3"
    assert pick_trial([first, again], OBJECTIVES, "min latency_ms").run_id == "r1"
    # The first to end stands for the config (as the search's hypervolume curve counts it),
    # whatever order the runs started in.
    first, again = replace(first, ended_ms=2000), replace(again, ended_ms=1000)
    assert [t.run_id for t in select_front([first, again, other], OBJECTIVES)] == ["r2", "r3"]


def test_a_repeated_config_counts_once_in_the_searchs_hypervolume(tmp_path: Path) -> None:
    """The driver's callback counts, as the front does, a config's first trial to end alone:
    a repeat timed faster made the logged curve the volume of another set than the front's
    (0.257 against 0.079 in a helper's 5-trial search)."""
    from types import SimpleNamespace

    from nascomp.search.tracking.store import Tracker
    from nascomp.search.tune.callbacks import MlflowTrialCallback

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "repeats")
    parent = tracker.client.create_run(tracker.experiment_id(create=True)).info.run_id
    objectives = {"val_accuracy": "max", "latency_ms": "min"}
    callback = MlflowTrialCallback(tracker, parent, objectives, [], echo=lambda _: None)
    callback.setup()
    ends = [
        ("t1", {"quant.bits": 32}, {"val_accuracy": 0.32, "latency_ms": 0.0188}),
        ("t2", {"quant.bits": 8}, {"val_accuracy": 0.56, "latency_ms": 0.0471}),
        ("t3", {"quant.bits": 8}, {"val_accuracy": 0.56, "latency_ms": 0.0331}),  # t2 again
        ("t4", {"quant.bits": 32}, {"val_accuracy": 0.32, "latency_ms": 0.0156}),  # t1 again
    ]
    for trial_id, config, result in ends:
        trial = SimpleNamespace(
            trial_id=trial_id, config=config, last_result=result, checkpoint=None
        )
        callback.on_trial_start(0, [], trial)
        callback.on_trial_result(0, [], trial, {**result, "epochs": 1})  # the final report
        callback.on_trial_complete(0, [], trial)
    callback.log.flush(force=True)
    firsts = HypervolumeHistory(objectives)
    for _, _, result in ends[:2]:
        firsts.add(result)
    assert callback.progress.value == pytest.approx(firsts.value) and firsts.value > 0
    assert callback.progress.n_ended == 4  # every ended trial is a step of the curve
    front = select_front(tracker.trials(parent), objectives)
    assert sorted(t.trial_id for t in front) == ["t1", "t2"]
    assert sorted(callback.front.keys) == ["t1", "t2"]  # the parent's description's front


def test_an_empty_front_says_why() -> None:
    assert empty_front_reason([], OBJECTIVES) == "no trial finished"
    assert empty_front_reason([], OBJECTIVES, budget="wall_s 1e-300") == (
        "no trial began before search.budget (wall_s 1e-300) was spent: give it more"
    )
    assert empty_front_reason(TRIALS[5:], OBJECTIVES) == (
        "no trial ended ok (1 stopped early, 1 infeasible)"
    )
    assert broke_constraints(TRIALS, ["size_bytes <= 10"]) == 5
    assert empty_front_reason(TRIALS, OBJECTIVES, ["size_bytes <= 10"]) == (
        "all 5 trials that ended ok broke a constraint (size_bytes <= 10)"
    )
    no_latency = [_record("h", val_accuracy=0.9, size_bytes=1)]
    assert empty_front_reason(no_latency, OBJECTIVES) == (
        "no trial that ended ok reported every objective (missing: latency_ms)"
    )


@pytest.mark.parametrize(
    ("rule", "constraints", "expected"),
    [
        ("knee", [], "b"),
        ("knee where size_bytes >= 10000", [], "b"),  # every member meets it: the same knee
        ("KNEE WHERE val_accuracy >= 0.85", [], "c"),  # the knee of b, c and d
        ("max val_accuracy", [], "d"),
        ("max val_accuracy where latency_ms <= 2", [], "b"),
        ("max val_accuracy where latency_ms <= 2 and val_accuracy < 0.85", [], "e"),
        ("min latency_ms", [], "a"),
        ("max val_accuracy", ["size_bytes <= 50000"], "b"),
    ],
)
def test_pick(rule: str, constraints: list[str], expected: str) -> None:
    assert pick_trial(TRIALS, OBJECTIVES, rule, constraints).run_id == expected


def test_pick_without_a_candidate_says_why() -> None:
    # every trial broke a constraint: that, not "no trial reports val_accuracy"
    with pytest.raises(ValueError, match=r"^--pick: no finished feasible trial: all 5 trials that"):
        pick_trial(TRIALS, OBJECTIVES, "max val_accuracy", ["size_bytes <= 10"])
    with pytest.raises(ValueError, match=r"no finished feasible trial has latency_ms < 0\.1$"):
        pick_trial(TRIALS, OBJECTIVES, "max val_accuracy where latency_ms < 0.1")
    # an empty front says why it is empty, as max/min do (it said "no feasible trial finished")
    with pytest.raises(ValueError, match=r"^--pick knee: the front is empty: all 5 trials that"):
        pick_trial(TRIALS, OBJECTIVES, "knee", ["size_bytes <= 10"])
    # a metric no trial logs (a lookup search has no latency) is named, not taken for a bound
    with pytest.raises(ValueError, match=r"^--pick knee: no member of the front has latency"):
        pick_trial(TRIALS, OBJECTIVES, "knee where latency_ms < 0.9")
    for rule in ("min macs", "max val_accuracy where macs <= 5", "knee where macs <= 5"):
        with pytest.raises(ValueError, match=r"^--pick: no trial of this search logs macs \(its"):
            pick_trial(TRIALS, OBJECTIVES, rule)


def test_plot_file_is_a_png(tmp_path: Path) -> None:
    feasible = [t for t in TRIALS if t.status == "ok"]
    front = select_front(TRIALS, OBJECTIVES)
    three = {**OBJECTIVES, "size_bytes": "min"}
    for objectives, name in ((OBJECTIVES, "two.png"), (three, "three.png")):
        path = write_plot(feasible, front, objectives, tmp_path / name, "run123")
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    single = write_plot(feasible, front[:1], {"val_accuracy": "max"}, tmp_path / "one.png")
    assert single.stat().st_size > 5000


def test_hypervolume_history_counts_every_ended_trial() -> None:
    history = HypervolumeHistory(OBJECTIVES)
    steps = [history.add(t.metrics if t.status == "ok" else None) for t in TRIALS]
    assert history.n_ended == len(TRIALS)
    # One point: its box under the margin's floor alone, 0.001 of each objective's magnitude.
    assert 0 < steps[0] < 1e-5
    assert all(b >= a for a, b in itertools.pairwise(steps))
    assert steps[-1] == steps[4] > 0  # the pruned and the infeasible trial add nothing


@pytest.mark.parametrize("seed", range(4))
def test_hypervolume_history_equals_the_volume_of_every_point(seed: int) -> None:
    """The running value is the hypervolume of all feasible points so far under the search's
    reference rule, recomputed from scratch, after every ended trial (some off the front,
    some widening the range without reaching the front, some infeasible, duplicates)."""
    from nascomp.search.front.hypervolume import hypervolume, search_reference, search_scale
    from nascomp.search.front.pareto import to_minimise

    objectives = {"val_accuracy": "max", "size_bytes": "min", "latency_ms": "min"}
    rng = np.random.default_rng(seed)
    history = HypervolumeHistory(objectives)
    points: list[list[float]] = []
    for _ in range(120):
        if rng.random() < 0.1:
            assert history.add(None) == history.value
            continue
        row = [float(rng.integers(0, 8)) / 8, float(rng.integers(1, 9)) * 1e4, rng.random()]
        value = history.add(dict(zip(objectives, row, strict=True)))
        points.append(row)
        minimised = to_minimise(np.array(points), list(objectives.values()))
        scaled = minimised / search_scale(minimised[0], list(objectives))
        assert value == pytest.approx(hypervolume(scaled, search_reference(scaled)), rel=1e-12)
    assert history.n_ended == 120 and len(history.front.keys) < len(points)


def test_an_objective_every_trial_ties_on_scales_the_volume_by_a_constant() -> None:
    """onnx_agreement 1.0 in every trial (32-bit models): the curve was 0 at every step, as
    the reference sat on that value. Now it is the curve of the other objectives times the
    floor's margin, 0.001 of 1.0, at every step."""
    two = HypervolumeHistory({"val_accuracy": "max", "size_bytes": "min"})
    three = HypervolumeHistory(
        {"val_accuracy": "max", "size_bytes": "min", "onnx_agreement": "max"}
    )
    rows = [(0.9, 50_000), (0.6, 3_000), (0.95, 90_000), (0.7, 2_500), (0.5, 70_000)]
    for accuracy, size in rows:
        row = {"val_accuracy": accuracy, "size_bytes": size}
        assert three.add({**row, "onnx_agreement": 1.0}) == pytest.approx(0.001 * two.add(row))
    assert three.value > 0
    # Ranges wider than the floor keep the rule of 10% of the range: as before the floor.
    assert two.value == pytest.approx(
        hypervolume_of([(-0.9, 1.0), (-0.6, 0.06), (-0.95, 1.8), (-0.7, 0.05), (-0.5, 1.4)])
    )


def hypervolume_of(points: list[tuple[float, float]]) -> float:
    """The search's volume of scaled, minimised points with the reference of 10% of the range."""
    from nascomp.search.front.hypervolume import hypervolume

    values = np.array(points)
    low, high = values.min(axis=0), values.max(axis=0)
    return hypervolume(values, high + 0.1 * (high - low))


def test_objectives_rarely_meant_are_noted() -> None:
    from nascomp.search.driver import objectives_notes

    assert objectives_notes({"val_accuracy": "max", "size_bytes": "min"}) == []
    assert objectives_notes({"onnx_agreement": "max", "latency_ms": "min"}) == []
    assert objectives_notes(
        {"test_accuracy": "max", "val_accuracy": "min", "size_bytes": "max"}
    ) == [
        "objectives: test_accuracy selects on the test split, so the front's test figures "
        "overstate what new inputs get; select on val_* and read test_* afterwards",
        "objectives.val_accuracy: min searches for the worst such models; max is the usual "
        "direction",
        "objectives.size_bytes: max searches for the largest such models; min is the usual "
        "direction",
    ]
    assert objectives_notes({"test_accuracy": "max"}, test_samples=2000) == [
        "objectives: test_accuracy selects on at most 2,000 samples of the test split "
        "(data.max_test_samples), so the front's test figures overstate what new inputs get; "
        "select on val_* and read test_* afterwards"
    ]
