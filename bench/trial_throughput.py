"""Training speed of nascomp's trial loop against a bare, hand-written PyTorch loop.

    python bench/trial_throughput.py                 # digits + CIFAR-10-sized, CPU, 1 thread
    python bench/trial_throughput.py --quick         # a smoke run (about a minute)
    python bench/trial_throughput.py --device cuda   # on a GPU

Same model (built by ``spaces.build_model`` from the same config, same initial weights), same
data tensors, batch size, optimizer and device on both sides. Two levels are compared:

- ``loop``: ``trainers.loop.train_epoch`` (what every trial epoch runs) against ``bare_epoch``
  below, the minimal loop one would write by hand: slice a batch, forward, cross-entropy,
  backward, step.
- ``trial``: ``trainers.trial.run_trial`` (plain training: no pruning, quantization or
  distillation), whose ``train_seconds`` also covers what a trial does around the loop each
  epoch (validation accuracy, parameter counts and size for the per-epoch report), against
  the bare loop for the same number of epochs.

The two sides alternate (A B B A ...) and each ratio is the median of the per-pair ratios, so
the drift of a shared machine cancels. A ratio of 1.0 means nascomp trains as fast as the bare
loop; the goal of issue 6 is at least 0.95. A third line measures what batched on-device
augmentation (``trainers.augment``: random crop with 4-pixel padding, random flip) costs the
bare loop on the CIFAR-10-sized model.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import torch.nn.functional as F
from _common import (
    CIFAR_ARCH,
    DIGITS_ARCH,
    PLAIN_TRAINING,
    at_least,
    cifar_subset,
    load_average,
    machine,
    pinned_trial_config,
    spread,
)
from torch import Tensor, nn

from nascomp.spaces.models import build_model
from nascomp.trainers.augment import AugmentConfig, augment_batch
from nascomp.trainers.config import TrialConfig
from nascomp.trainers.data import DataSplits, load_data, to_device
from nascomp.trainers.loop import make_optimizer, train_epoch
from nascomp.trainers.trial import run_trial


def bare_epoch(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
    augment: AugmentConfig | None = None,
) -> None:
    """The physical limit: a hand-written epoch with nothing around it."""
    model.train()
    order = torch.randperm(x.shape[0], generator=generator).to(x.device)
    for start in range(0, x.shape[0], batch_size):
        index = order[start : start + batch_size]
        if index.numel() < 2:
            break
        inputs = x[index]
        if augment is not None:
            inputs = augment_batch(inputs, augment, generator)
        loss = F.cross_entropy(model(inputs), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@dataclass
class Workload:
    label: str
    config: dict[str, Any]  # flat trial config, as nascomp search would send it
    data: DataSplits  # already on the device

    @property
    def cfg(self) -> TrialConfig:
        return TrialConfig.from_flat(self.config)

    def fresh_model(self, initial: dict[str, Tensor]) -> nn.Module:
        model = build_model(self.cfg.arch, self.data.input_shape, self.data.n_classes)
        model.load_state_dict(initial)
        return model.to(self.cfg.device)

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        train = self.cfg.train
        return make_optimizer(model, train.optimizer, train.lr, train.weight_decay, train.momentum)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass(frozen=True)
class Timing:
    """Wall seconds and this process's CPU seconds of one timed run."""

    wall: float
    cpu: float


def _now() -> Timing:
    return Timing(time.perf_counter(), time.process_time())


def _since(start: Timing) -> Timing:
    now = _now()
    return Timing(now.wall - start.wall, now.cpu - start.cpu)


def timed_epochs(work: Workload, initial: dict[str, Tensor], epoch_fn: Callable, n: int) -> Timing:
    """Time of ``n`` epochs of ``epoch_fn`` on a fresh model with the same initial weights."""
    cfg = work.cfg
    model = work.fresh_model(initial)
    optimizer = work.optimizer(model)
    generator = torch.Generator().manual_seed(cfg.seed)
    x, y = work.data.train_x, work.data.train_y
    _sync(cfg.device)
    started = _now()
    for _ in range(n):
        epoch_fn(model, x, y, optimizer, cfg.train.batch_size, generator)
    _sync(cfg.device)
    return _since(started)


