"""The teacher's and a reproduced trial's epoch lines: throttled, the last always shown."""

from __future__ import annotations

from nascomp.search.epoch_lines import TeacherEpochs, TrialEpochs


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_trial_epochs_show_one_line_per_interval_and_always_the_last() -> None:
    clock, lines = Clock(), []
    echo = TrialEpochs(4, lines.append, every_s=2.0, clock=clock)
    for epoch, at, phase in [
        (1, 1.0, "train"),
        (2, 2.5, "train"),
        (3, 3.0, "prune"),
        (4, 3.5, "quant"),
    ]:
        clock.now = 100.0 + at
        echo({"epoch": epoch, "phase": phase, "loss": 0.5 / epoch, "val_accuracy": 0.2 * epoch})
    assert lines == [
        # 2.5 s in, 2 of 4 epochs done: as long again for the other two
        "epoch 2/4 train: loss 0.2500  val_accuracy 0.4000  2.5s (about 2s left)",
        # 3.0 s was under 2 s after the last line; the last epoch is shown anyway
        "epoch 4/4 quant: loss 0.1250  val_accuracy 0.8000  3.5s (about 0s left)",
    ]


def test_teacher_epochs_keep_every_epoch_and_echo_the_throttled_ones() -> None:
    lines: list[str] = []
    echo = TeacherEpochs(lines.append, every_s=2.0)
    epochs = [
        {"epoch": e, "epochs": 3, "loss": 1.0 / e, "train_accuracy": 0.3 * e, "seconds": s}
        for e, s in [(1, 1.0), (2, 4.0), (3, 4.5)]
    ]
    for epoch in epochs:
        echo(epoch)
    assert echo.epochs == epochs
    assert lines == [
        "teacher epoch 2/3: loss 0.5000  train_accuracy 0.6000  4.0s (about 2s left)",
        "teacher epoch 3/3: loss 0.3333  train_accuracy 0.9000  4.5s (about 0s left)",
    ]
