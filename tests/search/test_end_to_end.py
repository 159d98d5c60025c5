"""A real search through the `nascomp` command, then `pareto` and `reproduce` on what it logged.

Real Ray (local), real Optuna, MLflow on a sqlite file, real training on the digits data.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow.artifacts
import mlflow.pyfunc
import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from nascomp.compressors.quantization import freeze_fake_quant
from nascomp.trainers.config import planned_epochs
from tests.search.conftest import nascomp, tiny_args

pytestmark = pytest.mark.e2e

METRICS = [
    "val_accuracy",
    "test_accuracy",
    "val_balanced_accuracy",
    "test_balanced_accuracy",
    "params",
    "nonzero_params",
    "size_bytes",
    "macs",
    "latency_ms",
    "latency_batch_ms",
    "train_seconds",
    "onnx_bytes",
    "onnx_agreement",
]


class Searched:
    def __init__(self, folder: Path, env: dict[str, str], stdout: str, stderr: str = "") -> None:
        self.folder = folder
        self.env = env
        self.stdout = stdout
        self.stderr = stderr
        self.uri = f"sqlite:///{folder / 'mlflow.db'}"
        self.client = MlflowClient(self.uri)
        self.experiment = self.client.get_experiment_by_name("nascomp")

    def runs(self, where: str) -> list:
        return self.client.search_runs([self.experiment.experiment_id], filter_string=where)

    def cli(self, *args: str):
        return nascomp(*args, "--tracking-uri", self.uri, cwd=self.folder, env=self.env)


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, teacher_cache: Path) -> Iterator[Searched]:
    folder = tmp_path_factory.mktemp("e2e")
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    env = {"NASCOMP_CACHE": str(teacher_cache), "RAY_TMPDIR": ray_tmp, "MLFLOW_TRACKING_URI": ""}
    result = nascomp("search", *tiny_args(folder), cwd=folder, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    yield Searched(folder, env, result.stdout, result.stderr)
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_search_prints_progress_front_and_ui_url(searched: Searched) -> None:
    out = searched.stdout
    assert "[  4/4]" in out  # one progress line per trial
    assert "Pareto front of search" in out
    assert f"/#/experiments/{searched.experiment.experiment_id}/runs" in out


def test_search_leaves_no_ray_log_lines_on_stderr(searched: Searched) -> None:
    """The local Ray runs in a child process whose log is kept apart, and the driver that
    connects to it drops Ray's notice that token authentication is on (search/tune/head.py)."""
    assert "Token authentication" not in searched.stderr
    assert " INFO " not in searched.stderr and " WARNING " not in searched.stderr


def test_each_trial_folder_holds_tunes_csv_and_json_logs_and_no_tensorboard_file(
    searched: Searched,
) -> None:
    """Tune's tools read progress.csv and result.json; its tensorboardX logger printed
    "NaN or Inf found in input tensor." into the search's output for each diverged trial."""
    trials = [p for p in (searched.folder / "results").rglob("trial_*") if p.is_dir()]
    assert len(trials) == 4
    for trial in trials:
        assert (trial / "progress.csv").is_file() and (trial / "result.json").is_file()
        assert not list(trial.glob("events.out.tfevents*")), trial


def test_tunes_staging_copy_is_not_left_in_rays_session(searched: Searched) -> None:
    """Tune stages each trial's logs in Ray's session folder and copies them to the search's
    folder; the copy in the session (55 KB a trial, /tmp's space) goes once the search ends."""
    (session,) = Path(searched.env["RAY_TMPDIR"]).rglob("session_latest")
    assert (session / "artifacts").is_dir() and not list(session.glob("artifacts/*/nascomp-*"))


