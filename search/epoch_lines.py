"""Lines for the minutes before a result: the teacher's epochs (``search``, ``reproduce``)
and a reproduced trial's epochs (``reproduce``).

At most one line every ``every_s`` seconds, and always the last epoch's: a small model does not
print a line per blink, and a large one never looks hung.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

EVERY_S = 2.0


class TeacherEpochs:
    """``load_or_train_teacher``'s ``report``: echoes the teacher's epochs and keeps them
    (the search logs them on its parent run)."""

    def __init__(self, echo: Callable[[str], Any], every_s: float = EVERY_S) -> None:
        self.echo, self.every_s = echo, every_s
        self.epochs: list[dict[str, float]] = []
        self.shown = 0.0  # seconds into training of the last epoch echoed

    def __call__(self, epoch: dict[str, float]) -> None:
        self.epochs.append(epoch)
        last = epoch["epoch"] == epoch["epochs"]
        if not last and epoch["seconds"] - self.shown < self.every_s:
            return
        self.shown = epoch["seconds"]
        left = epoch["seconds"] / epoch["epoch"] * (epoch["epochs"] - epoch["epoch"])
        self.echo(
            f"teacher epoch {epoch['epoch']:.0f}/{epoch['epochs']:.0f}: loss {epoch['loss']:.4f}"
            f"  train_accuracy {epoch['train_accuracy']:.4f}  {epoch['seconds']:.1f}s"
            f" (about {left:.0f}s left)"
        )


class TrialEpochs:
    """``run_trial``'s ``report`` for one trial run outside a search: its epochs of ``total``
    (``trainers.config.planned_epochs``), with the phase, loss and validation accuracy."""

    def __init__(
        self,
        total: int,
        echo: Callable[[str], Any],
        every_s: float = EVERY_S,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.total, self.echo, self.every_s, self.clock = total, echo, every_s, clock
        self.started = clock()
        self.shown = 0.0

    def __call__(self, metrics: dict[str, Any]) -> None:
        epoch = int(metrics["epoch"])
        elapsed = self.clock() - self.started
        if epoch < self.total and elapsed - self.shown < self.every_s:
            return
        self.shown = elapsed
        left = elapsed / max(epoch, 1) * max(self.total - epoch, 0)
        self.echo(
            f"epoch {epoch}/{self.total} {metrics.get('phase', '')}: loss {metrics['loss']:.4f}"
            f"  val_accuracy {metrics['val_accuracy']:.4f}  {elapsed:.1f}s"
            f" (about {left:.0f}s left)"
        )
