"""Knowledge distillation: Hinton's loss on logits (Hinton, Vinyals and Dean, 2015) and a
FitNets hint loss on an intermediate feature (Romero et al., 2015)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    temperature: float,
    alpha: float,
    class_weight: Tensor | None = None,
) -> Tensor:
    """``alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE``;
    ``class_weight`` weighs the CE term's classes (the teacher's soft targets stay as they are).

    The KL term is averaged over the batch (``batchmean``, the true KL per sample); the
    ``T^2`` factor keeps its gradient on the same scale as the CE term when T changes.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student_logits shape {tuple(student_logits.shape)} must equal "
            f"teacher_logits shape {tuple(teacher_logits.shape)}"
        )
    # The caller computes the teacher under no_grad; detaching anyway makes a mistake there
    # cost only memory, never a wrong gradient into the teacher.
    teacher_log_probs = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
    kl = kl_sum(student_log_probs, teacher_log_probs) / student_logits.shape[0]
    ce = F.cross_entropy(student_logits, labels, weight=class_weight)
    return alpha * temperature**2 * kl + (1.0 - alpha) * ce


def kl_sum(log_q: Tensor, log_p: Tensor) -> Tensor:
    """``sum KL(p || q)`` over every row, from log-probabilities, where a class that ``p``
    gives no probability (``log_p`` -inf: a class the model masks at -inf) adds nothing, as
    ``0 log 0 = 0`` says: torch's ``kl_div`` computed ``0 * (-inf - -inf)``, NaN, so every
    distilled trial of a model masking classes failed with "training diverged". Elsewhere
    the same values, summed by the same kernel, as ``kl_div(..., reduction="sum")``: trials
    logged before reproduce bit for bit."""
    terms = F.kl_div(log_q, log_p, reduction="none", log_target=True)
    return torch.where(log_p == -torch.inf, torch.zeros_like(terms), terms).sum()


# ---------------------------------------------------------------- feature hints (FitNets)


def hint_module(model: nn.Module) -> nn.Module:
    """The module whose input is the hinted feature: the last global pooling (the final feature
    map, before it is averaged away), else the classifier (the last Linear: the penultimate
    features of an MLP or LeNet)."""
    # Global pooling only: a cell's 3x3 average pooling is not the end of the features.
    pools = [m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    if pools:
        return pools[-1]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("feature distillation needs a model with a pooling or Linear layer")
    return linears[-1]


class FeatureTap:
    """Keeps the input of ``hint_module(model)`` from the latest forward pass."""

    def __init__(self, model: nn.Module) -> None:
        self.feature: Tensor | None = None
        self._handle = hint_module(model).register_forward_pre_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        self.feature = inputs[0]

    def remove(self) -> None:
        """Detach the hook (before export: a traced model must not carry it)."""
        self._handle.remove()
        self.feature = None


def _as_comparable(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """Feature maps stay maps (pooled to the smaller grid); anything else becomes a vector."""
    if student.dim() == 4 and teacher.dim() == 4:
        size = (min(student.shape[2], teacher.shape[2]), min(student.shape[3], teacher.shape[3]))
        return F.adaptive_avg_pool2d(student, size), F.adaptive_avg_pool2d(teacher, size)
    return _vector(student), _vector(teacher)


def _vector(feature: Tensor) -> Tensor:
    return feature.mean(dim=(2, 3)) if feature.dim() == 4 else feature.flatten(1)


def make_projector(student_feature: Tensor, teacher_feature: Tensor) -> nn.Module:
    """FitNets' regressor from the student's feature width to the teacher's: a 1x1 conv
    between feature maps, a Linear between vectors; trained with the student."""
    student, teacher = _as_comparable(student_feature, teacher_feature)
    if student.dim() == 4:
        return nn.Conv2d(student.shape[1], teacher.shape[1], kernel_size=1)
    return nn.Linear(student.shape[1], teacher.shape[1])


def feature_distillation_loss(
    student_feature: Tensor, teacher_feature: Tensor, projector: nn.Module
) -> Tensor:
    """Mean squared error between the projected student feature and the teacher's (FitNets'
    hint loss, Romero et al. 2015); no gradient reaches the teacher."""
    student, teacher = _as_comparable(student_feature, teacher_feature.detach())
    return F.mse_loss(projector(student), teacher)
