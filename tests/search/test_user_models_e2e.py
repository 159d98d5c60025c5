"""A search over models the user brings (their builder, torchvision, timm), each with
structured pruning and 8-bit QAT, then `reproduce --export` of its best model, through the
`nascomp` command as a user runs it. The custom search also reads the user's own dataset
factory, streamed.

Real Ray (local), real Optuna, MLflow on a sqlite file, the digits data. The user's module sits
only in the search's working folder: Ray's workers get it through runtime_env.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_digits

from tests.search.conftest import nascomp

pytestmark = pytest.mark.e2e

USER_MODULE = textwrap.dedent(
    """
    from torch import nn

    def net(input_shape, n_classes, width=8, expansion=2):
        hidden = width * expansion
        return nn.Sequential(
            nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(hidden, n_classes),
        )

    def digits():
        import numpy as np
        import torch
        from torch.utils.data import TensorDataset

        # A file of the user's project, by a path relative to where they run nascomp: the
        # trials' workers must open it too.
        saved = np.load("digits.npz")
        inputs = torch.tensor(saved["images"], dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
        return TensorDataset(inputs, torch.tensor(saved["labels"])), None

    def digit_tokens():
        # Each digit as a sequence of 64 ids: its pixels' ink levels, 0 to 16.
        import numpy as np
        import torch
        from torch.utils.data import TensorDataset

        saved = np.load("digits.npz")
        ids = torch.tensor(saved["images"], dtype=torch.int64)
        return TensorDataset(ids, torch.tensor(saved["labels"])), None

    def digit_rows():
        # Tabular rows as scikit-learn hands them: float64 NumPy arrays, NumPy int labels.
        import numpy as np

        saved = np.load("digits.npz")
        return list(zip(saved["images"], saved["labels"])), None

    class TokenNet(nn.Module):
        def __init__(self, length, n_classes, dim, hidden):
            super().__init__()
            self.embed = nn.Embedding(17, dim)
            self.fc = nn.Linear(length * dim, hidden)
            self.head = nn.Linear(hidden, n_classes)

        def forward(self, x):
            return self.head(self.fc(self.embed(x).flatten(1)).relu())

    def token_net(input_shape, n_classes, dim=4, hidden=32):
        return TokenNet(input_shape[0], n_classes, dim, hidden)
    """
)

COMMON = """
train: {epochs: 1, prune_epochs: 1, qat_epochs: 1, batch_size: 64}
measure: {n_warmup: 1, n_repeat: 3, latency_batch_size: 8}
tracking: {experiment: mine}
"""
# Two trials at once where the user's module must reach both of Ray's workers; one trial of a
# library's model is enough to show its family searched, shipped and reproduced.
TRIALS = {
    "custom": "search: {trials: 2, concurrent: 2, sampler: random}\n",
    "torchvision": "search: {trials: 1, concurrent: 1, sampler: random}\n",
    "timm": "search: {trials: 1, concurrent: 1, sampler: random}\n",
}

ARCHES = {
    # The user's data too, streamed through a DataLoader as a dataset over budget would be.
    "custom": """
data: {name: custom, factory: "brought_models:digits", stream: true, max_train_samples: 300}
space:
  arch: {family: custom, builder: "brought_models:net", width: [8, 12], expansion: [2, 3]}
  prune: {method: structured, ratio: 0.5}
  quant: {bits: 8}
  distill: {enabled: true, temperature: 2.0, alpha: 0.5}
teacher:
  arch: {family: custom, builder: "brought_models:net", width: 16, expansion: 2}
  epochs: 1
""",
    "torchvision": """
data: {max_train_samples: 300}
space:
  arch: {family: torchvision, model: mobilenet_v2, width_mult: [0.25, 0.35]}
  prune: {method: structured, ratio: 0.4}
  quant: {bits: 8}
  distill: {enabled: false}
""",
    "timm": """
data: {max_train_samples: 300}
space:
  arch: {family: timm, model: mobilenetv3_small_050, drop_rate: [0.0, 0.1]}
  prune: {method: structured, ratio: 0.4}
  quant: {bits: 8}
  distill: {enabled: false}
""",
}


@contextmanager
def user_search(
    folder: Path, teacher_cache: Path, experiment_yaml: str
) -> Iterator[tuple[str, dict[str, str]]]:
    """``nascomp search experiment.yaml`` run in ``folder`` beside the user's module, as a user
    runs it; yields the tracking URI and the environment for later commands there."""
    (folder / "brought_models.py").write_text(USER_MODULE)
    images, labels = load_digits(return_X_y=True)
    np.savez(folder / "digits.npz", images=images, labels=labels)
    (folder / "experiment.yaml").write_text(experiment_yaml)
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    env = {"NASCOMP_CACHE": str(teacher_cache), "RAY_TMPDIR": ray_tmp, "MLFLOW_TRACKING_URI": ""}
    try:
        result = nascomp("search", "experiment.yaml", "--tracking-uri", uri, cwd=folder, env=env)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        yield uri, env
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.parametrize("family", list(ARCHES))
def test_search_reproduce_and_export_a_model_the_user_brings(
    family: str, tmp_path: Path, teacher_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if family == "timm":
        pytest.importorskip("timm")
    experiment_yaml = ARCHES[family] + COMMON + TRIALS[family]
    with user_search(tmp_path, teacher_cache, experiment_yaml) as (uri, env):
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("mine")  # the file's tracking.experiment
        trials = client.search_runs([experiment.experiment_id], "tags.`nascomp.trial_id` != ''")
        assert len(trials) == (2 if family == "custom" else 1)
        for run in trials:
            assert run.data.tags.get("nascomp.status", "ok") == "ok", run.data.tags
            assert run.data.params["arch.family"] == family
            assert run.data.tags["nascomp.latency_form"] == "onnxruntime int8-qdq"
            # Logged for every model; its value means little after one epoch on 300 images
            # (near-tied logits), so agreement goals are tested on trained models elsewhere.
            assert 0.0 <= run.data.metrics["onnx_agreement"] <= 1.0
            assert run.data.metrics["onnx_bytes"] > 0
            # Structured pruning removed channels for real: fewer MACs than the dense model.
            assert run.data.metrics["params"] > 0
        # Later commands need not name the experiment: the store has one with searches, and
        # a run id names its own.
        front = nascomp("pareto", "--json", "--tracking-uri", uri, cwd=tmp_path, env=env)
        assert front.returncode == 0, front.stderr[-3000:]
        source_id = json.loads(front.stdout)["front"][0]["run_id"]
        export = tmp_path / "export"
        again = nascomp(
            "reproduce", source_id, "--export", str(export), "--tracking-uri", uri,
            cwd=tmp_path, env=env,
        )  # fmt: skip
        assert again.returncode == 0, again.stderr[-3000:]
        assert "warning" not in again.stdout
        if family == "custom":  # the builder is the user's module's
            # Where that module does not import: one line that says where to run it.
            elsewhere = tmp_path / "elsewhere"
            elsewhere.mkdir()
            lost = nascomp("reproduce", source_id, "--tracking-uri", uri, cwd=elsewhere, env=env)
            assert lost.returncode == 2, lost.stdout + lost.stderr
            assert len(lost.stderr.strip().splitlines()) == 1, lost.stderr
            assert "is not importable" in lost.stderr and "where the search ran" in lost.stderr
        source = client.get_run(source_id)
        reproduced = client.search_runs(
            [experiment.experiment_id], f"tags.`nascomp.reproduced_from` = '{source_id}'"
        )[0]
        for name in ("val_accuracy", "test_accuracy", "params", "size_bytes", "macs"):
            assert reproduced.data.metrics[name] == source.data.metrics[name], name
        # The export folder alone rebuilds the pruned model and predicts as MLflow's copy does
        # (where the user's module imports, as in their own folder).
        monkeypatch.chdir(tmp_path)
        from nascomp.search.export import load_exported
        from nascomp.trainers.config import TrialConfig

        config = TrialConfig.from_flat(json.loads((export / "trial_config.json").read_text()))
        inputs = config.data.load().test.head(32)
        mlflow.set_tracking_uri(uri)
        logged = mlflow.pytorch.load_model(f"runs:/{reproduced.info.run_id}/model").eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("error")  # the code as exported: no warning
            assert torch.equal(load_exported(export, trust_code=True)(inputs), logged(inputs))
        # Without training: the trial's own files give the model the reproduction trained.
        files = tmp_path / "from-files"
        exported = nascomp(
            "export", source_id, "--to", str(files), "--tracking-uri", uri, cwd=tmp_path, env=env
        )
        assert exported.returncode == 0, exported.stderr[-3000:]
        assert "warning" not in exported.stdout and "epoch" not in exported.stdout
        assert re.search(r"^  val_accuracy +\S+ +\S+  =$", exported.stdout, re.MULTILINE)
        for name in ("model.nascomp", "skeleton.json"):
            assert (files / name).read_bytes() == (export / name).read_bytes(), name
        # The same weights (torch.save's zip holds a random id: the tensors are compared), all
        # but batch norm's count of training batches, which the compressed file does not keep
        # and an evaluated model does not read.
        state, again = (torch.load(f / "state_dict.pt", weights_only=True) for f in (files, export))
        assert state.keys() == again.keys()
        differ = [k for k in state if not torch.equal(state[k], again[k])]
        assert all(k.endswith("num_batches_tracked") for k in differ), differ
        if family == "custom":
            # An edited builder: the reproduction builds what it builds now, and says so (it
            # said only that metrics differed, "another device or thread count?").
            module = tmp_path / "brought_models.py"
            module.write_text(module.read_text() + "\n\nEDITED = True\n")
            # load_exported put the old weights in the new code without a word, though
            # export.json records the code (a helper's API sweep)
            with pytest.warns(UserWarning, match=r"brought_models:net.*changed since this expo"):
                load_exported(export, trust_code=True)
            edited = nascomp("reproduce", source_id, "--tracking-uri", uri, cwd=tmp_path, env=env)
            assert edited.returncode == 0, edited.stderr[-3000:]
            assert "warning: the source of brought_models:" in edited.stdout
            assert "changed since the search ran it" in edited.stdout
            edited = nascomp(
                "export", source_id, "--to", str(files), "--tracking-uri", uri,
                cwd=tmp_path, env=env,
            )  # fmt: skip
            assert edited.returncode == 0, edited.stderr[-3000:]
            # the builder's files rebuilt; the factory's data scored (it said "rebuilt" too)
            assert (
                "warning: the source of brought_models:net changed since the search ran it (its "
                "module's file, or a module of yours it imports): the files were rebuilt by what "
                "that code builds now\n" in edited.stdout
            )
            assert (
                "warning: the source of brought_models:digits changed since the search ran it "
                "(its module's file, or a module of yours it imports): the model is the one the "
                "search trained; its accuracies here are on the data that code gives now\n"
                in edited.stdout
            )
            # A factory whose inputs changed shape: ONNX Runtime's traceback before (the
            # model's adaptive pooling took them); one line now, and nothing written.
            module.write_text(
                module.read_text() + "\n\n_digits = digits\n\n\ndef digits():\n    import torch\n"
                "    from torch.utils.data import TensorDataset\n\n"
                "    inputs, labels = _digits()[0].tensors\n"
                "    wider = torch.nn.functional.pad(inputs, (0, 2, 0, 2))\n"
                "    return TensorDataset(wider, labels), None\n"
            )
            wider = tmp_path / "wider"
            refused = nascomp(
                "export", source_id, "--to", str(wider), "--tracking-uri", uri,
                cwd=tmp_path, env=env,
            )  # fmt: skip
            assert refused.returncode == 2, refused.stdout + refused.stderr
            assert refused.stderr.strip() == (
                f"nascomp: error: run {source_id}: its model takes inputs of shape (1, 8, 8) and "
                "gives 10 classes; its data read now give inputs of shape (1, 10, 10) and 10 "
                "classes (the data or the code that reads it changed since the search): "
                f"`nascomp reproduce {source_id} --export DIR` trains the model again on them"
            )
            assert not wider.exists()


def test_a_search_on_integer_ids_ships_an_int64_model(
    tmp_path: Path, teacher_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Token ids (the digits' pixels as ids 0 to 16) for the user's embedding model: the search
    trains, compresses and logs it with its MLflow ONNX model, and the export ships an int64
    input with a recipe that says so."""
    experiment_yaml = textwrap.dedent(
        """
            data: {name: custom, factory: "brought_models:digit_tokens", max_train_samples: 600}
            space:
              arch: {family: custom, builder: "brought_models:token_net", hidden: [16, 32]}
              prune: {method: structured, ratio: 0.5}
              quant: {bits: 8}
              distill: {enabled: false}
            train: {epochs: 2, prune_epochs: 1, qat_epochs: 1, batch_size: 64}
            measure: {n_warmup: 1, n_repeat: 3, latency_batch_size: 8}
            search: {trials: 2, concurrent: 2, sampler: random}
            """
    )
    with user_search(tmp_path, teacher_cache, experiment_yaml) as (uri, env):
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("nascomp")
        trials = client.search_runs([experiment.experiment_id], "tags.`nascomp.trial_id` != ''")
        assert len(trials) == 2
        for run in trials:
            assert run.data.tags.get("nascomp.status", "ok") == "ok", run.data.tags
            assert run.data.tags["nascomp.latency_form"] == "onnxruntime int8-qdq"
            assert run.data.metrics["val_accuracy"] > 0.2  # it learns: 10 classes, chance 0.1
            artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
            assert "onnx_model" in artifacts, artifacts  # MLflow took the int64 signature
        source_id = trials[0].info.run_id
        export = tmp_path / "export"
        again = nascomp(
            "reproduce", source_id, "--export", str(export), "--tracking-uri", uri,
            cwd=tmp_path, env=env,
        )  # fmt: skip
        assert again.returncode == 0, again.stderr[-3000:]
        assert "warning" not in again.stdout
    recipe = json.loads((export / "preprocess.json").read_text())
    assert (recipe["input_dtype"], recipe["ids"], recipe["input_shape"]) == ("int64", True, [64])
    import onnxruntime as ort

    session = ort.InferenceSession(str(export / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(int64)"
    monkeypatch.chdir(tmp_path)
    from nascomp.search.export import load_exported
    from nascomp.trainers.config import TrialConfig

    config = TrialConfig.from_flat(json.loads((export / "trial_config.json").read_text()))
    inputs = config.data.load().test.head(32)
    assert inputs.dtype == torch.int64
    logits = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]
    with torch.no_grad():
        exported = load_exported(export, trust_code=True)(inputs)
    agreement = (torch.from_numpy(logits).argmax(1) == exported.argmax(1)).float().mean()
    assert float(agreement) >= 0.9  # the int8 file against the float-folded model


def test_tabular_rows_search_the_built_in_mlp_taught_by_an_mlp(
    tmp_path: Path, teacher_cache: Path
) -> None:
    """A tabular user's path: NumPy rows of 64 features, ``family: mlp`` searched, distillation
    on with the default teacher (a CNN, which cannot take rows: an MLP teaches instead, with a
    note), then the exported ONNX file takes rows."""
    experiment_yaml = textwrap.dedent(
        """
            data: {name: custom, factory: "brought_models:digit_rows", max_train_samples: 600}
            space:
              arch: {family: mlp, depth: [1, 2], width: [16, 32], dropout: 0.1}
              prune: {method: structured, ratio: 0.5}
              quant: {bits: 8}
              distill: {enabled: true, temperature: 2.0, alpha: 0.5}
            teacher: {epochs: 2}
            train: {epochs: 6, prune_epochs: 1, qat_epochs: 1, batch_size: 64}  # 10 steps each
            measure: {n_warmup: 1, n_repeat: 3, latency_batch_size: 8}
            search: {trials: 2, concurrent: 2, sampler: random}
            """
    )
    with user_search(tmp_path, teacher_cache, experiment_yaml) as (uri, env):
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("nascomp")
        trials = client.search_runs([experiment.experiment_id], "tags.`nascomp.trial_id` != ''")
        assert len(trials) == 2
        for run in trials:
            assert run.data.tags.get("nascomp.status", "ok") == "ok", run.data.tags
            assert run.data.params["teacher.arch.family"] == "mlp"
            assert run.data.metrics["val_accuracy"] > 0.2  # it learns: 10 classes, chance 0.1
            assert run.info.run_name.split(" | ")[1].startswith("mlp ")
        export = tmp_path / "export"
        again = nascomp(
            "reproduce", trials[0].info.run_id, "--export", str(export), "--tracking-uri", uri,
            cwd=tmp_path, env=env,
        )  # fmt: skip
        assert again.returncode == 0, again.stderr[-3000:]
        assert "warning" not in again.stdout
    recipe = json.loads((export / "preprocess.json").read_text())
    assert (recipe["input_dtype"], recipe["input_shape"]) == ("float32", [64])
    import onnxruntime as ort

    session = ort.InferenceSession(str(export / "model.onnx"), providers=["CPUExecutionProvider"])
    rows = np.zeros((3, 64), dtype=np.float32)
    assert session.run(None, {session.get_inputs()[0].name: rows})[0].shape == (3, 10)


def test_a_family_registered_in_the_users_script_trains_in_the_workers(
    tmp_path: Path, teacher_cache: Path
) -> None:
    """``@nascomp.register_model`` in the script that calls ``nascomp.run_search``: the
    workers never ran that script, so the search sends them the family (by value, from
    ``__main__``) and ships the module beside it that the builder uses."""
    (tmp_path / "my_layers.py").write_text(
        "from torch import nn\n\ndef head(n_in, n_out):\n    return nn.Linear(n_in, n_out)\n"
    )
    script = textwrap.dedent(
        """
        import nascomp
        from torch import nn
        from my_layers import head

        @nascomp.register_model("acme_script")
        def build(fields, input_shape, n_classes):
            width = fields["width"]
            hidden = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU())
            return nn.Sequential(hidden, head(width, n_classes))

        if __name__ == "__main__":
            summary = nascomp.run_search(
                {
                    "space": {
                        "arch": {"family": "acme_script", "width": [8, 16]},
                        "prune": {"method": "none"},
                        "quant": {"bits": 32},
                        "distill": {"enabled": False},
                    },
                    "train": {"epochs": 1},
                    "measure": {"n_warmup": 1, "n_repeat": 2},
                    "search": {"trials": 2, "concurrent": 2, "sampler": "random"},
                    "tracking": {"uri": "sqlite:///mlflow.db"},
                },
                echo=lambda line: None,
            )
            reasons = [t.tags.get("nascomp.reason") for t in summary.trials]
            print(sorted(t.status for t in summary.trials), reasons[0])
        """
    )
    (tmp_path / "main.py").write_text(script)
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    env = {**os.environ, "NASCOMP_CACHE": str(teacher_cache), "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    try:
        result = subprocess.run(
            [sys.executable, "main.py"], cwd=tmp_path, env=env, capture_output=True, text=True
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "['ok', 'ok'] None"
    # The command line never ran the script: its export said the run's files were "changed or
    # damaged" (a helper's API sweep). It names the family and what to do instead.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # MLflow's set_tracking_uri sets the variable
    exported = nascomp(
        "export", "--rank", "1", "--to", "out", "--tracking-uri", uri, cwd=tmp_path, env=env
    )
    assert exported.returncode == 2, exported.stdout + exported.stderr
    (line,) = exported.stderr.strip().splitlines()
    assert "its model family 'acme_script' is not known to this process" in line
    assert "damaged" not in line and not (tmp_path / "out").exists()


def test_a_csv_file_searched_and_shipped_with_its_columns_and_classes(
    tmp_path: Path, teacher_cache: Path
) -> None:
    """``data.name: csv``, no code of the user's: the digits as a CSV file of 64 pixel columns,
    a column of words (how much ink) and a word label, its features listed in reverse. The
    exported recipe names the inputs in the model's order, the words of the one-hot column and
    the classes by output column: applied to the file's raw rows as a deployment would, the
    ONNX file classifies them; read in the file's order, it does not."""
    import pandas as pd

    images, labels = load_digits(return_X_y=True)
    names = [f"px{i}" for i in range(64)]
    words = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                      "nine"])  # fmt: skip
    ink = np.where(images.sum(axis=1) > np.median(images.sum(axis=1)), "dark", "light")
    frame = pd.DataFrame(images.astype(int), columns=names).assign(ink=ink, digit=words[labels])
    frame.to_csv(tmp_path / "digits.csv", index=False)
    experiment_yaml = textwrap.dedent(
        f"""
            data:
              name: csv
              root: digits.csv
              options: {{target: digit, features: {json.dumps(["ink", *names[::-1]])}}}
              max_train_samples: 800
            space:
              arch: {{family: mlp, depth: 1, width: [32, 64]}}
              prune: {{method: none}}
              quant: {{bits: 32}}
              distill: {{enabled: false}}
            train: {{epochs: 6, batch_size: 64}}
            measure: {{n_warmup: 1, n_repeat: 3, latency_batch_size: 8}}
            search: {{trials: 2, concurrent: 2, sampler: random}}
            """
    )
    with user_search(tmp_path, teacher_cache, experiment_yaml) as (uri, env):
        export = tmp_path / "export"
        again = nascomp(
            "reproduce", "--rank", "1", "--export", str(export), "--tracking-uri", uri,
            cwd=tmp_path, env=env,
        )  # fmt: skip
        assert again.returncode == 0, again.stderr[-3000:]
        # The file changes after the search: `dark` renamed `deep` keeps the input width and
        # puts `light` first. `nascomp export` ships the recipe the trial was trained with,
        # not today's (which fed the model its one-hot inputs swapped), and says so.
        frame.assign(ink=np.where(ink == "dark", "deep", ink)).to_csv(
            tmp_path / "digits.csv", index=False
        )
        later = nascomp(
            "export", "--rank", "1", "--to", "later", "--tracking-uri", uri, cwd=tmp_path, env=env
        )
        assert later.returncode == 0, later.stderr[-3000:]
    recipe = json.loads((export / "preprocess.json").read_text())
    assert json.loads((tmp_path / "later" / "preprocess.json").read_text()) == recipe
    # the one-hot columns' means swap places too (their stds are the same: p and 1 - p)
    assert re.search(
        r"^note: preprocess.json is the one the trial logged, how the model's inputs were made; "
        r"today's data gives another categories, features(, mean)?: feed the model as "
        r"preprocess.json says$",
        later.stdout,
        re.MULTILINE,
    ), later.stdout
    assert "the model and its preprocess.json are the ones the search trained" in later.stdout
    assert recipe["features"] == ["ink=dark", "ink=light", *names[::-1]]
    assert recipe["categories"] == {"ink": ["dark", "light"]}
    assert recipe["classes"] == sorted(words.tolist())
    import onnxruntime as ort

    session = ort.InferenceSession(str(export / "model.onnx"), providers=["CPUExecutionProvider"])
    mean, std = np.array(recipe["mean"]), np.array(recipe["std"])

    def accuracy(inputs: list[str]) -> float:
        def column(name: str) -> np.ndarray:
            word = name.partition("=")[0]
            if word in recipe["categories"]:  # one-hot: 1 where the row holds the value
                return (frame[word] == name.partition("=")[2]).to_numpy(dtype=np.float32)
            return frame[name].to_numpy(dtype=np.float32)

        raw = np.stack([column(name) for name in inputs], axis=1)
        x = ((raw / recipe["scale"] - mean) / std).astype(np.float32)
        logits = session.run(None, {session.get_inputs()[0].name: x})[0]
        predicted = np.array(recipe["classes"])[logits.argmax(axis=1)]
        return float((predicted == frame["digit"].to_numpy()).mean())

    assert accuracy(recipe["features"]) > 0.8
    assert accuracy(["ink=dark", "ink=light", *names]) < 0.5


def test_per_layer_bit_widths_on_the_users_model(tmp_path: Path, teacher_cache: Path) -> None:
    """``quant.groups: layers`` as a user writes it: every Conv2d / Linear of their model gets
    its own searched width, and the shipped file runs the 8-bit ones int8, as the run says."""
    experiment_yaml = textwrap.dedent(
        """
            data: {max_train_samples: 300}
            space:
              arch: {family: custom, builder: "brought_models:net", width: 8}
              prune: {method: none}
              quant: {mixed: groups, groups: layers, bits: [4, 8]}
              distill: {enabled: false}
            train: {epochs: 1, qat_epochs: 1, batch_size: 64}
            measure: {n_warmup: 1, n_repeat: 3, latency_batch_size: 8}
            search: {trials: 3, concurrent: 2, sampler: random}
            """
    )
    with user_search(tmp_path, teacher_cache, experiment_yaml) as (uri, _):
        client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("nascomp")
    trials = client.search_runs([experiment.experiment_id], "tags.`nascomp.trial_id` != ''")
    layers = ["0", "3", "6", "11"]  # the net's Conv2d and Linear modules
    mixed = 0
    for run in trials:
        assert run.data.tags.get("nascomp.status", "ok") == "ok", run.data.tags
        widths = {name: int(run.data.params[f"quant.group_bits.{name}"]) for name in layers}
        assert "quant.bits" not in run.data.params  # one architecture: every layer has a group
        assert json.loads(run.data.tags["nascomp.layer_bits"]) == widths
        if len(set(widths.values())) == 1:
            continue
        mixed += 1
        forms = json.loads(run.data.tags["nascomp.latency_layers"])
        assert forms == {
            name: "int8" if bits == 8 else "fp32-folded-4bit" for name, bits in widths.items()
        }
        n_int8 = sum(bits == 8 for bits in widths.values())
        expected = f"onnxruntime int8-qdq mixed ({n_int8} of 4 layers int8)"
        assert run.data.tags["nascomp.latency_form"] == expected
    assert len(trials) == 3 and mixed >= 1
