"""The training loop's pieces with known answers."""

from __future__ import annotations

import torch
from torch import nn

from trainers.loop import Distillation, predict_logits


def test_teacher_run_per_batch_gives_the_stored_logits() -> None:
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(16, 5)).eval()
    x = torch.randn(10, 1, 4, 4)
    stored = Distillation(predict_logits(teacher, x), temperature=2.0, alpha=0.5)
    per_batch = Distillation(None, temperature=2.0, alpha=0.5, teacher=teacher)
    index = torch.tensor([7, 2, 5])
    assert torch.allclose(
        stored.teacher_logits(index, x[index]), per_batch.teacher_logits(index, x[index])
    )
    assert not per_batch.teacher_logits(index, x[index]).requires_grad  # the teacher is not trained
