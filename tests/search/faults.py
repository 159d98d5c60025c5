"""Real processes to break on purpose: an MLflow tracking server, a search in the background,
and readers of what a search left in Ray's result folder and in MLflow."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.search.raycluster import free_port


def wait_for(
    what: str, predicate: Callable[[], Any], timeout_s: float, every_s: float = 0.2
) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise TimeoutError(f"waited {timeout_s:.0f} s for {what}")


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a sqlite store and served artifacts; it can be
    stopped and started again on the same port and store (a tracking server that blips)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 90) -> None:
        exe = Path(sys.executable).with_name("mlflow")
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            str(exe),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.folder / "artifacts"),
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        log = (self.folder / "server.log").open("a")
        self.proc = subprocess.Popen(
            command,
            # Without MLflow 3's GenAI job runners (six huey consumers importing MLflow, as
            # `nascomp ui` starts it): tracking over HTTP does not use them, and each start
            # and restart of this server is 2 to 3 times faster on 2 cores without them.
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_for("the MLflow server's /health", self.healthy, timeout_s, every_s=0.5)
        except TimeoutError as error:
            self.stop()  # not left running for the rest of the tests
            tail = (self.folder / "server.log").read_text()[-1500:]
            raise TimeoutError(f"{error}; the server's log ends:\n{tail}") from None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """Kill the server and its workers (its whole session); wait until the port is free."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None
        wait_for("the server to be gone", lambda: not self.healthy(), 30)


def background_search(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """``nascomp search ARGS`` as its own session (its local Ray included), output to a file."""
    exe = Path(sys.executable).with_name("nascomp")
    log = cwd / f"search-{time.monotonic_ns()}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(exe), "search", *args],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    _LOGS[proc.pid] = log
    return proc


_LOGS: dict[int, Path] = {}


def output(proc: subprocess.Popen) -> str:
    """Everything the background search printed so far."""
    return _LOGS[proc.pid].read_text()


def kill_session(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """``sig`` to every process of the search's session (driver, local Ray, workers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


def trial_reports(results: Path) -> dict[str, list[dict]]:
    """Every report each trial made so far, from Ray Tune's result.json files."""
    reports: dict[str, list[dict]] = {}
    for path in results.glob("nascomp-*/trial_*/result.json"):
        rows = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                rows.append(json.loads(line))
        if rows:
            reports[rows[0]["trial_id"]] = rows
    return reports


def ended(reports: dict[str, list[dict]]) -> set[str]:
    return {t for t, rows in reports.items() if "nascomp_status" in rows[-1]}


def search_runs(uri: str, experiment: str = "nascomp") -> tuple[list, list]:
    """(parent runs, child runs) of every nascomp search in the store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment} in {uri}"
    runs = client.search_runs([found.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("nascomp.role") == "search"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def metric_steps(uri: str, run_id: str, key: str) -> list[int]:
    from mlflow.tracking import MlflowClient

    return sorted(m.step for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, key))
