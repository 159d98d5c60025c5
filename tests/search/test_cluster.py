"""The cluster story: cluster.yaml is a valid Ray launcher config, and a search spreads its
trials over the nodes of a real multi-node Ray cluster."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.search.conftest import nascomp, tiny_args
from tests.search.raycluster import RAY_ENV, LocalRayCluster

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"


def _validated(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does to a config before it talks to the cloud: merge Ray's AWS defaults,
    merge setup commands per node type, then check the JSON schema and the node-type rules.
    (The next step, bootstrap, needs AWS credentials and is left out.)"""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
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
def test_search_spans_two_ray_nodes(workdir: Path, two_node_cluster: LocalRayCluster) -> None:
    from mlflow.tracking import MlflowClient

    cluster = two_node_cluster
    node_ids = _raylet_node_ids(cluster)
    # Both nodes are found by the teardown's process finder, the worker node included.
    assert sorted(node_ids) == sorted(str(d) for d in cluster.temp_dirs), node_ids
    found = {p.pid for p in cluster.processes()}
    assert {p.pid for p in cluster.by_gcs_port()} <= found

    try:
        done = nascomp(
            "search",
            *tiny_args(workdir, "--address", cluster.address, "--set", "search.trials=4"),
            cwd=workdir,
            timeout=300,
            env=RAY_ENV,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    finally:
        survivors = cluster.stop()
    assert not survivors, [f"{p.pid} {p.cmdline[:200]}" for p in survivors]
    assert cluster.by_gcs_port() == []

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("nascomp")
    assert experiment is not None
    parents = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`nascomp.role` = 'search'"
    )
    assert len(parents) == 1
    children = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'",
    )
    assert len(children) == 4
    assert all(run.info.status == "FINISHED" for run in children)
    assert all(run.data.tags.get("nascomp.status") in ("ok", "infeasible") for run in children)
    # Each trial names the node it ran on: both of this cluster's nodes, and no other
    # (a local Ray started by mistake would have a third id).
    used = {run.data.tags.get("nascomp.node_id") for run in children}
    assert used == set(node_ids.values()), (used, node_ids)
