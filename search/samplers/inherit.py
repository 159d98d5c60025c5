"""Weight inheritance (``search.inherit_epochs``): a move's trial starts from its parent's
trained weights and trains fewer epochs.

A ``pls`` (or ``tpe_local``) trial is a front member (its parent) with one or two parameters
changed. When the change reaches the train phase (a width, a kernel, a block, distillation's
temperature), the trial would train from scratch although its parent's trained student, kept
in the search's store (``trainers.trained``), is a near neighbour. With inheritance the trial's
config instead says:

- ``train.init``: the parent's stored file, ``train.init_sha256`` its digest;
- ``train.init_match: slice``: tensors load by name, the common part where shapes differ
  (``trainers.init.apply_weights``);
- ``train.epochs``: ``search.inherit_epochs``.

These are ordinary config keys, logged with the run: ``nascomp reproduce`` starts from the
same file (refusing it if its bytes changed) and trains the same epochs, so it reproduces the
trial exactly, and the result on the front is what that model really scores. A move that
changes only pruning or quantization keeps its parent's train phase, inherited keys and all,
so it reuses the parent's trained student as before. A trial without a parent (the start
design), or whose parent left no trained file, trains from scratch.

Each trial records on its Optuna trial the key of its train phase and the keys it inherited:
its children find its file, and its inheritance, there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from nascomp.trainers.config import TrialConfig
from nascomp.trainers.init import file_digest
from nascomp.trainers.trained import after_training, trained_key

TRAINED_KEY_ATTR = "nascomp_trained_key"  # Optuna user attr: the trial's train-phase key
INHERITED_ATTR = "nascomp_inherited"  # Optuna user attr: the flat keys taken from its parent


@dataclass(frozen=True)
class Inheritance:
    """What a trial's config takes from its parent. A frozen dataclass: Tune pickles the
    searcher, and with it the space that holds this.

    ``store``: the folder of the search's trained students; ``epochs``: the train epochs of a
    trial that inherits."""

    store: str
    epochs: int

    def __call__(self, trial: optuna.Trial, config: dict[str, Any]) -> dict[str, Any]:
        """The flat keys ``trial`` inherits (none without a parent), given the rest of its
        ``config``; both the inherited keys and the train-phase key of the resulting config
        are recorded on the trial for its own children."""
        inherited = self._from_parent(trial)
        key = trained_key(TrialConfig.from_flat({**config, **inherited}))
        trial.set_user_attr(TRAINED_KEY_ATTR, key)
        if inherited:
            trial.set_user_attr(INHERITED_ATTR, inherited)
        return inherited

    def _from_parent(self, trial: optuna.Trial) -> dict[str, Any]:
        parent_params = getattr(trial.study.sampler, "_parents", {}).get(trial.number)
        if not parent_params:
            return {}
        parent = _finished_with(trial.study, parent_params)
        if parent is None:
            return {}
        names = set(parent_params) | set(trial.params)
        changed = [n for n in names if parent_params.get(n) != trial.params.get(n)]
        if all(after_training(name) for name in changed):
            # Same train phase as the parent's: its inherited keys too, so the trained student
            # is reused (trainers.trained) rather than trained again from another start.
            return dict(parent.user_attrs.get(INHERITED_ATTR, {}))
        path = Path(self.store) / f"{parent.user_attrs[TRAINED_KEY_ATTR]}.pt"
        if not path.is_file():  # the parent's phase was not kept (another node, a full disk)
            return {}
        return {
            "train.init": str(path),
            "train.init_sha256": file_digest(path),
            "train.init_match": "slice",
            "train.epochs": self.epochs,
        }


def _finished_with(study: optuna.Study, params: dict[str, Any]) -> optuna.trial.FrozenTrial | None:
    """The latest finished trial of ``study`` with these params whose train-phase key was
    recorded (``pls`` never tries a point twice; a random start design might)."""
    for trial in reversed(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))):
        if trial.params == params and TRAINED_KEY_ATTR in trial.user_attrs:
            return trial
    return None
