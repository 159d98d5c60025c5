"""A trial's resumable state: what ``run_trial`` hands to its ``checkpoint`` callable after each
epoch and accepts back as ``resume``.

The state is a plain dict of tensors, numbers, strings, bools, None and lists/dicts of those,
so ``torch.load(..., weights_only=True)`` reads it (no pickled code runs on load). Tensors are
copied to the CPU when the state is taken: it stays valid while training goes on, and it loads
on a machine without the trial's device.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor, nn

from nascomp.trainers.config import TrialConfig, flatten

# Bumped whenever the state's layout changes: an older state is refused, not misread.
STATE_FORMAT = 1
_REQUIRED_KEYS = ("format", "fingerprint", "epoch")


class StateOfAnotherVersion(ValueError):
    """A state saved before states carried their config, whose digest no longer matches: the
    trial's config gained fields since (at defaults that keep the old behaviour), so the
    digest of the whole config changed though the trial is the same one."""


def flat_config(config: TrialConfig) -> dict[str, Any]:
    """The trial's whole config, flat and JSON-able: what a state keeps of it."""
    return flatten(config.model_dump(mode="json"))


def config_fingerprint(config: TrialConfig) -> str:
    """A digest of the trial's whole flat config: a state resumes only the config it came from."""
    return hashlib.sha256(json.dumps(flat_config(config), sort_keys=True).encode()).hexdigest()


def config_differences(saved: dict[str, Any], config: TrialConfig) -> list[str]:
    """The flat keys where the config a state was saved with, read as this version reads a
    logged config (a field added since takes the default that keeps the old behaviour,
    ``TrialConfig.from_flat``), differs from ``config``."""
    try:
        then = flat_config(TrialConfig.from_flat(saved))
    except (ValueError, TypeError, KeyError) as exc:  # a field since removed or renamed
        said = " ".join(line.strip() for line in str(exc).splitlines()[:2])  # pydantic: the field
        return [f"the saved config no longer reads ({said[:160]})"]
    now = flat_config(config)
    return [
        f"{key} ({then.get(key)!r} -> {now.get(key)!r})"
        for key in sorted(set(then) | set(now))
        if then.get(key) != now.get(key)
    ]


def check_resumable(state: dict[str, Any], config: TrialConfig) -> None:
    """Raise ValueError unless ``state`` is a checkpoint of a run of ``config``;
    StateOfAnotherVersion where a state saved without its config has another digest."""
    if not isinstance(state, dict) or any(key not in state for key in _REQUIRED_KEYS):
        raise ValueError("resume must be a state that run_trial passed to its checkpoint")
    if state["format"] != STATE_FORMAT:
        raise ValueError(
            f"resume state has format {state['format']!r}; this version reads {STATE_FORMAT}"
        )
    saved = state.get("config")
    if isinstance(saved, dict):
        # Compared as read, not by digest: a field added to the config since the state was
        # saved (at its default) refused every resume after an upgrade.
        differ = config_differences(saved, config)
        if differ:
            raise ValueError(
                "resume state was saved by a trial with a different config "
                f"({', '.join(differ[:3])}); a trial resumes only from its own checkpoints"
            )
        return
    if state["fingerprint"] != config_fingerprint(config):
        raise StateOfAnotherVersion(
            "resume state was saved by a trial with a different config, or by an older "
            "nascomp whose trial config had fewer fields; a trial resumes only from its own "
            "checkpoints"
        )


def detached_copy(value: Any) -> Any:
    """``value`` with every tensor copied to the CPU (dicts, lists and tuples walked). A
    module's ``state_dict`` keeps its ``_metadata``: the version of each submodule's layout,
    which some modules' loaders require (torchvision's MNASNet refuses a state without it)."""
    if isinstance(value, Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        copied = {key: detached_copy(item) for key, item in value.items()}
        metadata = getattr(value, "_metadata", None)
        if metadata is None:
            return copied
        kept = OrderedDict(copied)
        kept._metadata = copy.deepcopy(metadata)  # type: ignore[attr-defined]
        return kept
    if isinstance(value, (list, tuple)):
        return type(value)(detached_copy(item) for item in value)
    return value


def cpu_state_dict(model: nn.Module) -> dict[str, Any]:
    """``model.state_dict()`` on the CPU, detached, with its ``_metadata`` (``detached_copy``):
    what ``torch.save`` writes for a model that is loaded again later."""
    return detached_copy(model.state_dict())


def rng_state(device: str) -> dict[str, Tensor | None]:
    """The global torch RNG states a trial can draw from (its own generator aside). Python's
    and numpy's are not used while training, so they are not kept."""
    target = torch.device(device)
    cuda = torch.cuda.get_rng_state(target) if target.type == "cuda" else None
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def restore_rng_state(state: dict[str, Tensor | None], device: str) -> None:
    torch.set_rng_state(state["cpu"])
    target = torch.device(device)
    if state["cuda"] is not None and target.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], target)


def save_state(path: str | Path, state: dict[str, Any], *, replace: bool = True) -> bool:
    """Write ``state`` to ``path`` atomically: a reader (or a restart after a kill mid-write)
    sees the previous file or the new one, never half of one. With ``replace=False`` a file
    already at ``path`` stays as it is (False is returned)."""
    return write_atomically(path, lambda file: torch.save(state, file), replace=replace)


def write_atomically(
    path: str | Path, write: Callable[[BinaryIO], Any], *, replace: bool = True
) -> bool:
    """Write a file through ``write`` into a new file of a name no one can guess (mode 0600),
    then move it onto ``path``: never half a file, and a link planted at ``path`` is replaced,
    not followed (a shared cache folder cannot make the writer overwrite another file).
    ``replace=False``: put in place only where no file is at ``path`` yet, in one step (a hard
    link, which fails on an existing name), and return whether it was; a file system without
    hard links checks first instead. True otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(partial, path)
            return True
        try:
            os.link(partial, path)
        except FileExistsError:
            return False
        except OSError:  # no hard links here
            if os.path.lexists(path):
                return False
            os.replace(partial, path)
            return True
        Path(partial).unlink()
        return True
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    finally:
        if not replace:
            Path(partial).unlink(missing_ok=True)


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a ``save_state`` file onto the CPU, without unpickling any code."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "format" not in state:
        raise ValueError(f"{path} does not hold a trial state")
    return state
