"""The ONNX file a trial ships, as an MLflow model: served by ``mlflow.pyfunc.load_model``,
registered by ``nascomp reproduce --register``.

The model folder is written next to the trial's other artifacts (in the worker, into its final
checkpoint) and logged with them, so a trial's run holds ``onnx_model/`` (``MLmodel``,
``model.onnx``, the requirements). The requirements are given, not inferred: MLflow's
inference runs a subprocess that imports the model's code, 1.3 s a trial here (profiled), for
an answer that is always ``onnx`` and ``onnxruntime``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

ONNX_MODEL_DIR = "onnx_model"


def save_onnx_model(onnx_bytes: bytes, folder: Path, example: np.ndarray) -> Path:
    """Write ``onnx_bytes`` as an MLflow ONNX model (pyfunc flavour included) in
    ``folder/onnx_model``, with the signature of ``example``'s batch; returns that folder."""
    import mlflow.onnx
    import onnx
    import onnxruntime
    from mlflow.models import infer_signature

    model = onnx.load_model_from_string(onnx_bytes)
    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    inputs = {session.get_inputs()[0].name: example.astype(np.float32)}
    logits = session.run(None, inputs)[0]
    path = folder / ONNX_MODEL_DIR
    mlflow.onnx.save_model(
        model,
        str(path),
        signature=infer_signature(example.astype(np.float32), logits),
        pip_requirements=[f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"],
        save_as_external_data=False,  # one file: model.onnx is the file to ship
        onnx_execution_providers=["CPUExecutionProvider"],
    )
    return path


def register(client: Any, run_id: str, name: str, description: str, tags: dict[str, str]) -> Any:
    """Register the run's ``onnx_model`` in the Model Registry as a new version of ``name``
    (created if needed), with ``description`` and ``tags`` on the version."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name)
    source = f"{client.get_run(run_id).info.artifact_uri}/{ONNX_MODEL_DIR}"
    version = client.create_model_version(
        name, source, run_id=run_id, description=description, tags=tags
    )
    return version
