"""An export folder alone restores the model a trial evaluated (no search, no MLflow)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import onnx
import pytest
import torch

from nascomp.compressors.onnx_export import check_model
from nascomp.search.export import (
    check_export_folder,
    earlier_export_files,
    export_model,
    foreign_files,
    image_mode,
    load_exported,
    preprocess_recipe,
)
from nascomp.search.reproduce import onnx_agreement
from nascomp.spaces.models import build_model
from nascomp.trainers.config import TrialConfig
from nascomp.trainers.imagefolder import DECODE
from nascomp.trainers.loop import predict_logits
from nascomp.trainers.normalise import Normalise
from nascomp.trainers.trial import run_trial
from tests.trainers.test_trial_measure import pruned


@pytest.mark.parametrize(
    ("method", "bits"), [("structured", 4), ("unstructured", 8), ("structured", 32)]
)
def test_load_exported_predicts_what_the_trial_evaluated(
    tmp_path: Path, method: str, bits: int
) -> None:
    flat = pruned(method, 0.5, **{"quant.bits": bits, "train.epochs": 1})
    outcome = run_trial(flat)
    data = TrialConfig.from_flat(flat).data.load()
    files = export_model(outcome.model, data.test_x[:1], flat, tmp_path)
    assert files["artifact"].stat().st_size == outcome.metrics["size_bytes"]
    skeleton = json.loads(files["skeleton"].read_text())
    assert skeleton["input_shape"] == [1, 8, 8] and skeleton["n_classes"] == 10
    restored = load_exported(tmp_path)
    expected = predict_logits(outcome.model, data.test_x)
    assert torch.equal(predict_logits(restored, data.test_x), expected)
    # Accuracy recomputed from the restored model is the trial's, exactly.
    accuracy = (predict_logits(restored, data.test_x).argmax(dim=1) == data.test_y).float()
    assert accuracy.mean().item() == outcome.metrics["test_accuracy"]


def test_state_dict_pt_holds_the_weights_as_evaluated_for_the_users_own_model(
    tmp_path: Path,
) -> None:
    """It held the QAT layers' float latent weights (17 values in a 4-bit row), which the
    user's own model class then ran unrounded: 4% of answers differed."""
    flat = pruned("unstructured", 0.5, **{"quant.bits": 4, "quant.act_bits": 32})
    outcome = run_trial(flat)
    data = TrialConfig.from_flat(flat).data.load()
    export_model(outcome.model, data.test_x[:1], flat, tmp_path)
    state = torch.load(tmp_path / "state_dict.pt", weights_only=True)
    assert not [k for k in state if "input_quant" in k]  # keyed as the plain model's
    for name, tensor in state.items():
        if name.endswith("weight") and tensor.dim() > 1:  # at most 2**4 - 1 levels a row
            rows = tensor.flatten(1)
            assert max(len(torch.unique(row)) for row in rows) <= 15, name
    own = build_model(TrialConfig.from_flat(flat).arch, (1, 8, 8), 10)  # the user's class
    own.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(
            predict_logits(own.eval(), data.test_x), predict_logits(outcome.model, data.test_x)
        )


def test_load_exported_leaves_the_callers_random_generator_as_it_was(tmp_path: Path) -> None:
    """Rebuilding the model drew its initial weights from torch's global generator: a
    notebook's seeded draws after a load moved."""
    flat = pruned("structured", 0.5, **{"quant.bits": 8, "train.epochs": 1})
    outcome = run_trial(flat)
    example = TrialConfig.from_flat(flat).data.load().test_x[:1]
    export_model(outcome.model, example, flat, tmp_path, onnx=outcome.onnx)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    load_exported(tmp_path)
    assert torch.equal(torch.rand(3), expected)


