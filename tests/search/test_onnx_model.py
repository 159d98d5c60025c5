"""The worker stages a trial's ONNX file; the driver makes it the MLflow model its run logs."""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from nascomp.compressors.onnx_export import export_onnx
from nascomp.search.tracking.models import (
    ONNX_MODEL_DIR,
    STAGED_EXAMPLE,
    STAGED_ONNX,
    finish_onnx_model,
    stage_onnx_model,
)


@pytest.fixture(scope="module")
def onnx_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5)).eval()
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(model, torch.zeros(1, 3, 2, 2), path)
    return path.read_bytes()


def test_the_staged_file_becomes_a_model_pyfunc_serves(tmp_path: Path, onnx_bytes: bytes) -> None:
    example = np.linspace(-1, 1, 12, dtype=np.float32).reshape(1, 3, 2, 2)
    stage_onnx_model(onnx_bytes, tmp_path, example)
    path = finish_onnx_model(tmp_path)
    assert path == tmp_path / ONNX_MODEL_DIR
    # The staged copies are gone: the file is kept once, inside the model folder.
    assert not (tmp_path / STAGED_ONNX).exists() and not (tmp_path / STAGED_EXAMPLE).exists()
    assert (path / "model.onnx").read_bytes() == onnx_bytes
    inputs = np.random.default_rng(0).standard_normal((4, 3, 2, 2)).astype(np.float32)
    ort = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    expected = ort.run(None, {ort.get_inputs()[0].name: inputs})[0]
    served = mlflow.pyfunc.load_model(str(path))
    np.testing.assert_array_equal(next(iter(served.predict(inputs).values())), expected)
    signature = served.metadata.get_input_schema().inputs[0]
    assert list(signature.shape) == [-1, 3, 2, 2]  # the example's batch, any size


def test_finishing_again_keeps_the_model_and_nothing_staged_is_none(
    tmp_path: Path, onnx_bytes: bytes
) -> None:
    assert finish_onnx_model(tmp_path) is None  # a trial without an ONNX file
    stage_onnx_model(onnx_bytes, tmp_path, np.zeros((1, 3, 2, 2), np.float32))
    first = finish_onnx_model(tmp_path)
    made = (first / "MLmodel").stat().st_mtime_ns
    assert finish_onnx_model(tmp_path) == first  # a restored trial's checkpoint: made already
    assert (first / "MLmodel").stat().st_mtime_ns == made


def test_a_staged_file_that_is_no_onnx_model_raises(tmp_path: Path) -> None:
    stage_onnx_model(b"not an onnx file", tmp_path, np.zeros((1, 3, 2, 2), np.float32))
    with pytest.raises(Exception):  # noqa: B017 - onnx's own decode error
        finish_onnx_model(tmp_path)
    # Nothing half-made is left to be logged later: the staged files only.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([STAGED_EXAMPLE, STAGED_ONNX])


def test_the_model_pins_this_onnx_without_scanning_the_environment(
    tmp_path: Path, onnx_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MLflow's check of the requirements against the installed packages (a scan of every
    # distribution's files, about 1 CPU-s per process) is not run, and is back afterwards.
    import onnx
    from mlflow.utils import environment

    calls: list[list[str]] = []
    monkeypatch.setattr(environment, "warn_dependency_requirement_mismatches", calls.append)
    stage_onnx_model(onnx_bytes, tmp_path, np.zeros((1, 3, 2, 2), np.float32))
    path = finish_onnx_model(tmp_path)
    assert calls == []
    assert environment.warn_dependency_requirement_mismatches == calls.append
    pinned = (path / "requirements.txt").read_text().split()
    assert f"onnx=={onnx.__version__}" in pinned
    assert f"onnxruntime=={onnxruntime.__version__}" in pinned
