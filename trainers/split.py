"""One split of a dataset (train, validation or test) as the training loop sees it.

Two kinds share this small interface: :class:`TensorSplit`, tensors in memory (or on the
device) sliced per batch, the fast path for every dataset that fits; and
``nascomp.trainers.stream.StreamedSplit``, a dataset read through a ``DataLoader`` when it does
not fit. Both take the batch order from the caller, so a seeded permutation gives the same
batches, in the same order, from either.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

# Evaluation batches: large enough to amortise the per-call overhead, small enough for any
# model's activations on CPU. Every split uses it, so logits are computed on the same batches.
EVAL_BATCH_SIZE = 1024


class Split(Protocol):
    """What training, evaluation, distillation and the trial's probes need from a split."""

    labels: Tensor  # int64, one per sample, on the split's device

    def __len__(self) -> int: ...

    def head(self, n: int) -> Tensor:
        """The first ``n`` inputs (fewer if the split is smaller), normalised, on the device: a
        tensor of the caller's own, which a model may write into."""
        ...

    def batches(self, order: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """``(index, inputs, labels)`` for each training batch of ``order`` (positions in this
        split), as :func:`batch_indices` cuts it; ``index`` is on the device."""
        ...

    def chunks(self, batch_size: int = EVAL_BATCH_SIZE) -> Iterator[Tensor]:
        """The inputs in their stored order, ``batch_size`` at a time (for evaluation), each a
        tensor of the caller's own."""
        ...


def batch_indices(order: Tensor, batch_size: int) -> list[Tensor]:
    """``order`` cut into batches of ``batch_size``; a last batch of one is dropped (it breaks
    batch norm). One definition, so both kinds of split train on identical batches."""
    pieces = list(order.split(batch_size))
    if pieces and pieces[-1].numel() < 2:
        pieces.pop()
    return pieces


@dataclass(frozen=True)
class TensorSplit:
    """Inputs and labels as tensors: a batch is an index into them, no DataLoader (faster for
    anything that fits in memory: no per-sample Python, no collation, no worker processes)."""

    x: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return self.x.shape[0]

    # head and chunks give copies, as a DataLoader's batch is one: a model whose forward writes
    # into its input (x.mul_(2), F.relu_(x)), which is harmless in plain PyTorch, rewrote the
    # stored split through a view, and every later evaluation of the split, the teacher's
    # logits and the students trained on them, read the drifted inputs (a helper's sweep). The
    # copy is within the noise of a small CNN's forward, and 0.06 ms of a 0.45 ms pass of 2,048
    # digits rows through an MLP (a scratch timing, one thread, load average 5).
    def head(self, n: int) -> Tensor:
        return self.x[:n].clone()

    def batches(self, order: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        for index in batch_indices(order.to(self.x.device), batch_size):
            yield index, self.x[index], self.labels[index]

    def chunks(self, batch_size: int = EVAL_BATCH_SIZE) -> Iterator[Tensor]:
        for start in range(0, self.x.shape[0], batch_size):
            yield self.x[start : start + batch_size].clone()


def as_split(x: Tensor | Split, y: Tensor | None = None) -> Split:
    """A split of ``x`` (a split already, or a tensor with its labels ``y``)."""
    if isinstance(x, Tensor):
        labels = y if y is not None else torch.zeros(x.shape[0], dtype=torch.long)
        return TensorSplit(x, labels)
    return x