def test_load_exported_runs_the_code_a_skeleton_names_only_when_trusted(
    tmp_path: Path,
) -> None:
    """A skeleton.json edited to name torch.hub:load on a hubconf.py beside it ran that
    file: the export folder was code. Now a custom model's builder runs with trust_code."""
    flat = pruned("structured", 0.5, **{"quant.bits": 32, "train.epochs": 1})
    outcome = run_trial(flat)
    data = TrialConfig.from_flat(flat).data.load()
    export_model(outcome.model, data.test_x[:1], flat, tmp_path)
    marker = tmp_path / "ran"
    (tmp_path / "hubconf.py").write_text(f"open({str(marker)!r}, 'w')\ndef m(**kw): pass\n")
    skeleton = json.loads((tmp_path / "skeleton.json").read_text())
    skeleton["arch"] = {
        "family": "custom",
        "builder": "torch.hub:load",
        "repo_or_dir": str(tmp_path),
        "model": "m",
        "source": "local",
    }
    (tmp_path / "skeleton.json").write_text(json.dumps(skeleton))
    with pytest.raises(PermissionError, match=r"names code to import and run.*trust_code=True"):
        load_exported(tmp_path)
    for truthy in ("false", "no", 1):  # from a setting's text: truthy, and not a yes
        with pytest.raises(TypeError, match=r"^trust_code: True or False; got "):
            load_exported(tmp_path, trust_code=truthy)  # type: ignore[arg-type]
    assert not marker.exists()
    with pytest.raises(Exception):  # noqa: B017 (the planted builder returns no model)
        load_exported(tmp_path, trust_code=True)
    assert marker.exists()  # told to trust the folder, it ran what the folder names


def test_fp16_export_is_a_drop_in_for_model_onnx(tmp_path: Path) -> None:
    """``reproduce --export DIR --fp16``'s file: fp16 weights, the same float32 feed and logits
    as model.onnx, and the evaluated (8-bit QAT, pruned) model's predictions on validation."""
    flat = pruned("structured", 0.5, **{"quant.bits": 8})
    outcome = run_trial(flat)
    data = TrialConfig.from_flat(flat).data.load()
    files = export_model(
        outcome.model, data.test_x[:1], flat, tmp_path, onnx=outcome.onnx, fp16=True
    )
    assert files["onnx_fp16"] == tmp_path / "model.fp16.onnx"
    check_model(files["onnx_fp16"].read_bytes())
    shipped, fp16 = (onnx.load(str(files[k])).graph for k in ("onnx", "onnx_fp16"))
    assert [(i.name, i.type) for i in fp16.input] == [(i.name, i.type) for i in shipped.input]
    assert [o.name for o in fp16.output] == [o.name for o in shipped.output]
    assert fp16.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert files["onnx_fp16"].stat().st_size < 0.6 * (tmp_path / "state_dict.pt").stat().st_size
    assert onnx_agreement(outcome.model, files["onnx_fp16"], data.val) >= 0.99
    normalise = TrialConfig.from_flat(flat).data.load().normalise
    again = export_model(
        outcome.model, data.test_x[:1], flat, tmp_path, onnx=outcome.onnx, fp16=True,
        normalise=normalise,
    )  # fmt: skip
    metadata = {p.key: p.value for p in onnx.load(str(again["onnx_fp16"])).metadata_props}
    assert json.loads(metadata["nascomp.preprocess"]) == json.loads(
        again["preprocess"].read_text()
    )  # the same recipe as model.onnx's


def test_an_export_into_a_used_folder_leaves_no_file_of_the_earlier_model(
    tmp_path: Path,
) -> None:
    """Exported with --fp16, then another model without it into the same folder: the first
    model's model.fp16.onnx goes (it would be shipped beside the second's model.onnx); the
    user's own files stay."""
    flat = pruned("structured", 0.5, **{"quant.bits": 8, "train.epochs": 1})
    outcome = run_trial(flat)
    data = TrialConfig.from_flat(flat).data.load()
    example = data.test_x[:1]
    export_model(outcome.model, example, flat, tmp_path, onnx=outcome.onnx, fp16=True)
    (tmp_path / "NOTES.txt").write_text("mine")
    files = export_model(outcome.model, example, flat, tmp_path, onnx=outcome.onnx)
    assert not (tmp_path / "model.fp16.onnx").exists()
    assert {p.name for p in tmp_path.iterdir()} == {p.name for p in files.values()} | {"NOTES.txt"}


