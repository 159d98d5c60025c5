"""The training loop over in-memory tensors: batches are slices, no DataLoader in the hot path."""

from __future__ import annotations

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
    x: Tensor,
    y: Tensor,
    *,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
    distill: Distillation | None = None,
    after_step: Callable[[], None] | None = None,
    augment: AugmentConfig | None = None,
) -> EpochStats:
    """One pass over (x, y) in a seeded random order; returns the mean loss and accuracy."""
    model.train()
    n = x.shape[0]
    order = torch.randperm(n, generator=generator).to(x.device)
    total_loss = torch.zeros((), device=x.device)
    n_correct = torch.zeros((), device=x.device, dtype=torch.long)
    n_seen = 0
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        if index.numel() < 2:
            break  # a batch of one breaks batch norm; drop it
        inputs, labels = x[index], y[index]
        if augment is not None:
            inputs = augment_batch(inputs, augment, generator)
        logits = model(inputs)
        if distill is None:
            loss = F.cross_entropy(logits, labels)
        else:
            loss = distillation_loss(
                logits,
                distill.teacher_logits(index, inputs),
                labels,
                temperature=distill.temperature,
                alpha=distill.alpha,
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


@torch.inference_mode()
def predict_logits(model: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    was_training = model.training
    model.eval()
    out = torch.cat([model(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    model.train(was_training)
    return out


def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1024) -> float:
    predictions = predict_logits(model, x, batch_size).argmax(dim=1)
    return (predictions == y).float().mean().item()
