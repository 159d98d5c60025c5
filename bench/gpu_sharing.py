"""Trials per hour on one GPU at 1, 2, 4 and 8 concurrent trials of the CIFAR-10-sized model.

    python bench/gpu_sharing.py                        # levels 1 2 4 8, 3 trials per worker
    python bench/gpu_sharing.py --quick                # levels 1 2, 1 trial per worker
    python bench/gpu_sharing.py --data-root DIR        # an extracted CIFAR-10-images folder

What ``resources.gpus_per_trial: 0.25`` does in a search is start several Ray worker processes
that all use the one device. This bench measures exactly that sharing, without Ray: at each
level N it starts N worker processes (spawn), each loading the data once onto the GPU
(``trainers.data.to_device``), running one untimed warm-up trial, waiting at a barrier, then
running the real ``trainers.trial.run_trial`` on the same fixed config, trial after trial.
Trials per hour = trials finished / wall time from the barrier to the last trial's end. Ray's
own per-trial overhead is what ``bench/overhead.py`` measures; it does not depend on the GPU.

Each worker gets ``cpu_count // N`` threads (``resources.cpus_per_trial``), as the search
would give it. Without a CUDA GPU the bench says so and exits 0.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CIFAR_ARCH, PLAIN_TRAINING, at_least, cifar_subset, machine, pinned_trial_config


def trial_config(root: Path, n_workers: int, epochs: int, batch_size: int) -> dict[str, Any]:
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    return pinned_trial_config(
        {
            **PLAIN_TRAINING,
            **CIFAR_ARCH,
            "data.name": "imagefolder",
            "data.root": str(root),
            "train.epochs": epochs,
            "train.batch_size": batch_size,
            "resources.cpus_per_trial": threads,
            "resources.gpus_per_trial": 1.0 / n_workers,
        }
    )


def _worker(
    config: dict[str, Any],
    n_trials: int,
    barrier: Any,
    results: Any,
) -> None:
    import torch

    from nascomp.trainers.config import TrialConfig
    from nascomp.trainers.data import to_device
    from nascomp.trainers.trial import run_trial

    cfg = TrialConfig.from_flat(config)
    torch.set_num_threads(cfg.threads)
    to_device(cfg.data.load(), cfg.device)  # once per worker, before timing
    warm = run_trial({**config, "train.epochs": 1})  # kernels, cuDNN choices, allocator
    if warm.status != "ok":
        raise RuntimeError(f"warm-up trial {warm.status}: {warm.reason}")
    torch.cuda.synchronize()
    barrier.wait()
    ends = []
    accuracy = 0.0
    for _ in range(n_trials):
        outcome = run_trial(config)
        if outcome.status != "ok":
            raise RuntimeError(f"trial {outcome.status}: {outcome.reason}")
        ends.append(time.time())
        accuracy = outcome.metrics["val_accuracy"]
    results.put(
        {
            "ends": ends,
            "peak_bytes": torch.cuda.max_memory_allocated(),
            "val_accuracy": accuracy,
        }
    )


def run_level(config: dict[str, Any], n_workers: int, n_trials: int) -> dict[str, float]:
    context = mp.get_context("spawn")
    barrier = context.Barrier(n_workers + 1)
    results = context.Queue()
    workers = [
        context.Process(target=_worker, args=(config, n_trials, barrier, results))
        for _ in range(n_workers)
    ]
    for worker in workers:
        worker.start()
    barrier.wait(timeout=900)  # every worker has its data on the GPU and has warmed up
    started = time.time()
    reports = [results.get(timeout=3600) for _ in workers]
    for worker in workers:
        worker.join()
        if worker.exitcode:
            raise RuntimeError(f"a worker exited with code {worker.exitcode}")
    wall = max(end for report in reports for end in report["ends"]) - started
    n_done = sum(len(report["ends"]) for report in reports)
    return {
        "workers": n_workers,
        "trials": n_done,
        "wall_s": wall,
        "trials_per_hour": n_done / wall * 3600,
        "seconds_per_trial": wall * n_workers / n_done,
        "peak_gib_per_worker": max(r["peak_bytes"] for r in reports) / 2**30,
        "val_accuracy": sum(r["val_accuracy"] for r in reports) / len(reports),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="levels 1 and 2, 1 trial each")
    parser.add_argument(
        "--levels",
        type=int,
        nargs="+",
        default=[1, 2, 4, 8],
        help="numbers of concurrent worker processes, one level after another (default: 1 2 4 8)",
    )
    parser.add_argument(
        "--trials-per-worker",
        type=int,
        default=3,
        help="timed trials per worker, after its warm-up trial (default %(default)s)",
    )
    parser.add_argument("--epochs", type=at_least(1), default=3, help="training epochs per trial")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=128,
        help="train.batch_size of every trial (default %(default)s)",
    )
    parser.add_argument("--per-class", type=int, default=1000, help="CIFAR train images/class")
    parser.add_argument("--data-root", type=Path, help="extracted CIFAR-10-images folder")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_sharing: no CUDA GPU on this machine; nothing to measure (exit 0)")
        return 0
    if args.quick:
        args.levels, args.trials_per_worker, args.epochs = [1, 2], 1, 1
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="nascomp-gpu-") as tmp:
        root = args.data_root or cifar_subset(Path(tmp), args.per_class, args.per_class // 5)
        print(
            f"data: {root}; model: 3-stage residual CNN, 16 channels, batch {args.batch_size}, "
            f"{args.epochs} epochs per trial, {args.trials_per_worker} trials per worker"
        )
        rows = []
        for n_workers in args.levels:
            config = trial_config(root, n_workers, args.epochs, args.batch_size)
            row = run_level(config, n_workers, args.trials_per_worker)
            rows.append(row)
            print(
                f"  {n_workers} concurrent: {row['trials_per_hour']:,.0f} trials/h "
                f"({row['trials']} trials in {row['wall_s']:.1f} s)",
                flush=True,
            )
    base = rows[0]["trials_per_hour"]
    print()
    print(
        "| concurrent trials | trials/hour | x vs first level | s per trial | "
        "peak GPU GiB per worker | mean val_accuracy |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['workers']} | {row['trials_per_hour']:,.0f} | "
            f"{row['trials_per_hour'] / base:.2f} | {row['seconds_per_trial']:.2f} | "
            f"{row['peak_gib_per_worker']:.2f} | {row['val_accuracy']:.4f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
