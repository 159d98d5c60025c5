"""Trained students kept for the trials that compress them differently.

A trial's first phase (``train``) depends on the architecture, the data, the training and
distillation settings and the seed, and on nothing the compressors sample: two trials that
differ only in pruning or quantization (a ``pls`` move on ``prune.ratio`` or ``quant.bits``, a
random draw that lands on an architecture trained before) run that phase identically, epoch for
epoch. The first of them leaves the trial's whole state at the end of the phase here (the same
state ``trainers.checkpoint`` resumes from, with the phase's epoch metrics); the others start
from it and go straight to pruning. On CPU that start is bit-identical to training again
(``tests/trainers/test_trained.py``), so:

- a trial that starts from it reports exactly what it would have reported, and ``nascomp
  reproduce`` (which trains from scratch) reproduces it exactly;
- nothing about the start needs recording to reproduce it; the run says it happened
  (``info["trained_from"]``, ``reused_epochs``) because it changes the trial's cost.

The store is a folder of the search (``<result folder>/trained``), so a resumed search finds
what it held and a deleted search takes it along. Entries are written atomically
(``save_state``) and read with ``weights_only=True``; one that does not read back is ignored
and the phase trains again.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nascomp.trainers.checkpoint import load_state, save_state
from nascomp.trainers.config import TrialConfig, flatten
from nascomp.trainers.settings import TrainConfig

# Flat config keys the train phase never reads: the compressors' settings and the lengths
# and learning rate of the phases after it. Every other key (including any added later) is
# in the key, so a new setting can cost a reuse, never correctness.
_AFTER_TRAINING = ("prune.", "quant.", "train.prune_epochs", "train.qat_epochs")
_AFTER_TRAINING_EXACT = ("train.finetune_lr_scale",)
TRAINED_DIR = "trained"  # the store's folder inside a search's result folder
EPOCHS_KEY = "trained_epochs"  # the phase's epoch metrics, kept next to the state
# Report key of an epoch a trial replays from the store (``Trial.start_trained``): trained and
# judged once, by the trial that trained it (a rung that judged the replay again stopped
# trials whose training was already paid for, on their source's first-epoch figures).
REPLAYED_KEY = "nascomp_replayed"


def after_training(name: str) -> bool:
    """Is flat config key ``name`` read only after the train phase?"""
    return name.startswith(_AFTER_TRAINING) or name in _AFTER_TRAINING_EXACT


def trained_key(config: TrialConfig) -> str:
    """Digest of everything the train phase depends on: equal keys, identical phases."""
    flat = flatten(config.model_dump(mode="json"))
    kept = {key: value for key, value in flat.items() if not after_training(key)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:20]


@dataclass(frozen=True)
class ReusedMoveCost:
    """What a sampler's move from a finished trial (``parent``) to ``child`` costs, as a
    fraction of a trial trained from scratch: ``share`` when the move changes only settings
    read after training (the child then starts from the parent's trained student);
    ``inherited`` for any other move when the child inherits its parent's weights and trains
    fewer epochs (``search.inherit_epochs``), else 1.

    ``pls`` divides a candidate's predicted hypervolume gain by this, so it ranks moves by
    gain per compute. A module-level class, so Tune can pickle the sampler that holds it."""

    share: float
    inherited: float = 1.0

    @classmethod
    def of(cls, train: TrainConfig, inherit_epochs: int = 0) -> ReusedMoveCost:
        # Epochs a reused trial still runs (pruning, QAT, and about one epoch's worth of
        # evaluation and measuring) over those a trial from scratch runs.
        after = train.prune_epochs + train.qat_epochs + 1
        full = train.epochs + after
        inherited = (inherit_epochs + after) / full if inherit_epochs else 1.0
        return cls(after / full, inherited)

    def __call__(self, parent: dict[str, Any], child: dict[str, Any]) -> float:
        changed = [name for name, value in child.items() if parent.get(name) != value]
        if not changed:
            return 1.0
        return self.share if all(after_training(n) for n in changed) else self.inherited


@dataclass(frozen=True)
class Trained:
    """A trial's state at the end of its train phase and that phase's epoch metrics."""

    key: str
    state: dict[str, Any]
    epochs: list[dict[str, Any]]


class TrainedStore:
    """A folder of train-phase end states, one file per :func:`trained_key`."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.pt"

    def load(self, config: TrialConfig) -> Trained | None:
        key = trained_key(config)
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = load_state(path)
        except Exception:  # a file from another version, or damaged: train again
            return None
        epochs = entry.pop(EPOCHS_KEY, None)
        if not isinstance(epochs, list) or len(epochs) != config.train.epochs:
            return None
        return Trained(key, entry, epochs)

    def save(self, config: TrialConfig, state: dict[str, Any], epochs: list[dict]) -> None:
        """Keep ``state``, taken after the last train epoch by a trial that found no entry it
        could read. An entry that reads is never replaced: two trials that trained the same
        phase at once hold the same weights but not the same bytes (their epochs' seconds),
        and an inheriting child names the first one's file by its SHA-256 (``train.init``),
        which the second's save would have made fail, in the search and in ``reproduce``.
        A damaged entry is mended."""
        path = self.path(trained_key(config))
        # The train phase's optimizer is never read again (each later phase makes its own),
        # so it is not kept: an entry is about the model's fp32 size, not three times it.
        entry = {**state, "optimizer": {}, EPOCHS_KEY: [dict(epoch) for epoch in epochs]}
        try:
            if not save_state(path, entry, replace=False) and self.load(config) is None:
                save_state(path, entry)
        except OSError as exc:  # a full or read-only disk costs later trials a reuse, no more
            print(f"nascomp: trained student not kept ({path}): {exc}", file=sys.stderr)
