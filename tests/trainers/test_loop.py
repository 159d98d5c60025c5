"""The training loop's pieces with known answers."""

from __future__ import annotations

import torch
from torch import nn

from nascomp.trainers.loop import Distillation, predict_logits


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


def test_a_diverging_loss_stops_the_epoch_with_a_clear_error() -> None:
    import pytest

    from nascomp.trainers.loop import train_epoch

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        model[1].weight.fill_(float("nan"))  # what an exploding learning rate leaves behind
    x, y = torch.randn(8, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(FloatingPointError, match="training diverged: loss is nan"):
        train_epoch(
            model,
            x,
            y,
            optimizer=optimizer,
            batch_size=4,
            generator=torch.Generator().manual_seed(0),
        )
