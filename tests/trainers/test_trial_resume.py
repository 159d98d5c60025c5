"""A trial killed after any epoch and resumed from that epoch's checkpoint ends exactly as the
uninterrupted run does (CPU): same per-epoch metrics after the resume point, same final
metrics, bit-identical weights. Real digits data, tiny models, one or two epochs per phase."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from nascomp.search.experiment import load_experiment, trial_constants
from nascomp.spaces.models import build_model
from nascomp.trainers.checkpoint import load_state, save_state
from nascomp.trainers.config import TrialConfig
from nascomp.trainers.trial import RESTARTED_NOTE, StateFn, TrialOutcome, run_trial
from tests.trainers.configs import SMALL_CNN

FAST = [
    "measure.n_warmup=1",
    "measure.n_repeat=1",
    "measure.latency_batch_size=4",
    "space.distill.enabled=false",
]
# A small teacher whose feature map differs from the student's in width and resolution.
TEACHER = {
    "teacher.arch.family": "cnn",
    "teacher.arch.n_stages": 1,
    "teacher.arch.base_channels": 12,
    "teacher.arch.block": "plain",
}
DISTILL = {"distill.enabled": True, "distill.temperature": 2.0, "distill.alpha": 0.5}
FINAL = ("val_accuracy", "test_accuracy", "params", "nonzero_params", "size_bytes", "macs")


def config(**sampled: Any) -> dict[str, Any]:
    base = {
        **SMALL_CNN,
        "train.epochs": 2,
        "train.prune_epochs": 2,
        "train.qat_epochs": 2,
        **TEACHER,
    }
    return {**trial_constants(load_experiment(None, FAST)), **base, **sampled}


def pruned(method: str, scope: str, prune_epochs: int, bits: int) -> dict[str, Any]:
    return {
        "prune.method": method,
        "prune.ratio": 0.5,
        "prune.importance": "l2",
        "prune.scope": scope,
        "train.prune_epochs": prune_epochs,
        "quant.bits": bits,
    }


# name -> (flat config, epochs to resume after); every phase boundary and the last epoch.
CASES: dict[str, tuple[dict[str, Any], tuple[int, ...]]] = {
    "plain": (config(), (1, 2)),
    # Hint and projector mid-training; the hint ends at the train -> prune boundary (epoch 2).
    "distill_features": (
        config(**DISTILL, **{"distill.features": True}, **pruned("structured", "layer", 2, 32)),
        (1, 2, 3, 4),
    ),
    "unstructured_qat8": (
        config(**{"train.epochs": 1}, **pruned("unstructured", "global", 2, 8)),
        (1, 2, 3, 4, 5),
    ),
    "structured_qat4": (
        config(**{"train.epochs": 1}, **pruned("structured", "global", 2, 4)),
        (1, 2, 3, 4, 5),
    ),
    # Crops from the trial's generator, the teacher run per batch, and masks made with no
    # prune epoch (the prune "phase" happens between the last train and the first QAT epoch).
    "augment": (
        config(
            **DISTILL,
            **pruned("unstructured", "layer", 0, 8),
            **{"train.qat_epochs": 1, "train.augment.padding": 1, "train.augment.flip": True},
        ),
        (1, 2, 3),
    ),
}


@dataclass
class Run:
    outcome: TrialOutcome
    metrics: list[dict[str, Any]] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)  # read back from files


@pytest.fixture(scope="module")
def teacher_state() -> dict[str, torch.Tensor]:
    """An untrained teacher: distillation's mechanism is what is resumed, not its quality."""
    cfg = TrialConfig.from_flat(config())
    data = cfg.data.load()
    torch.manual_seed(0)
    return build_model(cfg.teacher.arch, data.input_shape, data.n_classes).state_dict()


def run_checkpointed(
    flat: dict[str, Any], teacher: dict, folder: Path, resume: dict | None = None
) -> Run:
    """run_trial with every epoch's state written with save_state and read with load_state."""
    run = Run(outcome=TrialOutcome(status="pending"))

    def checkpoint(metrics: dict[str, Any], make_state: StateFn) -> None:
        path = folder / f"epoch_{metrics['epoch']}.pt"
        save_state(path, make_state())
        run.metrics.append(metrics)
        run.states.append(load_state(path))

    run.outcome = run_trial(flat, teacher_state=teacher, checkpoint=checkpoint, resume=resume)
    return run


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, teacher_state: dict):
    runs: dict[str, Run] = {}

    def get(name: str) -> Run:
        if name not in runs:
            folder = tmp_path_factory.mktemp(name)
            runs[name] = run_checkpointed(CASES[name][0], teacher_state, folder)
        return runs[name]

    return get


