from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nascomp.compressors.distillation import (
    FeatureTap,
    distillation_loss,
    feature_distillation_loss,
    hint_module,
    make_projector,
)

STUDENT = [[1.0, 2.0, 3.0], [1.0, 0.0, -1.0]]
TEACHER = [[3.0, 2.0, 1.0], [0.0, 0.0, 0.0]]
LABELS = [2, 0]


def _softmax(logits: list[float], temperature: float) -> list[float]:
    exps = [math.exp(v / temperature) for v in logits]
    return [e / sum(exps) for e in exps]


def _kl_batchmean(temperature: float) -> float:
    total = 0.0
    for student, teacher in zip(STUDENT, TEACHER, strict=True):
        p_t, p_s = _softmax(teacher, temperature), _softmax(student, temperature)
        total += sum(t * math.log(t / s) for t, s in zip(p_t, p_s, strict=True))
    return total / len(STUDENT)


def _cross_entropy() -> float:
    pairs = zip(STUDENT, LABELS, strict=True)
    return -sum(math.log(_softmax(logits, 1.0)[label]) for logits, label in pairs) / len(STUDENT)


def _loss(temperature: float, alpha: float) -> torch.Tensor:
    return distillation_loss(
        torch.tensor(STUDENT),
        torch.tensor(TEACHER),
        torch.tensor(LABELS),
        temperature=temperature,
        alpha=alpha,
    )


def test_matches_hand_computed_value() -> None:
    # KL at T=2 is 0.2009070249, CE is 0.4076059644: 0.5 * 4 * KL + 0.5 * CE.
    expected = 0.5 * 4.0 * _kl_batchmean(2.0) + 0.5 * _cross_entropy()
    assert expected == pytest.approx(0.6056170320256213, abs=1e-12)
    assert _loss(2.0, 0.5).item() == pytest.approx(expected, abs=1e-6)


def test_alpha_zero_is_plain_cross_entropy() -> None:
    plain = F.cross_entropy(torch.tensor(STUDENT), torch.tensor(LABELS))
    assert _loss(4.0, 0.0).item() == pytest.approx(plain.item(), abs=1e-7)
    assert _loss(4.0, 0.0).item() == pytest.approx(_cross_entropy(), abs=1e-6)


def test_temperature_one_alpha_one_is_kl() -> None:
    assert _loss(1.0, 1.0).item() == pytest.approx(_kl_batchmean(1.0), abs=1e-6)


def test_identical_logits_give_zero_kl() -> None:
    logits = torch.tensor(STUDENT)
    loss = distillation_loss(logits, logits, torch.tensor(LABELS), temperature=3.0, alpha=1.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


def test_classes_masked_at_minus_infinity_add_nothing_and_the_rest_is_as_before() -> None:
    """A model masking a class at -inf (teacher and student alike): torch's kl_div gave
    0 * (-inf - -inf) = NaN, and every distilled trial failed "training diverged" (a helper's
    sweep). The masked class adds nothing; without masks the loss and its gradient are torch's
    kl_div's to the bit, so trials logged before reproduce."""
    torch.manual_seed(0)
    student = torch.randn(16, 4, requires_grad=True)
    teacher, labels = torch.randn(16, 4), torch.randint(0, 3, (16,))
    masked = torch.cat([student[:, :3], torch.full((16, 1), -torch.inf)], dim=1)
    masked_teacher = torch.cat([teacher[:, :3], torch.full((16, 1), -torch.inf)], dim=1)
    loss = distillation_loss(masked, masked_teacher, labels, temperature=2.0, alpha=0.5)
    # the same as three classes alone
    alone = distillation_loss(student[:, :3], teacher[:, :3], labels, temperature=2.0, alpha=0.5)
    torch.testing.assert_close(loss, alone)
    (gradient,) = torch.autograd.grad(loss, student)
    assert torch.isfinite(gradient).all() and bool((gradient[:, 3] == 0).all())

    legacy = 0.5 * 4.0 * F.kl_div(
        F.log_softmax(student / 2.0, -1),
        F.log_softmax(teacher / 2.0, -1),
        reduction="batchmean",
        log_target=True,
    ) + 0.5 * F.cross_entropy(student, labels)
    ours = distillation_loss(student, teacher, labels, temperature=2.0, alpha=0.5)
    assert torch.equal(ours, legacy)
    assert torch.equal(
        torch.autograd.grad(ours, student)[0], torch.autograd.grad(legacy, student)[0]
    )


def test_gradient_reaches_student_not_teacher() -> None:
    student = torch.tensor(STUDENT, requires_grad=True)
    teacher = torch.tensor(TEACHER, requires_grad=True)
    loss = distillation_loss(student, teacher, torch.tensor(LABELS), temperature=2.0, alpha=0.7)
    loss.backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("temperature", "alpha", "field"),
    [
        (0.0, 0.5, "temperature"),
        (-1.0, 0.5, "temperature"),
        (2.0, 1.5, "alpha"),
        (2.0, -0.1, "alpha"),
    ],
)
def test_bad_arguments_name_the_field(temperature: float, alpha: float, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        _loss(temperature, alpha)


# ---------------------------------------------------------------- feature hints


def test_hint_module_is_global_pool_else_classifier(make_residual_cnn: type[nn.Module]) -> None:
    cnn = make_residual_cnn()
    assert hint_module(cnn) is cnn.pool
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    assert hint_module(mlp) is mlp[3]
    with pytest.raises(ValueError, match="pooling or Linear"):
        hint_module(nn.Sequential(nn.ReLU()))


def test_tap_keeps_the_feature_until_removed(make_residual_cnn: type[nn.Module]) -> None:
    cnn = make_residual_cnn(width=4)
    tap = FeatureTap(cnn)
    cnn(torch.randn(2, 1, 6, 6))
    assert tap.feature.shape == (2, 8, 6, 6)  # the separable block's 2 * width channels
    tap.remove()
    assert tap.feature is None and not cnn.pool._forward_pre_hooks


def test_projector_shapes() -> None:
    maps = make_projector(torch.zeros(2, 8, 4, 4), torch.zeros(2, 16, 2, 2))
    assert isinstance(maps, nn.Conv2d) and maps.kernel_size == (1, 1)
    assert (maps.in_channels, maps.out_channels) == (8, 16)
    vectors = make_projector(torch.zeros(2, 8, 4, 4), torch.zeros(2, 5))
    assert isinstance(vectors, nn.Linear) and (vectors.in_features, vectors.out_features) == (8, 5)


def test_feature_loss_known_answer() -> None:
    # Student map 1 channel 2x2 -> pooled to the teacher's 1x1 grid: mean 2.5; identity
    # projector; teacher 1.5 -> squared error 1.
    student = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    teacher = torch.tensor([[[[1.5]]]])
    projector = nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        projector.weight.fill_(1.0)
        projector.bias.zero_()
    assert feature_distillation_loss(student, teacher, projector).item() == pytest.approx(1.0)
    same = feature_distillation_loss(student, F.adaptive_avg_pool2d(student, 1), projector)
    assert same.item() == 0.0


def test_feature_loss_trains_student_and_projector_not_teacher() -> None:
    student = torch.randn(3, 4, 2, 2, requires_grad=True)
    teacher = torch.randn(3, 6, 2, 2, requires_grad=True)
    projector = make_projector(student, teacher)
    feature_distillation_loss(student, teacher, projector).backward()
    assert student.grad is not None and projector.weight.grad is not None
    assert teacher.grad is None
