"""Latency of the forms a trial can ship, side by side: PyTorch fp32, torch.ao's int8 (FX, x86),
ONNX Runtime fp32, ONNX Runtime int8 (QDQ, the file nascomp ships) and ONNX Runtime running the
fp16 file of ``reproduce --fp16`` (a GPU file, on the CPU package), at batch 1 and 64, on a
quickstart-sized model (digits, 1x8x8) and a CIFAR-sized one (3x32x32), dense and with 50% of
the channels removed by structured pruning.

Every form of a model is timed in each of ``--rounds`` interleaved rounds, so load from other
processes hits all of them alike; the tables show medians over rounds, then ratios. The int8
forms are calibrated on real digits for the quickstart model and on normal noise for the
CIFAR-sized one (latency does not depend on the ranges). Run from the repository root::

    python bench/latency.py            # about two minutes
    python bench/latency.py --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

from nascomp.compressors.deploy import to_int8_deployable
from nascomp.compressors.measure import count_macs, count_params, measure_latency_ms
from nascomp.compressors.onnx_export import OnnxModule, fp16_onnx, onnx_form
from nascomp.compressors.pruning import PruneConfig, make_pruner
from nascomp.compressors.quantization import QuantConfig, prepare_qat
from nascomp.spaces.models import build_model
from nascomp.trainers.data import load_data

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import at_least

MODELS = {
    # The quickstart's kind of student on its data.
    "quickstart": (
        {
            "family": "cnn",
            "n_stages": 2,
            "blocks_per_stage": 1,
            "base_channels": 16,
            "block": "residual",
        },
        (1, 8, 8),
    ),
    # A CIFAR-sized residual CNN: 3 stages x 2 blocks, 32 base channels.
    "cifar": (
        {
            "family": "cnn",
            "n_stages": 3,
            "blocks_per_stage": 2,
            "base_channels": 32,
            "block": "residual",
        },
        (3, 32, 32),
    ),
}
BATCH_SIZES = (1, 64)
FORMS = ("torch fp32", "torch.ao int8", "onnxruntime fp32", "onnxruntime int8", "onnxruntime fp16")


def calibration(name: str, shape: tuple[int, int, int]) -> list[Tensor]:
    if name == "quickstart":
        return list(load_data("digits").train_x[:256].split(64))
    generator = torch.Generator().manual_seed(0)
    return list(torch.randn(256, *shape, generator=generator).split(64))


def forms_of(model: nn.Module, batches: list[Tensor], threads: int) -> dict[str, nn.Module]:
    """The four forms of one float model (8-bit QAT layers observed on the batches first)."""
    qat = prepare_qat(copy.deepcopy(model), QuantConfig(bits=8, act_bits=8)).train()
    with torch.no_grad():
        qat(torch.cat(batches))  # activation ranges, as QAT would have learned them
    qat.eval()
    example = batches[0][:1]
    kwargs = {"example_inputs": example, "calibration_batches": batches, "threads": threads}
    return {
        "torch fp32": model,
        "torch.ao int8": to_int8_deployable(qat, example, batches),
        "onnxruntime fp32": onnx_form(model, bits=32, act_bits=8, **kwargs).module,
        "onnxruntime int8": onnx_form(qat, bits=8, act_bits=8, **kwargs).module,
        # reproduce --fp16's file: for GPU runtimes; here to show what the CPU package makes of it
        "onnxruntime fp16": OnnxModule(fp16_onnx(model, example), threads),
    }


def build(name: str, ratio: float, threads: int) -> dict[str, tuple[nn.Module, dict]]:
    arch, shape = MODELS[name]
    torch.manual_seed(0)
    dense = build_model(arch, shape, 10).eval()
    pruned = copy.deepcopy(dense)
    config = PruneConfig("structured", ratio, "l1", "layer")
    make_pruner(pruned, config, torch.randn(2, *shape)).update(1.0)
    batches = calibration(name, shape)
    return {
        f"{name} dense": (dense, forms_of(dense, batches, threads)),
        f"{name} pruned{round(100 * ratio)}": (pruned, forms_of(pruned.eval(), batches, threads)),
    }


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
    parser.add_argument(
        "--threads",
        type=at_least(1),
        default=1,
        help="torch and ONNX Runtime threads (default %(default)s)",
    )
    parser.add_argument("--ratio", type=float, default=0.5, help="channels removed per layer")
    parser.add_argument(
        "--rounds",
        type=at_least(1),
        default=5,
        help="interleaved rounds of every form; the tables give medians over them "
        "(default %(default)s)",
    )
    parser.add_argument("--repeat", type=at_least(1), default=30, help="timed passes per round")
    parser.add_argument("--quick", action="store_true", help="1 round of 5 passes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rounds, repeat = (1, 5) if args.quick else (args.rounds, args.repeat)
    print(
        f"torch threads = ONNX Runtime threads = {args.threads}; {rounds} rounds x {repeat} "
        f"passes; load average {os.getloadavg()[0]:.2f}"
    )
    for name in MODELS:
        shape = MODELS[name][1]
        for label, (model, forms) in build(name, args.ratio, args.threads).items():
            timings = time_all(forms, shape, rounds, repeat)
            print(
                f"\n{label}: input {shape}, {count_params(model):,} params, "
                f"{count_macs(model, shape):,} MACs"
            )
            print(f"  {'form':<18}{'batch 1 ms':>12}{'batch 64 ms':>13}")
            for form in FORMS:
                print(f"  {form:<18}{timings[(form, 1)]:>12.3f}{timings[(form, 64)]:>13.3f}")
            # the first form's speed-up: above 1 it is the faster, below 1 the slower
            print(f"  {'speed-up (the other ms / its ms)':<38}{'batch 1':>9}{'batch 64':>10}")
            for text, slow, fast in (
                ("onnxruntime int8 vs torch fp32", "torch fp32", "onnxruntime int8"),
                ("onnxruntime int8 vs torch.ao int8", "torch.ao int8", "onnxruntime int8"),
                ("onnxruntime fp32 vs torch fp32", "torch fp32", "onnxruntime fp32"),
                ("onnxruntime int8 vs onnxruntime fp32", "onnxruntime fp32", "onnxruntime int8"),
                ("onnxruntime fp16 vs onnxruntime fp32", "onnxruntime fp32", "onnxruntime fp16"),
            ):
                ratios = [timings[(slow, b)] / timings[(fast, b)] for b in BATCH_SIZES]
                print(f"  {text:<38}{ratios[0]:>8.2f}x{ratios[1]:>9.2f}x")
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
