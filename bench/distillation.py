"""Does distillation help? The same small student trained with and without Hinton's loss from a
larger teacher, same epochs, several seeds; test errors side by side (Hinton et al. 2015 on
MNIST: 146 test errors without, 74 with).

Teacher: LeNet-5 (431k parameters), trained once. Student: an MLP with two hidden layers of
100 (89k parameters). Both
train on the MNIST training split (the validation 10% held out) with Adam and a cosine learning
rate; the student's epochs, temperature and alpha are fixed for both arms and were not tuned on
the test set. ``--features`` adds a third arm: Hinton's loss plus a
FitNets hint (the student's last hidden layer regressed onto the teacher's). Run from the
repository root::

    python bench/distillation.py --features    # about 15 minutes on a busy 2-core machine
    python bench/distillation.py --quick       # a smoke run
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from nascomp.compressors.distillation import FeatureTap, make_projector
from nascomp.spaces.models import build_model
from nascomp.trainers.data import DataSplits, load_data
from nascomp.trainers.loop import (
    Distillation,
    FeatureHint,
    make_optimizer,
    predict_logits,
    train_epoch,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA_ROOT, at_least

TEACHER = {"family": "lenet5"}
STUDENT = {"family": "mlp", "hidden": [100, 100]}


def n_errors(model: nn.Module, x: Tensor, y: Tensor) -> int:
    return int((predict_logits(model, x).argmax(dim=1) != y).sum())


def train(
    model: nn.Module,
    data: DataSplits,
    *,
    epochs: int,
    seed: int,
    distill: Distillation | None = None,
    lr: float = 1e-3,
    batch_size: int = 128,
) -> nn.Module:
    extra = [distill.hint.projector] if distill is not None and distill.hint is not None else []
    optimizer = make_optimizer(nn.ModuleList([model, *extra]), "adam", lr, 0.0, 0.9)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
        train_epoch(
            model,
            data.train_x,
            data.train_y,
            optimizer=optimizer,
            batch_size=batch_size,
            generator=generator,
            distill=distill,
        )
    return model.eval()


def feature_hint(
    student: nn.Module, teacher: nn.Module, probe: Tensor, weight: float
) -> FeatureHint:
    student_tap, teacher_tap = FeatureTap(student), FeatureTap(teacher)
    with torch.no_grad():
        student.eval()(probe)
        teacher.eval()(probe)
    student.train()
    projector = make_projector(student_tap.feature, teacher_tap.feature)
    return FeatureHint(teacher, student_tap, teacher_tap, projector, weight)


def student_errors(
    arm: str, data: DataSplits, teacher: nn.Module, logits: Tensor, args: argparse.Namespace
) -> list[int]:
    errors = []
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        student = build_model(STUDENT, data.input_shape, data.n_classes)
        distill = None
        if arm != "none":
            hint = None
            if arm == "hinton+features":
                hint = feature_hint(student, teacher, data.train_x[:2], args.feature_weight)
            distill = Distillation(logits, args.temperature, args.alpha, hint)
        train(student, data, epochs=args.student_epochs, seed=seed, distill=distill)
        errors.append(n_errors(student, data.test_x, data.test_y))
        val = n_errors(student, data.val_x, data.val_y)
        print(f"  {arm:<16} seed {seed}: {errors[-1]} test errors, {val} validation errors")
    return errors


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-root",
        default=str(DEFAULT_DATA_ROOT),
        help="folder holding the dataset "
        "(default %(default)s: $NASCOMP_DATA_ROOT if set, else ../shared/data)",
    )
    parser.add_argument(
        "--dataset",
        default="mnist",
        choices=["mnist", "fashion_mnist"],
        help="what teacher and students train and are tested on (default %(default)s)",
    )
    parser.add_argument(
        "--threads", type=at_least(1), default=1, help="torch threads (default %(default)s)"
    )
    parser.add_argument(
        "--seeds",
        type=at_least(1),
        default=3,
        help="students per arm, seeds 0 to N-1 (default %(default)s)",
    )
    parser.add_argument(
        "--teacher-epochs",
        type=int,
        default=8,
        help="training epochs of the LeNet-5 teacher, trained once (default %(default)s)",
    )
    parser.add_argument(
        "--student-epochs",
        type=int,
        default=15,
        help="training epochs of every student, the same in every arm (default %(default)s)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=4.0,
        help="temperature of Hinton's loss, above 0 (default %(default)s)",
    )
    parser.add_argument("--alpha", type=float, default=0.7, help="weight of the soft targets")
    parser.add_argument("--features", action="store_true", help="add the feature-hint arm")
    parser.add_argument(
        "--feature-weight",
        type=float,
        default=1.0,
        help="weight of the FitNets hint loss in the --features arm (default %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help="5,000 images, 1-2 epochs, 2 seeds")
    args = parser.parse_args()
    # before the teacher trains (minutes): the loss refused them after it
    if not 0 <= args.alpha <= 1:
        parser.error(f"--alpha: a weight in [0, 1]; got {args.alpha:g}")
    if not args.temperature > 0:
        parser.error(f"--temperature: above 0; got {args.temperature:g}")
    return args


def main() -> None:
    args = parse_args()
    if args.quick:
        args.seeds, args.teacher_epochs, args.student_epochs = 2, 1, 2
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = load_data(
        name=args.dataset,
        root=args.data_root,
        val_fraction=0.1,
        split_seed=0,
        max_train_samples=5000 if args.quick else None,
    )
    torch.manual_seed(0)
    teacher = build_model(TEACHER, data.input_shape, data.n_classes)
    train(teacher, data, epochs=args.teacher_epochs, seed=0)
    teacher_errors = n_errors(teacher, data.test_x, data.test_y)
    print(f"teacher {TEACHER}: {teacher_errors} test errors")
    # The teacher's logits, computed once (as run_trial does), aligned with the training rows.
    logits = predict_logits(teacher, data.train_x)
    arms = ["none", "hinton", *(["hinton+features"] if args.features else [])]
    results = {arm: student_errors(arm, data, teacher, logits, args) for arm in arms}
    n_test = len(data.test_y)
    print()
    print(
        f"student {STUDENT}, {args.student_epochs} epochs, T={args.temperature}, "
        f"alpha={args.alpha}, {args.seeds} seeds, {n_test:,} test images"
    )
    print(f"{'distillation':<18}{'errors per seed':<22}{'mean':>8}{'stdev':>8}{'error %':>9}")
    for arm, errors in results.items():
        mean = statistics.mean(errors)
        spread = statistics.stdev(errors) if len(errors) > 1 else 0.0
        per_seed = ", ".join(str(e) for e in errors)
        print(f"{arm:<18}{per_seed:<22}{mean:>8.1f}{spread:>8.1f}{100 * mean / n_test:>9.2f}")
    seconds = time.perf_counter() - started
    print(f"teacher (LeNet-5): {teacher_errors} errors; total {seconds:.0f} s")


if __name__ == "__main__":
    main()
