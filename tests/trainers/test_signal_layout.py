"""Two-dimensional inputs that are signals, not images: ``data.layout: channels_first`` reads
an input of shape (C, L) as C channels of length L, as the dataset gives it, for a model of
``Conv1d`` layers. The data are real: MNIST digits read row by row as 28-channel signals of
length 28 (sequential MNIST). Loading and per-channel normalisation, streaming, a whole trial
with the compressors and its ONNX file, the export's recipe, the cache keys, and the one-line
errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nascomp.compressors.quantization import weight_bits_by_layer
from nascomp.search.errors import ConfigError
from nascomp.search.experiment import load_experiment
from nascomp.search.export import export_model, load_exported
from nascomp.search.preflight import check_user_code
from nascomp.trainers.data import DataSplits
from nascomp.trainers.datasets import DatasetError, prepare_input
from nascomp.trainers.settings import DataConfig
from nascomp.trainers.stream import StreamedSplits, for_trial
from nascomp.trainers.trial import run_trial
from tests.trainers.trials import short_trial

ROWS = 28  # a digit's rows are the signal's channels, its columns the time steps

FACTORY = """
import torch
from torch import nn
from torch.utils.data import TensorDataset
from torchvision.datasets import MNIST


def _rows(root, train, n):
    data = MNIST(root, train=train, download=False)
    return data.data[:n].float() / 255.0, data.targets[:n]  # (n, 28, 28) float


def signals(root, n_train=1500, n_test=300):
    return TensorDataset(*_rows(root, True, n_train)), TensorDataset(*_rows(root, False, n_test))


class Recurrent(nn.Module):
    def __init__(self, width, n_classes, hidden):
        super().__init__()
        self.rnn = nn.GRU(width, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x):  # (N, C, L): L time steps of C features
        out, _ = self.rnn(x.transpose(1, 2))
        return self.head(out.mean(1))


def gru(input_shape, n_classes, hidden=32):
    return Recurrent(input_shape[0], n_classes, hidden)


