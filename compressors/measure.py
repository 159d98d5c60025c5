"""Model cost measures: parameter counts, multiply-accumulates, latency."""

from __future__ import annotations

import math
import statistics
import time

import torch
from torch import Tensor, nn

from nascomp.compressors.layers import is_weight_layer


def count_params(model: nn.Module) -> int:
    """Number of parameter elements (shared Parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def count_nonzero_params(model: nn.Module) -> int:
    """Number of parameter elements that are not exactly zero."""
    return sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())


def _layer_macs(module: nn.Module, output: Tensor) -> int:
    if isinstance(module, nn.modules.conv._ConvNd):
        # Each output element sums over its group's input channels and the kernel window
        # (Conv1d, Conv2d, Conv3d alike).
        kernel_area = math.prod(module.kernel_size)
        return output.numel() * (module.in_channels // module.groups) * kernel_area
    assert isinstance(module, nn.Linear)
    return output.numel() * module.in_features


def count_macs(
    model: nn.Module, input_shape: tuple[int, ...], input_dtype: torch.dtype = torch.float32
) -> int:
    """Multiply-accumulates of Conv1d/2d/3d and Linear layers for one input of ``input_shape``
    (no batch dim) and ``input_dtype`` (zeros). Dense count: zero weights are not skipped;
    an embedding's look-up is no multiply."""
    if not input_shape or any(int(size) < 1 for size in input_shape):
        raise ValueError(
            f"input_shape must be positive sizes without the batch dim, got {input_shape!r}"
        )
    total = 0

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        total += _layer_macs(module, output)

    # The weight layers (``compressors.layers``); transposed convolutions, attention's matrix
    # products and embeddings' look-ups are not counted.
    handles = [m.register_forward_hook(hook) for m in model.modules() if is_weight_layer(m)]
    device = _model_device(model)
    was_training = model.training
    try:
        model.eval()  # eval: no BN statistics or observer updates from the dummy input
        with torch.inference_mode():
            model(torch.zeros(1, *input_shape, dtype=input_dtype, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total


def _model_device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def measure_latency_ms(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    batch_size: int = 1,
    n_warmup: int = 5,
    n_repeat: int = 20,
    device: str | torch.device = "cpu",
    input_dtype: torch.dtype = torch.float32,
) -> float:
    """Median wall time in ms of ``n_repeat`` forward passes on ``device`` after ``n_warmup``,
    on a batch of standard normal inputs, or of id 0 for integer ``input_dtype`` (an
    embedding's look-up costs the same for any id).

    The model must already live on ``device``. Uses the caller's torch thread setting, so the
    caller decides what "one CPU worker" means.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if n_repeat < 1 or n_warmup < 0:
        raise ValueError(f"n_repeat must be >= 1 and n_warmup >= 0, got {n_repeat}, {n_warmup}")
    device = torch.device(device)
    if input_dtype.is_floating_point:
        inputs = torch.randn(batch_size, *input_shape, device=device, dtype=input_dtype)
    else:
        inputs = torch.zeros(batch_size, *input_shape, device=device, dtype=input_dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for _ in range(n_warmup):
                model(inputs)
            timings = [_time_one_pass(model, inputs, device) for _ in range(n_repeat)]
    finally:
        model.train(was_training)
    return statistics.median(timings)


def _time_one_pass(model: nn.Module, inputs: Tensor, device: torch.device) -> float:
    # CUDA kernels run asynchronously: synchronize so the interval covers the work itself.
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    model(inputs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1000.0
