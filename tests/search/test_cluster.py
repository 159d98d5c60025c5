"""The cluster story: cluster.yaml is a valid Ray launcher config, and a search spreads its
trials over the nodes of a real multi-node Ray cluster."""

from __future__ import annotations

import copy
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.search.conftest import nascomp, tiny_args
from tests.search.faults import (
    MlflowServer,
    background_search,
    kill_session,
    output,
    search_runs,
    trial_reports,
    wait_for,
)
from tests.search.raycluster import LocalRayCluster

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"


def _validated(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does to a config before it talks to the cloud: merge Ray's AWS defaults,
    merge setup commands per node type, then check the JSON schema and the node-type rules.
    (The next step, bootstrap, needs AWS credentials and is left out.)"""
    from nascomp.search.compat.ray import validate_cluster_config

    prepared = validate_cluster_config(copy.deepcopy(config))
    return prepared


def test_cluster_yaml_is_valid() -> None:
    import jsonschema

    config = yaml.safe_load(CLUSTER_YAML.read_text())
    prepared = _validated(config)

    head = prepared["available_node_types"][prepared["head_node_type"]]
    workers = [node for name, node in prepared["available_node_types"].items() if name != "head"]
    assert head["resources"].get("GPU", 0) == 0
    assert any(w["resources"].get("GPU", 0) >= 1 and w["min_workers"] == 0 for w in workers)

    # nascomp is installed on every node (prepare_config merges setup_commands into both).
    assert any(re.search(r"pip install .*nascomp", cmd) for cmd in prepared["setup_commands"])
    for merged in (prepared["head_setup_commands"], prepared["worker_setup_commands"]):
        assert any("nascomp" in cmd and "pip install" in cmd for cmd in merged)

    # The head starts Ray and the tracking server, bound beyond loopback for the workers.
    head_start = " ".join(prepared["head_start_ray_commands"])
    assert "ray start --head" in head_start
    server = re.search(r"mlflow server [^;&\n]*", head_start)
    assert server is not None, head_start
    for flag in ("--backend-store-uri sqlite:///", "--host 0.0.0.0", "--port 5000"):
        assert flag in server.group(0)
    assert "--serve-artifacts" in server.group(0)

    # Workers reach it at the head's address, and join with the same token auth mode.
    worker_side = " ".join(
        prepared["worker_setup_commands"] + prepared["worker_start_ray_commands"]
    )
    assert "MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in worker_side
    assert "RAY_AUTH_MODE=token" in " ".join(prepared["worker_start_ray_commands"])
    assert "~/.ray/auth_token" in prepared["file_mounts"]

    # The validator is live: the same path rejects a misspelt top-level key and a
    # min_workers that exceeds max_workers.
    unknown_key = {**config, "max_worker": 4}
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        _validated(unknown_key)
    too_many = copy.deepcopy(config)
    too_many["available_node_types"]["gpu_worker"]["min_workers"] = config["max_workers"] + 1
    with pytest.raises(ValueError, match="min_workers"):
        _validated(too_many)


# --------------------------------------------------------------------------- two Ray nodes


@pytest.fixture
def two_node_cluster() -> Iterator[LocalRayCluster]:
    cluster = LocalRayCluster()
    try:
        cluster.start_head(num_cpus=1)
        cluster.add_node(num_cpus=1)
        yield cluster
    finally:
        # A safety net: the test stops the cluster itself and checks nothing is left.
        cluster.stop()


def _raylet_node_ids(cluster: LocalRayCluster) -> dict[str, str]:
    """Node id per temp dir, read off the raylets' command lines."""
    found = {}
    for proc in cluster.processes():
        node_id = re.search(r"raylet/raylet .*--node_id=([0-9a-f]+)", proc.cmdline)
        temp_dir = re.search(r"--temp_dir=(\S+)", proc.cmdline)
        if node_id and temp_dir:
            found[temp_dir.group(1)] = node_id.group(1)
    return found


@pytest.mark.e2e
def test_search_spans_two_ray_nodes(
    workdir: Path, two_node_cluster: LocalRayCluster, tmp_path: Path
) -> None:
    """Cluster mode: trials on both nodes log over HTTP to a real `mlflow server` whose
    artifacts are served; every trial is there, nested, with its model retrievable."""
    import torch
    from mlflow.tracking import MlflowClient

    from nascomp.search.export import load_exported

    cluster = two_node_cluster
    node_ids = _raylet_node_ids(cluster)
    # Both nodes are found by the teardown's process finder, the worker node included.
    assert sorted(node_ids) == sorted(str(d) for d in cluster.temp_dirs), node_ids
    found = {p.pid for p in cluster.processes()}
    assert {p.pid for p in cluster.by_gcs_port()} <= found

    server = MlflowServer(tmp_path / "server")
    server.start()
    try:
        try:
            args = ["--address", cluster.address, "--tracking-uri", server.uri]
            done = nascomp(
                "search",
                *tiny_args(workdir, *args, "--set", "search.trials=4"),
                cwd=workdir,
                timeout=300,
                # A user's machine that holds the cluster's token, and nothing else: the
                # driver sends it (RAY_AUTH_MODE=token is not needed with --address).
                env={"RAY_AUTH_TOKEN_PATH": two_node_cluster.env["RAY_AUTH_TOKEN_PATH"]},
            )
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            # The cluster joined, said: "auto" may find another user's Ray on a shared machine.
            joined = re.search(
                r"^connected to the Ray cluster at (\S+) \(2 nodes: ", done.stdout, re.M
            )
            assert joined is not None, done.stdout[:2000]
            assert joined[1].endswith(cluster.address.rpartition(":")[2])
        finally:
            survivors = cluster.stop()
        assert not survivors, [f"{p.pid} {p.cmdline[:200]}" for p in survivors]
        assert cluster.by_gcs_port() == []

        parents, children = search_runs(server.uri)
        assert len(parents) == 1
        assert len(children) == 4
        assert all(run.info.status == "FINISHED" for run in children)
        assert all(
            run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for run in children
        )
        assert all(run.data.tags.get("nascomp.status") in ("ok", "infeasible") for run in children)
        # Each trial names the node it ran on: both of this cluster's nodes, and no other
        # (a local Ray started by mistake would have a third id).
        used = {run.data.tags.get("nascomp.node_id") for run in children}
        assert used == set(node_ids.values()), (used, node_ids)

        # The artifacts went through the server (no local file path in their URI) and come
        # back through it: a trial's compressed model loads and predicts.
        client = MlflowClient(tracking_uri=server.uri)
        ok = [run for run in children if run.data.tags["nascomp.status"] == "ok"]
        assert ok
        for run in ok:
            assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
            folder = Path(
                client.download_artifacts(run.info.run_id, "", str(tmp_path / run.info.run_id))
            )
            model = load_exported(folder)
            assert (folder / "model.nascomp").stat().st_size == run.data.metrics["size_bytes"]
            with torch.no_grad():
                assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
        parent_files = {f.path for f in client.list_artifacts(parents[0].info.run_id)}
        assert {"pareto_front.json", "pareto.png", "experiment.yaml"} <= parent_files
    finally:
        server.stop()


@pytest.mark.e2e
def test_a_cluster_that_refuses_this_token_is_one_line(workdir: Path, tmp_path: Path) -> None:
    cluster = LocalRayCluster()
    wrong = tmp_path / "auth_token"
    wrong.write_text("0" * 64)
    wrong.chmod(0o600)
    try:
        cluster.start_head(num_cpus=1)
        done = nascomp(
            "search",
            *tiny_args(workdir, "--address", cluster.address, "--set", "search.trials=1"),
            cwd=workdir,
            timeout=300,
            env={"RAY_AUTH_TOKEN_PATH": str(wrong)},
        )
    finally:
        survivors = cluster.stop()
    assert not survivors
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    assert "InvalidAuthToken" not in done.stderr  # Ray's C++ client's warning a second
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == (
        f"nascomp: error: --address {cluster.address}: the cluster refused this machine's Ray "
        "token (none, or not its own); a cluster with token authentication needs its token on "
        "this machine: ~/.ray/auth_token, or RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH (Ray reads "
        "it once per process: from Python, start a new one)"
    )
    assert not [line for line in lines if line.startswith("nascomp search:")]  # before the banner
    assert not list(workdir.glob("results/nascomp-*"))  # nothing was started


@pytest.mark.e2e
def test_worker_node_lost_mid_search(workdir: Path, two_node_cluster: LocalRayCluster) -> None:
    """A whole worker node is killed while one of its trials trains: the trial is rescheduled
    on the head, resumes from its checkpoint in the same run, and the search completes."""
    cluster = two_node_cluster
    head_id = _raylet_node_ids(cluster)[str(cluster.temp_dirs[0])]
    args = tiny_args(
        workdir,
        "--address",
        cluster.address,
        "--set",
        "search.trials=3",
        "--set",
        "train.epochs=40",
        "--set",
        "search.checkpoint_every_s=0",  # every epoch checkpointed: the node dies between two
    )
    search = background_search(args, workdir, env=two_node_cluster.env)
    results = workdir / "results"

    def on_worker_node() -> str | None:
        pids = {p.pid for p in cluster.node_processes(1)}
        for trial, rows in trial_reports(results).items():
            last = rows[-1]
            if "nascomp_status" not in last and last.get("epoch", 0) >= 3 and last["pid"] in pids:
                return trial
        return None

    try:
        victim = wait_for("a trial training on the worker node", on_worker_node, 300, 0.05)
        cluster.kill_node(1)
        assert search.wait(timeout=500) == 0, output(search)[-3000:]
    finally:
        kill_session(search)
        cluster.stop()
    parents, children = search_runs(f"sqlite:///{workdir / 'mlflow.db'}")
    assert len(parents) == 1 and len(children) == 3
    assert all(run.info.status == "FINISHED" for run in children)
    run = next(c for c in children if c.data.tags["nascomp.trial_id"] == victim)
    assert run.data.tags["nascomp.attempts"] == "2"
    assert run.data.tags["nascomp.node_id"] == head_id


def _skip_without_mount_namespaces() -> None:
    """The tests that hide a folder from one node need unshare -m (a private mount table)."""
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "true"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"no mount namespaces here: {probe.stderr.decode()[:200]}")