def conv1d(input_shape, n_classes, channels=32):
    width, _length = input_shape  # (C, L): a 2-D input read channels first
    return nn.Sequential(
        nn.Conv1d(width, channels, 5, padding=2),
        nn.BatchNorm1d(channels),
        nn.ReLU(),
        nn.Conv1d(channels, channels, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(channels, n_classes),
    )


class WithFeatures(nn.Module):  # a Hugging Face style output: (logits, features)
    def __init__(self, n_classes):
        super().__init__()
        self.body, self.head = nn.Flatten(), nn.LazyLinear(n_classes)

    def forward(self, x):
        features = self.body(x)
        return self.head(features), features


def with_features(input_shape, n_classes):
    return WithFeatures(n_classes)
"""


@pytest.fixture
def factory(user_module: Callable[[str, str], str]) -> str:
    return user_module("signals", FACTORY)


def _config(factory: str, data_root: Path, **fields: Any) -> DataConfig:
    return DataConfig(name="custom", factory=f"{factory}:signals", root=str(data_root), **fields)


def test_a_two_d_input_is_an_image_and_a_one_d_one_features_unless_channels_first() -> None:
    signal = torch.arange(6.0).view(2, 3)
    assert prepare_input(signal, None, "f", 0).shape == (1, 2, 3)  # auto: an (H, W) image
    kept = prepare_input(signal, None, "f", 0, "channels_first")
    assert kept.shape == (2, 3) and torch.equal(kept, signal)
    # a 1-D input: F features under auto, a signal of one channel (1, L) under channels_first
    line = torch.arange(5.0)
    assert prepare_input(line, None, "f", 0).shape == (5,)
    assert torch.equal(prepare_input(line, None, "f", 0, "channels_first"), line[None])
    # other ranks read the same under both layouts
    for shape in ((3, 4, 4), (2, 3, 4, 4)):
        x = torch.ones(shape)
        assert prepare_input(x, None, "f", 0, "channels_first").shape == shape
        assert prepare_input(x, None, "f", 0).shape == shape
    with pytest.raises(
        DatasetError, match=r"^data.image_size: resizes .*; f's sample 0 .*channels_first reads it"
    ):
        prepare_input(signal, 8, "f", 0, "channels_first")


def test_channels_first_normalises_each_channel_in_memory_and_streamed(
    factory: str, data_root: Path
) -> None:
    splits = _config(factory, data_root, layout="channels_first").load()
    assert isinstance(splits, DataSplits)
    assert (splits.input_shape, splits.n_classes) == ((ROWS, 28), 10)
    assert splits.normalise is not None and splits.normalise.mean.numel() == ROWS
    dev = torch.cat([splits.train_x, splits.val_x])  # the statistics' samples
    # each row of the digit is its own channel: mean 0, std 1 over samples and time steps
    # (the top and bottom rows are blank in every digit: their std is clamped, not 1)
    inked = dev.std(dim=(0, 2), unbiased=False) > 0
    assert 20 <= int(inked.sum()) < ROWS
    assert torch.allclose(dev.mean(dim=(0, 2)), torch.zeros(ROWS), atol=1e-4)
    assert torch.allclose(dev.std(dim=(0, 2), unbiased=False)[inked], torch.ones(1), atol=1e-3)
    # auto reads the same data as one-channel images, normalised with one mean
    images = _config(factory, data_root).load()
    assert images.input_shape == (1, ROWS, 28) and images.normalise.mean.numel() == 1
    streamed = for_trial(
        _config(factory, data_root, layout="channels_first", stream=True).load(), "cpu", 1
    )
    assert isinstance(streamed, StreamedSplits) and streamed.input_shape == (ROWS, 28)
    for role in ("train", "val", "test"):
        kept, read = getattr(splits, role), getattr(streamed, role)
        assert torch.equal(torch.cat(list(read.chunks(64))), kept.x), role  # bit for bit


def test_the_layout_enters_cache_keys_only_when_set(factory: str, data_root: Path) -> None:
    assert "layout" not in _config(factory, data_root).identity()  # keys as before the field
    assert _config(factory, data_root, layout="channels_first").identity()["layout"] == (
        "channels_first"
    )


def _flat(factory: str, data_root: Path, **sampled: Any) -> dict[str, Any]:
    data = [
        "data.name=custom",
        f"data.factory={factory}:signals",
        f"data.root={data_root}",
        "data.layout=channels_first",
    ]
    point = {"arch.family": "custom", "arch.builder": f"{factory}:conv1d", "arch.channels": 32}
    return short_trial(data, **{**point, **sampled})


def test_a_trial_on_signals_prunes_quantizes_and_ships_onnx(
    factory: str, data_root: Path, tmp_path: Path
) -> None:
    import onnxruntime as ort

    flat = _flat(factory, data_root)
    outcome = run_trial(flat)
    assert outcome.status == "ok", outcome.reason
    assert outcome.metrics["val_accuracy"] > 0.6  # 10 classes: chance is 0.1
    dense = (ROWS * 5 * 32 + 32) + 2 * 32 + (32 * 3 * 32 + 32) + (32 * 10 + 10)
    assert outcome.metrics["params"] < dense  # the convolutions lost channels
    assert outcome.info["latency_form"] == "onnxruntime int8-qdq"
    assert outcome.metrics["onnx_agreement"] > 0.95
    session = ort.InferenceSession(outcome.onnx, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", ROWS, 28]
    x = np.random.default_rng(0).standard_normal((4, ROWS, 28)).astype(np.float32)
    assert session.run(None, {session.get_inputs()[0].name: x})[0].shape == (4, 10)
    data = _config(factory, data_root, layout="channels_first").load()
    assert outcome.model is not None
    model, example = outcome.model.cpu().eval(), data.val_x[:4]
    files = export_model(
        model, example, flat, tmp_path / "export", onnx=outcome.onnx, normalise=data.normalise
    )
    recipe = json.loads(files["preprocess"].read_text())
    assert recipe["input_shape"] == [ROWS, 28] and len(recipe["mean"]) == ROWS
    assert "2-D inputs are (C, L) channels, as given" in recipe["formula"]
    loaded = load_exported(tmp_path / "export", trust_code=True)
    with torch.no_grad():
        assert torch.equal(loaded(example).argmax(1), model(example).argmax(1))


def test_a_conv1d_builder_on_two_d_inputs_is_checked_before_a_search(
    factory: str, data_root: Path
) -> None:
    experiment = Path(f"{factory}.yaml")
    experiment.write_text(
        f"data: {{name: custom, factory: '{factory}:signals', root: '{data_root}'}}\n"
        f"space:\n  arch: {{family: custom, builder: '{factory}:conv1d', channels: [8, 16]}}\n"
        "  distill: {enabled: [false]}\n"
    )
    good = check_user_code(load_experiment(str(experiment), ["data.layout=channels_first"]))
    assert good.data.layout == "channels_first"
    # auto hands the builder (1, 28, 28): it unpacks two dimensions and fails, in one line
    # with a hint at the layout
    with pytest.raises(ConfigError, match=r"^space.arch: .*conv1d.*ValueError") as caught:
        check_user_code(load_experiment(str(experiment)))
    assert str(caught.value).endswith(
        "(the samples are read as (H, W) images, input_shape=(1, 28, 28): if they are (C, L) "
        "signals, set data.layout: channels_first)"
    )


def test_a_model_returning_a_tuple_is_told_to_return_its_logits_not_to_change_layout(
    factory: str, data_root: Path
) -> None:
    experiment = Path(f"{factory}.yaml")
    experiment.write_text(
        f"data: {{name: custom, factory: '{factory}:signals', root: '{data_root}'}}\n"
        f"space:\n  arch: {{family: custom, builder: '{factory}:with_features'}}\n"
        "  distill: {enabled: [false]}\n"
    )
    with pytest.raises(ConfigError) as caught:
        check_user_code(load_experiment(str(experiment)))
    assert str(caught.value).endswith(
        "outputs a tuple for a batch of 2; expected one tensor of (2, 10) logits: have its "
        "forward return the logits alone (e.g. a wrapper module returning out[0] or "
        "out['logits'])"
    )


def test_layout_is_refused_for_the_built_in_image_datasets() -> None:
    with pytest.raises(ValueError, match=r"data.layout: 'channels_first' is for custom"):
        DataConfig(name="digits", layout="channels_first")
    with pytest.raises(ValueError, match=r"layout"):
        DataConfig(name="custom", factory="x:y", layout="rows")


def test_a_recurrent_trial_quantizes_its_weights_ships_and_reproduces(
    factory: str, data_root: Path, tmp_path: Path
) -> None:
    flat = _flat(
        factory,
        data_root,
        **{"arch.builder": f"{factory}:gru", "arch.hidden": 32, "prune.method": "none"},
    )
    flat.pop("arch.channels")
    flat.update({"quant.bits": 4, "quant.act_bits": 8})
    outcome = run_trial(flat)
    assert outcome.status == "ok", outcome.reason
    assert outcome.metrics["val_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert outcome.model is not None
    assert weight_bits_by_layer(outcome.model) == {"rnn": 4, "head": 4}
    # the GRU's 3 * 32 * (28 + 32) weights are most of the model: 4-bit codes and a scale a
    # row, against 32 bits a weight
    dense = 4 * (3 * 32 * (ROWS + 32) + 2 * 3 * 32 + 32 * 10 + 10)
    assert outcome.metrics["size_bytes"] < dense / 4
    assert outcome.metrics["onnx_agreement"] > 0.9
    again = run_trial(flat)
    for metric in ("val_accuracy", "size_bytes", "test_accuracy"):
        assert again.metrics[metric] == outcome.metrics[metric], metric
    data = _config(factory, data_root, layout="channels_first").load()
    model, example = outcome.model.cpu().eval(), data.val_x[:8]
    files = export_model(model, example, flat, tmp_path / "export", normalise=data.normalise)
    assert files["artifact"].stat().st_size == outcome.metrics["size_bytes"]
    loaded = load_exported(tmp_path / "export", trust_code=True)
    with torch.no_grad():
        assert torch.equal(loaded(example), model(example))
