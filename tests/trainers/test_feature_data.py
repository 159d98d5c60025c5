"""Inputs that are not images: a user's factory of feature vectors (real tabular data, the
Wisconsin breast-cancer table that ships with scikit-learn: 569 samples of 30 features, 2
classes) through loading, normalisation per feature, streaming, a whole trial with the
compressors, and its ONNX file; and the one-line errors of what needs images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nascomp.search.errors import ConfigError
from nascomp.search.experiment import load_experiment
from nascomp.search.preflight import check_user_code
from nascomp.spaces.models import build_model
from nascomp.trainers.data import DataSplits
from nascomp.trainers.datasets import DatasetError
from nascomp.trainers.normalise import Normalise
from nascomp.trainers.settings import DataConfig
from nascomp.trainers.stream import StreamedSplits, for_trial
from nascomp.trainers.trial import run_trial
from tests.trainers.trials import short_trial

FACTORY = """
import torch
from sklearn.datasets import load_breast_cancer
from torch.utils.data import TensorDataset


def cancer():
    x, y = load_breast_cancer(return_X_y=True)
    return TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y)), None


def cancer_with_gaps():
    x, y = load_breast_cancer(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32)
    x[300, 7] = float("nan")  # a missing measurement
    y = torch.tensor(y)
    return TensorDataset(x[:400], y[:400]), TensorDataset(x[400:], y[400:])


def cancer_with_inf_in_test():
    x, y = load_breast_cancer(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32)
    x[450, 29] = float("-inf")
    y = torch.tensor(y)
    return TensorDataset(x[:400], y[:400]), TensorDataset(x[400:], y[400:])


def cancer_test_narrower():
    x, y = load_breast_cancer(return_X_y=True)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    return TensorDataset(x[:400], y[:400]), TensorDataset(x[400:, :28], y[400:])


def cancer_with_a_constant_feature():
    # feature 3: 0 in every training row, 5 in the test rows
    x, y = load_breast_cancer(return_X_y=True)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    x[:400, 3], x[400:, 3] = 0.0, 5.0
    return TensorDataset(x[:400], y[:400]), TensorDataset(x[400:], y[400:])


def mlp(input_shape, n_classes, hidden=16):
    (features,) = input_shape
    return torch.nn.Sequential(
        torch.nn.Linear(features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, n_classes)
    )
"""


@pytest.fixture
def factory(user_module: Callable[[str, str], str]) -> str:
    return user_module("tabular", FACTORY)


def test_feature_vectors_load_normalised_per_feature(factory: str) -> None:
    from sklearn.datasets import load_breast_cancer

    splits = DataConfig(name="custom", factory=f"{factory}:cancer").load()
    assert isinstance(splits, DataSplits)
    assert (splits.input_shape, splits.n_classes) == ((30,), 2)
    assert splits.train_x.shape[1:] == (30,)
    # Every feature has mean 0 and std 1 over train + val (the statistics' samples), each
    # on its own scale (the table's features range from 1e-3 to 4e3).
    dev = torch.cat([splits.train_x, splits.val_x])
    assert torch.allclose(dev.mean(dim=0), torch.zeros(30), atol=1e-4)
    assert torch.allclose(dev.std(dim=0, unbiased=False), torch.ones(30), atol=1e-4)
    raw, _ = load_breast_cancer(return_X_y=True)
    assert float(raw.max(axis=0).max() / raw.max(axis=0).min()) > 1e4
    # The held-out test split went through the same statistics: every test row is a raw row
    # normalised with them (what preprocess.json tells a deployment team to do)
    assert splits.normalise is not None and splits.normalise.describe()["scale"] == 1.0
    table = torch.tensor(raw, dtype=torch.float32)
    prepared = (table - splits.normalise.mean) / splits.normalise.std
    exact = "donot_use_mm_for_euclid_dist"
    distance = torch.cdist(splits.test_x, prepared, compute_mode=exact).min(dim=1).values
    assert float(distance.max()) < 1e-4


@pytest.mark.parametrize("stream", [False, True])
def test_a_constant_feature_is_centred_not_magnified(factory: str, stream: bool) -> None:
    """As scikit-learn's StandardScaler: std 1 where the training rows are constant. A std
    clamped to 1e-6 made the test rows' 5 a 5,000,000 (and an exported model's logits
    explode on such inputs)."""
    config = DataConfig(name="custom", factory=f"{factory}:cancer_with_a_constant_feature")
    splits = config.model_copy(update={"stream": stream}).load()
    assert splits.normalise is not None
    assert float(splits.normalise.std[3]) == 1.0 and float(splits.normalise.mean[3]) == 0.0
    assert float(splits.normalise.std[0]) > 1.0  # the others keep their own scale
    test_x = splits.test.head(len(splits.test)) if stream else splits.test_x
    assert torch.all(test_x[:, 3] == 5.0)


def test_streamed_feature_vectors_hold_the_in_memory_values(factory: str) -> None:
    config = DataConfig(name="custom", factory=f"{factory}:cancer")
    memory = config.model_copy(update={"stream": False}).load()
    streamed = for_trial(config.model_copy(update={"stream": True}).load(), "cpu", 1)
    assert isinstance(streamed, StreamedSplits) and streamed.input_shape == (30,)
    for role in ("train", "val", "test"):
        kept, read = getattr(memory, role), getattr(streamed, role)
        assert torch.equal(torch.cat(list(read.chunks(64))), kept.x), role  # bit for bit


@pytest.mark.parametrize("stream", [False, True])
def test_a_non_finite_input_is_refused_in_one_line_naming_the_sample(
    factory: str, stream: bool
) -> None:
    """A NaN would make its channel's statistics NaN, so every input and every trial."""
    gaps = DataConfig(name="custom", factory=f"{factory}:cancer_with_gaps", stream=stream)
    with pytest.raises(
        DatasetError,
        match=rf"^data.factory \({factory}:cancer_with_gaps\): train sample 300's input holds nan",
    ):
        gaps.load()
    inf = DataConfig(name="custom", factory=f"{factory}:cancer_with_inf_in_test", stream=stream)
    with pytest.raises(
        DatasetError, match=r"^data.factory \(.+\): test sample 50's input holds -inf"
    ):
        inf.load()


