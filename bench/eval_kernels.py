"""Two hot spots of a CPU trial, each against what it replaced, side by side in one process.

    python bench/eval_kernels.py              # 5 alternating rounds of each, 1 thread
    python bench/eval_kernels.py --threads 2
    python bench/eval_kernels.py --trials 12  # and whole trials, old kernels against new

- ``fake quant``: activation fake quantization, which runs at the input of every QAT layer in
  every training step and evaluation pass: ``torch.fake_quantize_per_tensor_affine`` against
  ``compressors.quantization.fake_quantize_activation`` (plain tensor ops), forward alone and
  forward plus backward, on activations of the CNN spaces' sizes. Bit equality of values and
  gradients is checked on every shape.
- ``eval batch``: evaluation of a split of 2,048 inputs in chunks of 1,024 (the split's chunk,
  as every forward pass took it before) against ``trainers.loop.predict_logits``, which runs
  the CPU forward passes ``CPU_FORWARD_BATCH`` inputs at a time, on CNNs of the example spaces
  at 16x16, 28x28 and 32x32. Bit equality of the logits is checked on every model.
- ``trials`` (with ``--trials N``): N trials drawn at random from the MNIST example's space
  (bench/search_cost.py's data and settings), each run twice in this process, once with the
  replaced kernels patched back in (torch's fake quantization, forward passes of 1,024) and
  once as nascomp runs it; CPU-seconds per trial and their total ratio. Every metric of the
  two runs of a trial must be equal: the change is in speed only.

Sides alternate (A B, B A, ...) because the machine is shared; medians per side and of the
per-round ratios (old / new: above 1 is faster now).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import DEFAULT_DATA_ROOT, at_least, load_average, machine

from nascomp.compressors.quantization import fake_quantize_activation
from nascomp.spaces.models import build_model
from nascomp.trainers.loop import CPU_FORWARD_BATCH, predict_logits

ACTIVATIONS = ((128, 16, 16, 16), (128, 32, 16, 16), (128, 32, 28, 28), (1024, 16, 8, 8))
MODELS = (
    ((1, 16, 16), 8, "plain", 2),
    ((1, 16, 16), 32, "residual", 3),
    ((1, 28, 28), 16, "depthwise", 3),
    ((3, 32, 32), 16, "residual", 3),
)


def timed(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat


def compare(
    name: str, old: Callable[[], object], new: Callable[[], object], rounds: int, repeat: int
) -> None:
    olds, news = [], []
    for i in range(rounds):
        pair = ((olds, old), (news, new)) if i % 2 == 0 else ((news, new), (olds, old))
        for out, fn in pair:
            out.append(timed(fn, repeat))
    ratios = [o / n for o, n in zip(olds, news, strict=True)]
    print(
        f"| {name} | {statistics.median(olds) * 1e3:.2f} | {statistics.median(news) * 1e3:.2f} "
        f"| **{statistics.median(ratios):.2f}** [{min(ratios):.2f}, {max(ratios):.2f}] |"
    )


def fake_quant(rounds: int, repeat: int) -> None:
    print("\nfake quant: torch op against fake_quantize_activation, ms per call")
    print("| activation | pass | torch ms | nascomp ms | rounds' median ratio [min, max] |")
    print("|---|---|---|---|---|")
    generator = torch.Generator().manual_seed(0)
    for shape in ACTIVATIONS:
        x = torch.randn(shape, generator=generator).requires_grad_()
        fake_quant_shape(x, torch.randn(shape, generator=generator), rounds, repeat)


def fake_quant_shape(x: torch.Tensor, grad: torch.Tensor, rounds: int, repeat: int) -> None:
    scale, zero_point = torch.tensor([0.02]), torch.tensor([7], dtype=torch.int32)

    def torch_op() -> torch.Tensor:
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255)

    def ours() -> torch.Tensor:
        return fake_quantize_activation(x, scale, zero_point, 255)

    expected, got = torch_op(), ours()
    same = torch.equal(expected, got) and torch.equal(
        torch.autograd.grad(expected, x, grad)[0], torch.autograd.grad(got, x, grad)[0]
    )
    if not same:
        raise SystemExit(f"fake quant differs from torch's on {tuple(x.shape)}")
    with torch.no_grad():
        compare(f"{tuple(x.shape)} | forward", torch_op, ours, rounds, repeat)
    compare(
        f"{tuple(x.shape)} | forward + backward",
        lambda: torch_op().backward(grad),
        lambda: ours().backward(grad),
        rounds,
        repeat,
    )


def eval_batch(rounds: int, repeat: int) -> None:
    print(
        f"\neval batch: chunks of 1,024 against {CPU_FORWARD_BATCH} (predict_logits), ms per split"
    )
    print("| model | 1,024 ms | predict_logits ms | rounds' median ratio [min, max] |")
    print("|---|---|---|---|")
    for shape, channels, block, stages in MODELS:
        arch = {
            "family": "cnn",
            "n_stages": stages,
            "blocks_per_stage": 2,
            "base_channels": channels,
            "kernel_size": 3,
            "block": block,
            "width_mult": 1.0,
        }
        torch.manual_seed(0)
        model = build_model(arch, shape, 10).eval()
        x = torch.randn(2048, *shape)

        @torch.inference_mode()
        def whole(model: torch.nn.Module = model, x: torch.Tensor = x) -> torch.Tensor:
            return torch.cat([model(chunk) for chunk in x.split(1024)])

        def ours(model: torch.nn.Module = model, x: torch.Tensor = x) -> torch.Tensor:
            return predict_logits(model, x)

        name = f"{shape} c{channels} {block} s{stages}x2"
        if not torch.equal(whole(), ours()):
            raise SystemExit(f"logits differ between batch sizes on {name}")
        compare(name, whole, ours, rounds, repeat)


def whole_trials(n_trials: int, data_root: str, seed: int) -> None:
    import optuna
    from search_cost import Job, experiment_for

    import nascomp.compressors.quantization as quantization
    import nascomp.trainers.loop as loop
    from nascomp.search.driver import trial_base
    from nascomp.search.experiment import teacher_job
    from nascomp.search.samplers.space import DefineByRun
    from nascomp.trainers.teacher import load_or_train_teacher
    from nascomp.trainers.trial import run_trial

    def replaced(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmax: int):
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, qmax)

    new = (quantization.fake_quantize_activation, loop.CPU_FORWARD_BATCH)

    def run(config: dict, teacher: dict | None, old: bool) -> tuple[float, dict]:
        quantization.fake_quantize_activation, loop.CPU_FORWARD_BATCH = (
            (replaced, 1024) if old else new
        )
        try:
            started = time.process_time()
            outcome = run_trial(config, teacher_state=teacher)
            return time.process_time() - started, outcome.metrics
        finally:
            quantization.fake_quantize_activation, loop.CPU_FORWARD_BATCH = new

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="eval-kernels-") as cache:
        os.environ["NASCOMP_CACHE"] = cache
        experiment = experiment_for(Job("random", seed, 0.0, data_root, 2000, 16, cache))
        teacher = load_or_train_teacher(teacher_job(experiment))[0]
        space = DefineByRun(experiment.space.params(), trial_base(experiment), None)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        print(f"\ntrials: {n_trials} random trials of the MNIST example space, CPU-s per trial")
        print("| trial | quant bits | old kernels s | new kernels s | ratio |")
        print("|---|---|---|---|---|")
        totals = [0.0, 0.0]
        configs = []
        for _ in range(n_trials):
            trial = study.ask()
            configs.append(space.config(trial))
            study.tell(trial, 0.0)
        # Untimed: what a worker loads once (the data, the teacher's logits), not per trial.
        run_trial(configs[0], teacher_state=teacher if configs[0].get("distill.enabled") else None)
        for i, config in enumerate(configs):
            given = teacher if config.get("distill.enabled") else None
            seconds: dict[bool, float] = {}
            metrics: dict[bool, dict] = {}
            for old in (True, False) if i % 2 == 0 else (False, True):
                seconds[old], metrics[old] = run(config, given, old)
            clocks = {"train_seconds", "latency_ms", "latency_batch_ms"}
            same = {k: v for k, v in metrics[True].items() if k not in clocks}
            if same != {k: v for k, v in metrics[False].items() if k not in clocks}:
                raise SystemExit(f"trial {i}: the metrics differ between old and new kernels")
            totals[0] += seconds[True]
            totals[1] += seconds[False]
            print(
                f"| {i} | {config['quant.bits']} | {seconds[True]:.2f} | {seconds[False]:.2f} "
                f"| {seconds[True] / seconds[False]:.2f} |"
            )
        print(f"| all | | {totals[0]:.1f} | {totals[1]:.1f} | **{totals[0] / totals[1]:.2f}** |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds",
        type=at_least(1),
        default=5,
        help="alternating rounds per comparison (default %(default)s)",
    )
    parser.add_argument(
        "--repeat", type=at_least(1), default=3, help="timed calls per side and round"
    )
    parser.add_argument(
        "--threads", type=at_least(1), default=1, help="torch threads (default %(default)s)"
    )
    parser.add_argument(
        "--trials", type=at_least(0), default=0, help="whole trials, old against new"
    )
    parser.add_argument(
        "--data-root",
        default=str(DEFAULT_DATA_ROOT),
        help="folder holding MNIST, for --trials "
        "(default %(default)s: $NASCOMP_DATA_ROOT if set, else ../shared/data)",
    )
    parser.add_argument("--seed", type=int, default=0, help="of the trials' random draw")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{machine()}; {args.threads} thread(s); load average {load_average()} at the start")
    fake_quant(args.rounds, args.repeat)
    eval_batch(args.rounds, args.repeat)
    if args.trials:
        whole_trials(args.trials, args.data_root, args.seed)
    print(f"\nload average {load_average()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
