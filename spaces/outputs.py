"""What a model the user's code built must do before anything trains it (a ``custom``
builder's, a plugin's, a torchvision or timm model): be an ``nn.Module`` with parameters that
maps a batch of the data's inputs to ``(batch, n_classes)`` float logits, for a batch of 2 and
of 1. Each failure is a :class:`UserCodeError` whose one line names the builder."""

from __future__ import annotations

import inspect
import re
from typing import Any

import torch
from torch import nn

from nascomp.spaces.userfn import NotLogitsError, UserCodeError, calling

# A zoo model's own input size (timm's ViTs: img_size; torchvision's: image_size): building it
# for the data's images is cheaper than training on images upscaled to 224.
_IMAGE_SIZE_ARGUMENTS = {"img_size", "image_size", "input_size"}


# Words of torch's and the zoos' errors about an input of the wrong size ("Kernel size can't be
# greater than actual input size", "mat1 and mat2 shapes cannot be multiplied", "Input height
# (8) doesn't match model (224)").
_SIZE_WORDS = re.compile(r"size|shape|height|width|kernel|mat1|dimension|patch|too small", re.I)


def check_output(
    model: Any,
    input_shape: tuple[int, ...],
    n_classes: int,
    who: str,
    input_dtype: torch.dtype = torch.float32,
) -> None:
    """Raise :class:`UserCodeError` unless ``model`` is an ``nn.Module`` mapping a batch of
    ``input_shape`` to ``(batch, n_classes)`` logits. Eval mode and no_grad: no BatchNorm
    statistics change and no random number is drawn, so checking never changes a trial. The
    probe is zeros of ``input_dtype`` (id 0 for integer ids)."""
    if not isinstance(model, nn.Module):
        raise UserCodeError(f"{who} returned a {type(model).__name__}, not a torch.nn.Module")
    was_training = model.training
    probe = torch.zeros(2, *input_shape, dtype=input_dtype)
    try:
        model.eval()
        with torch.no_grad(), calling(f"the forward of the model from {who}"):
            output = model(probe)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # the user's forward: any failure, sys.exit too
        kind = "" if input_dtype == torch.float32 else f" {input_dtype} (integer ids)"
        # Zoo models made for 224-pixel inputs (a ViT) refuse small images outright.
        first = str(exc).splitlines()[0] if str(exc) else ""
        if "'indices'" in first and input_dtype.is_floating_point:
            # an nn.Embedding fed the float inputs: uint8 ids were read as pixels
            hint = (
                " (the inputs reach the model as floats: integer ids must come as int64, "
                "int32 or int16; uint8 reads as pixels)"
            )
        elif "channels" in first and len(input_shape) == 3:
            # a conv built for another channel count: no image size fixes it
            hint = (
                f" (the data has {input_shape[0]} channel{'s' if input_shape[0] != 1 else ''} "
                "per image: build the first layer for them)"
            )
        elif (
            len(input_shape) == 3
            and input_dtype.is_floating_point
            and _SIZE_WORDS.search(first) is not None
        ):
            # only where the error is about sizes: a forward raising its own error got it too
            takes = named_parameters(type(model).__init__)
            own = sorted(takes & _IMAGE_SIZE_ARGUMENTS)
            patch = " (with a patch_size that divides it)" if "patch_size" in takes else ""
            hint = (
                " (if the model needs larger images, set data.image_size, e.g. 224"
                + (f", or build it for these: its argument {own[0]}{patch}" if own else "")
                + ")"
            )
        else:
            hint = ""
        raise UserCodeError(
            f"the model from {who} fails on a batch of shape {tuple(probe.shape)}{kind}: "
            f"{type(exc).__name__}: {first}{hint}"
        ) from None
    finally:
        model.train(was_training)
    if not any(True for _ in model.parameters()):
        raise UserCodeError(
            f"the model from {who} has no parameters: there is nothing to train, prune or quantize"
        )
    if not isinstance(output, torch.Tensor):
        # A Hugging Face style output (a tuple, a dict, a ModelOutput) around the logits.
        raise NotLogitsError(
            f"the model from {who} outputs a {type(output).__name__} for a batch of 2; "
            f"expected one tensor of (2, {n_classes}) logits: have its forward return the "
            "logits alone (e.g. a wrapper module returning out[0] or out['logits'])"
        )
    shape = tuple(output.shape)
    if shape != (2, n_classes):
        raise UserCodeError(
            f"the model from {who} outputs {shape} for a batch of 2; expected (2, {n_classes}) "
            f"logits ({n_classes} classes in the data)"
        )
    if not output.dtype.is_floating_point:
        # Class indices (an argmax in the forward) or a cast: no loss trains them, and every
        # trial failed in cross-entropy's kernel after the search had begun.
        raise UserCodeError(
            f"the model from {who} outputs {str(output.dtype).removeprefix('torch.')} values; "
            "expected floating-point logits (an argmax or an integer cast in its forward?)"
        )
    # One input: what latency is timed on and a deployment often sends. A squeeze() in the
    # forward passes the check above and drops the batch axis here.
    try:
        model.eval()
        with torch.no_grad():
            single = model(probe[:1])
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise UserCodeError(
            f"the model from {who} runs on a batch of 2 and fails on one input "
            f"{tuple(probe[:1].shape)}: {type(exc).__name__}: {first}"
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(single, torch.Tensor) or tuple(single.shape) != (1, n_classes):
        got = tuple(single.shape) if isinstance(single, torch.Tensor) else type(single).__name__
        raise UserCodeError(
            f"the model from {who} outputs {got} for a batch of 1; expected (1, {n_classes}) "
            "logits, as for a batch of 2 (a squeeze() that drops the batch axis?)"
        )


def named_parameters(function: Any) -> set[str]:
    """The names ``function`` takes (not its ``**kwargs``); none where it has no signature."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {p.name for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD}
