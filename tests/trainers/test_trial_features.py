"""Feature (FitNets) distillation inside run_trial: wired, trained, and gone before export."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nascomp.spaces.models import build_model
from nascomp.trainers.config import TrialConfig
from nascomp.trainers.trial import run_trial
from tests.trainers.test_trial_measure import config

# A small teacher (one plain stage): what matters is that its feature map differs in width and
# resolution from the student's.
TEACHER = {
    "teacher.arch.family": "cnn",
    "teacher.arch.n_stages": 1,
    "teacher.arch.base_channels": 12,
    "teacher.arch.block": "plain",
}


@pytest.fixture(scope="module")
def teacher_state() -> dict[str, torch.Tensor]:
    """An untrained teacher is enough to see the mechanism (and keeps the test fast)."""
    cfg = TrialConfig.from_flat(config(**TEACHER))
    data = cfg.data.load()
    torch.manual_seed(0)
    return build_model(cfg.teacher.arch, data.input_shape, data.n_classes).state_dict()


def distilled(**sampled: Any) -> dict[str, Any]:
    return config(
        **{"distill.enabled": True, "distill.temperature": 2.0, "distill.alpha": 0.5},
        **{"train.epochs": 1, "prune.method": "structured", "prune.ratio": 0.5},
        **{"prune.importance": "l1", "prune.scope": "layer", "quant.bits": 8},
        **TEACHER,
        **sampled,
    )


def test_feature_hint_changes_training_then_leaves(teacher_state: dict) -> None:
    losses: dict[bool, list[float]] = {False: [], True: []}
    models = {}
    for features, sink in losses.items():
        flat = distilled(**{"distill.features": features, "distill.feature_weight": 5.0})
        outcome = run_trial(
            flat, teacher_state=teacher_state, report=lambda r, s=sink: s.append(r["loss"])
        )
        assert outcome.status == "ok"
        models[features] = outcome.model
    # The hint adds a positive term to the first (train) epoch's loss.
    assert losses[True][0] > losses[False][0]
    # After training no hook is left on the student (export and tracing see a plain model).
    assert not any(m._forward_pre_hooks for m in models[True].modules())


def test_feature_hint_is_ignored_without_distillation() -> None:
    flat = config(**{"train.epochs": 1, "distill.features": True})
    first, second = run_trial(flat).metrics, run_trial(config(**{"train.epochs": 1})).metrics
    assert first["val_accuracy"] == second["val_accuracy"]
