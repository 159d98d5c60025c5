"""What compression buys in CPU latency: fp32 against int8 (the deployable form a trial times)
and dense against 50% channel-pruned (structured, torch-pruning), at batch 1 and batch 64.

One model from nascomp's registry (a residual CNN on MNIST-sized inputs), four forms, every form
timed in each of ``--rounds`` interleaved rounds so that load from other processes hits them
alike; the table shows the median over rounds and the ratios. Run from the repository root::

    python bench/latency.py            # about a minute
    python bench/latency.py --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch
from torch import nn

from nascomp.compressors.deploy import deployable_form
from nascomp.compressors.measure import count_macs, count_params, measure_latency_ms
from nascomp.compressors.pruning import PruneConfig, make_pruner
from nascomp.compressors.quantization import QuantConfig, prepare_qat
from nascomp.spaces.models import build_model
from nascomp.trainers.data import load_data

ARCH = {
    "family": "cnn",
    "n_stages": 2,
    "blocks_per_stage": 2,
    "base_channels": 32,
    "block": "residual",
}
BATCH_SIZES = (1, 64)


def forms(data_root: str, ratio: float) -> dict[str, nn.Module]:
    """fp32 and int8, dense and channel-pruned, of one freshly built model."""
    data = load_data(name="mnist", root=data_root, max_train_samples=2000)
    torch.manual_seed(0)
    dense = build_model(ARCH, data.input_shape, data.n_classes).eval()
    pruned = copy.deepcopy(dense)
    config = PruneConfig("structured", ratio, "l1", "layer")
    make_pruner(pruned, config, data.train_x[:2]).update(1.0)
    calibration = [data.train_x[i : i + 64] for i in range(0, 256, 64)]
    out = {}
    for name, model in (("dense", dense), (f"pruned{round(100 * ratio)}", pruned)):
        out[f"{name} fp32"] = model
        qat = prepare_qat(copy.deepcopy(model), QuantConfig(bits=8, act_bits=8))
        qat.train()
        with torch.no_grad():
            qat(data.train_x[:256])  # activation ranges, as QAT would have learned them
        int8, form = deployable_form(
            qat.eval(),
            bits=8,
            act_bits=8,
            example_inputs=data.train_x[:1],
            calibration_batches=calibration,
        )
        out[f"{name} {form}"] = int8
    return out


def time_all(
    models: dict[str, nn.Module], shape: tuple[int, ...], rounds: int, repeat: int
) -> dict[tuple[str, int], float]:
    samples: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for batch in BATCH_SIZES:
            for name, model in models.items():
                ms = measure_latency_ms(model, shape, batch_size=batch, n_warmup=5, n_repeat=repeat)
                samples.setdefault((name, batch), []).append(ms)
    return {key: statistics.median(values) for key, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ratio", type=float, default=0.5, help="channels removed per layer")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=30, help="timed passes per round")
    parser.add_argument("--quick", action="store_true", help="1 round of 5 passes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rounds, repeat = (1, 5) if args.quick else (args.rounds, args.repeat)
    models = forms(args.data_root, args.ratio)
    shape = (1, 28, 28)
    timings = time_all(models, shape, rounds, repeat)
    float_models = {name: m for name, m in models.items() if name.endswith("fp32")}
    print(f"model: {ARCH}, input {shape}, torch threads {args.threads}, {rounds} rounds")
    print(f"{'form':<22}{'params':>10}{'MACs':>12}{'batch 1 ms':>12}{'batch 64 ms':>13}")
    for name in models:
        reference = float_models.get(name, float_models[name.split()[0] + " fp32"])
        print(
            f"{name:<22}{count_params(reference):>10,}{count_macs(reference, shape):>12,}"
            f"{timings[(name, 1)]:>12.3f}{timings[(name, 64)]:>13.3f}"
        )
    print()
    names = list(models)  # dense fp32, dense int8, pruned fp32, pruned int8
    comparisons = [
        ("int8 speed-up, dense", names[0], names[1]),
        ("int8 speed-up, pruned", names[2], names[3]),
        ("pruning speed-up, fp32", names[0], names[2]),
        ("pruning speed-up, int8", names[1], names[3]),
        ("both together", names[0], names[3]),
    ]
    print(f"{'ratio (slower / faster)':<26}{'batch 1':>10}{'batch 64':>10}")
    for label, slow, fast in comparisons:
        ratios = [timings[(slow, b)] / timings[(fast, b)] for b in BATCH_SIZES]
        print(f"{label:<26}{ratios[0]:>9.2f}x{ratios[1]:>9.2f}x")


if __name__ == "__main__":
    main()
