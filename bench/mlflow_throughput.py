"""How many metrics per second, and trials per hour, does one MLflow server take?

    python bench/mlflow_throughput.py                    # 5 rounds, 40 trial lifecycles
    python bench/mlflow_throughput.py --quick            # 2 rounds, 10 trial lifecycles
    python bench/mlflow_throughput.py --postgres         # and a PostgreSQL-backed server
    python bench/mlflow_throughput.py --checkpoint       # checkpoint sizes only, no server

Starts a real ``mlflow server --backend-store-uri sqlite:///TMP/mlflow.db --host 127.0.0.1
--port <free port> --workers 1`` (artifacts served, stored under TMP), waits for ``/health``,
and measures from one client, as nascomp's driver is the only writer. With ``--postgres``, a
second server on a throw-away PostgreSQL cluster (``initdb`` in TMP, listening on 127.0.0.1
only; needs the PostgreSQL server binaries and ``psycopg2`` importable by the server, e.g.
``--server-pythonpath DIR`` after ``pip install --target DIR psycopg2-binary``) runs at the
same time, and the two take turns in every measurement:

* metrics per second, side by side in each round (the order rotating between rounds, because
  the machine is shared): one metric per call (``MlflowClient.log_metric``), 8 metrics per call
  (``log_batch``, about what ``search/tracking.py`` logs per epoch of a trial) and 1,000 metrics
  per call (``log_batch`` of a large batch); the batched / one-per-call ratio per round;
* one trial's whole lifecycle through the real driver-side callback
  (``search.tracking.MlflowTrialCallback``, fed stand-ins for Ray Tune's trial objects):
  create the nested run with tags, log the ~50 params of a quickstart trial's flat config in one
  batch, one batch of metrics per epoch, the final result, the final tags, ``set_terminated``,
  and the parent run's hypervolume; ms per trial and the trials per hour that makes.

``--checkpoint``: bytes of one trial checkpoint (``torch.save`` of model + optimizer state)
over all 108 architectures of the quickstart space, and the storage of 10,000 trials when each
keeps its last checkpoint or all of them.

Every server is started in its own process group and killed at the end, whatever happens
(the PostgreSQL cluster is stopped with ``pg_ctl``); the temporary folder is removed unless
``--keep``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HOST = "127.0.0.1"
BATCH_SIZES = (1, 8, 1000)
TRIALS_PER_HOUR_100_GPUS = 100 * 4 * 60  # 100 GPUs x 4 trials each x 1-minute trials
# The result keys search/tracking.py logs as metrics (spaces.config.METRICS + 3 of its own).
LOGGED_KEYS = {
    *("val_accuracy", "test_accuracy", "params", "nonzero_params", "size_bytes", "macs"),
    *("latency_ms", "latency_batch_ms", "train_seconds", "loss", "train_accuracy", "epochs"),
}


# ---------------------------------------------------------------- the server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextmanager
def mlflow_server(
    folder: Path, name: str, backend_uri: str, pythonpath: str | None, timeout_s: float = 180.0
) -> Iterator[str]:
    """A ``mlflow server`` on 127.0.0.1 over ``backend_uri``; yields its URL."""
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_uri,
        "--artifacts-destination", str(folder / f"artifacts-{name}"),
        "--host", HOST, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    log = (folder / f"server-{name}.log").open("wb")
    # Own session = own process group: the server's workers die with it in the finally below.
    server = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, cwd=folder, env=env, start_new_session=True
    )
    url = f"http://{HOST}:{port}"
    try:
        started = time.perf_counter()
        while not _healthy(url):
            if server.poll() is not None:
                log.flush()
                tail = Path(log.name).read_text(errors="replace").splitlines()[-8:]
                raise RuntimeError(
                    f"{name}: mlflow server exited ({server.returncode}):\n" + "\n".join(tail)
                )
            if time.perf_counter() - started > timeout_s:
                raise TimeoutError(f"mlflow server did not answer /health in {timeout_s:.0f} s")
            time.sleep(0.5)
        waited = time.perf_counter() - started
        print(f"{name}: mlflow server on {url} answered /health after {waited:.1f} s")
        yield url
    finally:
        _stop(server)
        log.close()


def _postgres_bin() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    if not versions:
        raise FileNotFoundError("PostgreSQL server binaries (pg_ctl, initdb) not found")
    return versions[-1]


@contextmanager
def postgres_store(folder: Path) -> Iterator[str]:
    """A throw-away PostgreSQL cluster in ``folder`` on 127.0.0.1; yields the store URI."""
    bin_dir, data = _postgres_bin(), folder / "pg"
    data.mkdir()
    # PostgreSQL refuses to run as root: run its commands as the postgres user then.
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_owner:
        shutil.chown(data, "postgres")
        folder.chmod(0o755)
    port = free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT, "check": True}
    subprocess.run(
        [*as_owner, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
        **quiet,
    )
    options = f"-c listen_addresses={HOST} -p {port} -k {data}"
    pg_ctl = [*as_owner, str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run([*pg_ctl, "-o", options, "-l", str(data / "log"), "-w", "start"], **quiet)
        subprocess.run(
            [str(bin_dir / "createdb"), "-h", HOST, "-p", str(port), "-U", "postgres", "mlflow"],
            **quiet,
        )
        print(f"postgres: cluster on {HOST}:{port}")
        yield f"postgresql+psycopg2://postgres@{HOST}:{port}/mlflow"
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], **{**quiet, "check": False})


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(server: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


# ---------------------------------------------------------------- metrics per second
def metrics_per_second(client: Any, run_id: str, batch_size: int, n_metrics: int) -> float:
    """Log ``n_metrics`` values ``batch_size`` per call (``log_metric`` when 1)."""
    from mlflow.entities import Metric

    n_calls = max(1, n_metrics // batch_size)
    now = int(time.time() * 1000)
    started = time.perf_counter()
    for call in range(n_calls):
        if batch_size == 1:
            client.log_metric(run_id, "m0", 0.5, timestamp=now, step=call)
        else:
            metrics = [Metric(f"m{k}", 0.5, now, call) for k in range(batch_size)]
            client.log_batch(run_id, metrics=metrics)
    return n_calls * batch_size / (time.perf_counter() - started)


def throughput_round(
    client: Any, experiment_id: str, index: int, n_metrics: int
) -> dict[int, float]:
    """Metrics per second at each batch size, the order rotated by the round's ``index``."""
    rates: dict[int, float] = {}
    shift = index % len(BATCH_SIZES)
    for size in BATCH_SIZES[shift:] + BATCH_SIZES[:shift]:
        run_id = client.create_run(experiment_id, run_name=f"rate-{size}-{index}").info.run_id
        # a 1,000-metric batch needs more values than a round's budget to be timed at all
        budget = max(n_metrics, 3 * size) if size > 8 else n_metrics
        rates[size] = metrics_per_second(client, run_id, size, budget)
        client.set_terminated(run_id)
    return rates


