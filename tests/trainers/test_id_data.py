"""Inputs that are integer ids (tokens, categories) for a model that embeds them: real MNIST
digits read as sequences of 49 ids (each 4x4 patch's mean ink in 8 levels), through loading
(ids kept as they are, not normalised), streaming, a whole trial with the compressors, its ONNX
file with an int64 input, an export that ships, and the one-line errors of what needs floats."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from nascomp.compressors.measure import count_macs, measure_latency_ms
from nascomp.compressors.quantization import weight_bits_by_layer
from nascomp.search.errors import ConfigError
from nascomp.search.experiment import load_experiment
from nascomp.search.export import export_model, load_exported
from nascomp.search.preflight import check_user_code
from nascomp.spaces.models import build_model
from nascomp.spaces.userfn import UserCodeError
from nascomp.trainers.data import DataSplits
from nascomp.trainers.datasets import DatasetError, is_ids, prepare_input
from nascomp.trainers.normalise import Normalise
from nascomp.trainers.settings import DataConfig
from nascomp.trainers.stream import StreamedSplits, for_trial
from nascomp.trainers.trial import run_trial
from tests.trainers.trials import short_trial

LEVELS, LENGTH = 8, 49

FACTORY = """
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset
from torchvision.datasets import MNIST

LEVELS = 8


def _tokens(root, train, n):
    data = MNIST(root, train=train, download=False)
    small = F.avg_pool2d(data.data[:n].unsqueeze(1).float(), 4)  # (n, 1, 7, 7)
    ids = (small / 256.0 * LEVELS).long().clamp_(0, LEVELS - 1).flatten(1)  # (n, 49)
    return ids, data.targets[:n]


def tokens(root, n_train=1500, n_test=300):
    train, test = _tokens(root, True, n_train), _tokens(root, False, n_test)
    return TensorDataset(*train), TensorDataset(*test)


class TokenNet(nn.Module):
    def __init__(self, length, n_classes, dim, hidden):
        super().__init__()
        self.embed = nn.Embedding(LEVELS, dim)
        self.position = nn.Parameter(torch.zeros(length, dim))
        self.fc = nn.Linear(length * dim, hidden)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x):
        h = self.embed(x) + self.position
        return self.head(torch.relu(self.fc(h.flatten(1))))


def token_net(input_shape, n_classes, dim=4, hidden=32):
    (length,) = input_shape
    return TokenNet(length, n_classes, dim, hidden)


class TextCNN(nn.Module):
    def __init__(self, n_classes, dim, channels):
        super().__init__()
        self.embed = nn.Embedding(LEVELS, dim)
        self.conv = nn.Conv1d(dim, channels, 3, padding=1)
        self.head = nn.Linear(channels, n_classes)

    def forward(self, x):
        return self.head(torch.relu(self.conv(self.embed(x).transpose(1, 2))).amax(-1))


def text_cnn(input_shape, n_classes, dim=8, hidden=16):
    return TextCNN(n_classes, dim, hidden)


def small_vocab(input_shape, n_classes):  # an embedding of two ids fewer than the data holds
    (length,) = input_shape
    head = nn.Linear(length * 2, n_classes)
    return nn.Sequential(nn.Embedding(LEVELS - 2, 2), nn.Flatten(), head)


def floats_only(input_shape, n_classes):
    return nn.Sequential(nn.Linear(input_shape[0], n_classes))


def padded(root):  # -1 marks padding: train sample 3, position 5
    train, test = tokens(root, n_train=200, n_test=50)
    train.tensors[0][3, 5] = -1
    return train, test


class Shifted(nn.Module):  # takes -1 as its own id 0
    def __init__(self, length, n_classes):
        super().__init__()
        self.embed = nn.Embedding(LEVELS + 1, 2)
        self.fc = nn.Linear(length * 2, 16)
        self.head = nn.Linear(16, n_classes)

    def forward(self, x):
        return self.head(torch.relu(self.fc(self.embed(x + 1).flatten(1))))


def shifted(input_shape, n_classes):
    return Shifted(input_shape[0], n_classes)