def nascomp_epoch(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
) -> None:
    train_epoch(model, x, y, optimizer=optimizer, batch_size=batch_size, generator=generator)


def bare(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
) -> None:
    bare_epoch(model, x, y, optimizer, batch_size, generator)


def bare_amp(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
) -> None:
    """The bare loop with channels-last memory and bf16 autocast: what the GPU could give."""
    model.to(memory_format=torch.channels_last)
    model.train()
    order = torch.randperm(x.shape[0], generator=generator).to(x.device)
    for start in range(0, x.shape[0], batch_size):
        index = order[start : start + batch_size]
        if index.numel() < 2:
            break
        inputs = x[index].contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(inputs), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def bare_augmented(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
) -> None:
    bare_epoch(model, x, y, optimizer, batch_size, generator, AugmentConfig(padding=4, flip=True))


def trial_epochs(work: Workload, n: int) -> Timing:
    """Time of ``n`` epochs inside a real run_trial, each with its per-epoch report.

    Timed between the first and the last of ``n + 1`` per-epoch reports, so the trial's fixed
    costs (building the model, final evaluation, latency measurement) stay out and what is
    left is exactly what a trial spends per epoch: training plus validation and the report.
    """
    stamps: list[Timing] = []
    outcome = run_trial(
        {**work.config, "train.epochs": n + 1}, report=lambda _: stamps.append(_now())
    )
    assert outcome.status == "ok", outcome.reason
    first, last = stamps[0], stamps[-1]
    return Timing(last.wall - first.wall, last.cpu - first.cpu)


def paired(
    a: Callable[[], Timing], b: Callable[[], Timing], n_pairs: int
) -> tuple[list[Timing], list[Timing]]:
    """Seconds of a and b, alternating A B, B A, ... so neither side always runs first."""
    a_times, b_times = [], []
    for i in range(n_pairs):
        if i % 2 == 0:
            a_times.append(a())
            b_times.append(b())
        else:
            b_times.append(b())
            a_times.append(a())
    return a_times, b_times


def compare(label: str, work: Workload, n_epochs: int, n_pairs: int, rows: list[list[str]]) -> None:
    cfg = work.cfg
    torch.set_num_threads(cfg.threads)
    model = build_model(cfg.arch, work.data.input_shape, work.data.n_classes)
    initial = copy.deepcopy(model.state_dict())
    n_samples = work.data.train_x.shape[0] * n_epochs

    # Warm-up (allocator, kernels, first-call costs) for every side, untimed.
    for fn in (nascomp_epoch, bare, bare_augmented):
        timed_epochs(work, initial, fn, 1)
    trial_epochs(work, 1)

    def add(level: str, ours: list[Timing], theirs: list[Timing], what: str) -> None:
        # Throughput ratio = bare time / nascomp time, per alternating pair.
        wall = [t.wall / o.wall for o, t in zip(ours, theirs, strict=True)]
        cpu = [t.cpu / o.cpu for o, t in zip(ours, theirs, strict=True)]
        rows.append(
            [
                label,
                level,
                f"{n_samples / statistics.median(o.wall for o in ours):,.0f}",
                f"{n_samples / statistics.median(t.wall for t in theirs):,.0f}",
                str(spread(wall)),
                "" if on_gpu else str(spread(cpu)),
                what,
            ]
        )

    on_gpu = cfg.device.startswith("cuda")
    loop_ours, loop_bare = paired(
        lambda: timed_epochs(work, initial, nascomp_epoch, n_epochs),
        lambda: timed_epochs(work, initial, bare, n_epochs),
        n_pairs,
    )
    add("loop", loop_ours, loop_bare, "train_epoch / bare loop")
    trial_ours, trial_bare = paired(
        lambda: trial_epochs(work, n_epochs),
        lambda: timed_epochs(work, initial, bare, n_epochs),
        n_pairs,
    )
    add("trial", trial_ours, trial_bare, "run_trial epochs (with per-epoch report) / bare loop")
    if work.data.input_shape[0] == 3:
        aug, plain = paired(
            lambda: timed_epochs(work, initial, bare_augmented, n_epochs),
            lambda: timed_epochs(work, initial, bare, n_epochs),
            n_pairs,
        )
        add("augment", aug, plain, "bare + batched crop/flip / bare (cost of augmentation)")
    if on_gpu:
        timed_epochs(work, initial, bare_amp, 1)
        amp, plain = paired(
            lambda: timed_epochs(work, initial, bare_amp, n_epochs),
            lambda: timed_epochs(work, initial, bare, n_epochs),
            n_pairs,
        )
        add("amp", amp, plain, "bare + channels-last + bf16 autocast / bare (possible gain)")