# ---------------------------------------------------------------- one trial's lifecycle
def quickstart_config() -> dict[str, Any]:
    """A quickstart trial's flat config (what the callback logs as params), sampled at random."""
    import optuna

    from search.driver import trial_base
    from search.optuna_space import DefineByRun
    from spaces.config import load_experiment

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    experiment = load_experiment(None)
    space = DefineByRun(experiment.space.params(), trial_base(experiment))
    return space.config(optuna.create_study().ask())


def epoch_result(epoch: int) -> dict[str, Any]:
    # What trainers/trial.py reports per epoch (plus keys Ray adds, which the callback skips).
    return {
        "phase": "train",
        "epoch": epoch,
        "loss": 1.0 / epoch,
        "train_accuracy": 0.9,
        "val_accuracy": 0.88,
        "params": 20_000,
        "nonzero_params": 18_000,
        "size_bytes": 80_000,
        "time_this_iter_s": 1.0,
        "training_iteration": epoch,
        "pid": os.getpid(),
    }


def final_result(n_epochs: int, trial_index: int) -> dict[str, Any]:
    return {
        **epoch_result(n_epochs),
        "val_accuracy": 0.8 + 0.1 * ((trial_index * 7919) % 97) / 97,
        "test_accuracy": 0.87,
        "macs": 1_000_000,
        "latency_ms": 0.1 + ((trial_index * 104729) % 89) / 890,
        "latency_batch_ms": 3.0,
        "train_seconds": 60.0,
        "epochs": n_epochs,
        "nascomp_status": "ok",
        "nascomp_node_id": "node-0",
        "nascomp_info.deploy": "int8",
    }