def test_an_export_that_fails_leaves_the_folder_as_it_was(tmp_path: Path) -> None:
    """The files are staged and moved into place once all are written: a failure part-way
    (here model.onnx's bytes cannot be read as ONNX) leaves the earlier export's files as they
    were, not some of each model, and no staging folder."""
    flat = pruned("structured", 0.5, **{"quant.bits": 8, "train.epochs": 1})
    outcome = run_trial(flat)
    data = TrialConfig.from_flat(flat).data.load()
    example, normalise = data.test_x[:1], data.normalise
    export_model(outcome.model, example, flat, tmp_path, onnx=outcome.onnx, normalise=normalise)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    other = run_trial({**flat, "prune.ratio": 0.25})
    with pytest.raises(Exception, match=r"(?i)pars|protobuf|decode"):
        export_model(other.model, example, flat, tmp_path, onnx=b"not onnx", normalise=normalise)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_ctrl_c_while_the_files_move_into_place_waits_for_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C between two of the moves left one model's files beside another's, and its
    export.json then called them the user's: the moves finish first, then the interrupt."""
    flat = pruned("structured", 0.5, **{"quant.bits": 8, "train.epochs": 1})
    outcome = run_trial(flat)
    data = TrialConfig.from_flat(flat).data.load()
    example = data.test_x[:1]
    provenance = {"nascomp": "test", "trial_run_id": "a" * 32}
    export_model(outcome.model, example, flat, tmp_path, onnx=outcome.onnx, provenance=provenance)
    other = run_trial({**flat, "prune.ratio": 0.25})
    moves: list[str] = []
    replace = os.replace

    def interrupted_after_the_second(source: object, target: object) -> None:
        replace(source, target)
        moves.append(str(target))
        if len(moves) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, as the terminal sends it

    monkeypatch.setattr("nascomp.search.export.os.replace", interrupted_after_the_second)
    second = {**provenance, "trial_run_id": "b" * 32}
    # Ctrl-C's action as in a terminal: a harness started in the background (CI's) ignores it,
    # and a held signal then acts as it would have: not at all.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            export_model(other.model, example, flat, tmp_path, onnx=other.onnx, provenance=second)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back
    finally:
        signal.signal(signal.SIGINT, previous)
    info = json.loads((tmp_path / "export.json").read_text())
    assert len(moves) == len(info["files"]) + 1 and info["trial_run_id"] == "b" * 32
    for name, facts in info["files"].items():  # every file the second export's
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == facts["sha256"]
    assert earlier_export_files(tmp_path) == {*info["files"], "export.json"}