"""


@pytest.fixture
def factory(user_module: Callable[[str, str], str]) -> str:
    return user_module("ids", FACTORY)


def _config(factory: str, data_root: Path, **fields: Any) -> DataConfig:
    return DataConfig(name="custom", factory=f"{factory}:tokens", root=str(data_root), **fields)


def test_which_dtypes_are_ids_and_how_a_sample_is_prepared() -> None:
    for dtype in (torch.int64, torch.int32, torch.int16, torch.int8):
        assert is_ids(dtype), dtype
    for dtype in (torch.uint8, torch.bool, torch.float32, torch.float16, torch.float64):
        assert not is_ids(dtype), dtype
    # Two dimensions of ids stay two (an image would get a channel axis), values untouched.
    ids = torch.tensor([[3, 1], [4, 1]])
    assert torch.equal(prepare_input(ids, None, "data.factory", 0), ids)
    assert prepare_input(torch.zeros(2, 2, dtype=torch.uint8), None, "f", 0).shape == (1, 2, 2)
    with pytest.raises(
        DatasetError, match=r"^data.image_size: resizes images; data.factory's sample 0 .*ids"
    ):
        prepare_input(ids, 8, "data.factory", 0)
    norm = Normalise(torch.zeros(1), torch.ones(1), 1.0, sample_dim=1, ids=True)
    out = norm(torch.tensor([[7, 0, 2]], dtype=torch.int32))
    assert out.dtype == torch.int64 and out.tolist() == [[7, 0, 2]]
    assert norm.describe() == {"input_dtype": "int64", "ids": True}


def test_ids_load_as_they_are_in_memory_and_streamed(factory: str, data_root: Path) -> None:
    splits = _config(factory, data_root).load()
    assert isinstance(splits, DataSplits)
    assert (splits.input_shape, splits.n_classes, splits.input_dtype) == (
        (LENGTH,),
        10,
        torch.int64,
    )
    assert splits.normalise is not None and splits.normalise.ids
    everything = torch.cat([splits.train_x, splits.val_x, splits.test_x])
    assert everything.dtype == torch.int64
    assert int(everything.min()) == 0 and int(everything.max()) == LEVELS - 1  # not normalised
    streamed = for_trial(_config(factory, data_root, stream=True).load(), "cpu", 1)
    assert isinstance(streamed, StreamedSplits) and streamed.input_dtype == torch.int64
    for role in ("train", "val", "test"):
        kept, read = getattr(splits, role), getattr(streamed, role)
        assert torch.equal(torch.cat(list(read.chunks(64))), kept.x), role


def _flat(factory: str, data_root: Path, **sampled: Any) -> dict[str, Any]:
    data = ["data.name=custom", f"data.factory={factory}:tokens", f"data.root={data_root}"]
    point = {
        "arch.family": "custom",
        "arch.builder": f"{factory}:token_net",
        "arch.dim": 4,
        "arch.hidden": 32,
    }
    return short_trial(data, **{**point, **sampled})


def test_a_trial_on_ids_prunes_quantizes_ships_an_int64_onnx_and_exports(
    factory: str, data_root: Path, tmp_path: Path
) -> None:
    import onnxruntime as ort

    flat = _flat(factory, data_root)
    outcome = run_trial(flat)
    assert outcome.status == "ok", outcome.reason
    assert outcome.metrics["val_accuracy"] > 0.5  # 10 classes: chance is 0.1
    dense = LEVELS * 4 + LENGTH * 4 + (LENGTH * 4 * 32 + 32) + (32 * 10 + 10)
    assert outcome.metrics["params"] < dense  # the hidden layer lost channels
    assert outcome.info["latency_form"] == "onnxruntime int8-qdq"
    assert outcome.metrics["onnx_agreement"] > 0.95
    session = ort.InferenceSession(outcome.onnx, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(int64)"
    ids = np.random.default_rng(0).integers(0, LEVELS, (5, LENGTH), dtype=np.int64)
    assert session.run(None, {session.get_inputs()[0].name: ids})[0].shape == (5, 10)
    # the same config trains to the same figures (what reproduce relies on)
    again = run_trial(flat)
    assert again.metrics["val_accuracy"] == outcome.metrics["val_accuracy"]
    assert again.metrics["size_bytes"] == outcome.metrics["size_bytes"]

    data = _config(factory, data_root).load()
    assert outcome.model is not None
    model = outcome.model.cpu().eval()
    example = data.val_x[:4]
    files = export_model(
        model, example, flat, tmp_path / "export", onnx=outcome.onnx, normalise=data.normalise
    )
    recipe = json.loads(files["preprocess"].read_text())
    assert (recipe["input_dtype"], recipe["ids"], recipe["input_shape"]) == ("int64", True, [49])
    assert json.loads(files["skeleton"].read_text())["input_dtype"] == "int64"
    loaded = load_exported(tmp_path / "export", trust_code=True)
    with torch.no_grad():
        assert torch.equal(loaded(example).argmax(1), model(example).argmax(1))
        traced = torch.jit.load(str(files["torchscript"]))
        assert torch.allclose(traced(example), model(example))


def test_costs_are_measured_on_ids(factory: str, data_root: Path) -> None:
    model = build_model(
        {"family": "custom", "builder": f"{factory}:token_net"}, (LENGTH,), 10, torch.int64
    )
    # fc and head; the embedding's look-up is no multiply
    assert count_macs(model, (LENGTH,), torch.int64) == LENGTH * 4 * 32 + 32 * 10
    assert measure_latency_ms(model, (LENGTH,), n_warmup=0, n_repeat=1, input_dtype=torch.int64) > 0
    with pytest.raises(RuntimeError):  # float inputs are not ids: the model cannot embed them
        count_macs(model, (LENGTH,))


def test_conv1d_macs_are_counted() -> None:
    model = nn.Sequential(nn.Conv1d(4, 8, 3, padding=1), nn.Flatten(), nn.Linear(80, 2))
    # 8 x 10 outputs, each over 4 channels x 3 taps; then 80 x 2
    assert count_macs(model, (4, 10)) == 8 * 10 * 4 * 3 + 80 * 2


def test_what_needs_floats_says_so_in_one_line(factory: str, data_root: Path) -> None:
    with pytest.raises(ValueError, match=r"family 'mlp' takes float inputs; .*integer ids"):
        build_model({"family": "mlp", "hidden": [8]}, (LENGTH,), 10, torch.int64)
    with pytest.raises(UserCodeError, match=r"fails on a batch of shape \(2, 49\) torch.int64"):
        build_model(
            {"family": "custom", "builder": f"{factory}:floats_only"}, (49,), 10, torch.int64
        )
    experiment = Path(f"{factory}.yaml")
    experiment.write_text(
        f"data: {{name: custom, factory: '{factory}:tokens', root: '{data_root}'}}\n"
        f"space:\n  arch: {{family: custom, builder: '{factory}:token_net', hidden: [8, 16]}}\n"
        "  distill: {enabled: [true, false]}\n"
    )
    # the quickstart's teacher is a cnn
    with pytest.raises(ConfigError, match=r"^teacher.arch: model family 'cnn' takes float inputs"):
        check_user_code(load_experiment(str(experiment)))
    no_teacher = ["space.distill.enabled=[false]"]
    with pytest.raises(ConfigError, match=r"^train.augment: crops and flips images; .*ids"):
        check_user_code(load_experiment(str(experiment), [*no_teacher, "train.augment.flip=true"]))
    checked = check_user_code(load_experiment(str(experiment), no_teacher))
    assert checked.data.factory == f"{factory}:tokens"
    # An embedding too small for the data: the probe's id 0 passed, every trial failed
    small = [*no_teacher, f"space.arch={{family: custom, builder: '{factory}:small_vocab'}}"]
    with pytest.raises(ConfigError) as caught:
        check_user_code(load_experiment(str(experiment), small))
    assert str(caught.value).startswith(
        f"space.arch: the model fails on the data's largest ids (each position's largest over "
        f"train, val and test; {LEVELS - 1} at most), though it takes id 0: IndexError: "
    ), caught.value
    assert str(caught.value).endswith(f"needs num_embeddings of at least {LEVELS})")
    # -1 for padding: every trial failed with IndexError, a teacher with a traceback (a sweep)
    padded = [*no_teacher, f"data.factory={factory}:padded"]
    with pytest.raises(ConfigError) as caught:
        check_user_code(load_experiment(str(experiment), padded))
    assert str(caught.value).startswith(
        "space.arch: the model fails on the data's negative ids (-1 in train sample 3, position "
        "5): IndexError: "
    ), caught.value
    assert str(caught.value).endswith("give padding or a missing value an id of its own)")
    # a model that maps them itself is the user's to write
    shifted = f"space.arch={{family: custom, builder: '{factory}:shifted'}}"
    check_user_code(load_experiment(str(experiment), [*padded, shifted]))


def test_layer_kinds_follow_the_config_so_older_trials_reproduce(
    factory: str, data_root: Path, tmp_path: Path
) -> None:
    """A trial's config names the layer kinds it compresses: new ones every kind (the table
    and the Conv1d at 4 bits too); a config logged before Conv1d and Embedding were
    compressed (no ``quant.layers``) the Conv2d / Linear layers alone, as it was trained."""
    sampled = {
        "arch.builder": f"{factory}:text_cnn",
        "prune.method": "none",
        "quant.bits": 4,
    }
    flat = _flat(factory, data_root, **sampled)
    assert flat["quant.layers"] == "all"
    legacy = {k: v for k, v in flat.items() if k != "quant.layers"}
    data = _config(factory, data_root).load()
    example = data.val_x[:4]
    outcomes = {}
    for name, config in (("all", flat), ("legacy", legacy)):
        outcome = run_trial(config)
        assert outcome.status == "ok", outcome.reason
        outcomes[name] = outcome
        files = export_model(outcome.model.cpu().eval(), example, config, tmp_path / name)
        assert files["artifact"].stat().st_size == outcome.metrics["size_bytes"]
        with torch.no_grad():
            loaded = load_exported(tmp_path / name, trust_code=True)
            assert torch.equal(loaded(data.val_x), outcome.model.cpu().eval()(data.val_x))
    assert weight_bits_by_layer(outcomes["all"].model) == {"embed": 4, "conv": 4, "head": 4}
    assert weight_bits_by_layer(outcomes["legacy"].model) == {"head": 4}
    assert outcomes["all"].metrics["size_bytes"] < outcomes["legacy"].metrics["size_bytes"] / 2
    # MACs: the Conv1d counts only where it is one of the compressed kinds
    assert outcomes["all"].metrics["macs"] > outcomes["legacy"].metrics["macs"] == 32 * 10