def callback_lifecycle(callback: Any, config: dict[str, Any], index: int, n_epochs: int) -> float:
    """ms of everything the driver-side callback sends to MLflow for one trial."""
    trial = SimpleNamespace(trial_id=uuid.uuid4().hex[:8], config=config, last_result=None)
    started = time.perf_counter()
    callback.on_trial_start(iteration=0, trials=[], trial=trial)
    for epoch in range(1, n_epochs + 1):
        callback.on_trial_result(0, [], trial, epoch_result(epoch))
    trial.last_result = final_result(n_epochs, index)
    callback.on_trial_result(0, [], trial, trial.last_result)
    callback.on_trial_complete(0, [], trial)
    return (time.perf_counter() - started) * 1e3


def buffered_lifecycle(
    client: Any, experiment_id: str, search_run_id: str, config: dict[str, Any], n_epochs: int
) -> float:
    """ms of the same records sent in 4 calls: the run with its tags at the start; at the end
    one ``log_batch`` of params, every epoch's metrics, the final metrics and tags;
    ``set_terminated``; the parent's hypervolume. A variant to compare, not what nascomp does."""
    from mlflow.entities import Metric, Param, RunTag

    started = time.perf_counter()
    tags = {
        "mlflow.parentRunId": search_run_id,
        "nascomp.trial_id": uuid.uuid4().hex[:8],
        "nascomp.status": "running",
    }
    run_id = client.create_run(experiment_id, run_name="buffered", tags=tags).info.run_id
    now = int(time.time() * 1000)
    results = [epoch_result(epoch) for epoch in range(1, n_epochs + 1)]
    results.append(final_result(n_epochs, 0))
    metrics = [
        Metric(key, float(value), now, int(result["epoch"]))
        for result in results
        for key, value in result.items()
        if key in LOGGED_KEYS
    ]
    params = [Param(key, str(value)) for key, value in sorted(config.items())]
    end_tags = [RunTag("nascomp.status", "ok"), RunTag("nascomp.node_id", "node-0")]
    client.log_batch(run_id, metrics=metrics, params=params, tags=end_tags)
    client.set_terminated(run_id, "FINISHED")
    client.log_batch(search_run_id, metrics=[Metric("hypervolume", 0.5, now, 0)])
    return (time.perf_counter() - started) * 1e3


# ---------------------------------------------------------------- checkpoint storage
def quickstart_archs() -> list[dict[str, Any]]:
    """Every architecture of the quickstart space (spaces/quickstart.yaml), as build_model
    takes it: 3 x 2 x 3 x 2 x 3 = 108."""
    from spaces.config import load_experiment

    space = load_experiment(None).space.arch
    keys = ("n_stages", "blocks_per_stage", "base_channels", "kernel_size", "block")
    choices = [getattr(space, key) for key in keys]
    return [
        {"family": "cnn", **dict(zip(keys, values, strict=True))}
        for values in itertools.product(*choices)
    ]


