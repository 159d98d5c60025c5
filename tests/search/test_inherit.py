"""Weight inheritance in the searcher: which trials take which parent's trained file.

Ray Tune's OptunaSearch (ours, as a search builds it) with the real ``pls`` and ``tpe_local``
samplers suggests configs and is told results, in this process and without training: the
parents' trained files are written by the test, so the rule is checked on every suggestion,
including parents that left no file and moves that change only the compression of an
inheriting parent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nascomp.search.driver import _searcher, trial_base
from nascomp.search.samplers.inherit import INHERITED_ATTR, TRAINED_KEY_ATTR
from nascomp.search.tune.results import STATUS_KEY
from nascomp.trainers.config import TrialConfig, describe_trial
from nascomp.trainers.init import file_digest
from nascomp.trainers.trained import TRAINED_DIR, after_training, trained_key
from tests.search.conftest import tiny_experiment

INHERITED_KEYS = ("train.init", "train.init_sha256", "train.init_match", "train.epochs")


@pytest.mark.parametrize("sampler", ["pls", "tpe_local"])
def test_a_move_that_trains_starts_from_its_parents_file(workdir: Path, sampler: str) -> None:
    experiment = tiny_experiment(
        workdir, f"search.sampler={sampler}", "search.trials=30", "search.inherit_epochs=1"
    )
    searcher = _searcher(experiment, trial_base(experiment), workdir)
    store = workdir.resolve() / TRAINED_DIR
    store.mkdir()
    moves = searcher.study.sampler
    rng = np.random.default_rng(0)
    told: list[tuple[dict[str, Any], dict[str, Any]]] = []  # params, config
    seen = {"inherited": 0, "reused": 0, "no file": 0, "no parent": 0}
    for number in range(28):
        config = searcher.suggest(f"t{number}")
        trial = searcher.study.trials[-1]
        params = dict(trial.params)
        key = trained_key(TrialConfig.from_flat(config))
        assert trial.user_attrs[TRAINED_KEY_ATTR] == key
        parent_params = moves._parents.get(trial.number)
        if parent_params is None:
            seen["no parent"] += 1
            assert config["train.init"] is None and config["train.epochs"] == 2
            assert " | from " not in describe_trial(config)
        else:
            _, parent = next(t for t in reversed(told) if t[0] == parent_params)
            path = store / f"{trained_key(TrialConfig.from_flat(parent))}.pt"
            names = set(parent_params) | set(params)
            changed = [n for n in names if parent_params.get(n) != params.get(n)]
            if all(after_training(name) for name in changed):
                seen["reused"] += 1  # the parent's train phase, its inheritance included
                assert {k: config[k] for k in INHERITED_KEYS} == {
                    k: parent[k] for k in INHERITED_KEYS
                }
                assert key == trained_key(TrialConfig.from_flat(parent))
            elif path.is_file():
                seen["inherited"] += 1
                assert config["train.init"] == str(path)
                assert config["train.init_sha256"] == file_digest(path)
                assert (config["train.init_match"], config["train.epochs"]) == ("slice", 1)
                assert trial.user_attrs[INHERITED_ATTR] == {k: config[k] for k in INHERITED_KEYS}
                assert describe_trial(config).endswith(f" | from trained/{path.name} +1 ep")
            else:
                seen["no file"] += 1  # the parent's phase was not kept: from scratch
                assert config["train.init"] is None and config["train.epochs"] == 2
        if number % 5 != 4:  # every fifth trial leaves no store entry (unless one shares it)
            torch.save({"model": {"w": torch.full((2,), float(number))}}, store / f"{key}.pt")
        told.append((params, config))
        result = {name: float(rng.uniform(0.1, 1.0)) for name in experiment.metric_names()}
        result[STATUS_KEY] = "ok"
        searcher.on_trial_complete(f"t{number}", result)
    assert seen["no parent"] == 10  # the start design (pls) or the warm-up (tpe_local)
    assert seen["inherited"] >= 3 and seen["reused"] >= 1 and seen["no file"] >= 1, seen
