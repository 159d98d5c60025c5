"""Model cost measures: parameter counts, multiply-accumulates, latency."""

from __future__ import annotations

import contextlib
import functools
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from nascomp.compressors.layers import (
    ALL,
    active_layer_kinds,
    attention_fast_path_off,
    is_recurrent,
    is_weight_layer,
)


def count_params(model: nn.Module) -> int:
    """Number of parameter elements (shared Parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def count_nonzero_params(model: nn.Module) -> int:
    """Number of parameter elements that are not exactly zero in the model as it is stored: a
    quantization-aware layer's weight counted at its width (``quantized_weight``), since the
    rounding takes small weights to zero (11% of one 4-bit model's) and ``size_bytes`` counts
    them there; every other parameter as it is."""
    total = 0
    with torch.no_grad():
        for module in model.modules():
            stored = _stored_weights(module)
            for name, param in module.named_parameters(recurse=False):
                values = stored.get(name)
                total += int(torch.count_nonzero(param if values is None else values))
    return total


def _stored_weights(module: nn.Module) -> dict[str, Tensor]:
    """A quantization-aware layer's weight matrices as stored (``stored_weights``: a plain
    layer's weight, each of a recurrent layer's, attention's input projection), by parameter
    name; empty for any other module."""
    stored = getattr(module, "stored_weights", None)
    return stored() if callable(stored) else {}


def _layer_macs(module: nn.Module, output: Tensor) -> int:
    if isinstance(module, nn.modules.conv._ConvNd):
        # Each output element sums over its group's input channels and the kernel window
        # (Conv1d, Conv2d, Conv3d alike).
        kernel_area = math.prod(module.kernel_size)
        return output.numel() * (module.in_channels // module.groups) * kernel_area
    assert isinstance(module, nn.Linear)
    return output.numel() * module.in_features


_GATES = {"LSTM": 4, "GRU": 3}  # an RNN's (RNN_TANH, RNN_RELU) one


def _recurrent_macs(module: nn.RNNBase, inputs: tuple[Any, ...]) -> int:
    """An LSTM's, GRU's or RNN's gates over its time steps (batch 1): per step, layer and
    direction, each gate's unit weighs the layer's input and the previous hidden state; an
    LSTM with ``proj_size`` projects each hidden state."""
    given = inputs[0]
    data = given.data if isinstance(given, nn.utils.rnn.PackedSequence) else given
    steps = data.numel() // module.input_size
    gates = _GATES.get(module.mode, 1)
    state = module.proj_size or module.hidden_size  # what each step hands the next
    directions = 2 if module.bidirectional else 1
    per_step = 0
    for layer in range(module.num_layers):
        width = module.input_size if layer == 0 else state * directions
        projection = module.hidden_size * module.proj_size
        per_step += directions * (gates * module.hidden_size * (width + state) + projection)
    return steps * per_step


def _attention_macs(
    module: nn.MultiheadAttention, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> int:
    """Multi-head attention (batch 1): the query, key and value projections, the scores of
    every query against every key, the scores' weighted sum of the values, and the output
    projection (its Linear is used by weight, never called: no hook of its own runs)."""
    query = args[0] if args else kwargs["query"]
    key = args[1] if len(args) > 1 else kwargs.get("key", query)
    width = module.embed_dim
    queries, keys = query.numel() // width, key.numel() // module.kdim
    projections = width * (queries * width + keys * (module.kdim + module.vdim))
    products = 2 * queries * keys * width  # summed over the heads: each has width / heads
    return projections + products + queries * width * width


class _Products(TorchFunctionMode):
    """Counts the matrix products that no counted layer computes: attention written with
    ``q @ k.transpose(-2, -1)``, ``torch.matmul`` or ``bmm``, or through
    ``F.scaled_dot_product_attention`` (timm's ``Attention``, most hand-written transformer
    blocks). Their projections are Linear layers, counted by hook; the scores and the weighted
    sum of the values were left out, 14% of a ViT-Tiny's MACs at 224 pixels. Products inside
    a counted layer (attention's own, a quantization-aware layer's) are its own (``muted``)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.muted = 0

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        if not self.muted and isinstance(out, Tensor):
            self.total += _product_macs(func, args, kwargs or {}, out)
        return out


_MATMULS = {torch.matmul, Tensor.matmul, Tensor.__matmul__, torch.bmm, Tensor.bmm, torch.mm}
_MATMULS |= {Tensor.mm, Tensor.__rmatmul__}


def _product_macs(func: Any, args: tuple, kwargs: dict, out: Tensor) -> int:
    if func in _MATMULS and len(args) == 2 and all(isinstance(a, Tensor) for a in args):
        left = args[1] if func is Tensor.__rmatmul__ else args[0]
        return out.numel() * left.shape[-1]  # each output element: a row times a column
    if func is F.scaled_dot_product_attention:
        query = args[0] if args else kwargs["query"]
        key = args[1] if len(args) > 1 else kwargs["key"]
        # every query against every key, then the keys' weights over the values
        return key.shape[-2] * (query.numel() + out.numel())
    if func is torch.einsum:
        return _einsum_macs(args)
    return 0


def _einsum_macs(args: tuple) -> int:
    """Multiply-accumulates of ``torch.einsum(equation, *operands)`` (or its sublist form),
    contracted left to right, two operands at a time: a step costs the product of the sizes
    of every index of its two operands, and counts only where it sums over an index (a
    product without a sum, ``ij,ij->ij`` or an outer product, is elementwise, like ``a * b``,
    which is not counted either). ``bhnd,bhmd->bhnm`` counts what ``q @ k.transpose(-2, -1)``
    does. An equation this cannot read counts nothing rather than fail the measurement."""
    try:
        inputs, output, sizes = _einsum_indices(args)
    except (ValueError, TypeError, IndexError, KeyError):
        return 0
    if len(inputs) < 2:
        return 0  # a sum, trace or transpose of one operand: no products
    macs = 0
    current = inputs[0]
    for position in range(1, len(inputs)):
        operand = inputs[position]
        later = set(output).union(*inputs[position + 1 :])
        both = set(current) | set(operand)
        kept = [i for i in dict.fromkeys(current + operand) if i in later]
        if len(kept) < len(both):  # some index summed over: a contraction
            step = 1
            for index in both:
                step *= sizes[index]
            macs += step
        current = kept
    return macs


def _einsum_indices(args: tuple) -> tuple[list[list[str]], list[str], dict[str, int]]:
    """Each operand's indices, the output's, and every index's size, ``...`` expanded into
    one index per broadcast dimension (aligned from the right). torch hands a mode the
    equation and the operands (its sublist form already turned into an equation)."""
    equation = args[0].replace(" ", "")
    operands = list(args[1] if len(args) == 2 and isinstance(args[1], list | tuple) else args[1:])
    left, arrow, right = equation.partition("->")
    terms = left.split(",")
    if len(terms) != len(operands) or not all(isinstance(o, Tensor) for o in operands):
        raise ValueError("operands and terms do not pair")
    paired = list(zip(terms, operands, strict=True))
    broadcast = max(
        (o.dim() - len(t.replace("...", "")) for t, o in paired if "..." in t), default=0
    )
    dims = [f"...{k}" for k in range(broadcast)]
    sizes: dict[str, int] = {}
    inputs = []
    for term, operand in paired:
        head, dots, tail = term.partition("...")
        extra = operand.dim() - len(head) - len(tail)
        indices = [*head, *(dims[broadcast - extra :] if dots else []), *tail]
        if len(indices) != operand.dim():
            raise ValueError("a term does not match its operand's dimensions")
        for index, size in zip(indices, operand.shape, strict=True):
            sizes[index] = max(sizes.get(index, 1), int(size))
        inputs.append(indices)
    if arrow:
        head, dots, tail = right.partition("...")
        output = [*head, *(dims if dots else []), *tail]
    else:  # implicit: the indices that appear once, and the broadcast ones
        counts: dict[str, int] = {}
        for indices in inputs:
            for index in indices:
                counts[index] = counts.get(index, 0) + 1
        output = [*dims, *sorted(i for i, n in counts.items() if n == 1 and i not in dims)]
    return inputs, output, sizes


def count_macs(
    model: nn.Module, input_shape: tuple[int, ...], input_dtype: torch.dtype = torch.float32
) -> int:
    """Multiply-accumulates of one input of ``input_shape`` (no batch dim) and
    ``input_dtype`` (zeros): convolutions (Conv1d, 2d, 3d) and Linear layers, and where the
    layer kinds compress them (``compressors.layers``: not in a trial logged with Conv2d and
    Linear alone) LSTM, GRU and RNN gates, multi-head attention with its products, and the
    matrix products a model computes outside those layers (``_Products``: attention's scores
    and weighted values in timm's and hand-written blocks, and ``einsum``'s). Dense count:
    zero weights are not skipped; an embedding's look-up, normalisation, activations,
    elementwise products and transposed convolutions are no multiply counted."""
    if not input_shape or any(int(size) < 1 for size in input_shape):
        raise ValueError(
            f"input_shape must be positive sizes without the batch dim, got {input_shape!r}"
        )
    total = 0

    def weights(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        total += _layer_macs(module, output)

    def recurrent(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        nonlocal total
        total += _recurrent_macs(module, inputs)  # type: ignore[arg-type]

    def attention(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        nonlocal total
        total += _attention_macs(module, args, kwargs)  # type: ignore[arg-type]

    every = active_layer_kinds() == ALL
    products = _Products()

    def mute(module: nn.Module, inputs: Any) -> None:
        products.muted += 1

    def unmute(module: nn.Module, inputs: Any, output: Any) -> None:
        products.muted -= 1

    handles = []
    for module in model.modules():
        if is_weight_layer(module):
            handles.append(module.register_forward_hook(weights))
        elif every and is_recurrent(module):
            handles.append(module.register_forward_hook(recurrent))
        elif every and isinstance(module, nn.MultiheadAttention):
            handles.append(module.register_forward_hook(attention, with_kwargs=True))
        else:
            continue
        handles.append(module.register_forward_pre_hook(mute))
        handles.append(module.register_forward_hook(unmute))
    device = _model_device(model)
    was_training = model.training
    try:
        model.eval()  # eval: no BN statistics or observer updates from the dummy input
        # Without the fused encoder kernel, which calls none of the hooked layers; a trial
        # logged before products counted (Conv2d and Linear alone) counts none.
        with (
            torch.inference_mode(),
            attention_fast_path_off(),
            products if every else contextlib.nullcontext(),
        ):
            model(torch.zeros(1, *input_shape, dtype=input_dtype, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total + products.total


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
    embedding's look-up costs the same for any id). A model with a ``runner(inputs)`` method
    (an ONNX Runtime session's ``OnnxModule``) is timed through it: the runtime's own call, as
    a deployment makes it.

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
    runner = getattr(model, "runner", None)
    one_pass = runner(inputs) if callable(runner) else functools.partial(model, inputs)
    try:
        with torch.inference_mode():
            for _ in range(n_warmup):
                one_pass()
            timings = [_time_one_pass(one_pass, device) for _ in range(n_repeat)]
    finally:
        model.train(was_training)
    return statistics.median(timings)


def _time_one_pass(one_pass: Callable[[], Any], device: torch.device) -> float:
    # CUDA kernels run asynchronously: synchronize so the interval covers the work itself.
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    one_pass()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1000.0