def checkpoint_bytes(arch: dict[str, Any], optimizer: str) -> int:
    """Bytes of ``torch.save`` of model state + optimizer state for digits' 1x8x8 inputs, after
    one training step so the optimizer holds its per-parameter state (Adam: 2 moments; SGD with
    momentum: 1 buffer)."""
    import io

    import torch

    from spaces.models import build_model

    model = build_model(arch, (1, 8, 8), 10)
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 1, 8, 8)), torch.arange(4))
    loss.backward()
    opt.step()
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buffer)
    return buffer.tell()


def checkpoint_storage(n_trials: int, n_epochs: int) -> None:
    archs = quickstart_archs()
    print(
        f"\ncheckpoint = torch.save(model + optimizer state) over the {len(archs)} quickstart "
        f"architectures; storage for {n_trials:,} trials at the mean size (random sampling):"
    )
    for optimizer in ("adam", "sgd"):
        sizes = sorted(checkpoint_bytes(arch, optimizer) for arch in archs)
        mean, median = statistics.fmean(sizes), statistics.median(sizes)
        print(
            f"  {optimizer:4} kB min {sizes[0] / 1e3:,.0f}, median {median / 1e3:,.0f}, "
            f"mean {mean / 1e3:,.0f}, max {sizes[-1] / 1e3:,.0f};  keep last 1: "
            f"{n_trials * mean / 1e9:,.1f} GB;  keep all {n_epochs} epochs: "
            f"{n_trials * n_epochs * mean / 1e9:,.1f} GB"
        )


# ---------------------------------------------------------------- main
def _spread(values: list[float], fmt: str = "{:,.0f}") -> str:
    return (
        f"{fmt.format(statistics.median(values))} "
        f"[{fmt.format(min(values))}, {fmt.format(max(values))}] (n={len(values)})"
    )


def run(urls: dict[str, str], args: argparse.Namespace) -> None:
    from mlflow.tracking import MlflowClient

    from search.tracking import Tracker

    clients = {name: MlflowClient(tracking_uri=url) for name, url in urls.items()}
    experiments = {name: c.create_experiment("bench-throughput") for name, c in clients.items()}
    rates: dict[str, dict[int, list[float]]] = {
        name: {size: [] for size in BATCH_SIZES} for name in urls
    }
    names = list(urls)
    for index in range(args.rounds):
        for name in _rotated(names, index):  # the stores take turns, each round another first
            for size, rate in throughput_round(
                clients[name], experiments[name], index, args.metrics
            ).items():
                rates[name][size].append(rate)
    print(f"\nmetrics per second, median [min, max] over rounds (load average {_load()}):")
    for name in names:
        for size in BATCH_SIZES:
            how = "log_metric, 1 per call" if size == 1 else f"log_batch, {size:,} per call"
            print(f"  {name:8} {how:28} {_spread(rates[name][size])}")
        for size in BATCH_SIZES[1:]:
            ratios = [b / a for a, b in zip(rates[name][1], rates[name][size], strict=True)]
            print(f"  {name:8} ratio batch {size:,} / one per call: {_spread(ratios, '{:.1f}')}")
    for name in names[1:]:
        for size in BATCH_SIZES:
            ratios = [b / a for a, b in zip(rates[names[0]][size], rates[name][size], strict=True)]
            print(f"  {name} / {names[0]}, {size:,} per call: {_spread(ratios, '{:.2f}')}")

    objectives = {"val_accuracy": "max", "size_bytes": "min", "latency_ms": "min"}
    config = quickstart_config()
    setups = {}
    for name, url in urls.items():
        tracker = Tracker(url, "bench-lifecycle")
        search_run_id = tracker.start_search(
            run_name="bench-search",
            experiment_yaml="bench: true\n",
            space=[],
            objectives=objectives,
            git_commit=None,
        )
        callback = tracker.callback(search_run_id, objectives)
        callback.setup()  # as Tune does before the first trial
        setups[name] = (callback, tracker, search_run_id)
    spent: dict[str, list[float]] = {name: [] for name in names}
    buffered: dict[str, list[float]] = {name: [] for name in names}
    for index in range(args.trials):  # stores and variants take turns: drift hits all alike
        for name in _rotated(names, index):
            callback, tracker, search_run_id = setups[name]
            spent[name].append(callback_lifecycle(callback, config, index, args.epochs))
            buffered[name].append(
                buffered_lifecycle(
                    clients[name], tracker.experiment_id(), search_run_id, config, args.epochs
                )
            )
    print(
        f"\none trial's lifecycle through search.tracking.MlflowTrialCallback ({len(config)} "
        f"params, {args.epochs} epoch batches + the final result, tags, set_terminated, "
        f"parent hypervolume), load average {_load()}:"
    )
    for name in names:
        mean_ms = statistics.fmean(spent[name])
        per_hour = 3.6e6 / mean_ms
        print(
            f"  {name:8} ms per trial {_spread(spent[name], '{:.0f}')}, mean {mean_ms:.0f}: "
            f"{per_hour:,.0f} trials/h from one driver in sequence; 100 GPUs x 4 trials x "
            f"1-minute trials need {TRIALS_PER_HOUR_100_GPUS:,}/h = "
            f"{TRIALS_PER_HOUR_100_GPUS / per_hour:.2f} x that"
        )
        ratios = [a / b for a, b in zip(spent[name], buffered[name], strict=True)]
        print(
            f"  {name:8} variant, same records in 4 calls: ms per trial "
            f"{_spread(buffered[name], '{:.0f}')}, "
            f"{3.6e6 / statistics.fmean(buffered[name]):,.0f} trials/h; callback / variant "
            f"time {_spread(ratios, '{:.1f}')}"
        )


