"""Trials that start from weights the user already trained (``train.init``).

The usual compression job starts from a trained model: fix the architecture that made it
(``space.arch``), search pruning, bit-widths and distillation, and fine-tune. Every trial then
starts from the file instead of PyTorch's initialisers: each tensor of the built model whose
name and shape the file holds takes the file's values; the others (a head for other classes,
layers of a wider variant) keep their seeded initialisation. How many loaded is logged with
the run (tag ``nascomp.init``).

The file is part of the trial's config by path and SHA-256 (``train.init_sha256``, filled in
when the experiment is read): a trial, a resumed one or ``nascomp reproduce``, refuses a file
that changed since, so a reproduced run starts from the very same weights.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

StateDict = dict[str, Tensor]

# Keys under which training scripts commonly nest the weights in a checkpoint file.
NESTED_KEYS = ("state_dict", "model_state_dict", "model")

# Per process, the last file read: the trials a worker runs one after another from the user's
# file read it once. One entry only: with inheritance every trial has a parent file of its own,
# and a cache of them all would grow with the search.
_LOADED: dict[tuple[str, str], StateDict] = {}


def file_digest(path: str | Path) -> str:
    """SHA-256 of the file's bytes, hex."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_state_file(path: str | Path) -> StateDict:
    """A state dict from a checkpoint file: the dict itself, or one nested under a common key
    (``state_dict``, ``model_state_dict``, ``model``). Loaded with ``weights_only=True``: a
    checkpoint file is data, never code to run."""
    try:
        with warnings.catch_warnings():
            # A plain pickle's protocol: torch warns, then refuses it or reads it; either
            # way the line below says what the file is.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch names the class a pickled object needs ("Unsupported global: GLOBAL ...");
        # any other refusal is a file that is not a pickle of tensors at all.
        if "Unsupported global" not in str(exc):
            said = str(exc).split("WeightsUnpickler error:")[-1].strip().splitlines() or ["?"]
            raise ValueError(
                f"{path} is not a checkpoint torch.load reads ({said[0][:120]})"
            ) from None
        raise ValueError(
            f"{path} holds pickled objects, not just tensors (a whole model?): save "
            "model.state_dict() instead (checkpoints are read with weights_only=True: data, "
            "never code to run)"
        ) from None
    except Exception as exc:  # torch.load's errors on a file of another kind vary
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ValueError(
            f"{path} is not a checkpoint torch.load reads ({type(exc).__name__}: {first})"
        ) from None
    for key in NESTED_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    if not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no state dict of tensors (a whole pickled model?)")
    prefix = "module."  # DataParallel's and DistributedDataParallel's wrapper
    if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


@dataclass(frozen=True)
class InitReport:
    """What ``apply_weights`` did: tensors loaded, of the model's ``total``, ``sliced`` of them
    in part (``match="slice"``); the model's tensors the file lacks or holds in another shape
    (first few of each, by name)."""

    loaded: int
    total: int
    missing: tuple[str, ...] = ()
    reshaped: tuple[str, ...] = ()
    sliced: int = 0
    # The model's weight matrices and kernels (parameters of 2 or more dimensions) loaded, and
    # the share of its parameters' elements: counters such as BatchNorm's num_batches_tracked
    # have one name and shape at every width, so the count of tensors alone can look like a fit.
    matrices: int = 0
    share: float = 0.0

    def describe(self, path: str) -> str:
        text = (
            f"{self.loaded} of {self.total} tensors ({self.matrices} weight matri"
            f"{'x' if self.matrices == 1 else 'ces'}, {self.share:.0%} of the parameters) "
            f"from {path}"
        )
        if self.sliced:
            text += f" ({self.sliced} in part: the overlap of two shapes)"
        if self.reshaped:
            text += f"; other shape, kept initialised: {', '.join(self.reshaped[:3])}"
        if self.missing:
            text += f"; not in the file: {', '.join(self.missing[:3])}"
        return text


MATCHES = ("exact", "slice")


def apply_weights(model: nn.Module, state: StateDict, match: str = "exact") -> InitReport:
    """Copy into ``model`` every parameter and buffer of ``state`` with the same name and
    shape (in place, cast to the model's dtype); leave the others as they are.

    ``match="slice"`` also copies, between tensors of the same name and number of dimensions
    but other shapes, the part both hold: the leading channels (a narrower or wider layer
    keeps the first ones) and, for a convolution's kernel, the centre (a 3x3 kernel is the
    middle of a 5x5 one). That is how a network-morphism child inherits its parent's weights
    (``search.inherit_epochs``); what it does not cover keeps its seeded initialisation."""
    if match not in MATCHES:
        raise ValueError(f"match must be one of {MATCHES}, not {match!r}")
    own = model.state_dict(keep_vars=True)
    params = {name for name, _ in model.named_parameters()}
    missing, reshaped = [], []
    loaded = sliced = matrices = elements = 0
    with torch.no_grad():
        for name, tensor in own.items():
            given = state.get(name)
            if given is None:
                missing.append(name)
                continue
            if given.shape == tensor.shape:
                tensor.copy_(given)
                copied = tensor.numel()
            elif match == "slice" and given.dim() == tensor.dim() and given.dim() > 0:
                target, source = _overlap(tuple(tensor.shape), tuple(given.shape))
                tensor[target] = given[source].to(tensor.dtype)
                copied = tensor[target].numel()
                sliced += 1
            else:
                reshaped.append(name)
                continue
            loaded += 1
            if name in params:
                matrices += tensor.dim() >= 2
                elements += copied
    total = sum(p.numel() for p in model.parameters())
    share = elements / total if total else 0.0
    return InitReport(loaded, len(own), tuple(missing), tuple(reshaped), sliced, matrices, share)


def _overlap(
    into: tuple[int, ...], given: tuple[int, ...]
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Index of the common part of two shapes, in each: leading along the first two
    dimensions (output and input channels), centred along the others (a kernel's space)."""
    target, source = [], []
    for dim, (a, b) in enumerate(zip(into, given, strict=True)):
        n = min(a, b)
        if dim < 2:
            target.append(slice(0, n))
            source.append(slice(0, n))
        else:
            target.append(slice((a - n) // 2, (a - n) // 2 + n))
            source.append(slice((b - n) // 2, (b - n) // 2 + n))
    return tuple(target), tuple(source)


def checked_digest(path: str | Path, sha256: str | None, field: str, consequence: str) -> str:
    """The file's SHA-256; a ValueError naming ``field`` when the config recorded another
    (the file changed since the search read it: ``consequence``)."""
    found = file_digest(path)
    if sha256 is not None and found != sha256:
        raise ValueError(
            f"{field}: {path} changed since the search read it (sha256 {sha256[:12]}..., "
            f"now {found[:12]}...); {consequence}"
        )
    return found


def initial_weights(path: str, sha256: str | None) -> StateDict:
    """The file's state dict, once per process; a ValueError naming ``train.init`` when the
    file is gone or its bytes are not the ones the config recorded."""
    if not Path(path).is_file():
        raise ValueError(f"train.init: {path} does not exist")
    found = checked_digest(
        path, sha256, "train.init", "the trial would not start from the same weights"
    )
    key = (path, found)
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = load_state_file(path)
    return _LOADED[key]
