"""The first program of the local Ray's workers (search/compat/worker_start.py): the contexts it
starts itself, the environment it gives, and the hand-over to Ray's own setup_worker.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nascomp.search.compat import worker_start
from nascomp.search.compat.ray import WORKER_START
from nascomp.search.compat.worker_start import plain_context, set_env_vars

# What the raylet passes for a Ray Tune trial's actor (Ray 2.60).
TUNE_CONTEXT = {
    "command_prefix": [],
    "env_vars": {"PL_DISABLE_FORK": "1", "RAY_CHDIR_TO_TRIAL_DIR": "0"},
    "py_executable": sys.executable,
    "override_worker_entrypoint": None,
    "java_jars": [],
}


def test_the_contexts_it_starts_itself() -> None:
    assert plain_context(json.dumps(TUNE_CONTEXT), "PYTHON") == TUNE_CONTEXT
    assert plain_context(None, "PYTHON") == {}  # an empty runtime env: no option at all
    assert plain_context("{}", "PYTHON") == {}


@pytest.mark.parametrize(
    ("change", "language"),
    [
        ({"command_prefix": ["cd", "/somewhere", "&&"]}, "PYTHON"),  # a conda env's, a container's
        ({"java_jars": ["/jars"]}, "PYTHON"),
        ({"override_worker_entrypoint": "/inside/default_worker.py"}, "PYTHON"),
        ({"something_new": 1}, "PYTHON"),  # a key a later Ray adds: Ray knows what it means
        ({}, "JAVA"),
        ({}, None),
    ],
)
def test_every_other_context_goes_to_ray(change: dict, language: str | None) -> None:
    assert plain_context(json.dumps({**TUNE_CONTEXT, **change}), language) is None


def test_a_context_it_cannot_read_goes_to_ray() -> None:
    assert plain_context("{not json", "PYTHON") is None
    assert plain_context("[1, 2]", "PYTHON") is None
    assert plain_context(json.dumps({"env_vars": ["A=1"]}), "PYTHON") is None


def test_variables_are_set_as_rays_update_envs_sets_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray._private.utils import update_envs

    env_vars = {
        "NASCOMP_T_A": "plain",
        "NASCOMP_T_B": "${NASCOMP_T_HOME}/x:$NASCOMP_T_HOME",  # set: expanded
        "NASCOMP_T_C": "${NASCOMP_T_MISSING}:y",  # not set: dropped
        "NASCOMP_T_D": "$NASCOMP_T_MISSING:z",  # not set, no braces: kept as written
        "NASCOMP_T_E": "${NASCOMP_T_A}+",  # set just before, in order
    }
    names = [*env_vars, "NASCOMP_T_HOME"]
    results = []
    for apply in (set_env_vars, update_envs):
        for name in names:
            monkeypatch.setenv(name, "")  # recorded, so that the test's end restores it
            monkeypatch.delenv(name)
        monkeypatch.setenv("NASCOMP_T_HOME", "/home/u")
        apply(env_vars)
        results.append({name: os.environ[name] for name in env_vars})
    assert results[0] == {
        "NASCOMP_T_A": "plain",
        "NASCOMP_T_B": "/home/u/x:/home/u",
        "NASCOMP_T_C": ":y",
        "NASCOMP_T_D": "$NASCOMP_T_MISSING:z",
        "NASCOMP_T_E": "plain+",
    }
    assert results[0] == results[1]


def _start(tmp_path: Path, context: dict) -> tuple[dict, list[str]]:
    """Run the script as the raylet does, with a worker that reports what it was given; and
    the modules the script imported (``-X importtime``: the exec'd worker starts without it)."""
    worker = tmp_path / "worker.py"
    worker.write_text(
        "import json, os, sys\n"
        "print(json.dumps({'argv': sys.argv, 'exe': sys.executable,\n"
        "    'env': {k: v for k, v in os.environ.items() if k.startswith('NASCOMP_T')}}))\n"
    )
    command = [
        sys.executable,
        "-X",
        "importtime",
        WORKER_START,
        str(worker),
        "--node-ip-address=127.0.0.1",
        f"--serialized-runtime-env-context={json.dumps(context)}",
        "--language=PYTHON",
        "--object-store-name=/tmp/x y",  # a space survives: no shell between
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    imported = [
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    ]
    return json.loads(done.stdout), imported


def test_a_trials_worker_starts_without_importing_ray(tmp_path: Path) -> None:
    context = {**TUNE_CONTEXT, "env_vars": {"NASCOMP_T_VAR": "${NASCOMP_T_UNSET}set"}}
    got, imported = _start(tmp_path, context)
    assert got["argv"] == [
        str(tmp_path / "worker.py"),
        "--node-ip-address=127.0.0.1",
        "--object-store-name=/tmp/x y",
    ]
    assert got["env"] == {"NASCOMP_T_VAR": "set"}
    assert os.path.realpath(got["exe"]) == os.path.realpath(sys.executable)
    assert "argparse" in imported  # the list is read right
    assert not [name for name in imported if name.split(".")[0] in ("ray", "nascomp")]


def test_any_other_context_runs_rays_setup_worker(tmp_path: Path) -> None:
    # Ray's script runs with Ray's folder first on sys.path, not this script's, where
    # search/compat/ray.py would shadow the real package.
    assert (Path(worker_start.__file__).parent / "ray.py").exists()
    context = {**TUNE_CONTEXT, "command_prefix": ["export", "NASCOMP_T_PREFIX=1", "&&"]}
    context["env_vars"] = {"NASCOMP_T_VAR": "v"}
    got, imported = _start(tmp_path, context)
    assert "ray._private.runtime_env.context" in imported
    assert got["env"] == {"NASCOMP_T_PREFIX": "1", "NASCOMP_T_VAR": "v"}
    assert got["argv"][1:] == ["--node-ip-address=127.0.0.1", "--object-store-name=/tmp/x y"]