def _rotated(items: list[str], index: int) -> list[str]:
    shift = index % len(items)
    return items[shift:] + items[:shift]


def _load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--metrics", type=int, default=400, help="metrics per rate and round")
    parser.add_argument("--trials", type=int, default=40, help="trial lifecycles timed")
    parser.add_argument("--epochs", type=int, default=10, help="per-epoch batches per trial")
    parser.add_argument("--quick", action="store_true", help="2 rounds, 10 trials")
    parser.add_argument("--postgres", action="store_true", help="also a PostgreSQL-backed server")
    parser.add_argument("--server-pythonpath", help="prepended to the servers' PYTHONPATH")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--checkpoint", action="store_true", help="checkpoint sizes, no server")
    parser.add_argument("--storage-trials", type=int, default=10_000)
    parser.add_argument(
        "--checkpoint-epochs", type=int, default=15, help="checkpoints per trial if all are kept"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.trials = 2, 10
    if args.checkpoint:
        checkpoint_storage(args.storage_trials, args.checkpoint_epochs)
        return 0
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # A TERM (timeout, kill) must still run the finally blocks that stop the servers.
    signal.signal(signal.SIGTERM, _exit_on_term)
    import mlflow

    print(f"mlflow {mlflow.__version__}; load average {_load()}; {time.strftime('%Y-%m-%d %H:%M')}")
    folder = Path(tempfile.mkdtemp(prefix="nascomp-mlflow-bench-"))
    try:
        with ExitStack() as stack:
            sqlite_uri = f"sqlite:///{folder / 'mlflow.db'}"
            urls = {
                "sqlite": stack.enter_context(
                    mlflow_server(folder, "sqlite", sqlite_uri, args.server_pythonpath)
                )
            }
            if args.postgres:
                pg_uri = stack.enter_context(postgres_store(folder))
                urls["postgres"] = stack.enter_context(
                    mlflow_server(folder, "postgres", pg_uri, args.server_pythonpath)
                )
            _timed(lambda: run(urls, args))
        db = folder / "mlflow.db"
        print(f"sqlite store after the run: {db.stat().st_size / 1e6:.1f} MB")
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


def _exit_on_term(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _timed(body: Callable[[], None]) -> None:
    started = time.perf_counter()
    body()
    print(f"\nmeasured in {time.perf_counter() - started:.0f} s; load average {_load()}")


if __name__ == "__main__":
    sys.exit(main())
