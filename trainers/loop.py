"""The training loop over a split: in-memory tensors are sliced per batch (no DataLoader in the
hot path); a streamed split hands the same batches from a DataLoader (trainers/split.py)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nascomp.compressors.distillation import (
    FeatureTap,
    distillation_loss,
    feature_distillation_loss,
)
from nascomp.trainers.augment import AugmentConfig, augment_batch
from nascomp.trainers.split import EVAL_BATCH_SIZE, Split, as_split


@dataclass(frozen=True)
class FeatureHint:
    """A FitNets hint: taps on the student's and the teacher's feature, the projector between
    them (trained with the student) and the hint loss's weight. The teacher (in eval mode) runs
    once per batch under no_grad: its feature maps for a whole split would not fit in memory."""

    teacher: nn.Module
    student_tap: FeatureTap
    teacher_tap: FeatureTap
    projector: nn.Module
    weight: float

    @torch.no_grad()
    def teacher_feature(self, inputs: Tensor) -> Tensor:
        self.teacher(inputs)
        assert self.teacher_tap.feature is not None
        return self.teacher_tap.feature

    def loss(self, inputs: Tensor) -> Tensor:
        """The weighted hint loss of the student's latest forward pass on ``inputs``."""
        assert self.student_tap.feature is not None, "run the student forward first"
        teacher = self.teacher_feature(inputs)
        return self.weight * feature_distillation_loss(
            self.student_tap.feature, teacher, self.projector
        )

    def remove(self) -> None:
        self.student_tap.remove()
        self.teacher_tap.remove()


@dataclass(frozen=True)
class Distillation:
    """What a batch is distilled from: the teacher's logits for the whole training split,
    aligned with its rows (computed once), or, when batches are augmented and so differ from
    every stored row, the teacher itself, run once per batch under no_grad. Optionally a
    feature hint."""

    logits: Tensor | None
    temperature: float
    alpha: float
    hint: FeatureHint | None = None
    teacher: nn.Module | None = None

    def teacher_logits(self, index: Tensor, inputs: Tensor) -> Tensor:
        if self.logits is not None:
            return self.logits[index]
        assert self.teacher is not None, "Distillation needs logits or a teacher"
        with torch.no_grad():
            return self.teacher(inputs)


@dataclass(frozen=True)
class EpochStats:
    loss: float
    train_accuracy: float


@functools.cache
def warm_optimizers() -> None:
    """Pay, once per process and outside any timing, what torch's first optimizer costs: its
    construction imports ``torch._dynamo`` (0.7 to 2.9 s on the 2-core VMs). Inside a trial it
    was most of the 1.2 s by which a worker's first trial's ``train_seconds`` exceeded the
    same trial's later runs (2.04 s against 0.81 s on the digits CNN), and every trial that
    reused that student inherited it. Touches no random state."""
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def make_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0
        )
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"train.optimizer must be one of sgd, adam, adamw; got {name!r}")