@pytest.mark.e2e
def test_worker_without_the_data_fails_naming_node_and_path(workdir: Path, data_root: Path) -> None:
    """The data root is missing on a worker node (an empty file system is mounted over it in
    that node's own mount namespace): its trials fail, saying which node and which path."""
    root = data_root.resolve()  # as data.root is resolved (a symlinked data folder included)
    hidden = root / "FashionMNIST"
    _skip_without_mount_namespaces()
    cluster = LocalRayCluster()
    try:
        cluster.start_head(num_cpus=0)  # every trial runs on the worker node
        mount = f'mount -t tmpfs none {hidden} && exec "$0" "$@"'
        cluster.add_node(
            num_cpus=1, prefix=("unshare", "-m", "--propagation", "private", "sh", "-c", mount)
        )
        args = tiny_args(
            workdir,
            "--address",
            cluster.address,
            "--set",
            "search.trials=2",
            "--set",
            "search.concurrent=1",
            "--set",
            "search.max_failures=0",
            "--set",
            "data.name=fashion_mnist",
            "--set",
            f"data.root={root}",
            "--set",
            "data.max_train_samples=500",
            "--set",
            "space.distill.enabled=[false]",
        )
        done = nascomp("search", *args, cwd=workdir, timeout=400, env=cluster.env)
    finally:
        cluster.stop()
    # Every trial failed: no model, exit code 4 (the search itself ran to its end).
    assert done.returncode == 4, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 failed" in done.stdout
    assert f"{hidden / 'raw'}" in done.stdout  # the search reports it, with the path
    assert "on node " in done.stdout
    _, children = search_runs(f"sqlite:///{workdir / 'mlflow.db'}")
    assert len(children) == 2
    for run in children:
        assert run.info.status == "FAILED"
        reason = run.data.tags["nascomp.reason"]
        assert "on node " in reason and str(hidden / "raw") in reason, reason


