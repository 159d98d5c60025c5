"""Deep Compression's MNIST table (Han et al., ICLR 2016), redone with nascomp's compressors.

For LeNet-300-100 and LeNet-5: train a dense baseline, prune (unstructured magnitude, global
ranking, cubic ramp, masks kept through fine-tuning), fine-tune, then quantization-aware
fine-tuning at ``--bits`` (per-channel symmetric weights, 8-bit activations). Pruning,
fine-tuning and QAT also distil from the dense baseline (Hinton's loss at temperature ``--kd``,
default 4, its logits on the training split computed once); ``--kd 0`` trains them on the
labels alone, as the paper did. Both the baseline and the compressed model are written as real
``save_compressed`` artifacts; the bytes in the table are those files' sizes, and the
compressed file is loaded back into a fresh skeleton that must predict exactly what was
evaluated. The compressed file is entropy-coded (Deep Compression's third stage,
``compressors.entropy``) unless ``--coding packed``; the packed file's size is printed too.
With ``--budget B`` (or a recipe's ``budget``), each layer's width is chosen from ``WIDTHS``
before QAT by ``compressors.allocation``: each layer's sensitivity at each width on 1,024
training images (``--sensitivity``: ``kl``, the divergence of the outputs
from the float model's, nascomp's default; ``loss``, the cross-entropy increase it used before),
and the exact allocation with at most ``B`` bits per kept weight on average.

Errors are on the MNIST test set; the recipe is chosen on the validation split only (the last
10% of the training images, stratified, held out by ``load_data``): by default each model runs
the small grid ``GRID`` of pruning ratios and bit budgets and keeps, among the candidates at
least ``TARGET_RATIO`` times smaller than the baseline, the one of lowest validation error.
Every candidate is printed with its validation and test error; only the former picks. The
picked recipe (ratio, budget, criterion) is then run again from the start on every training
image, the validation split included, as the paper trained on all 60,000; that model is the
table's row, and the pick as trained on the smaller split is printed beside it (``--no-refit``
reports the pick itself). With ``--compare`` the grid's budgets are also allocated by the other
criterion, side by side from the same pruned models; those rows are printed for comparison and
never picked. Run from the repository root::

    python bench/deep_compression.py                 # full run, both models, grid and pick
    python bench/deep_compression.py --ratio 0.94 --bits 4    # one recipe, no selection
    python bench/deep_compression.py --quick         # a smoke run of a minute or two
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from nascomp.compressors.allocation import allocate_bits, average_bits, measure_sensitivity
from nascomp.compressors.export import load_compressed, save_compressed
from nascomp.compressors.pruning import PruneConfig, make_pruner
from nascomp.compressors.quantization import (
    SENSITIVITY_CRITERIA,
    VALID_BITS,
    QuantConfig,
    prepare_qat,
    weight_bits_by_layer,
)
from nascomp.compressors.size import model_size_bytes
from nascomp.spaces.models import build_model
from nascomp.trainers.data import DataSplits, load_data
from nascomp.trainers.loop import Distillation, make_optimizer, predict_logits, train_epoch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA_ROOT, at_least, output_file, write_whole

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
    budget: float | None = None  # average bits per kept weight, allocated per layer
    sensitivity: str = "kl"  # the allocator's criterion (compressors.allocation)
    # Distillation from the dense baseline while pruning, fine-tuning and QAT (Hinton's loss at
    # this temperature, weight KD_ALPHA; None: plain cross-entropy, as in the paper). On by
    # default at T = 4, on validation alone: over each model's grid it lowered the mean
    # validation error (LeNet-300-100 2.11% to 2.02%, LeNet-5 0.76% to 0.74%) and the pick's
    # (docs/benchmarks.md).
    kd_temperature: float | None = 4.0


# Epochs and learning rates per model, and the uniform bits of a candidate without a budget.
# ``ratio`` is the one-recipe default (``--bits``/``--budget`` without ``--ratio``); the default
# run picks the ratio from GRID.
RECIPES = {
    "lenet300100": Recipe(
        epochs=20, prune_epochs=8, finetune_epochs=4, qat_epochs=3, ratio=0.94, bits=4
    ),
    # Before issue 15, the validation pick among (0.94, 4), (0.93, 4), (0.94, 5).
    "lenet5": Recipe(
        epochs=15, prune_epochs=6, finetune_epochs=4, qat_epochs=3, ratio=0.93, bits=4
    ),
}
# The widths the allocator chooses from, and the training images it measures sensitivity on.
WIDTHS = (2, 3, 4, 5, 6, 8)
SENSITIVITY_IMAGES = 1024
# The default recipe is picked per model from this grid of (pruning ratio, bit budget; None:
# uniform ``bits``) on the validation split alone: among the candidates whose artifact is at
# least TARGET_RATIO times smaller than the baseline's, the lowest validation error (ties: the
# smaller file); if none reaches it, the smallest file. The baseline is trained once per model
# and each ratio pruned once; the budgets share that pruned model.
GRID: dict[str, tuple[tuple[float, ...], tuple[float | None, ...]]] = {
    "lenet300100": ((0.93, 0.94, 0.95), (None, 3.5, 3.0)),
    "lenet5": ((0.93, 0.94), (None, 3.5, 3.0)),
}
TARGET_RATIO = 55.0
KD_ALPHA = 0.5  # weight of the distillation term against the labels' cross-entropy
FINETUNE_LR_SCALE = 0.3  # pruning fine-tunes a trained network: a smaller step
QAT_LR_SCALE = 0.1


@dataclass
class Row:
    model: str
    prune_ratio: float
    budget: float | None  # None: every layer at the recipe's bits
    sensitivity: str | None  # the allocator's criterion; None without a budget
    baseline_error: float
    compressed_error: float
    baseline_val_error: float
    compressed_val_error: float
    baseline_bytes: int
    compressed_bytes: int
    packed_bytes: int  # the same model without entropy coding
    widths: dict[str, int]
    nonzero_weights: int
    weights: int
    seconds: float
    cpu_seconds: float  # this process's CPU time: what the run costs, whatever else is running
    train_images: int = 0  # the images it was trained on
    refit: bool = False  # trained on the validation split too: its val errors mean nothing

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

    def __init__(
        self, name: str, recipe: Recipe, data: DataSplits, seed: int, coding: str = "entropy"
    ) -> None:
        self.name, self.recipe, self.data, self.coding = name, recipe, data, coding
        torch.manual_seed(seed)
        self.model = build_model({"family": name}, data.input_shape, data.n_classes)
        self.generator = torch.Generator().manual_seed(seed)
        self.pruner = None
        self.distill: Distillation | None = None  # set from the trained baseline

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
                distill=self.distill,
                after_step=self.pruner.after_step if self.pruner is not None else None,
            )
            val = error(self.model, self.data.val_x, self.data.val_y)
            print(f"  {self.name} lr={group['lr']:.2e} loss={stats.loss:.4f} val_err={val:.4f}")

    def train_baseline(self, workdir: Path) -> None:
        self.started, self.cpu_started = time.perf_counter(), time.process_time()
        data = self.data
        self.epochs(self.recipe.epochs, self.recipe.lr, decay=True)
        self.baseline = (error(self.model, data.test_x, data.test_y), self._val_error())
        self.baseline_bytes = save_compressed(self.model, workdir / f"{self.name}-fp32.nascomp")
        if self.recipe.kd_temperature is not None:  # the dense model teaches what follows
            logits = predict_logits(self.model, data.train_x)
            self.distill = Distillation(logits, self.recipe.kd_temperature, KD_ALPHA)

    def prune(self, ratio: float) -> None:
        """Prune to ``ratio`` with the cubic ramp, then fine-tune with the masks kept."""
        self.recipe = replace(self.recipe, ratio=ratio)
        config = PruneConfig("unstructured", ratio, "l1", "global")
        self.pruner = make_pruner(self.model, config, self.data.train_x[:2])
        finetune_lr = self.recipe.lr * FINETUNE_LR_SCALE
        self.epochs(self.recipe.prune_epochs, finetune_lr, decay=False, prune=True)
        self.epochs(self.recipe.finetune_epochs, finetune_lr, decay=True)

    def quantize(
        self, budget: float | None, workdir: Path, layer_bits: dict[str, int] | None = None
    ) -> Row:
        """QAT at the recipe's bits, or at widths allocated under ``budget`` (``layer_bits``:
        allocated already); the artifact."""
        recipe = self.recipe = replace(self.recipe, budget=budget)
        data = self.data
        if budget is not None and layer_bits is None:
            layer_bits = self.allocate()
        prepare_qat(self.model, QuantConfig(bits=recipe.bits, act_bits=8), layer_bits)
        self.epochs(recipe.qat_epochs, recipe.lr * QAT_LR_SCALE, decay=True)
        self.model.eval()
        label = f"{budget}-{recipe.sensitivity}" if budget is not None else recipe.bits
        path = workdir / f"{self.name}-{recipe.ratio}-{label}.nascomp"
        compressed_bytes = save_compressed(self.model, path, coding=self.coding)
        self._check_artifact(path)
        weights = [m.weight for m in self.model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        return Row(
            model=self.name,
            prune_ratio=recipe.ratio,
            budget=budget,
            sensitivity=recipe.sensitivity if budget is not None else None,
            baseline_error=self.baseline[0],
            compressed_error=error(self.model, data.test_x, data.test_y),
            baseline_val_error=self.baseline[1],
            compressed_val_error=self._val_error(),
            baseline_bytes=self.baseline_bytes,
            compressed_bytes=compressed_bytes,
            packed_bytes=model_size_bytes(self.model),
            widths=weight_bits_by_layer(self.model),
            nonzero_weights=sum(int(w.count_nonzero()) for w in weights),
            weights=sum(w.numel() for w in weights),
            seconds=time.perf_counter() - self.started,
            cpu_seconds=time.process_time() - self.cpu_started,
            train_images=len(data.train_y),
        )

    def branch(self) -> Compression:
        """An independent copy to continue differently (the data splits are shared)."""
        data, self.data = self.data, None
        try:
            twin = copy.deepcopy(self)
        finally:
            self.data = data
        twin.data = data
        return twin

    def run(self, workdir: Path) -> Row:
        """One recipe, start to end."""
        self.train_baseline(workdir)
        self.prune(self.recipe.ratio)
        return self.quantize(self.recipe.budget, workdir)

    def allocate(self) -> dict[str, int]:
        """Per-layer widths under the recipe's budget (bits per kept weight), chosen on the
        sensitivity (the recipe's criterion) of the pruned, fine-tuned float model."""
        x, y = self.data.train_x[:SENSITIVITY_IMAGES], self.data.train_y[:SENSITIVITY_IMAGES]
        batches = list(zip(x.split(256), y.split(256), strict=True))
        table = measure_sensitivity(self.model, WIDTHS, batches, self.recipe.sensitivity)
        layers = dict(self.model.named_modules())
        kept = {name: int(layers[name].weight.count_nonzero()) for name in table}
        widths = allocate_bits(table, kept, self.recipe.budget)
        print(f"  {self.name} widths {widths} ({average_bits(widths, kept):.2f} bits per kept)")
        return widths

    def _val_error(self) -> float:
        return error(self.model, self.data.val_x, self.data.val_y)

    def _check_artifact(self, path: Path) -> None:
        """The file alone (plus the architecture) must predict exactly what was evaluated."""
        skeleton = build_model({"family": self.name}, self.data.input_shape, self.data.n_classes)
        restored = load_compressed(path, skeleton).eval()
        expected = predict_logits(self.model, self.data.test_x)
        if not torch.equal(predict_logits(restored, self.data.test_x), expected):
            raise AssertionError(f"{path} does not reproduce the evaluated {self.name}")
        if path.stat().st_size != model_size_bytes(self.model, coding=self.coding):
            raise AssertionError(f"{path} differs from the size formula")


def select(candidates: list[Row], sensitivity: str) -> Row:
    """The validation pick among ``candidates`` (see GRID) of the default recipe, its budgets
    allocated by ``sensitivity``; test error is never looked at."""
    candidates = [row for row in candidates if row.sensitivity in (None, sensitivity)]
    reaching = [row for row in candidates if row.ratio >= TARGET_RATIO]
    if not reaching:
        return min(candidates, key=lambda row: row.compressed_bytes)
    return min(reaching, key=lambda row: (row.compressed_val_error, row.compressed_bytes))


def run_grid(name: str, recipe: Recipe, args: argparse.Namespace, data: DataSplits, workdir: Path):
    """Every candidate of GRID[name] for one model; returns them and the validation pick."""
    ratios, budgets = GRID[name]
    base = Compression(name, recipe, data, args.seed, args.coding)
    base.train_baseline(workdir)
    rng = torch.get_rng_state()
    criteria = [recipe.sensitivity]
    if args.compare:
        criteria += [c for c in SENSITIVITY_CRITERIA if c != recipe.sensitivity]
    candidates: list[Row] = []
    for ratio in ratios:
        torch.set_rng_state(rng)  # each branch starts where the baseline ended
        pruned = base.branch()
        pruned.prune(ratio)
        done: dict[tuple, Row] = {}  # the same widths from both criteria train once
        cells = [(None, None)] if None in budgets else []
        cells += [(b, c) for b in budgets if b is not None for c in criteria]
        for budget, criterion in cells:
            branch = pruned.branch()
            chosen = criterion or recipe.sensitivity
            branch.recipe = replace(branch.recipe, budget=budget, sensitivity=chosen)
            widths = branch.allocate() if budget is not None else None
            key = (budget is None, tuple(sorted((widths or {}).items())))
            if key in done:
                row = replace(done[key], budget=budget, sensitivity=criterion)
            else:
                row = done[key] = branch.quantize(budget, workdir, widths)
            candidates.append(row)
            print(
                f"  candidate {name} ratio {ratio} budget {budget} ({criterion}): val "
                f"{100 * row.compressed_val_error:.2f}% test {100 * row.compressed_error:.2f}% "
                f"{row.compressed_bytes:,} bytes ({row.ratio:.1f}x)",
                flush=True,
            )
    return candidates, select(candidates, recipe.sensitivity)


def refit(
    name: str, recipe: Recipe, picked: Row, args: argparse.Namespace, data: DataSplits, workdir
) -> Row:
    """The picked recipe (pruning ratio, bit budget and criterion), run again from the start on
    every training image, the validation split included: the split has chosen the recipe and
    has no more to do, and the paper trained on all 60,000. Its widths are allocated anew on
    the refit model by the same budget and criterion; its test error is the row reported."""
    full = replace(
        data,
        train_x=torch.cat([data.train_x, data.val_x]),
        train_y=torch.cat([data.train_y, data.val_y]),
    )
    recipe = replace(
        recipe,
        ratio=picked.prune_ratio,
        budget=picked.budget,
        sensitivity=picked.sensitivity or recipe.sensitivity,
    )
    print(f"{name}: refit on {len(full.train_y):,} images: {recipe}")
    return Compression(name, recipe, full, args.seed, args.coding).run(workdir)


def print_candidates(candidates: list[Row], picked: Row, sensitivity: str) -> None:
    print(
        f"\n{'model':<14}{'ratio':>7}{'budget':>8}{'by':>6}{'val err %':>11}{'test err %':>11}"
        f"{'bytes':>10}{'x':>7}  widths"
    )
    for row in candidates:
        mark = "  <- validation pick" if row is picked else ""
        if row.sensitivity not in (None, sensitivity):
            mark = "  (comparison, never picked)"
        budget = "-" if row.budget is None else f"{row.budget:g}"
        print(
            f"{row.model:<14}{row.prune_ratio:>7.2f}{budget:>8}{row.sensitivity or '-':>6}"
            f"{100 * row.compressed_val_error:>11.2f}{100 * row.compressed_error:>11.2f}"
            f"{row.compressed_bytes:>10,}{row.ratio:>7.1f}  {row.widths}{mark}"
        )


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
        errors = (
            f"refit on {row.train_images:,} images (validation included)"
            if row.refit
            else f"val error {100 * row.baseline_val_error:.2f}% -> "
            f"{100 * row.compressed_val_error:.2f}%"
        )
        print(
            f"{row.model}: {errors}, {row.nonzero_weights:,} of "
            f"{row.weights:,} weights kept ({100 * row.nonzero_weights / row.weights:.1f}%), "
            f"{row.packed_bytes:,} bytes without entropy coding, widths {row.widths}, "
            f"{row.seconds / 60:.1f} min wall, {row.cpu_seconds / 60:.1f} min CPU"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(RECIPES),
        choices=list(RECIPES),
        help="the models to compress (default: both)",
    )
    parser.add_argument(
        "--data-root",
        default=str(DEFAULT_DATA_ROOT),
        help="folder holding MNIST "
        "(default %(default)s: $NASCOMP_DATA_ROOT if set, else ../shared/data)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads; 1 on a shared 2-core machine"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the initial weights and the batch order; the validation split is fixed "
        "(default %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help="5,000 images, 1 epoch per phase")
    parser.add_argument(
        "--ratio", type=float, help="one recipe at this pruning ratio (skips the selection grid)"
    )
    parser.add_argument(
        "--bits", type=int, help="one recipe at these uniform bits (skips the selection grid)"
    )
    parser.add_argument("--epochs", type=at_least(1), help="override the baseline epochs")
    parser.add_argument(
        "--budget", type=float, help="one recipe at this bit budget (skips the selection grid)"
    )
    parser.add_argument(
        "--coding",
        default="entropy",
        choices=["entropy", "packed"],
        help="the compressed file's coding: entropy-coded (Deep Compression's third stage) or "
        "packed (default %(default)s; the packed size is printed either way)",
    )
    parser.add_argument(
        "--sensitivity",
        default="kl",
        choices=SENSITIVITY_CRITERIA,
        help="the allocator's criterion of the default recipe",
    )
    parser.add_argument(
        "--compare",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also allocate the grid's budgets by the other criterion (never picked)",
    )
    parser.add_argument(
        "--kd",
        type=float,
        metavar="T",
        help="distil from the dense baseline at temperature T while compressing "
        "(default 4; 0: labels alone, the paper's pipeline)",
    )
    parser.add_argument(
        "--no-refit",
        dest="refit",
        action="store_false",
        help="report the grid's pick as trained, not its recipe retrained on every training "
        "image (validation split included)",
    )
    parser.add_argument("--json", type=output_file, help="also write the rows here")
    args = parser.parse_args()
    # Before hours of training: these were tracebacks after the run, or during it.
    if args.ratio is not None and not 0 <= args.ratio < 1:
        parser.error(f"--ratio: a pruning ratio in [0, 1); got {args.ratio:g}")
    if args.bits is not None and args.bits not in VALID_BITS:
        parser.error(f"--bits: one of {', '.join(map(str, VALID_BITS))}; got {args.bits}")
    return args


def recipe_for(name: str, args: argparse.Namespace) -> Recipe:
    recipe = RECIPES[name]
    if args.quick:
        recipe = replace(recipe, epochs=1, prune_epochs=1, finetune_epochs=1, qat_epochs=1)
    overrides = {
        "ratio": args.ratio,
        "bits": args.bits,
        "epochs": args.epochs,
        "budget": args.budget,
        "sensitivity": args.sensitivity,
        "kd_temperature": args.kd,
    }
    recipe = replace(recipe, **{k: v for k, v in overrides.items() if v is not None})
    return replace(recipe, kd_temperature=recipe.kd_temperature or None)  # --kd 0: none


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
    rows, all_candidates, all_rows, refits = [], [], [], []
    overridden = any(v is not None for v in (args.ratio, args.bits, args.budget))
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            recipe = recipe_for(name, args)
            print(f"{name}: {recipe}")
            if overridden:  # one recipe as given, no selection
                compression = Compression(name, recipe, data, args.seed, args.coding)
                rows.append(compression.run(Path(folder)))
                continue
            candidates, picked = run_grid(name, recipe, args, data, Path(folder))
            all_candidates.append((candidates, picked))
            # The time of the whole grid (each candidate's clock started with the baseline).
            last = candidates[-1]
            row = replace(picked, seconds=last.seconds, cpu_seconds=last.cpu_seconds)
            if args.refit:
                final = refit(name, recipe, picked, args, data, Path(folder))
                refits.append((picked, final))
                row = replace(
                    final,
                    refit=True,
                    seconds=row.seconds + final.seconds,
                    cpu_seconds=row.cpu_seconds + final.cpu_seconds,
                )
            rows.append(row)
    for candidates, picked in all_candidates:
        print_candidates(candidates, picked, args.sensitivity)
        all_rows.extend(candidates)
    for picked, final in refits:
        print(
            f"{picked.model}: the pick as trained on {picked.train_images:,} images: test "
            f"{100 * picked.compressed_error:.2f}%, {picked.ratio:.1f}x; its recipe refit on "
            f"{final.train_images:,}: test {100 * final.compressed_error:.2f}%, "
            f"{final.ratio:.1f}x, widths {final.widths}"
        )
    print()
    print_table(rows)
    if args.json:
        out = {
            "picked": [asdict(r) | {"ratio": r.ratio} for r in rows],
            "grid_picks": [asdict(p) | {"ratio": p.ratio} for p, _ in refits],
            "candidates": [asdict(r) | {"ratio": r.ratio} for r in all_rows],
        }
        write_whole(args.json, json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