def train_epoch(
    model: nn.Module,
    x: Tensor | Split,
    y: Tensor | None = None,
    *,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
    distill: Distillation | None = None,
    after_step: Callable[[], None] | None = None,
    augment: AugmentConfig | None = None,
    class_weight: Tensor | None = None,
) -> EpochStats:
    """One pass over a split (or the tensors ``x``, ``y``) in a seeded random order; returns the
    mean loss and accuracy. The order is drawn here, so every kind of split sees the same one.
    ``class_weight``: each class's weight in the cross-entropy (:func:`balanced_weights`)."""
    model.train()
    split = as_split(x, y)
    device = split.labels.device
    order = torch.randperm(len(split), generator=generator)
    total_loss = torch.zeros((), device=device)
    n_correct = torch.zeros((), device=device, dtype=torch.long)
    n_seen = 0
    for index, inputs, labels in split.batches(order, batch_size):
        if augment is not None:
            # On the batch's device, after it arrived: a streamed split's loader only reads.
            inputs = augment_batch(inputs, augment, generator)
        logits = model(inputs)
        if distill is None:
            loss = F.cross_entropy(logits, labels, weight=class_weight)
        else:
            loss = distillation_loss(
                logits,
                distill.teacher_logits(index, inputs),
                labels,
                temperature=distill.temperature,
                alpha=distill.alpha,
                class_weight=class_weight,
            )
            if distill.hint is not None:
                loss = loss + distill.hint.loss(inputs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        # Accumulate on the device: no host sync per batch.
        total_loss += loss.detach() * index.numel()
        n_correct += (logits.detach().argmax(dim=1) == labels).sum()
        n_seen += index.numel()
    mean_loss = (total_loss / max(n_seen, 1)).item()
    if not math.isfinite(mean_loss):
        raise FloatingPointError(f"training diverged: loss is {mean_loss}")
    return EpochStats(loss=mean_loss, train_accuracy=n_correct.item() / max(n_seen, 1))


# Forward passes on the CPU take this many inputs at a time, whatever the split's chunks: at
# 1,024 the activations overflow the caches. Evaluating 2,048 inputs was 1.1 to 3.0 times
# faster at 256 than at 1,024 on CNNs of the example spaces (16x16 to 32x32 inputs, 1 thread),
# and 0.8 to 2.5 times at 64, with the logits bit for bit the same (`python
# bench/eval_kernels.py`). GPUs take the whole chunk.
CPU_FORWARD_BATCH = 256


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    x: Tensor | Split,
    batch_size: int = EVAL_BATCH_SIZE,
    device: str | torch.device | None = None,
) -> Tensor:
    """Logits of ``model`` in eval mode on every input of ``x`` (a tensor or a split), in order;
    with ``device``, each batch is moved there first (the CPU-only int8 form of a GPU trial)."""
    was_training = model.training
    model.eval()
    out = []
    for chunk in as_split(x).chunks(batch_size):
        inputs = chunk if device is None else chunk.to(device)
        if inputs.device.type == "cpu":
            out.extend(model(piece) for piece in inputs.split(CPU_FORWARD_BATCH))
        else:
            out.append(model(inputs))
    model.train(was_training)
    return torch.cat(out)


def top1_agreement(
    model: nn.Module, deployed: nn.Module, split: Split, expected: Tensor | None = None
) -> float:
    """The share of ``split`` where ``deployed`` (run on the CPU: int8 and ONNX forms) predicts
    the class ``model`` predicts. ``expected``: ``model``'s classes on ``split``
    (:func:`predicted_classes`) when the caller has them already."""
    if expected is None:
        expected = predicted_classes(model, split)
    predicted = predict_logits(deployed, split, device="cpu").argmax(dim=1)
    return (predicted == expected.cpu()).float().mean().item()


def predicted_classes(
    model: nn.Module, x: Tensor | Split, batch_size: int = EVAL_BATCH_SIZE
) -> Tensor:
    """The top-1 class of ``model`` for every input of ``x``, in order."""
    return predict_logits(model, x, batch_size).argmax(dim=1)


def accuracy(
    model: nn.Module, x: Tensor | Split, y: Tensor | None = None, batch_size: int = EVAL_BATCH_SIZE
) -> float:
    """Top-1 accuracy on a split (or on the tensors ``x``, ``y``)."""
    split = as_split(x, y)
    return split_accuracy(predicted_classes(model, split, batch_size), split)


def split_accuracy(predictions: Tensor, split: Split) -> float:
    """The share of ``split``'s labels that ``predictions`` (classes, in order) get right."""
    return (predictions == split.labels).float().mean().item()


def balanced_weights(labels: Tensor, n_classes: int) -> Tensor:
    """Each class's loss weight ``n / (K * n_class)`` over the ``K`` classes present in
    ``labels`` (scikit-learn's ``compute_class_weight("balanced")``); 0 for a class absent."""
    counts = torch.bincount(labels, minlength=n_classes).double()
    present = counts > 0
    weights = torch.zeros(n_classes, dtype=torch.float64, device=labels.device)
    weights[present] = len(labels) / (int(present.sum()) * counts[present])
    return weights.float()


def split_balanced_accuracy(predictions: Tensor, split: Split) -> float:
    """The mean over the classes present in ``split`` of the share of each class's samples that
    ``predictions`` get right (the recall), as scikit-learn's ``balanced_accuracy_score``:
    on imbalanced data a model that always answers the majority class scores 1 / K, not the
    majority's share."""
    labels = split.labels
    counts = torch.bincount(labels)
    hits = torch.bincount(labels[predictions == labels], minlength=len(counts))
    present = counts > 0
    return (hits[present].double() / counts[present].double()).mean().item()
