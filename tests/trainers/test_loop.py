"""The training loop's pieces with known answers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nascomp.trainers.loop import (
    CPU_FORWARD_BATCH,
    Distillation,
    predict_logits,
    predicted_classes,
    split_accuracy,
    split_balanced_accuracy,
    top1_agreement,
)
from nascomp.trainers.split import TensorSplit


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


class _BatchSizes(nn.Module):
    """A linear model that records the batch size of every forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 4)
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.shape[0])
        return self.linear(x)


def test_cpu_forward_passes_are_cut_to_cpu_forward_batch() -> None:
    torch.manual_seed(0)
    model = _BatchSizes()
    n = 2 * CPU_FORWARD_BATCH + 3
    x = torch.randn(n, 6)
    logits = predict_logits(model, x, batch_size=4 * CPU_FORWARD_BATCH)
    assert model.seen == [CPU_FORWARD_BATCH, CPU_FORWARD_BATCH, 3]
    with torch.no_grad():
        assert torch.allclose(logits, model.linear(x), atol=1e-6)  # same values, in order
    model.seen.clear()
    predict_logits(model, x, batch_size=100)  # smaller chunks than that pass as they are
    assert model.seen == [100, 100, 100, 100, 100, n - 500]


def test_agreement_with_given_classes_matches_computed_ones() -> None:
    torch.manual_seed(0)
    model = nn.Linear(6, 4)
    deployed = nn.Linear(6, 4)
    split = TensorSplit(torch.randn(300, 6), torch.zeros(300, dtype=torch.long))
    computed = top1_agreement(model, deployed, split)
    given = top1_agreement(model, deployed, split, expected=predicted_classes(model, split))
    assert given == computed
    expected = predict_logits(model, split).argmax(1) == predict_logits(deployed, split).argmax(1)
    assert computed == expected.float().mean().item()
    assert top1_agreement(model, model, split) == 1.0


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_balanced_accuracy_is_scikit_learns() -> None:
    """Known answers: the mean recall over the classes present in the labels."""
    from sklearn.metrics import balanced_accuracy_score

    labels = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 4])  # no class 3
    split = TensorSplit(torch.zeros(len(labels), 1), labels)
    majority = torch.zeros_like(labels)
    assert abs(split_accuracy(majority, split) - 8 / 14) < 1e-7  # float32 mean
    assert split_balanced_accuracy(majority, split) == 1 / 4  # 4 classes present
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        predictions = torch.randint(0, 5, (len(labels),), generator=generator)
        expected = balanced_accuracy_score(labels.numpy(), predictions.numpy())
        assert abs(split_balanced_accuracy(predictions, split) - expected) < 1e-12
    assert split_balanced_accuracy(labels.clone(), split) == 1.0
