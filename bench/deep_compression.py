"""Deep Compression's MNIST table (Han et al., ICLR 2016), redone with nascomp's compressors.

For LeNet-300-100 and LeNet-5: train a dense baseline, prune (unstructured magnitude, global
ranking, cubic ramp, masks kept through fine-tuning), fine-tune, then quantization-aware
fine-tuning at ``--bits`` (per-channel symmetric weights, 8-bit activations). Both the baseline
and the compressed model are written as real ``save_compressed`` artifacts; the bytes in the
table are those files' sizes, and the compressed file is loaded back into a fresh skeleton
that must predict exactly what was evaluated.

Errors are on the MNIST test set; hyper-parameters were chosen on the validation split only
(the last 10% of the training images, stratified, held out by ``load_data``), which is printed
too. Run from the repository root::

    python bench/deep_compression.py                 # full run, both models
    python bench/deep_compression.py --quick         # a smoke run of a minute or two
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from nascomp.compressors.export import load_compressed, save_compressed
from nascomp.compressors.pruning import PruneConfig, make_pruner
from nascomp.compressors.quantization import QuantConfig, prepare_qat
from nascomp.compressors.size import model_size_bytes
from nascomp.spaces.models import build_model
from nascomp.trainers.data import DataSplits, load_data
from nascomp.trainers.loop import make_optimizer, predict_logits, train_epoch

# Han et al. 2016, Table 2 and 3: (baseline error %, compressed error %, KB before, KB after).
PAPER = {
    "lenet300100": (1.64, 1.58, 1070, 27),
    "lenet5": (0.80, 0.74, 1720, 44),
}


@dataclass(frozen=True)
class Recipe:
    """Epochs per phase, pruning ratio and weight bits; chosen on the validation split."""

    epochs: int
    prune_epochs: int
    finetune_epochs: int
    qat_epochs: int
    ratio: float
    bits: int
    lr: float = 1e-3
    batch_size: int = 128


RECIPES = {
    "lenet300100": Recipe(
        epochs=20, prune_epochs=8, finetune_epochs=4, qat_epochs=3, ratio=0.94, bits=4
    ),
    # Picked on validation error among (0.94, 4), (0.93, 4), (0.94, 5): docs/benchmarks.md.
    "lenet5": Recipe(
        epochs=15, prune_epochs=6, finetune_epochs=4, qat_epochs=3, ratio=0.93, bits=4
    ),
}
FINETUNE_LR_SCALE = 0.3  # pruning fine-tunes a trained network: a smaller step
QAT_LR_SCALE = 0.1


@dataclass
class Row:
    model: str
    baseline_error: float
    compressed_error: float
    baseline_val_error: float
    compressed_val_error: float
    baseline_bytes: int
    compressed_bytes: int
    nonzero_weights: int
    weights: int
    seconds: float
    cpu_seconds: float  # this process's CPU time: what the run costs, whatever else is running

    @property
    def ratio(self) -> float:
        return self.baseline_bytes / self.compressed_bytes


def error(model: nn.Module, x: Tensor, y: Tensor) -> float:
    return (predict_logits(model, x).argmax(dim=1) != y).float().mean().item()


def cosine_lr(base: float, step: int, n_steps: int) -> float:
    """Cosine decay from ``base`` to 0 over ``n_steps`` epochs (evaluated at epoch start)."""
    return base * 0.5 * (1.0 + math.cos(math.pi * step / max(n_steps, 1)))


class Compression:
    """One model's run: baseline training, pruning, fine-tuning, QAT, artifacts."""

    def __init__(self, name: str, recipe: Recipe, data: DataSplits, seed: int) -> None:
        self.name, self.recipe, self.data = name, recipe, data
        torch.manual_seed(seed)
        self.model = build_model({"family": name}, data.input_shape, data.n_classes)
        self.generator = torch.Generator().manual_seed(seed)
        self.pruner = None

    def epochs(self, n_epochs: int, lr: float, *, decay: bool, prune: bool = False) -> None:
        recipe = self.recipe
        optimizer = make_optimizer(self.model, "adam", lr, 0.0, 0.9)
        for epoch in range(n_epochs):
            if prune:
                self.pruner.update((epoch + 1) / n_epochs)
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(lr, epoch, n_epochs) if decay else lr
            stats = train_epoch(
                self.model,
                self.data.train_x,
                self.data.train_y,
                optimizer=optimizer,
                batch_size=recipe.batch_size,
                generator=self.generator,
                after_step=self.pruner.after_step if self.pruner is not None else None,
            )
            val = error(self.model, self.data.val_x, self.data.val_y)
            print(f"  {self.name} lr={group['lr']:.2e} loss={stats.loss:.4f} val_err={val:.4f}")

    def run(self, workdir: Path) -> Row:
        started, cpu_started = time.perf_counter(), time.process_time()
        recipe, data = self.recipe, self.data
        self.epochs(recipe.epochs, recipe.lr, decay=True)
        baseline = (error(self.model, data.test_x, data.test_y), self._val_error())
        baseline_bytes = save_compressed(self.model, workdir / f"{self.name}-fp32.nascomp")
        config = PruneConfig("unstructured", recipe.ratio, "l1", "global")
        self.pruner = make_pruner(self.model, config, data.train_x[:2])
        finetune_lr = recipe.lr * FINETUNE_LR_SCALE
        self.epochs(recipe.prune_epochs, finetune_lr, decay=False, prune=True)
        self.epochs(recipe.finetune_epochs, finetune_lr, decay=True)
        prepare_qat(self.model, QuantConfig(bits=recipe.bits, act_bits=8))
        self.epochs(recipe.qat_epochs, recipe.lr * QAT_LR_SCALE, decay=True)
        self.model.eval()
        path = workdir / f"{self.name}-{recipe.bits}bit.nascomp"
        compressed_bytes = save_compressed(self.model, path)
        self._check_artifact(path)
        weights = [m.weight for m in self.model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        return Row(
            model=self.name,
            baseline_error=baseline[0],
            compressed_error=error(self.model, data.test_x, data.test_y),
            baseline_val_error=baseline[1],
            compressed_val_error=self._val_error(),
            baseline_bytes=baseline_bytes,
            compressed_bytes=compressed_bytes,
            nonzero_weights=sum(int(w.count_nonzero()) for w in weights),
            weights=sum(w.numel() for w in weights),
            seconds=time.perf_counter() - started,
            cpu_seconds=time.process_time() - cpu_started,
        )

    def _val_error(self) -> float:
        return error(self.model, self.data.val_x, self.data.val_y)

    def _check_artifact(self, path: Path) -> None:
        """The file alone (plus the architecture) must predict exactly what was evaluated."""
        skeleton = build_model({"family": self.name}, self.data.input_shape, self.data.n_classes)
        restored = load_compressed(path, skeleton).eval()
        expected = predict_logits(self.model, self.data.test_x)
        if not torch.equal(predict_logits(restored, self.data.test_x), expected):
            raise AssertionError(f"{path} does not reproduce the evaluated {self.name}")
        if path.stat().st_size != model_size_bytes(self.model):
            raise AssertionError(f"{path} differs from the size formula")


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'model':<14}{'source':<10}{'base err %':>11}{'comp err %':>11}"
        f"{'base bytes':>12}{'comp bytes':>12}{'ratio':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        paper = PAPER[row.model]
        print(
            f"{row.model:<14}{'paper':<10}{paper[0]:>11.2f}{paper[1]:>11.2f}"
            f"{paper[2] * 1000:>12,}{paper[3] * 1000:>12,}{paper[2] / paper[3]:>7.0f}x"
        )
        print(
            f"{'':<14}{'nascomp':<10}{100 * row.baseline_error:>11.2f}"
            f"{100 * row.compressed_error:>11.2f}{row.baseline_bytes:>12,}"
            f"{row.compressed_bytes:>12,}{row.ratio:>7.1f}x"
        )
    print()
    for row in rows:
        print(
            f"{row.model}: val error {100 * row.baseline_val_error:.2f}% -> "
            f"{100 * row.compressed_val_error:.2f}%, {row.nonzero_weights:,} of "
            f"{row.weights:,} weights kept ({100 * row.nonzero_weights / row.weights:.1f}%), "
            f"{row.seconds / 60:.1f} min wall, {row.cpu_seconds / 60:.1f} min CPU"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads; 1 on a shared 2-core machine"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="5,000 images, 1 epoch per phase")
    parser.add_argument("--ratio", type=float, help="override the recipes' pruning ratio")
    parser.add_argument("--bits", type=int, help="override the recipes' weight bits")
    parser.add_argument("--epochs", type=int, help="override the baseline epochs")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    return parser.parse_args()


def recipe_for(name: str, args: argparse.Namespace) -> Recipe:
    recipe = RECIPES[name]
    if args.quick:
        recipe = replace(recipe, epochs=1, prune_epochs=1, finetune_epochs=1, qat_epochs=1)
    overrides = {"ratio": args.ratio, "bits": args.bits, "epochs": args.epochs}
    return replace(recipe, **{k: v for k, v in overrides.items() if v is not None})


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    data = load_data(
        name="mnist",
        root=args.data_root,
        val_fraction=0.1,
        split_seed=0,
        max_train_samples=5000 if args.quick else None,
    )
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            recipe = recipe_for(name, args)
            print(f"{name}: {recipe}")
            rows.append(Compression(name, recipe, data, args.seed).run(Path(folder)))
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) | {"ratio": r.ratio} for r in rows], indent=2))


if __name__ == "__main__":
    main()