def workloads(args: argparse.Namespace, tmp: Path) -> list[Workload]:
    common = {**PLAIN_TRAINING, "resources.cpus_per_trial": args.threads}
    if args.device.startswith("cuda"):
        common["resources.gpus_per_trial"] = 1
    out = []
    digits = pinned_trial_config({**common, **DIGITS_ARCH, "train.batch_size": 64})
    out.append(Workload("digits", digits, to_device(load_data("digits"), args.device)))
    per_class = 200 if args.quick else args.cifar_per_class
    root = args.cifar_root or cifar_subset(tmp, per_class, max(20, per_class // 5))
    cifar_sets = {
        **common,
        **CIFAR_ARCH,
        "data.name": "imagefolder",
        "data.root": str(root),
        "train.batch_size": 128,
    }
    cifar = pinned_trial_config(cifar_sets)
    cfg = TrialConfig.from_flat(cifar)
    data = load_data("imagefolder", str(root), val_fraction=cfg.data.val_fraction, split_seed=0)
    out.append(Workload("cifar10-sized", cifar, to_device(data, args.device)))
    for work in out:
        # run_trial on CUDA reads device "cuda"; TrialConfig carries it from gpus_per_trial.
        assert work.cfg.device == ("cuda" if args.device.startswith("cuda") else "cpu")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small data, 1 epoch, 2 pairs")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--threads", type=at_least(1), default=1, help="torch threads (cpus_per_trial)"
    )
    parser.add_argument("--epochs", type=at_least(1), default=3, help="epochs per timed run")
    parser.add_argument("--pairs", type=at_least(1), default=6, help="alternating timed pairs")
    parser.add_argument("--cifar-per-class", type=int, default=500, help="train images per class")
    parser.add_argument("--cifar-root", type=Path, help="an extracted CIFAR-10-images folder")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here")
        return 2
    n_epochs, n_pairs = (1, 2) if args.quick else (args.epochs, args.pairs)
    print(f"machine: {machine()}; load average {load_average()}")
    print(
        f"device {args.device}, {args.threads} thread(s), {n_epochs} epoch(s) per run, "
        f"{n_pairs} alternating pairs"
    )
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="nascomp-bench-") as tmp:
        for work in workloads(args, Path(tmp)):
            n_train = work.data.train_x.shape[0]
            print(
                f"{work.label}: {n_train} training samples of shape {work.data.input_shape}, "
                f"batch {work.cfg.train.batch_size}, {work.cfg.train.optimizer}"
            )
            compare(work.label, work, n_epochs, n_pairs, rows)
    header = [
        "model",
        "level",
        "nascomp samples/s",
        "bare samples/s",
        "wall ratio median [min, max]",
        "CPU-time ratio",
        "what",
    ]
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(
        "\nratio = nascomp throughput / bare throughput, per alternating pair (goal >= 0.95); "
        "rows whose last column names other sides (augment, amp) compare those, and the goal "
        "is not theirs. "
        "On a CPU the CPU-time ratio (this process's CPU seconds) is the one to trust on a shared "
        f"machine: other jobs stretch wall time, not CPU time. Load average now {load_average()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