def test_normalise_takes_samples_and_batches_of_any_rank() -> None:
    norm = Normalise(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0]), 1.0, sample_dim=1)
    assert norm(torch.tensor([3.0, 6.0])).tolist() == [1.0, 1.0]
    assert norm(torch.tensor([[3.0, 6.0], [1.0, 2.0]])).tolist() == [[1.0, 1.0], [0.0, 0.0]]
    signal = Normalise(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0]), 1.0, sample_dim=2)
    batch = torch.tensor([[[1.0, 3.0], [2.0, 6.0]]])  # one (C=2, L=2) signal
    assert signal(batch).tolist() == [[[0.0, 2.0], [0.0, 2.0]]]


def _flat(factory: str, **sampled: Any) -> dict[str, Any]:
    data = ["data.name=custom", f"data.factory={factory}:cancer", "train.batch_size=32"]
    return short_trial(data, **{"arch.family": "mlp", "arch.hidden": [32, 16], **sampled})


def test_a_trial_on_feature_vectors_prunes_quantizes_and_ships_onnx(factory: str) -> None:
    import onnxruntime as ort

    outcome = run_trial(_flat(factory))
    assert outcome.status == "ok", outcome.reason
    assert outcome.metrics["val_accuracy"] > 0.9  # the table is easy; chance is 0.63
    assert outcome.metrics["params"] < 30 * 32 + 32 * 16 + 16 * 2  # structurally pruned
    assert outcome.info["latency_form"] == "onnxruntime int8-qdq"
    assert outcome.metrics["onnx_agreement"] > 0.95
    session = ort.InferenceSession(outcome.onnx, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 30]
    logits = session.run(None, {session.get_inputs()[0].name: np.zeros((5, 30), np.float32)})
    assert logits[0].shape == (5, 2)


def test_what_needs_images_says_so_in_one_line(factory: str) -> None:
    with pytest.raises(ValueError, match=r"family 'cnn' takes \(C, H, W\) images; .* \(30,\)"):
        build_model({"family": "cnn"}, (30,), 2)
    assert build_model({"family": "mlp", "hidden": [8]}, (30,), 2)(torch.zeros(4, 30)).shape == (
        4,
        2,
    )
    resized = DataConfig(name="custom", factory=f"{factory}:cancer", image_size=16)
    with pytest.raises(DatasetError, match=r"^data.image_size: resizes .* has shape \(30,\)"):
        resized.load()
    # Which split, and no advice about images for vectors of features.
    narrower = DataConfig(name="custom", factory=f"{factory}:cancer_test_narrower")
    with pytest.raises(DatasetError) as caught:
        narrower.load()
    assert str(caught.value) == (
        f"data.factory ({factory}:cancer_test_narrower): test sample 0 is (28,) torch.float32, "
        "train sample 0 is (30,) "
        "torch.float32; every input must have one shape and dtype"
    )
    experiment = Path(f"{factory}.yaml")
    experiment.write_text(
        f"data: {{name: custom, factory: '{factory}:cancer'}}\n"
        f"space:\n  arch: {{family: custom, builder: '{factory}:mlp', hidden: [8, 16]}}\n"
        "  distill: {enabled: [true, false]}\n"
    )
    # The default teacher, a cnn, gives way to an MLP for these rows; a cnn named is refused.
    assert check_user_code(load_experiment(str(experiment))).teacher.arch["family"] == "mlp"
    cnn_teacher = ["teacher.arch={family: cnn}"]
    with pytest.raises(ConfigError, match=r"^teacher.arch: model family 'cnn' takes .* mlp, or"):
        check_user_code(load_experiment(str(experiment), cnn_teacher))
    no_teacher = ["space.distill.enabled=[false]"]
    with pytest.raises(ConfigError, match=r"^train.augment: crops and flips"):
        check_user_code(load_experiment(str(experiment), [*no_teacher, "train.augment.flip=true"]))
    image_student = [*no_teacher, "space.arch={family: cnn}"]
    with pytest.raises(ConfigError, match=r"^space.arch: model family 'cnn' takes .*mlp or custom"):
        check_user_code(load_experiment(str(experiment), image_student))
    checked = check_user_code(load_experiment(str(experiment), no_teacher))
    assert checked.data.factory == f"{factory}:cancer"