def assert_same_model(resumed: TrialOutcome, expected: TrialOutcome) -> None:
    assert resumed.model is not None and expected.model is not None
    got, want = resumed.model.state_dict(), expected.model.state_dict()
    assert list(got) == list(want)
    for name, tensor in want.items():
        assert got[name].shape == tensor.shape, name
        assert torch.equal(got[name], tensor), name


@pytest.mark.parametrize(("name", "k"), [(name, k) for name, (_, ks) in CASES.items() for k in ks])
def test_resume_after_epoch_k_ends_as_the_uninterrupted_run(
    name: str, k: int, uninterrupted, teacher_state: dict, tmp_path: Path
) -> None:
    full = uninterrupted(name)
    n_epochs = full.outcome.metrics["epochs"]
    assert [m["epoch"] for m in full.metrics] == list(range(1, n_epochs + 1))
    assert full.states[k - 1]["epoch"] == k

    # A copy: resuming trains the state's tensors in place, and the module's runs are shared
    state = copy.deepcopy(full.states[k - 1])
    resumed = run_checkpointed(CASES[name][0], teacher_state, tmp_path, state)

    assert resumed.outcome.status == "ok"
    assert resumed.metrics == full.metrics[k:]  # only the epochs after k, identical
    for metric in (*FINAL, "epochs"):
        assert resumed.outcome.metrics[metric] == full.outcome.metrics[metric], metric
    assert resumed.outcome.info == full.outcome.info
    assert_same_model(resumed.outcome, full.outcome)


def test_phases_cover_the_boundaries(uninterrupted) -> None:
    """The cases above really cross the boundaries they claim to (a guard on the test)."""
    phases = {name: [m["phase"] for m in uninterrupted(name).metrics] for name in CASES}
    assert phases["distill_features"] == ["train", "train", "prune", "prune"]
    assert phases["structured_qat4"] == ["train", "prune", "prune", "quant", "quant"]
    assert phases["augment"] == ["train", "train", "quant"]
    structured = uninterrupted("structured_qat4")
    # Channels really were removed, and the state records the pruned shapes.
    assert structured.metrics[-1]["params"] < 0.6 * structured.metrics[0]["params"]
    assert structured.states[-1]["layer_shapes"] != structured.states[0]["layer_shapes"]


def test_state_is_a_weights_only_snapshot(tmp_path: Path) -> None:
    states: list[dict[str, Any]] = []
    outcome = run_trial(config(), checkpoint=lambda _, state: states.append(state()))
    path = tmp_path / "state.pt"
    save_state(path, states[0])
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # the temp file was renamed
    loaded = torch.load(path, weights_only=True)
    assert loaded["epoch"] == 1 and loaded["phase"] == "train"
    # Taken after epoch 1, the snapshot did not follow the weights through epoch 2.
    assert outcome.model is not None
    final = outcome.model.state_dict()
    changed = [k for k, v in loaded["model"].items() if v.is_floating_point()]
    assert any(not torch.equal(loaded["model"][k], final[k]) for k in changed)
    assert all(torch.equal(states[1]["model"][k], final[k]) for k in final)


def test_state_of_another_config_is_refused(tmp_path: Path) -> None:
    states: list[dict[str, Any]] = []
    run_trial(config(), checkpoint=lambda _, state: states.append(state()))
    other = {**config(), "train.lr": 1e-3}
    with pytest.raises(ValueError, match=r"different config \(train\.lr \(0\.003 -> 0\.001\)"):
        run_trial(other, resume=states[0])
    with pytest.raises(ValueError, match="checkpoint"):
        run_trial(config(), resume={"epoch": 1})
    renamed = {**states[0], "config": {**states[0]["config"], "train.gone": 1}}
    with pytest.raises(ValueError, match=r"no longer reads \(1 validation error .* train\.gone"):
        run_trial(config(), resume=renamed)


# A field the trial config gained since older states were saved, at its default (the old
# behaviour): what an upgrade of nascomp between a search and its resume brings.
ADDED = "prune.analysis_timeout_s"


