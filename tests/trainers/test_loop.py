"""The training loop's pieces with known answers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nascomp.trainers.loop import (
    CPU_FORWARD_BATCH,
    Distillation,
    balanced_weights,
    predict_logits,
    predicted_classes,
    split_accuracy,
    split_balanced_accuracy,
    top1_agreement,
    train_epoch,
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


def test_balanced_weights_are_scikit_learns() -> None:
    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 3])  # class 2 absent: weight 0
    weights = balanced_weights(labels, n_classes=4)
    present = np.array([0, 1, 3])
    expected = compute_class_weight("balanced", classes=present, y=labels.numpy())
    assert torch.allclose(weights[present], torch.tensor(expected, dtype=torch.float32))
    assert weights[2] == 0.0


def test_weighted_cross_entropy_reaches_the_loss_with_and_without_a_teacher() -> None:
    """train_epoch's loss with class weights equals the weighted CE computed by hand (one
    batch, plain SGD with lr 0: the weights are the only difference)."""
    from nascomp.compressors.distillation import distillation_loss

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, y = torch.randn(6, 1, 2, 2), torch.tensor([0, 0, 0, 0, 1, 2])
    weight = balanced_weights(y, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    stats = train_epoch(
        model, x, y, optimizer=optimizer, batch_size=6, generator=torch.Generator(),
        class_weight=weight,
    )  # fmt: skip
    expected = torch.nn.functional.cross_entropy(model(x), y, weight=weight).item()
    assert abs(stats.loss - expected) < 1e-6
    assert abs(expected - torch.nn.functional.cross_entropy(model(x), y).item()) > 1e-3
    logits, teacher = model(x), torch.randn(6, 3)
    mixed = distillation_loss(logits, teacher, y, temperature=2.0, alpha=0.0, class_weight=weight)
    assert torch.allclose(mixed, torch.nn.functional.cross_entropy(logits, y, weight=weight))


def test_the_first_optimizers_import_is_paid_before_any_timing() -> None:
    """torch's first optimizer imports torch._dynamo (0.7 to 2.9 s): inside a worker's first
    trial it inflated train_seconds 2.5x, and every trial reusing that student inherited it.
    warm_optimizers (called by run_trial before its timer) pays it, touching no random state."""
    import subprocess
    import sys

    script = (
        "import sys, torch\n"
        "from nascomp.trainers.loop import warm_optimizers\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "state = torch.get_rng_state()\n"
        "warm_optimizers()\n"
        "assert 'torch._dynamo' in sys.modules\n"
        "assert torch.equal(state, torch.get_rng_state())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


class _WritesItsInput(nn.Module):
    """A forward that changes its input in place, harmless on a DataLoader's batch."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.mul_(2.0).add_(1.0)
        return self.linear(x)


def test_a_model_writing_into_its_input_leaves_the_split_as_it_was() -> None:
    """Evaluation fed the model views of the stored split: each pass rewrote it, and the next
    evaluation (an epoch's val_accuracy, the teacher's logits, the export's) read drifted
    inputs."""
    torch.manual_seed(0)
    x = torch.randn(3000, 4)  # more than one chunk and one forward batch
    split = TensorSplit(x.clone(), torch.randint(0, 3, (3000,)))
    model = _WritesItsInput()
    first = predict_logits(model, split)
    assert torch.equal(split.x, x)
    assert torch.equal(predict_logits(model, split), first)
    probe = split.head(5)  # the trial's probes (pruning's trace, calibration, ONNX export)
    model(probe)
    assert torch.equal(split.x, x)