def test_mlflow_holds_one_parent_and_nested_children(searched: Searched) -> None:
    parents = searched.runs("tags.`nascomp.role` = 'search'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    children = searched.runs(f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 4
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["nascomp.status"] in ("ok", "infeasible")
        # The trial's flat config is the params: what reproduce reads back.
        assert {"arch.family", "quant.bits", "prune.method", "data.name", "seed"} <= set(
            child.data.params
        )
    finished = [c for c in children if c.data.tags["nascomp.status"] == "ok"]
    assert finished, "every trial was infeasible"
    for child in finished:
        assert set(METRICS) <= set(child.data.metrics)
        assert 0.0 <= child.data.metrics["val_accuracy"] <= 1.0
        assert child.data.metrics["nonzero_params"] <= child.data.metrics["params"]
        # Accuracy and loss per epoch, as steps.
        history = searched.client.get_metric_history(child.info.run_id, "loss")
        assert len({m.step for m in history}) >= 3


def test_parent_run_holds_experiment_space_and_front(searched: Searched) -> None:
    parent = searched.runs("tags.`nascomp.role` = 'search'")[0]
    names = {a.path for a in searched.client.list_artifacts(parent.info.run_id)}
    assert {"experiment.yaml", "space.json", "pareto_front.json"} <= names
    front = _front_artifact(searched, parent.info.run_id)
    assert front["objectives"] == {"val_accuracy": "max", "size_bytes": "min", "latency_ms": "min"}
    assert front["constraints"] == []
    assert [row["rank"] for row in front["front"]] == list(range(1, len(front["front"]) + 1))


def test_the_ui_opens_on_training_runs_and_the_parent_shows_the_front(searched: Searched) -> None:
    """What a user sees in MLflow: the experiment is a model-training one, the parent run's
    description is the front with links to its trials, the plots are there (PNG and an
    interactive page), and each trial's name says its objectives and its model."""
    assert searched.experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    parent = searched.runs("tags.`nascomp.role` = 'search'")[0]
    names = {a.path for a in searched.client.list_artifacts(parent.info.run_id)}
    assert {"pareto.png", "pareto.html"} <= names
    page = Path(searched.client.download_artifacts(parent.info.run_id, "pareto.html"))
    assert "plotly" in page.read_text()[:200_000]
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("**Pareto front (final)**")
    front = _front_artifact(searched, parent.info.run_id)["front"]
    experiment_id = searched.experiment.experiment_id
    for row in front:
        page = f"#/experiments/{experiment_id}/runs/{row['run_id']}?workflowType=machine_learning"
        assert f"({page})" in note
    children = searched.runs(f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    for child in children:
        name = child.info.run_name
        if child.data.tags["nascomp.status"] == "ok":
            accuracy = f"{child.data.metrics['val_accuracy']:.4f}"
            assert name.startswith(f"{accuracy} · ") and "B · " in name, name
            assert " ms | cnn " in name, name
        else:
            assert name.startswith("trial-") and " | cnn " in name, name


def test_pareto_reads_the_front_back_from_mlflow(searched: Searched) -> None:
    result = searched.cli("pareto", "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    parent = searched.runs("tags.`nascomp.role` = 'search'")[0]
    assert shown["search_run_id"] == parent.info.run_id
    logged = _front_artifact(searched, parent.info.run_id)
    assert [row["run_id"] for row in shown["front"]] == [row["run_id"] for row in logged["front"]]
    # No member of the front is dominated by another finished trial.
    trials = [
        c
        for c in searched.runs(f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        if c.data.tags["nascomp.status"] == "ok"
    ]
    for row in shown["front"]:
        mine = row["objectives"]
        for other in trials:
            m = other.data.metrics
            no_worse = (
                m["val_accuracy"] >= mine["val_accuracy"]
                and m["size_bytes"] <= mine["size_bytes"]
                and m["latency_ms"] <= mine["latency_ms"]
            )
            better = (
                m["val_accuracy"] > mine["val_accuracy"]
                or m["size_bytes"] < mine["size_bytes"]
                or m["latency_ms"] < mine["latency_ms"]
            )
            assert not (no_worse and better), f"{row['run_id']} is dominated by {other.info.run_id}"
    table = searched.cli("pareto")
    assert (
        table.returncode == 0
        and "rank" in table.stdout
        and shown["front"][0]["run_id"] in table.stdout
    )


def test_reproduce_matches_and_exports(searched: Searched) -> None:
    export = searched.folder / "export"
    result = searched.cli(
        "reproduce", "--rank", "1", "--export", str(export), "--register", "digits-net", "--fp16"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warning" not in result.stdout
    # The retraining shows its epochs, the last one always; MLflow's download bars stay off.
    total = planned_epochs(json.loads((export / "trial_config.json").read_text()))
    assert re.search(rf"^epoch {total}/{total} \w+: loss ", result.stdout, re.MULTILINE)
    assert "Downloading artifacts" not in result.stderr
    # MLflow's timestamped pickle warning is said once, in the line that names the model.
    assert "CloudPickle" not in result.stderr
    assert re.search(r"^model logged as models:/\S+ \(PyTorch pickle: ", result.stdout, re.M)
    source_id = json.loads(searched.cli("pareto", "--json").stdout)["front"][0]["run_id"]
    source = searched.client.get_run(source_id)
    again = searched.runs(f"tags.`nascomp.reproduced_from` = '{source_id}'")
    assert len(again) == 1
    # On CPU with the same seed and thread count the accuracies match exactly.
    for name in ("val_accuracy", "test_accuracy", "params", "nonzero_params", "size_bytes", "macs"):
        assert again[0].data.metrics[name] == source.data.metrics[name], name
    # the trial's word-valued facts too: which form its latency was timed on
    assert again[0].data.tags["nascomp.latency_form"] == source.data.tags["nascomp.latency_form"]
    assert {p.name for p in export.iterdir()} >= {
        "state_dict.pt",
        "model.torchscript.pt",
        "trial_config.json",
        "model.onnx",
        "model.fp16.onnx",
    }
    fp16 = next(line for line in result.stdout.splitlines() if "fp16.onnx top-1 agree" in line)
    assert float(fp16.split()[-1]) >= 0.99, fp16
    # The MLflow model and the TorchScript file predict the same as each other on real inputs.
    from nascomp.trainers.config import TrialConfig

    config = TrialConfig.from_flat(json.loads((export / "trial_config.json").read_text()))
    inputs = config.data.load().test_x[:64]
    mlflow.set_tracking_uri(searched.uri)
    from_mlflow = mlflow.pytorch.load_model(f"runs:/{again[0].info.run_id}/model")
    scripted = torch.jit.load(str(export / "model.torchscript.pt"))
    with torch.no_grad():
        expected = from_mlflow.eval()(inputs)
        assert torch.equal(scripted(inputs), expected)
    # state_dict.pt: the weights as evaluated, keyed as the plain model's
    state = torch.load(export / "state_dict.pt", weights_only=True)
    frozen = freeze_fake_quant(copy.deepcopy(from_mlflow)).eval()
    assert state.keys() == frozen.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in frozen.state_dict().items())
    # The compressed artifact is the logged size, and the folder alone restores the model.
    from nascomp.search.export import load_exported

    assert {"model.nascomp", "skeleton.json"} <= {p.name for p in export.iterdir()}
    assert (export / "model.nascomp").stat().st_size == again[0].data.metrics["size_bytes"]
    with torch.no_grad():
        assert torch.equal(load_exported(export)(inputs), expected)
    # The file to ship, and the registered model, predict what was evaluated (ONNX Runtime).
    import onnxruntime

    session = onnxruntime.InferenceSession(str(export / "model.onnx"))
    shipped = session.run(None, {"input": inputs.numpy()})[0]
    agreement = (shipped.argmax(1) == expected.argmax(1).numpy()).mean()
    assert agreement >= 0.99, agreement
    version = searched.client.get_model_version("digits-net", "1")
    assert version.run_id == again[0].info.run_id
    assert version.tags["nascomp.source_run"] == source_id
    assert float(version.tags["val_accuracy"]) == again[0].data.metrics["val_accuracy"]
    registered = mlflow.pyfunc.load_model("models:/digits-net/1").predict(inputs.numpy())
    np.testing.assert_array_equal(registered["logits"], shipped)
    # A team that takes the registered model finds how to feed it: the recipe beside it, and
    # in the file's metadata with the trial it came from, as in the exported model.onnx.
    import onnx

    pulled = Path(mlflow.artifacts.download_artifacts("models:/digits-net/1"))
    recipe = json.loads((export / "preprocess.json").read_text())
    assert json.loads((pulled / "preprocess.json").read_text()) == recipe
    for file in (pulled / "model.onnx", export / "model.onnx", export / "model.fp16.onnx"):
        metadata = {p.key: p.value for p in onnx.load(str(file)).metadata_props}
        assert json.loads(metadata["nascomp.preprocess"]) == recipe, file
        assert metadata["nascomp.trial_run_id"] == source_id, file
    assert recipe["image_mode"] == "L" and recipe["output"].startswith("logits")
    # export.json: where the folder's model came from, and each file's size and hash.
    info = json.loads((export / "export.json").read_text())
    assert info["trial_run_id"] == source_id
    assert info["reproduction_run_id"] == again[0].info.run_id
    assert info["metrics"]["val_accuracy"] == source.data.metrics["val_accuracy"]
    assert info["model_onnx_form"] == source.data.tags["nascomp.onnx_form"]
    onnx_bytes = (export / "model.onnx").read_bytes()
    assert info["files"]["model.onnx"] == {
        "bytes": len(onnx_bytes),
        "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
    }
    assert set(info["files"]) == {p.name for p in export.iterdir()} - {"export.json"}
    assert f"exported onnx: {export / 'model.onnx'} ({len(onnx_bytes):,} bytes)" in result.stdout
    _assert_shipped_accuracy(export, info, result.stdout)


def test_export_writes_the_trials_own_model_without_training(searched: Searched) -> None:
    """`nascomp export` rebuilds the model from the trial's logged files: the same compressed
    file and ONNX graph the search logged, its accuracies as logged, what the file to ship
    scores in ONNX Runtime, and no training and no new run."""
    runs_before = len(searched.runs(""))
    export = searched.folder / "export-files"
    result = searched.cli("export", "--rank", "2", "--to", str(export))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warning" not in result.stdout and "epoch" not in result.stdout
    source_id = json.loads(searched.cli("pareto", "--json").stdout)["front"][1]["run_id"]
    assert result.stdout.startswith(f"exporting {source_id}: ")
    for name in ("val_accuracy", "test_accuracy", "onnx_agreement"):
        assert re.search(rf"^  {name} +\S+ +\S+  =$", result.stdout, re.MULTILINE), name
    assert len(searched.runs("")) == runs_before  # nothing trained, nothing logged
    with tempfile.TemporaryDirectory() as scratch:
        logged = Path(searched.client.download_artifacts(source_id, "", scratch))
        # The same compressed model, byte for byte, and the same graph as the search's file.
        assert (export / "model.nascomp").read_bytes() == (logged / "model.nascomp").read_bytes()
        # the trial logged its recipe, and that is what the export ships
        assert (export / "preprocess.json").read_bytes() == (
            logged / "preprocess.json"
        ).read_bytes()
        import onnx

        shipped, searched_file = (
            onnx.load(str(export / "model.onnx")),
            onnx.load(str(logged / "onnx_model" / "model.onnx")),
        )
    assert shipped.graph == searched_file.graph
    metadata = {p.key: p.value for p in shipped.metadata_props}
    assert metadata["nascomp.trial_run_id"] == source_id
    assert json.loads(metadata["nascomp.preprocess"]) == json.loads(
        (export / "preprocess.json").read_text()
    )
    source = searched.client.get_run(source_id)
    info = json.loads((export / "export.json").read_text())
    assert info["trial_run_id"] == source_id and "reproduction_run_id" not in info
    assert "preprocess.json" in info["exported_from"]
    for name in ("val_accuracy", "test_accuracy", "val_balanced_accuracy", "onnx_agreement"):
        assert info["evaluated"][name] == source.data.metrics[name], name
    _assert_shipped_accuracy(export, info, result.stdout)


def test_export_registers_the_file_it_ships(searched: Searched) -> None:
    """`nascomp export --register NAME`: the Model Registry holds the exported model.onnx, its
    preprocessing beside it, under the trial's run (no run is made, nothing trains), and
    serves what the file computes."""
    runs_before = len(searched.runs(""))
    export = searched.folder / "export-registered"
    result = searched.cli("export", "--rank", "1", "--to", str(export), "--register", "shipped")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "registered shipped version 1 (models:/shipped/1)" in result.stdout
    assert len(searched.runs("")) == runs_before
    source_id = json.loads(searched.cli("pareto", "--json").stdout)["front"][0]["run_id"]
    version = searched.client.get_model_version("shipped", "1")
    assert version.run_id == version.tags["nascomp.source_run"] == source_id
    assert "not trained again" in version.description
    mlflow.set_tracking_uri(searched.uri)
    pulled = Path(mlflow.artifacts.download_artifacts("models:/shipped/1"))
    assert (pulled / "model.onnx").read_bytes() == (export / "model.onnx").read_bytes()
    assert (pulled / "preprocess.json").read_text() == (export / "preprocess.json").read_text()
    import onnxruntime

    from nascomp.trainers.config import TrialConfig

    config = TrialConfig.from_flat(json.loads((export / "trial_config.json").read_text()))
    inputs = config.data.load().test_x[:16].numpy()
    session = onnxruntime.InferenceSession(str(export / "model.onnx"))
    served = mlflow.pyfunc.load_model("models:/shipped/1").predict(inputs)
    np.testing.assert_array_equal(served["logits"], session.run(None, {"input": inputs})[0])


def _assert_shipped_accuracy(export: Path, info: dict, stdout: str) -> None:
    """export.json's and the command's val_accuracy of model.onnx are what the file scores,
    measured here in ONNX Runtime on the trial's own validation split."""
    import onnxruntime

    from nascomp.trainers.config import TrialConfig

    config = TrialConfig.from_flat(json.loads((export / "trial_config.json").read_text()))
    val = config.data.load().val
    session = onnxruntime.InferenceSession(str(export / "model.onnx"))
    predicted = session.run(None, {"input": val.head(len(val)).numpy()})[0].argmax(1)
    expected = float((predicted == val.labels.numpy()).mean())
    assert info["model_onnx_accuracy"]["val_accuracy"] == pytest.approx(expected, abs=1e-6)
    assert f"in ONNX Runtime: val_accuracy {expected:.4f}" in stdout


def test_export_of_a_run_without_model_files_is_one_line(searched: Searched) -> None:
    """A finished trial whose model files are gone (deleted, or an older nascomp's): one line
    that names them and the command that trains the model again; nothing written."""
    source_id = json.loads(searched.cli("pareto", "--json").stdout)["front"][0]["run_id"]
    copy_id = _copy_of_trial(searched, source_id, "without-model-files", {})
    export = searched.folder / "export-none"
    result = searched.cli("export", copy_id, "--to", str(export))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == (
        f"nascomp: error: run {copy_id} holds no model.nascomp or skeleton.json (its artifacts "
        f"deleted, or logged by an older nascomp): `nascomp reproduce {copy_id} --export DIR` "
        "trains the model again and exports it"
    )
    assert not export.exists()


def _copy_of_trial(
    searched: Searched,
    source_id: str,
    experiment_name: str,
    files: dict[str, bytes | None],
    params: dict[str, str] | None = None,
) -> str:
    """A copy of trial ``source_id`` in an experiment of its own (the search's counts stay as
    they are): its params (``params`` replacing some), tags and config, and of its model files
    those ``files`` names (the run's bytes where the value is None, else the value's)."""
    source = searched.client.get_run(source_id)
    experiment = searched.client.get_experiment_by_name(experiment_name)
    # Its artifacts in the search's folder: MLflow's default is ./mlruns under the tests'
    # working folder, the repository's.
    artifacts = (searched.folder / "copies" / experiment_name).as_uri()
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else searched.client.create_experiment(experiment_name, artifact_location=artifacts)
    )
    tags = {k: v for k, v in source.data.tags.items() if not k.startswith("mlflow.")}
    copy_id = searched.client.create_run(experiment_id, tags=tags).info.run_id
    for key, value in {**source.data.params, **(params or {})}.items():
        searched.client.log_param(copy_id, key, value)
    with tempfile.TemporaryDirectory() as scratch:
        for name in dict.fromkeys(("trial_config.json", *files)):
            path = Path(searched.client.download_artifacts(source_id, name, scratch))
            if files.get(name) is not None:
                path.write_bytes(files[name])
            folder = str(Path(name).parent) if "/" in name else None
            searched.client.log_artifact(copy_id, str(path), folder)
    searched.client.set_terminated(copy_id, "FINISHED")
    return copy_id


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_a_gpu_trial_reproduced_without_a_gpu_is_one_line_before_anything_trains(
    searched: Searched, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trial trained on a GPU (its config's device, as `resources.gpus_per_trial` gives it),
    reproduced where there is none: one line naming the export that needs no GPU (a traceback
    from deep in the data's move to the device before, after the header; a helper's review).
    The export it names rebuilds that model on the CPU."""
    from nascomp.search.reproduce import reproduce
    from nascomp.search.tracking.store import Tracker
    from tests.search.conftest import nascomp_here

    source_id = json.loads(searched.cli("pareto", "--json").stdout)["front"][0]["run_id"]
    with tempfile.TemporaryDirectory() as scratch:
        path = searched.client.download_artifacts(source_id, "trial_config.json", scratch)
        document = json.loads(Path(path).read_text())
    assert document["config"]["device"] == "cpu"
    document["config"]["device"] = "cuda"
    copy_id = _copy_of_trial(
        searched,
        source_id,
        "on-a-gpu",
        {
            "trial_config.json": json.dumps(document).encode(),
            **dict.fromkeys(("model.nascomp", "skeleton.json", "onnx_model/MLmodel")),
            "onnx_model/model.onnx": None,
        },
        params={"device": "cuda"},
    )
    monkeypatch.chdir(searched.folder)
    monkeypatch.setenv("NASCOMP_CACHE", searched.env["NASCOMP_CACHE"])
    result = nascomp_here(capsys, "reproduce", copy_id, "--tracking-uri", searched.uri)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr == (
        f"nascomp: error: run {copy_id} trained on a CUDA GPU (resources.gpus_per_trial) and "
        f"this machine has none: reproduce it where one is, or `nascomp export {copy_id} --to "
        "DIR` writes its model without training\n"
    )
    assert result.stdout == ""
    # --table is a lookup's: a trained run's reproduction is refused before it trains
    table = nascomp_here(
        capsys, "reproduce", copy_id, "--table", "t.csv", "--tracking-uri", searched.uri
    )
    assert table.returncode == 2 and table.stdout == ""
    assert table.stderr == (
        f"nascomp: error: --table: run {copy_id} trained: only a NAS-Bench-201 lookup reads a "
        "table\n"
    )
    # From Python: the config's device, the same line.
    tracker = Tracker(searched.uri, "on-a-gpu")
    with pytest.raises(ValueError, match=f"^run {copy_id} trained on a CUDA GPU"):
        reproduce(tracker, copy_id)
    assert len(tracker.client.search_runs([tracker.experiment_id()])) == 1  # the copy alone
    exported = nascomp_here(
        capsys, "export", copy_id, "--to", "gpu-export", "--tracking-uri", searched.uri
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert (searched.folder / "gpu-export" / "model.onnx").is_file()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_trials_reproduction_is_logged_and_exported_for_the_cpu(
    searched: Searched, tmp_path: Path
) -> None:
    """The same trial trained on the GPU by `reproduce --export --fp16`: its logged PyTorch
    model and its TorchScript file hold CPU tensors (they held CUDA ones, which load nowhere
    else), and the fp16 agreement is measured (the CUDA model was fed the CPU's data: a
    traceback after the run was logged and the folder written; a helper's review)."""
    source_id = json.loads(searched.cli("pareto", "--json").stdout)["front"][0]["run_id"]
    with tempfile.TemporaryDirectory() as scratch:
        path = searched.client.download_artifacts(source_id, "trial_config.json", scratch)
        document = json.loads(Path(path).read_text())
    document["config"]["device"] = "cuda"
    copy_id = _copy_of_trial(
        searched,
        source_id,
        "on-a-gpu",
        {"trial_config.json": json.dumps(document).encode()},
        params={"device": "cuda"},
    )
    export = tmp_path / "export"
    result = searched.cli("reproduce", copy_id, "--export", str(export), "--fp16")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fp16" in result.stdout and "warning" not in result.stderr
    (again,) = searched.client.search_runs(
        [searched.client.get_experiment_by_name("on-a-gpu").experiment_id],
        f"tags.`nascomp.reproduced_from` = '{copy_id}'",
    )
    mlflow.set_tracking_uri(searched.uri)
    logged = mlflow.pytorch.load_model(f"runs:/{again.info.run_id}/model")
    assert {p.device.type for p in logged.parameters()} == {"cpu"}
    traced = torch.jit.load(str(export / "model.torchscript.pt"))
    assert {p.device.type for p in traced.parameters()} == {"cpu"}


def test_export_of_damaged_model_files_is_one_line_naming_them(searched: Searched) -> None:
    """A trial's files changed after the search (a skeleton that is no JSON, a truncated
    compressed file, the ONNX model's file gone from its folder), and a reproduction's run,
    which holds no model files: one line each, naming the run and the way out; nothing
    written. They were tracebacks, or lines that named neither file nor run. A recipe that is
    no JSON object is refused too, not shipped."""
    source_id = json.loads(searched.cli("pareto", "--json").stdout)["front"][0]["run_id"]
    artifact = Path(searched.client.download_artifacts(source_id, "model.nascomp")).read_bytes()
    again = "`nascomp reproduce {} --export DIR` trains the model again"
    onnx: dict[str, bytes | None] = {"onnx_model/MLmodel": None, "onnx_model/model.onnx": None}
    cases = {
        "skeleton": (
            {"model.nascomp": None, "skeleton.json": b"{bad json", **onnx},
            "its skeleton.json is not JSON (Expecting property name enclosed in double "
            "quotes: line 1 column 2 (char 1)): the run's artifacts were changed or damaged",
        ),
        "truncated": (
            {"model.nascomp": artifact[:100], "skeleton.json": None, **onnx},
            "its model.nascomp and skeleton.json do not load (ValueError: model.nascomp: "
            "compressed file is truncated): the run's artifacts were changed or damaged",
        ),
        "recipe": (
            {"model.nascomp": None, "skeleton.json": None, "preprocess.json": b"[1]", **onnx},
            "its preprocess.json is not a JSON object: the run's artifacts were changed or damaged",
        ),
        "no onnx file": (
            {"model.nascomp": None, "skeleton.json": None, "onnx_model/MLmodel": None},
            "its onnx_model/model.onnx cannot be read (",
        ),
        "damaged onnx file": (  # ONNX Runtime's InvalidProtobuf was a traceback
            {
                "model.nascomp": None,
                "skeleton.json": None,
                "onnx_model/MLmodel": None,
                "onnx_model/model.onnx": b"\x08\x07not a model",
            },
            "its onnx_model/model.onnx does not load in ONNX Runtime (",
        ),
    }
    export = searched.folder / "export-damaged"
    for case, (files, message) in cases.items():
        copy_id = _copy_of_trial(searched, source_id, "damaged-model-files", files)
        result = searched.cli("export", copy_id, "--to", str(export))
        assert result.returncode == 2, (case, result.stdout + result.stderr)
        line = result.stderr.strip()
        assert "\n" not in line and line.startswith(f"nascomp: error: run {copy_id}: "), case
        assert message in line and line.endswith(again.format(copy_id)), (case, line)
        assert not export.exists(), case
    # The whole onnx_model/ folder deleted from a trial that logged one (its onnx_bytes): it
    # was taken for a trial without a file ("the trial logged none") and the export went on.
    copy_id = _copy_of_trial(
        searched,
        source_id,
        "damaged-model-files",
        dict.fromkeys(("model.nascomp", "skeleton.json")),
    )
    searched.client.log_metric(copy_id, "onnx_bytes", 1234.0)
    result = searched.cli("export", copy_id, "--to", str(export))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == (
        f"nascomp: error: run {copy_id} logged an ONNX file (onnx_model/model.onnx) that is gone "
        f"now: the run's artifacts were changed or deleted; {again.format(copy_id)}"
    )
    assert not export.exists()
    for config in (b"not json", b"[1]"):  # a line naming nothing; an AttributeError
        copy_id = _copy_of_trial(searched, source_id, "damaged-model-files", {})
        path = searched.folder / "copies" / "trial_config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(config)
        searched.client.log_artifact(copy_id, str(path))  # replaces the copied one
        result = searched.cli("export", copy_id, "--to", str(export))
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.startswith(
            f"nascomp: error: run {copy_id}: its trial_config.json does not read as the trial's "
            "config ("
        ), result.stderr
        assert result.stderr.strip().endswith("the run's artifacts were changed or damaged")
        assert not export.exists()
    reproduction = _copy_of_trial(searched, source_id, "damaged-model-files", {})
    searched.client.set_tag(reproduction, "nascomp.reproduced_from", source_id)
    result = searched.cli("export", reproduction, "--to", str(export))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"nascomp: error: run {reproduction} is a reproduction of trial run {source_id}, whose "
        f"files an export reads (a reproduction logs none): `nascomp export {source_id} --to DIR`"
    )
    assert not export.exists()


def test_outputs_a_command_refuses_are_not_written(searched: Searched, tmp_path: Path) -> None:
    """A bad --pick wrote --plot's file first (exit 2, the plot left); a folder that is a
    dangling link was a FileExistsError traceback (for reproduce after training and logging);
    a mistyped replay store was made an empty MLflow database; a registered name with a
    newline loaded no model (a helper's sweep)."""
    plot = tmp_path / "front.png"
    result = searched.cli("pareto", "--plot", str(plot), "--pick", "max bogus")
    assert result.returncode == 2 and "--pick: unknown metric 'bogus'" in result.stderr
    assert not plot.exists()
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "nowhere")
    for args in (
        ("export", "--pick", "knee", "--to", str(link)),
        ("pareto", "--plot", f"{link}/a.png"),
    ):
        result = searched.cli(*args)
        assert result.returncode == 2, result.stderr
        assert (
            result.stderr.strip().startswith("nascomp: error: ")
            and "\n" not in result.stderr.strip()
        )
        assert f"{link} is a link to {tmp_path / 'nowhere'}, which does not exist" in result.stderr
    assert not (tmp_path / "nowhere").exists()
    wrong = tmp_path / "wrong.db"
    result = nascomp(
        "replay",
        str(tmp_path),
        "--tracking-uri",
        f"sqlite:///{wrong}",
        cwd=searched.folder,
        env=searched.env,
    )
    assert result.returncode == 2 and f"no MLflow store at {wrong}" in result.stderr
    assert not wrong.exists()
    result = searched.cli(
        "export", "--pick", "knee", "--to", str(tmp_path / "m"), "--register", "a\nb"
    )
    assert result.returncode == 2 and "cannot hold control characters" in result.stderr
    assert not (tmp_path / "m").exists()


def test_every_trial_logs_its_onnx_model_that_pyfunc_serves(searched: Searched) -> None:
    mlflow.set_tracking_uri(searched.uri)
    children = searched.runs("tags.`nascomp.trial_id` != ''")
    ok = [run for run in children if run.data.tags.get("nascomp.status", "ok") == "ok"]
    assert ok
    for run in ok:
        assert run.data.tags["nascomp.latency_form"].startswith("onnxruntime ")
        files = {f.path for f in searched.client.list_artifacts(run.info.run_id, "onnx_model")}
        assert "onnx_model/model.onnx" in files and "onnx_model/MLmodel" in files
        assert run.data.metrics["onnx_bytes"] > 0
    model = mlflow.pyfunc.load_model(f"runs:/{ok[0].info.run_id}/onnx_model")
    logits = model.predict(np.zeros((3, 1, 8, 8), dtype=np.float32))["logits"]
    assert logits.shape == (3, 10)


def _front_artifact(searched: Searched, run_id: str) -> dict:
    return json.loads(
        Path(searched.client.download_artifacts(run_id, "pareto_front.json")).read_text()
    )


def test_an_experiment_deleted_in_mlflow_is_one_line_before_anything_trains(
    searched: Searched,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A copy of the store whose experiment is deleted (MLflow's soft delete): `search` and a
    full run id's `reproduce` ended in MLflow's traceback (reproduce after training the whole
    model), `pareto` said the experiment held no search (a helper's sweep). `export` of that
    run still reads it: it logs nothing."""
    shutil.copy(searched.folder / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("nascomp")
    trial = searched.runs("tags.`nascomp.trial_id` != ''")[0].info.run_id
    search_run = searched.runs("tags.`nascomp.role` = 'search'")[0].info.run_id
    client.delete_experiment(experiment.experiment_id)
    said = (
        f"nascomp: error: experiment 'nascomp' is deleted in {uri}: restore it (mlflow "
        f"experiments restore --experiment-id {experiment.experiment_id}) or name another"
    )
    from tests.search.conftest import nascomp_here

    searching = nascomp("search", *tiny_args(tmp_path), cwd=tmp_path, env=searched.env)
    monkeypatch.chdir(tmp_path)  # the reading commands in this process: no interpreter start
    for key, value in searched.env.items():
        monkeypatch.setenv(key, value)
    reading = [
        nascomp_here(capsys, *command, "--tracking-uri", uri)
        # --search-run named: an empty front, exit 0 (the deleted experiment's trials are
        # not listed)
        for command in (["pareto"], ["reproduce", trial], ["pareto", "--search-run", search_run])
    ]
    for result in (searching, *reading):
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.strip().startswith(said), result.stderr[-2000:]
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "epoch" not in result.stdout  # nothing trained
    assert not (tmp_path / "results").exists()
    export = nascomp_here(capsys, "export", trial, "--tracking-uri", uri, "--to", "out")
    assert export.returncode == 0, export.stderr[-2000:]


def test_a_reproduction_whose_fp16_form_does_not_open_logs_no_run(
    searched: Searched,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`reproduce --export DIR --fp16` of a model no fp16 form of which ONNX Runtime opens
    (its crash is not to be had on demand: the child's answer is replaced): one line, and no
    run or logged model left in MLflow (it logged both, then failed; a helper's sweep)."""
    from nascomp.compressors import onnx_export
    from tests.search.conftest import nascomp_here

    def crashes(data: bytes, timeout_s: float = 300.0) -> str:
        return "ONNX Runtime crashed opening it (SIGSEGV)"

    monkeypatch.setattr(onnx_export, "fp16_opens", crashes)
    monkeypatch.setenv("NASCOMP_CACHE", searched.env["NASCOMP_CACHE"])
    monkeypatch.chdir(searched.folder)
    runs_before = len(searched.runs(""))
    out = tmp_path / "out"
    result = nascomp_here(
        capsys,
        "reproduce",
        "--rank",
        "1",
        "--export",
        str(out),
        "--fp16",
        "--tracking-uri",
        searched.uri,
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    said = "nascomp: error: --fp16: ONNX Runtime crashed opening it (SIGSEGV), with every op"
    assert result.stderr.startswith(said), result.stderr
    assert len(searched.runs("")) == runs_before
    assert not out.exists()