def test_an_export_that_fails_into_a_new_folder_leaves_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed export into a folder it made removed nothing: an empty folder stayed; and
    `a/../b` made a stray `a`."""
    flat = pruned("structured", 0.5, **{"quant.bits": 8, "train.epochs": 1})
    outcome = run_trial(flat)
    example = TrialConfig.from_flat(flat).data.load().test_x[:1]
    with monkeypatch.context() as patch:

        def no_room(*_args: object) -> None:
            raise OSError(28, "No space left on device")

        patch.setattr("nascomp.search.export._write_export", no_room)
        with pytest.raises(OSError, match="No space left"):
            export_model(outcome.model, example, flat, tmp_path / "new", onnx=outcome.onnx)
    assert list(tmp_path.iterdir()) == []
    export_model(outcome.model, example, flat, tmp_path / "a" / ".." / "b", onnx=outcome.onnx)
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_an_entry_in_the_way_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """A folder named model.onnx: one line naming it, found before the model trains (the CLI
    calls the check first); export_model itself writes nothing then."""
    (tmp_path / "model.onnx").mkdir()
    with pytest.raises(ValueError, match=r"^--export: .*model\.onnx is in the way of the export"):
        check_export_folder(tmp_path, "--export")
    flat = pruned("structured", 0.5, **{"quant.bits": 32, "train.epochs": 1})
    outcome = run_trial(flat)
    data = TrialConfig.from_flat(flat).data.load()
    with pytest.raises(ValueError, match="in the way"):
        export_model(outcome.model, data.test_x[:1], flat, tmp_path, onnx=outcome.onnx)
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


_NOT_WRITTEN = "is not an earlier nascomp export's file as it was: no earlier export wrote it"
_CHANGED = "is not an earlier nascomp export's file as it was: it changed since the export"


def test_a_users_files_of_export_names_are_never_replaced_or_removed(tmp_path: Path) -> None:
    """A folder holding the user's own skeleton.json was taken for an earlier export: the
    export removed their model.fp16.onnx and overwrote their state_dict.pt; their model.onnx
    was replaced in any folder. Refused before anything trains now; an earlier export's
    files (those its export.json lists) are still replaced."""
    (tmp_path / "skeleton.json").write_text('{"my": "own skeleton"}')
    (tmp_path / "model.fp16.onnx").write_text("mine")
    assert earlier_export_files(tmp_path) == set()
    with pytest.raises(ValueError, match=rf"^--export: .*skeleton\.json {_NOT_WRITTEN}"):
        check_export_folder(tmp_path, "--export")
    (tmp_path / "skeleton.json").unlink()
    check_export_folder(tmp_path, "--export")  # model.fp16.onnx is not written: it stays
    with pytest.raises(ValueError, match=rf"model\.fp16\.onnx {_NOT_WRITTEN}"):
        check_export_folder(tmp_path, "--export", fp16=True)
    digest = hashlib.sha256(b"mine").hexdigest()
    # A packaging tool's manifest of the same name, with a files mapping too: the user's.
    manifest = {"tool": "my-packager", "files": {"model.fp16.onnx": {"sha256": digest}}}
    (tmp_path / "export.json").write_text(json.dumps(manifest))
    assert earlier_export_files(tmp_path) == set()
    with pytest.raises(ValueError, match=rf"export\.json {_NOT_WRITTEN}"):
        check_export_folder(tmp_path, "--export")
    ours = {"nascomp": "0.1.0", "trial_run_id": "0" * 32}
    (tmp_path / "export.json").write_text(json.dumps({**ours, "files": {"model.fp16.onnx": {}}}))
    assert earlier_export_files(tmp_path) == {"export.json"}  # no hash: not known as written
    listed = {**ours, "files": {"model.fp16.onnx": {"sha256": digest}}}
    (tmp_path / "export.json").write_text(json.dumps(listed))
    assert earlier_export_files(tmp_path) == {"model.fp16.onnx", "export.json"}
    check_export_folder(tmp_path, "--export", fp16=True)
    (tmp_path / "model.fp16.onnx").write_text("edited since")  # the user's now: kept
    assert earlier_export_files(tmp_path) == {"export.json"}
    with pytest.raises(ValueError, match=rf"model\.fp16\.onnx {_CHANGED}"):
        check_export_folder(tmp_path, "--export", fp16=True)
    (tmp_path / "model.fp16.onnx").write_text("mine")
    (tmp_path / "model.onnx").write_text("mine too")
    with pytest.raises(ValueError, match=rf"model\.onnx {_NOT_WRITTEN}"):
        check_export_folder(tmp_path, "--export")


def test_a_users_file_of_an_export_name_stays_where_no_export_was(tmp_path: Path) -> None:
    """Stale files go only from a folder that held an earlier export: the user's own
    model.fp16.onnx in a fresh folder stays, and foreign_files names it (the CLI says so)."""
    (tmp_path / "model.fp16.onnx").write_text("mine")
    flat = pruned("structured", 0.5, **{"quant.bits": 32, "train.epochs": 1})
    outcome = run_trial(flat)
    data = TrialConfig.from_flat(flat).data.load()
    files = export_model(outcome.model, data.test_x[:1], flat, tmp_path, onnx=outcome.onnx)
    assert (tmp_path / "model.fp16.onnx").read_text() == "mine"
    assert foreign_files(tmp_path, files) == [tmp_path / "model.fp16.onnx"]


def test_image_mode_is_given_for_decoded_images_only() -> None:
    assert image_mode("imagefolder", (3, 32, 32)) == "RGB"
    assert image_mode("mnist", (1, 28, 28)) == "L"
    assert image_mode("csv", (12,)) is None and image_mode("custom", (3, 8, 8)) is None


def test_raw_inputs_through_preprocess_json_are_what_the_model_was_fed(tmp_path: Path) -> None:
    """A deployment team has raw inputs and the export folder: the recipe of
    ``preprocess.json`` (also in model.onnx's metadata) turns the raw digits (counts 0..16)
    into the very tensors the trial evaluated, and model.onnx fed them predicts what the
    evaluated model predicted."""
    import onnxruntime as ort
    from sklearn.datasets import load_digits

    flat = pruned("structured", 0.5, **{"quant.bits": 8, "train.epochs": 1})
    outcome = run_trial(flat)
    data = TrialConfig.from_flat(flat).data.load()
    files = export_model(
        outcome.model,
        data.test_x[:1],
        flat,
        tmp_path,
        onnx=outcome.onnx,
        normalise=data.normalise,
        classes=data.classes,
        provenance={"trial_run_id": "abc123", "metrics": {"val_accuracy": 0.5}},
    )
    recipe = json.loads(files["preprocess"].read_text())
    proto = onnx.load(str(files["onnx"]))
    metadata = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(metadata["nascomp.preprocess"]) == recipe
    assert recipe["input_shape"] == [1, 8, 8] and recipe["scale"] == 16.0
    assert recipe["image_mode"] == "L" and recipe["resize"] is None
    assert recipe["decode"] is None  # arrays, not image files: an image folder's says how
    assert recipe["output"].startswith("logits: (batch, n_classes)")
    # The file names its trial; export.json has the provenance and each file's size.
    assert metadata["nascomp.trial_run_id"] == "abc123"
    assert proto.doc_string.endswith("from trial run abc123")
    info = json.loads(files["info"].read_text())
    assert info["metrics"] == {"val_accuracy": 0.5}
    assert info["files"]["model.nascomp"]["bytes"] == outcome.metrics["size_bytes"]
    assert recipe["classes"] == [str(digit) for digit in range(10)]  # column i: digit i
    assert recipe["channel_axis"] == 1 and len(recipe["mean"]) == len(recipe["std"]) == 1

    raw = torch.tensor(load_digits().images, dtype=torch.float32)[:, None]  # (N, 1, 8, 8)
    mean, std = (torch.tensor(recipe[k]).view(1, -1, 1, 1) for k in ("mean", "std"))
    prepared = (raw / recipe["scale"] - mean) / std
    # every evaluated test input is one of the prepared raw images, to float32 rounding
    exact = "donot_use_mm_for_euclid_dist"
    distance = torch.cdist(data.test_x.flatten(1), prepared.flatten(1), compute_mode=exact)
    assert float(distance.min(dim=1).values.max()) < 1e-4
    rows = distance.argmin(dim=1)
    session = ort.InferenceSession(str(files["onnx"]), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: prepared[rows].numpy()})[0]
    evaluated = predict_logits(outcome.model, data.test_x).argmax(dim=1)
    assert (torch.from_numpy(logits).argmax(dim=1) == evaluated).float().mean() >= 0.98


def test_a_stores_credentials_are_never_printed_or_recorded() -> None:
    from nascomp.search.tracking.store import _health_request, without_credentials

    assert without_credentials("https://me:secret@mlflow.example:5000/x") == (
        "https://mlflow.example:5000/x"
    )
    assert without_credentials("postgresql://bob:pw99@127.0.0.1:5432/db?sslmode=require") == (
        "postgresql://127.0.0.1:5432/db?sslmode=require"
    )
    assert without_credentials("mysql://db.local/m?user=a&password=pw99&token=t0k") == (
        "mysql://db.local/m?user=a&password=***&token=***"
    )
    assert without_credentials("sqlite:///mlflow.db") == "sqlite:///mlflow.db"
    assert without_credentials("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    # urllib took "me:secret@host" for a host's name: a server with a password never passed
    # the check before the search
    request = _health_request("http://me:s%40cret@127.0.0.1:5731/")
    assert request.full_url == "http://127.0.0.1:5731/health"
    assert request.get_header("Authorization") == "Basic bWU6c0BjcmV0"  # me:s@cret


@pytest.mark.parametrize("health_open", [False, True], ids=["guarded", "health-open"])
def test_a_tracking_server_that_refuses_is_told_apart_from_one_that_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, health_open: bool
) -> None:
    """A server answering 401 was reported as unreachable; MLflow's user and password
    variables did not reach the check. MLflow's own auth app leaves /health open: the 401
    came at the first read, and was "does not answer as an MLflow tracking store"."""
    import http.server
    import threading

    from nascomp.search.errors import TrackingError
    from nascomp.search.tracking.store import Tracker

    class Guarded(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # /health, and /version (an MLflow server's version)
            good = self.headers.get("Authorization") == "Basic bWU6cHc="  # me:pw
            good = good or (health_open and self.path == "/health")
            self.send_response(200 if good else 401)
            self.end_headers()
            if good and self.path == "/version":
                self.wfile.write(b"3.0.0")

        def do_POST(self) -> None:  # the one read that shows an MLflow server: no experiment
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            good = self.headers.get("Authorization") == "Basic bWU6cHc="
            self.send_response(200 if good else 401)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"experiments": []}' if good else b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Guarded)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_port}"
    try:
        with pytest.raises(TrackingError, match=r"refused the request \(HTTP 401\): give its"):
            Tracker(uri, "x").check_reachable()
        Tracker(f"http://me:pw@127.0.0.1:{server.server_port}", "x").check_reachable()
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "me")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
        Tracker(uri, "x").check_reachable()
    finally:
        server.shutdown()


def test_a_servers_database_read_directly_names_the_server_for_its_files(tmp_path: Path) -> None:
    """An `mlflow server --artifacts-destination` store keeps `mlflow-artifacts:` addresses,
    which only the server resolves: export and reproduce read in its database ended in
    MLflow's traceback (a helper's sweep)."""
    from nascomp.search.errors import TrackingError
    from nascomp.search.tracking.store import Tracker, TrialRecord

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "local")
    served = tracker.client.create_experiment("served", artifact_location="mlflow-artifacts:/7")
    run = tracker.client.create_run(served).info.run_id
    record = TrialRecord(run, "t", "ok", {}, {})
    with pytest.raises(TrackingError) as caught:
        tracker.logged_config(record)
    assert str(caught.value) == (
        f"run {run}'s files are served by the MLflow server that logged them "
        f"(mlflow-artifacts:/7/{run}...); give that server's http(s):// address as "
        f"--tracking-uri, not its store sqlite:///{tmp_path / 'mlflow.db'}"
    )
    local = tracker.client.create_run(tracker.experiment_id(create=True)).info.run_id
    assert tracker.logged_config(TrialRecord(local, "t", "ok", {}, {})) is None  # no file
    # `nascomp ui` on that database lists the runs without their files: it says so
    assert tracker.served_files_note() is None  # 'local' keeps its files by the store
    tracker.experiment = "served"
    assert (tracker.served_files_note() or "").startswith(
        "note: this store's runs keep their files on the MLflow server that logged them"
    )


def test_an_image_folders_recipe_says_how_its_files_were_decoded() -> None:
    """16-bit scans decoded with PIL's convert('L') alone were white where the search had
    trained on their levels, and photos with an EXIF rotation were fed unrotated."""
    normalise = Normalise(torch.zeros(3), torch.ones(3), 255.0)
    example = torch.zeros(1, 3, 8, 8)
    folder = preprocess_recipe(normalise, example, {"data.name": "imagefolder"})
    assert folder["decode"] == DECODE and folder["image_mode"] == "RGB"
    assert preprocess_recipe(normalise, example, {"data.name": "torchvision"})["decode"] is None


def test_load_exported_names_the_argument_or_the_file_that_is_wrong(tmp_path: Path) -> None:
    """A folder given as a dict, or a damaged skeleton.json or model.nascomp: pathlib's
    TypeError, a JSONDecodeError, a KeyError or "compressed file is truncated", none of which
    named the argument or the file (a helper's API sweep)."""
    flat = pruned("structured", 0.5, **{"quant.bits": 8, "train.epochs": 1})
    outcome = run_trial(flat)
    data = TrialConfig.from_flat(flat).data.load()
    export_model(outcome.model, data.test_x[:1], flat, tmp_path)
    load_exported(tmp_path)  # whole, it loads
    for wrong in ({"a": 1}, None, 3):
        with pytest.raises(TypeError, match=r"^folder: an export folder \(a str or Path\); got "):
            load_exported(wrong)  # type: ignore[arg-type]
    skeleton, artifact = tmp_path / "skeleton.json", tmp_path / "model.nascomp"
    text, packed = skeleton.read_text(), artifact.read_bytes()
    skeleton.write_text("{not json")
    with pytest.raises(ValueError, match=rf"^{skeleton} is not a nascomp skeleton \("):
        load_exported(tmp_path)
    whole = json.loads(text)
    del whole["input_shape"]
    skeleton.write_text(json.dumps(whole))
    with pytest.raises(ValueError, match=rf"^{skeleton} is not a nascomp skeleton \(no input_"):
        load_exported(tmp_path)
    skeleton.write_text(text)
    artifact.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(ValueError, match=rf"^{artifact}: "):
        load_exported(tmp_path)


def test_export_json_names_the_form_of_model_onnx_not_what_latency_timed() -> None:
    """A trial timed in PyTorch (measure.runtime: torch) ships the same int8 QDQ file: its
    export.json said ``torch int8-x86``, the form latency was timed on."""
    from nascomp.search.reproduce import logged_onnx_form

    torch_timed = {"nascomp.latency_form": "torch int8-x86"}
    recorded = {**torch_timed, "nascomp.onnx_form": "onnxruntime int8-qdq"}
    assert logged_onnx_form(recorded) == "onnxruntime int8-qdq"
    assert logged_onnx_form(torch_timed) == ""  # an older trial: not known
    older = {"nascomp.latency_form": "onnxruntime fp32-folded-4bit"}  # timed on the file
    assert logged_onnx_form(older) == "onnxruntime fp32-folded-4bit"


def test_reproduce_says_why_the_onnx_file_differs_from_the_searchs() -> None:
    """A search logged by an older nascomp, reproduced now: its file was another size (the int8
    file declares fewer opset domains; a 4-bit activation file keeps its rounding now), and
    reproduce printed onnx_bytes and onnx_agreement apart with no word but machine load."""
    from nascomp.search.reproduce import Reproduction
    from nascomp.search.tracking.store import TrialRecord
    from nascomp.trainers.trial import TrialOutcome

    def reproduction(then: dict, tags: dict, now: dict, form: str) -> Reproduction:
        source = TrialRecord("run", "trial", "FINISHED", {}, then, tags)
        outcome = TrialOutcome("ok", metrics=now, info={"onnx_form": form})
        return Reproduction(source, outcome, "runs:/x", {})

    same = reproduction({"onnx_bytes": 10.0}, {}, {"onnx_bytes": 10.0}, "onnxruntime int8-qdq")
    assert same.onnx_note() == ""
    older = {"onnx_bytes": 169_539.0}
    int8 = {"nascomp.onnx_form": "onnxruntime int8-qdq"}
    note = reproduction(older, int8, {"onnx_bytes": 169_352.0}, "onnxruntime int8-qdq")
    assert note.onnx_note() == (
        "the ONNX file is built again, by this nascomp: a file of another size than the "
        "search's, so onnx_bytes, onnx_agreement and an ONNX Runtime latency compare "
        "different files"
    )
    four = {"nascomp.latency_form": "onnxruntime fp32-folded-4bit"}
    rounded = "onnxruntime fp32-folded-4bit act4-rounded"
    form = reproduction({"onnx_bytes": 20_314.0}, four, {"onnx_bytes": 39_843.0}, rounded)
    assert form.onnx_note().startswith(
        f"the ONNX file is built again, by this nascomp, now {rounded} (then "
        "onnxruntime fp32-folded-4bit): a file of another size"
    )
    assert reproduction({}, {}, {"onnx_bytes": 5.0}, rounded).onnx_note() == ""  # not logged