@pytest.mark.e2e
def test_a_storage_folder_a_node_does_not_share_is_refused(workdir: Path) -> None:
    """The result folder is on the driver's disk alone (an empty file system is mounted over
    it in one worker node's mount namespace): trials there would write their checkpoints
    where the driver never reads them. Another node sees it read-only (a bind mount): its
    trials trained to the end and failed at their first checkpoint. The search stops before
    any trial, naming both nodes."""
    _skip_without_mount_namespaces()
    storage = workdir / "results"
    storage.mkdir()
    cluster = LocalRayCluster()
    try:
        cluster.start_head(num_cpus=0)
        unshared = f'mount -t tmpfs none {storage} && exec "$0" "$@"'
        read_only = (
            f"mount --bind {storage} {storage} && mount -o remount,ro,bind {storage} && "
            'exec "$0" "$@"'
        )
        for mount in (unshared, read_only):
            cluster.add_node(
                num_cpus=1, prefix=("unshare", "-m", "--propagation", "private", "sh", "-c", mount)
            )
        args = tiny_args(
            workdir, "--address", cluster.address, "--set", "space.distill.enabled=[false]"
        )
        done = nascomp("search", *args, cwd=workdir, timeout=300, env=cluster.env)
    finally:
        cluster.stop()
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    error = done.stderr.strip().splitlines()[-1]
    # each worker named once (their address is this machine's), the head not
    assert re.fullmatch(
        re.escape(f"nascomp: error: storage: {storage} is not this machine's folder on node ")
        + r"[0-9.]+"
        + re.escape(" and cannot be written from node ")
        + r"[0-9.]+"
        + re.escape(
            " (Read-only file system): trials write their checkpoints there and the driver reads "
            "the models back; give a folder of a file system every node mounts at the same "
            "path, writable by the user the nodes run as (--set storage=/shared/nascomp-results)"
        ),
        error,
    ), error
    assert list(storage.iterdir()) == []  # no result folder, no marker left
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    found = client.get_experiment_by_name("nascomp")
    assert found is None or client.search_runs([found.experiment_id]) == []