def test_a_state_saved_before_a_field_was_added_resumes(
    uninterrupted, teacher_state: dict, tmp_path: Path
) -> None:
    """A state keeps its config, read at resume as a logged config is (a missing field takes
    its default): a field added since (its digest changed) no longer refuses the resume."""
    full = uninterrupted("plain")
    state = copy.deepcopy(full.states[0])
    state["config"] = {k: v for k, v in state["config"].items() if k != ADDED}
    assert len(state["config"]) == len(full.states[0]["config"]) - 1
    resumed = run_checkpointed(CASES["plain"][0], teacher_state, tmp_path, state)
    assert resumed.metrics == full.metrics[1:]
    assert resumed.outcome.info == full.outcome.info
    assert_same_model(resumed.outcome, full.outcome)


def test_an_older_versions_state_trains_the_trial_from_the_start(
    uninterrupted, teacher_state: dict, tmp_path: Path
) -> None:
    """A state an older nascomp saved holds a digest of its config alone. Where the config
    has gained a field since, the trial failed ("a different config") at every resume after
    an upgrade; it now trains from the start and says so. One whose digest still matches
    resumes."""
    full = uninterrupted("plain")
    older = {k: v for k, v in copy.deepcopy(full.states[0]).items() if k != "config"}
    resumed = run_checkpointed(CASES["plain"][0], teacher_state, tmp_path / "same", older)
    assert resumed.metrics == full.metrics[1:]  # its digest matches: resumed
    assert "restarted" not in resumed.outcome.info

    then = {k: v for k, v in full.states[0]["config"].items() if k != ADDED}
    older = {k: v for k, v in copy.deepcopy(full.states[0]).items() if k != "config"}
    older["fingerprint"] = hashlib.sha256(json.dumps(then, sort_keys=True).encode()).hexdigest()
    (tmp_path / "older").mkdir()
    restarted = run_checkpointed(CASES["plain"][0], teacher_state, tmp_path / "older", older)
    assert restarted.metrics == full.metrics  # every epoch, from the first
    assert restarted.outcome.info == {**full.outcome.info, "restarted": RESTARTED_NOTE}
    assert_same_model(restarted.outcome, full.outcome)


def test_report_is_called_per_epoch_unless_checkpointing() -> None:
    reports: list[dict[str, Any]] = []
    run_trial(config(), report=reports.append)
    assert [r["epoch"] for r in reports] == [1, 2]
    checkpoints: list[dict[str, Any]] = []
    reports.clear()
    run_trial(config(), report=reports.append, checkpoint=lambda m, _: checkpoints.append(m))
    assert reports == [] and [m["epoch"] for m in checkpoints] == [1, 2]


def test_state_keeps_the_modules_versions(tmp_path: Path) -> None:
    """A state_dict's ``_metadata`` (each submodule's layout version) survives the snapshot and
    the file: torchvision's MNASNet refuses to load a state without it ("version should be set
    to 1 or 2"), which made every reused or resumed trial of it fail."""
    from nascomp.trainers.checkpoint import cpu_state_dict, detached_copy

    model = build_model({"family": "torchvision", "model": "mnasnet0_5"}, (1, 8, 8), 10)
    copied = detached_copy({"model": model.state_dict(), "plain": {"a": torch.ones(1)}})
    assert copied["model"]._metadata == model.state_dict()._metadata
    assert not hasattr(copied["plain"], "_metadata")
    save_state(tmp_path / "state.pt", {"format": 1, **copied})
    fresh = build_model({"family": "torchvision", "model": "mnasnet0_5"}, (1, 8, 8), 10)
    fresh.load_state_dict(load_state(tmp_path / "state.pt")["model"])
    torch.save(cpu_state_dict(model), tmp_path / "weights.pt")
    fresh.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))


def test_mnasnet_trial_resumes(tmp_path: Path) -> None:
    flat = config(
        **{
            "arch.family": "torchvision",
            "arch.model": "mnasnet0_5",
            "train.epochs": 2,
            "train.prune_epochs": 0,
            "train.qat_epochs": 0,
        }
    )
    kept = ("arch.family", "arch.model")
    for key in [k for k in flat if k.startswith("arch.") and k not in kept]:
        del flat[key]
    run = run_checkpointed(flat, {}, tmp_path)
    resumed = run_trial(flat, resume=run.states[0])
    assert_same_model(resumed, run.outcome)
