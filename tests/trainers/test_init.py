"""``train.init``: trials that start from the user's trained weights, on real digits data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from nascomp.search.errors import ConfigError
from nascomp.search.experiment import load_experiment, trial_constants
from nascomp.spaces.models import build_model
from nascomp.trainers import init as init_module
from nascomp.trainers.config import TrialConfig
from nascomp.trainers.init import apply_weights, file_digest, initial_weights, load_state_file
from nascomp.trainers.settings import TrainConfig
from nascomp.trainers.trial import run_trial
from tests.trainers.configs import SMALL_CNN, fast


def small(n_classes: int) -> nn.Module:
    torch.manual_seed(n_classes)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, n_classes)
    )


def test_tensors_of_the_same_name_and_shape_are_copied_the_others_kept() -> None:
    source, target = small(3), small(10)  # the same body, another head
    for _ in range(2):  # give the BatchNorm running statistics values of their own
        source.train()(torch.randn(8, 1, 8, 8))
    kept_head = target[3].weight.detach().clone()
    report = apply_weights(target, source.state_dict())
    # conv weight and bias, BN weight, bias, running mean, running var, batches tracked
    assert (report.loaded, report.total) == (7, 9)
    assert report.reshaped == ("3.weight", "3.bias") and report.missing == ()
    for name, tensor in source.state_dict().items():
        if not name.startswith("3."):
            assert torch.equal(target.state_dict()[name], tensor), name
    assert torch.equal(target[3].weight, kept_head)  # 10 classes: the file's 3 do not fit
    assert (
        "7 of 9 tensors (1 weight matrix, 3% of the parameters) from f.pt; other shape, kept "
        "initialised: 3.weight" in report.describe("f.pt")
    )
    partial = apply_weights(small(3), {"0.weight": source[0].weight.detach()})
    assert partial.loaded == 1 and partial.missing[:2] == ("0.bias", "1.weight")
    # Weights: conv 36 + 4, BN 4 + 4 of the 40 + 8 + 144 * 10 + 10 the model holds
    assert report.matrices == 1 and report.share == 48 / (48 + 1450)


def test_counters_alone_are_no_fit() -> None:
    """A checkpoint of another width fits a BatchNorm's num_batches_tracked (one name and
    shape at every width) and nothing else: no weight matrix, and no share of the weights."""

    def wide(width: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, width, 3), nn.BatchNorm2d(width))

    report = apply_weights(wide(4), wide(8).state_dict())
    assert report.loaded == 1 and report.matrices == 0 and report.share == 0.0


def test_slice_copies_the_leading_channels_and_the_kernel_centre() -> None:
    parent = nn.Conv2d(2, 3, 5)
    with torch.no_grad():
        parent.weight.copy_(torch.arange(150.0).reshape(3, 2, 5, 5))
        parent.bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
    child = nn.Conv2d(1, 4, 3)  # fewer inputs, more outputs, a smaller kernel
    before = {name: tensor.detach().clone() for name, tensor in child.state_dict().items()}

    exact = apply_weights(child, parent.state_dict())
    assert (exact.loaded, exact.reshaped) == (0, ("weight", "bias"))
    assert all(torch.equal(child.state_dict()[n], t) for n, t in before.items())

    report = apply_weights(child, parent.state_dict(), match="slice")
    assert (report.loaded, report.sliced, report.total, report.reshaped) == (2, 2, 2, ())
    # outputs 0..2 of 4 and input 0 of 2; the 3x3 middle (rows and columns 1..3) of the 5x5
    assert torch.equal(child.weight[:3], parent.weight[:3, :1, 1:4, 1:4])
    assert child.weight[0, 0].tolist() == [[6.0, 7.0, 8.0], [11.0, 12.0, 13.0], [16.0, 17.0, 18.0]]
    assert torch.equal(child.weight[3], before["weight"][3])  # no parent channel: as it was
    assert child.bias.tolist()[:3] == [1.0, 2.0, 3.0] and child.bias[3] == before["bias"][3]
    assert (
        "2 of 2 tensors (1 weight matrix, 75% of the parameters) from p.pt (2 in part: the "
        "overlap of two shapes)" in report.describe("p.pt")
    )

    wider = nn.Conv2d(2, 3, 7)  # a larger kernel: the parent's 5x5 in its middle
    original = wider.weight.detach().clone()
    apply_weights(wider, parent.state_dict(), match="slice")
    assert torch.equal(wider.weight[:, :, 1:6, 1:6], parent.weight)
    assert torch.equal(wider.weight[:, :, 0], original[:, :, 0])

    flat = apply_weights(nn.Linear(4, 3), {"weight": torch.ones(3, 2, 2)}, match="slice")
    assert flat.reshaped == ("weight",) and flat.sliced == 0  # another number of dimensions
    with pytest.raises(ValueError, match="match must be one of"):
        apply_weights(child, parent.state_dict(), match="overlap")


def test_a_checkpoint_file_nested_or_not_and_what_is_refused(tmp_path: Path) -> None:
    state = small(3).state_dict()
    torch.save({"epoch": 3, "model_state_dict": state}, tmp_path / "nested.pt")
    loaded = load_state_file(tmp_path / "nested.pt")
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    torch.save(small(3), tmp_path / "whole.pt")  # a pickled module: code, refused
    with pytest.raises(ValueError, match=r"holds pickled objects.*save model\.state_dict"):
        load_state_file(tmp_path / "whole.pt")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"notes\.txt is not a checkpoint torch\.load reads"):
        load_state_file(tmp_path / "notes.txt")
    torch.save([1, 2, 3], tmp_path / "list.pt")  # "a whole pickled model?" misled
    with pytest.raises(ValueError, match=r"list\.pt holds a list, not a state dict of tensors"):
        load_state_file(tmp_path / "list.pt")
    # saved from DataParallel: every key under module. (it was refused, every tensor unmatched)
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "parallel.pt")
    loaded = load_state_file(tmp_path / "parallel.pt")
    assert loaded.keys() == state.keys()


def test_the_file_must_be_the_one_the_config_recorded(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save(small(3).state_dict(), path)
    config = TrainConfig(init=str(path))
    assert config.init_sha256 == file_digest(path) and len(config.init_sha256) == 64
    assert initial_weights(str(path), config.init_sha256).keys() == small(3).state_dict().keys()
    other = tmp_path / "parent.pt"  # another trial's file: the process keeps only the last
    torch.save(small(4).state_dict(), other)
    initial_weights(str(other), None)
    assert list(init_module._LOADED) == [(str(other), file_digest(other))]
    torch.save(small(4).state_dict(), path)  # retrained after the search began
    with pytest.raises(ValueError, match=r"train.init: .*w.pt changed since the search read it"):
        initial_weights(str(path), config.init_sha256)
    path.unlink()
    with pytest.raises(ValueError, match=r"train\.init: .*w\.pt does not exist"):
        initial_weights(str(path), config.init_sha256)
    with pytest.raises(ValidationError, match=r"checkpoint '.*absent\.pt' does not exist"):
        TrainConfig(init=str(tmp_path / "absent.pt"))
    with pytest.raises(ValidationError, match="init_sha256 goes with init"):
        TrainConfig(init_sha256="0" * 64)


def trial(tmp_path: Path, epochs: int, **sampled: Any) -> dict[str, Any]:
    experiment = load_experiment(None, fast(epochs))
    return {**trial_constants(experiment), **SMALL_CNN, "distill.enabled": False, **sampled}


def test_a_trial_starts_from_the_users_weights_and_reproduces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user's trained model (here: a trial's) as the start of one epoch of fine-tuning:
    every tensor loads, the trial ends above the same epoch from scratch, at a learning rate
    near 0 it ends with the file's weights, and the same config again gives the same
    metrics."""
    monkeypatch.setenv("NASCOMP_CACHE", str(tmp_path / "cache"))
    trained = run_trial(trial(tmp_path, 6))
    path = tmp_path / "mine.pt"
    torch.save({"state_dict": trained.model.state_dict()}, path)

    flat = trial(tmp_path, 1, **{"train.init": str(path)})
    config = TrialConfig.from_flat(flat)
    assert config.train.init_sha256 == file_digest(path)
    first = run_trial(config)
    assert first.status == "ok", first.reason
    n_tensors = len(trained.model.state_dict())
    assert first.info["init"].startswith(f"{n_tensors} of {n_tensors} tensors (")
    assert first.info["init"].endswith(f", 100% of the parameters) from {path}")
    scratch = run_trial(trial(tmp_path, 1))
    assert first.metrics["val_accuracy"] > scratch.metrics["val_accuracy"]
    # with a learning rate of nearly 0, the weights the trial ends with are the file's
    still = run_trial(trial(tmp_path, 1, **{"train.init": str(path), "train.lr": 1e-12}))
    for name, tensor in trained.model.state_dict().items():
        if name.endswith(("weight", "bias")):
            assert torch.allclose(still.model.state_dict()[name], tensor, atol=1e-8), name
    again = run_trial(flat)
    assert again.metrics["val_accuracy"] == first.metrics["val_accuracy"]
    assert again.metrics["test_accuracy"] == first.metrics["test_accuracy"]
    # a wider variant of the same family takes nothing of another width, but the rest
    wider = trial(tmp_path, 1, **{"train.init": str(path), "arch.base_channels": 16})
    outcome = run_trial(wider)
    assert outcome.status == "ok" and "other shape, kept initialised" in outcome.info["init"]
    # its counters fit, no weight matrix does: the tag says so, not "n of m tensors" alone
    assert " tensors (0 weight matrices, " in outcome.info["init"]
    model = build_model(TrialConfig.from_flat(wider).arch, (1, 8, 8), 10)
    assert apply_weights(model, trained.model.state_dict()).loaded < n_tensors
    # sliced, as an inheriting trial loads its parent's weights: every tensor takes a part,
    # and the epoch ends above the wider variant's from scratch
    sliced = run_trial({**wider, "train.init_match": "slice"})
    assert sliced.info["init"].startswith(f"{n_tensors} of {n_tensors} tensors (")
    assert f"of the parameters) from {path} (" in sliced.info["init"]
    wide_scratch = run_trial(trial(tmp_path, 1, **{"arch.base_channels": 16}))
    assert sliced.metrics["val_accuracy"] > wide_scratch.metrics["val_accuracy"]