@pytest.mark.e2e
def test_users_module_reaches_a_node_that_does_not_have_it(workdir: Path) -> None:
    """The user's builder lives only in the driver's folder, which the worker node cannot see
    (an empty file system is mounted over it in that node's mount namespace), as on a real
    cluster. Shipped through runtime_env, every trial trains there; with shipping turned off
    (resources.ship_code: false) the same trials fail naming the module."""
    _skip_without_mount_namespaces()
    project = workdir / "project"
    project.mkdir()
    (project / "shop_models.py").write_text(
        "from torch import nn\n\n"
        "def net(input_shape, n_classes, width=4):\n"
        "    return nn.Sequential(nn.Conv2d(input_shape[0], width, 3), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
        "                         nn.Linear(width, n_classes))\n"
    )
    cluster = LocalRayCluster()
    try:
        cluster.start_head(num_cpus=0)  # every trial runs on the worker node
        mount = f'mount -t tmpfs none {project} && exec "$0" "$@"'
        cluster.add_node(
            num_cpus=1, prefix=("unshare", "-m", "--propagation", "private", "sh", "-c", mount)
        )
        runs = {}
        for ship in ("true", "false"):
            args = tiny_args(
                workdir,
                "--address",
                cluster.address,
                "--experiment",
                f"ship-{ship}",
                "--set",
                "space.arch={family: custom, builder: 'shop_models:net', width: [4, 6]}",
                "--set",
                "space.distill.enabled=[false]",
                "--set",
                "search.trials=2",
                "--set",
                "search.concurrent=1",
                "--set",
                "search.max_failures=0",
                "--set",
                f"resources.ship_code={ship}",
            )
            done = nascomp("search", *args, cwd=project, timeout=400, env=cluster.env)
            expected = 0 if ship == "true" else 4  # every trial failed: no model
            assert done.returncode == expected, done.stdout[-3000:] + done.stderr[-3000:]
            runs[ship] = search_runs(f"sqlite:///{workdir / 'mlflow.db'}", f"ship-{ship}")[1]
    finally:
        cluster.stop()
    assert len(runs["true"]) == 2
    assert all(run.data.tags["nascomp.status"] == "ok" for run in runs["true"])
    assert len(runs["false"]) == 2
    for run in runs["false"]:
        assert run.data.tags["nascomp.status"] == "failed"
        assert "module 'shop_models' is not importable" in run.data.tags["nascomp.reason"]
