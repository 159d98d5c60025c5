"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real offline datasets: $NASCOMP_DATA_ROOT, else <repo>/../shared/data."""
    root = Path(os.environ.get("NASCOMP_DATA_ROOT") or REPO_ROOT.parent / "shared" / "data")
    if not root.is_dir():
        # In CI the data must be there: a silent skip would let the data tests pass unseen.
        report = pytest.fail if os.environ.get("CI") else pytest.skip
        report(
            f"dataset folder {root} not found: set NASCOMP_DATA_ROOT to the shared data folder "
            "(MNIST/, FashionMNIST/, cifar10-jpeg.tar, nasbench201/)"
        )
    return root


def unfused_session(model: Path | bytes) -> Any:
    """An ONNX Runtime session of an ONNX file (its path or bytes) with every graph
    optimization off: each QuantizeLinear / DequantizeLinear pair runs as float arithmetic, so
    the file's own arithmetic, whatever int8 kernels (VNNI or not) this CPU has."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
