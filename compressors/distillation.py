"""Knowledge distillation loss (Hinton, Vinyals and Dean, 2015)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    temperature: float,
    alpha: float,
) -> Tensor:
    """``alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE``.

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
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)
    ce = F.cross_entropy(student_logits, labels)
    return alpha * temperature**2 * kl + (1.0 - alpha) * ce
