"""Unstructured pruning's selection of the weights to zero, against the full sort it replaced.

    python bench/prune_select.py               # 5 alternating rounds, 1 thread
    python bench/prune_select.py --rounds 3 --threads 2

Magnitude pruning zeroes the ``n`` weights of lowest score at each step of its schedule, over
every prunable weight at once (``scope: global``) or layer by layer. It picked them with
``argsort(scores, stable=True)[:n]``, a full sort; ``compressors.pruning.lowest`` picks the
same ones (ties to the earlier position) with ``kthvalue``, which is linear. Each round runs
the default three-step schedule (ratio 0.6) on a model of torchvision's, once with each
selection, sides alternating (A B, B A, ...) because the machine is shared; the masks of the
two sides must be equal, or the script fails. Printed: medians per side and of the per-round
ratios (sort / kthvalue: above 1 is faster now).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import at_least, load_average, machine

import nascomp.compressors.pruning as pruning
from nascomp.compressors.pruning import PruneConfig, make_pruner

Select = Callable[[torch.Tensor, int], torch.Tensor]
MODELS = {
    "resnet18": lambda: torchvision.models.resnet18(num_classes=10),
    "mobilenet_v3_small": lambda: torchvision.models.mobilenet_v3_small(num_classes=10),
}


def sorted_selection(scores: torch.Tensor, n: int) -> torch.Tensor:
    """The selection before: a stable full sort, its first ``n``."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask[torch.argsort(scores, stable=True)[: max(n, 0)]] = True
    return mask


def schedule(model_name: str, scope: str, select: Select) -> tuple[float, list[torch.Tensor]]:
    """Seconds for the three updates of the schedule with ``select``, and the masks made."""
    torch.manual_seed(0)
    model = MODELS[model_name]()
    config = PruneConfig(method="unstructured", ratio=0.6, scope=scope)
    pruner = make_pruner(model, config, torch.zeros(2, 3, 32, 32))
    pruning.lowest = select  # the pruner looks it up in its module at each update
    started = time.perf_counter()
    for step in (1, 2, 3):
        pruner.update(step / 3)
    return time.perf_counter() - started, [mask.clone() for mask in pruner.masks.values()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds",
        type=at_least(1),
        default=5,
        help="alternating rounds per model and scope (default %(default)s)",
    )
    parser.add_argument(
        "--threads", type=at_least(1), default=1, help="torch threads (default %(default)s)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    kth = pruning.lowest
    print(f"machine: {machine()}; load average {load_average()}; {args.threads} thread(s)")
    print("| model | scope | weights | full sort s | kthvalue s | sort / kthvalue |")
    print("|---|---|---|---|---|---|")
    try:
        for model_name in MODELS:
            n_weights = sum(p.numel() for p in MODELS[model_name]().parameters() if p.dim() > 1)
            for scope in ("global", "layer"):
                times: dict[str, list[float]] = {"sort": [], "kth": []}
                for i in range(args.rounds):
                    sides = [("sort", sorted_selection), ("kth", kth)]
                    masks = {}
                    for side, select in sides if i % 2 == 0 else sides[::-1]:
                        seconds, masks[side] = schedule(model_name, scope, select)
                        times[side].append(seconds)
                    same = all(map(torch.equal, masks["sort"], masks["kth"]))
                    if not same:
                        print(f"{model_name} {scope}: the masks differ", file=sys.stderr)
                        return 1
                ratios = [a / b for a, b in zip(times["sort"], times["kth"], strict=True)]
                print(
                    f"| {model_name} | {scope} | {n_weights:,} | "
                    f"{statistics.median(times['sort']):.3f} | "
                    f"{statistics.median(times['kth']):.3f} | "
                    f"**{statistics.median(ratios):.2f}x** |"
                )
    finally:
        pruning.lowest = kth
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