def test_epochs_0_compresses_the_users_weights_without_training_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``train.epochs: 0`` with ``train.init``: the trial compresses the file's model as it is.
    Uncompressed, it scores exactly what the model it was saved from scored; pruned to half its
    channels and quantized to 8 bits (one fine-tuning epoch each) it stays near that, above
    the same compression after an epoch of training from PyTorch's initialisers. Without
    ``train.init``, 0 is refused, naming the field."""
    monkeypatch.setenv("NASCOMP_CACHE", str(tmp_path / "cache"))
    trained = run_trial(trial(tmp_path, 5))
    assert trained.status == "ok", trained.reason
    path = tmp_path / "mine.pt"
    torch.save(trained.model.state_dict(), path)

    experiment = load_experiment(None, [*fast(0), f"train.init={path}"])
    assert experiment.train.epochs == 0
    start = {**trial_constants(experiment), **SMALL_CNN, "distill.enabled": False}
    same = run_trial(start)
    with pytest.raises(ValidationError, match=r"train\.epochs: 0 trains nothing"):
        TrialConfig.from_flat({**trial(tmp_path, 1), "train.epochs": 0})
    assert same.status == "ok", same.reason
    assert same.metrics["epochs"] == 0
    for metric in ("val_accuracy", "test_accuracy", "test_balanced_accuracy", "params"):
        assert same.metrics[metric] == trained.metrics[metric], metric

    compress = {"prune.method": "structured", "prune.ratio": 0.5, "quant.bits": 8}
    compressed = run_trial({**start, **compress})
    assert compressed.status == "ok", compressed.reason
    assert compressed.metrics["epochs"] == 2  # one of pruning, one of QAT, none before
    assert compressed.metrics["params"] < 0.6 * trained.metrics["params"]
    assert compressed.metrics["val_accuracy"] > trained.metrics["val_accuracy"] - 0.1
    scratch = run_trial({**trial(tmp_path, 1), **compress})  # an epoch more, from scratch
    assert scratch.metrics["val_accuracy"] < compressed.metrics["val_accuracy"]

    with pytest.raises(ConfigError, match=r"^train\.epochs: 0 trains nothing.*train\.init"):
        load_experiment(None, fast(0))
