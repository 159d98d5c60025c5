"""The ONNX file a trial ships, as an MLflow model: served by ``mlflow.pyfunc.load_model``,
registered by ``nascomp reproduce --register`` and ``nascomp export --register``.

A trial's run holds ``onnx_model/`` (``MLmodel``, ``model.onnx``, the requirements), logged
with its other artifacts. The worker only stages the file and an input example in its final
checkpoint (``stage_onnx_model``); the driver, which imports MLflow anyway, makes them the
model folder before logging it (``finish_onnx_model``). Importing MLflow in each worker cost
2.3 s of its first trial on a 2-core machine (profiled). The requirements are given, not
inferred: MLflow's inference runs a subprocess that imports the model's code, 1.3 s a trial
here (profiled), for an answer that is always ``onnx`` and ``onnxruntime``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ONNX_MODEL_DIR = "onnx_model"
# The exported model.onnx (preprocessing in its metadata and beside it) that `nascomp export
# --register` logs to the trial's run and registers.
SHIPPED_MODEL_DIR = "shipped_onnx_model"
STAGED_ONNX, STAGED_EXAMPLE = "staged.onnx", "staged-example.npy"


def stage_onnx_model(onnx_bytes: bytes, folder: Path, example: np.ndarray) -> None:
    """Leave ``onnx_bytes`` and ``example`` in ``folder`` for ``finish_onnx_model``."""
    (folder / STAGED_ONNX).write_bytes(onnx_bytes)
    np.save(folder / STAGED_EXAMPLE, example, allow_pickle=False)


def finish_onnx_model(folder: Path) -> Path | None:
    """``folder/onnx_model`` made from what ``stage_onnx_model`` left there (the staged files
    are then removed); the existing one when it was made already; None when there is none.
    The folder appears whole or not at all: it is written beside and renamed into place."""
    path = folder / ONNX_MODEL_DIR
    staged, example = folder / STAGED_ONNX, folder / STAGED_EXAMPLE
    if staged.is_file() and example.is_file() and not path.is_dir():
        with tempfile.TemporaryDirectory(dir=folder, prefix=".onnx_model-") as scratch:
            inputs = np.load(example, allow_pickle=False)
            made = save_onnx_model(staged.read_bytes(), Path(scratch), inputs)
            os.replace(made, path)
    if path.is_dir():
        staged.unlink(missing_ok=True)
        example.unlink(missing_ok=True)
        return path
    return None


def save_onnx_model(onnx_bytes: bytes, folder: Path, example: np.ndarray) -> Path:
    """Write ``onnx_bytes`` as an MLflow ONNX model (pyfunc flavour included) in
    ``folder/onnx_model``, with the signature of ``example``'s batch; returns that folder."""
    from nascomp.compressors.onnx_export import onnxruntime_module

    onnxruntime = onnxruntime_module()  # before MLflow's ONNX flavour imports it
    import mlflow.onnx
    import onnx
    from mlflow.models import infer_signature

    model = onnx.load_model_from_string(onnx_bytes)
    onnxruntime.set_default_logger_severity(3)  # errors only, as compressors.onnx_export's
    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    # float inputs as float32; integer ids (an embedding's input) as int64
    example = example.astype(np.int64 if np.issubdtype(example.dtype, np.integer) else np.float32)
    inputs = {session.get_inputs()[0].name: example}
    logits = session.run(None, inputs)[0]
    path = folder / ONNX_MODEL_DIR
    with _requirements_as_given():
        mlflow.onnx.save_model(
            model,
            str(path),
            signature=infer_signature(example, logits),
            pip_requirements=[
                f"onnx=={onnx.__version__}",
                f"onnxruntime=={onnxruntime.__version__}",
            ],
            save_as_external_data=False,  # one file: model.onnx is the file to ship
            onnx_execution_providers=["CPUExecutionProvider"],
        )
    return path


@contextlib.contextmanager
def _requirements_as_given() -> Iterator[None]:
    """Skip MLflow's check of a model's pip requirements against this environment while
    saving one. The first time a process runs it, it maps every installed distribution's
    files to its modules: 0.9 to 1.0 CPU-s (profiled, 2-core VM, 68 distributions), paid in
    the driver while the first trials train and again by each ``nascomp reproduce``. It can
    find nothing here: the requirements are the versions of the onnx and onnxruntime this
    process imported. MLflow offers no switch; its module attribute is swapped for the call
    (the driver saves models on one thread) and left alone if MLflow renames it."""
    from mlflow.utils import environment

    name = "warn_dependency_requirement_mismatches"
    check = getattr(environment, name, None)
    if check is None:
        yield
        return
    setattr(environment, name, lambda requirements: None)
    try:
        yield
    finally:
        setattr(environment, name, check)


def warm_up() -> None:
    """Make a one-node MLflow ONNX model in a scratch folder: the first model a process makes
    costs more than the next ones (MLflow imports its ONNX and pyfunc flavours, onnxruntime
    starts). The driver calls this on its main thread while the first trials train
    (``search.tune.warmup``)."""
    shape = [2, 3]
    with tempfile.TemporaryDirectory(prefix="nascomp-warm-up-") as scratch:
        save_onnx_model(identity_onnx(shape), Path(scratch), np.zeros(shape, dtype=np.float32))


def identity_onnx(shape: list[int]) -> bytes:
    """An ONNX model whose output is its float input of ``shape``, at an old opset and IR
    version that every onnxruntime nascomp supports runs."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    return model.SerializeToString()


def register(
    client: Any,
    run_id: str,
    name: str,
    description: str,
    tags: dict[str, str],
    folder: str = ONNX_MODEL_DIR,
) -> Any:
    """Register the run's MLflow model ``folder`` (its ``onnx_model``) in the Model Registry
    as a new version of ``name`` (created if needed), with ``description`` and ``tags`` on the
    version."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name)
    source = f"{client.get_run(run_id).info.artifact_uri}/{folder}"
    version = client.create_model_version(
        name, source, run_id=run_id, description=description, tags=tags
    )
    return version
