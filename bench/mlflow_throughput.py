"""How many metrics per second, and trials per hour, does one MLflow server take?

    python bench/mlflow_throughput.py                    # rates (5 rounds) and lifecycles
    python bench/mlflow_throughput.py --lifecycle-only   # lifecycles only (3 rounds)
    python bench/mlflow_throughput.py --quick            # 2 rounds of each, 8-trial blocks
    python bench/mlflow_throughput.py --postgres         # and a PostgreSQL-backed server
    python bench/mlflow_throughput.py --checkpoint       # checkpoint sizes only, no server
    python bench/mlflow_throughput.py --count-slots 8,400  # calls per trial only, no server

Starts a real ``mlflow server --backend-store-uri sqlite:///TMP/mlflow.db --host 127.0.0.1
--port <free port> --workers 1`` (artifacts served, stored under TMP), waits for ``/health``,
and measures from one client, as nascomp's driver is the only writer. With ``--postgres``, a
second server on a throw-away PostgreSQL cluster (``initdb`` in TMP, listening on 127.0.0.1
only; needs the PostgreSQL server binaries and ``psycopg2`` importable by the server, e.g.
``--server-pythonpath DIR`` after ``pip install --target DIR psycopg2-binary``) runs at the
same time, and the two take turns in every measurement:

* metrics per second, side by side in each round (the order rotating between rounds, because
  the machine is shared): one metric per call (``MlflowClient.log_metric``), 8 metrics per call
  (``log_batch``, about what ``search/tracking/`` logs per epoch of a trial) and 1,000 metrics
  per call (``log_batch`` of a large batch); the batched / one-per-call ratio per round;
* trial lifecycles through the real driver-side callback
  (``nascomp.search.tune.callbacks.MlflowTrialCallback`` writing through
  ``nascomp.search.tracking.runlog.RunLog``, fed stand-ins for Ray Tune's trial objects), in
  blocks: each block is a small search (its own parent run and journal file, as
  ``search/driver.py`` sets them up) of ``--trials`` trials run ``--slots`` at a time, whose
  events come in the order a Tune driver receives them (``tune_schedule``: trials of different
  epoch times drift apart, a finished trial's slot starts the next one). Per trial: start
  (nested run, tags, the ~45 params of a quickstart trial's flat config), ``--epochs`` epoch
  results, the final result, the end (tags, ``set_terminated``) and the parent run's
  hypervolume; ``on_step_end`` after every event as Tune's loop calls it, and ``log.drain`` at
  the end as the driver does. Three settings on the same schedule: ``tracking.batch_s=0`` (each
  write sent at once), ``--batch-s`` (default 10: writes gathered into one ``log_batch`` per
  run), and ``batch_s=0`` with the run log's writer thread applying the writes, as the driver
  runs it (the callback's calls only queue; the thread is stopped before the drain). A block
  takes a few seconds, less than ``--batch-s``, so the batched setting writes everything in
  its final drain: its time in the loop is no measure of a real search's, where a flush falls
  in the loop every ``batch_s``. Stores and settings take turns in every round, each round
  another first. Reported:
  HTTP requests per trial (MLflow's ``rest_utils.http_request`` counted) and client method
  calls per trial (a thin counting wrapper over the client), ms per trial (the block's time /
  its trials) and the trials/h that makes, the ms per trial spent in the callback's calls
  (what Tune's loop waits for), and per round the batched / unbatched time and the writer
  thread's / the loop thread's time in the loop.
  Artifacts (a trial's compressed model) are not logged: the stand-in trials have none.

``--count-slots 1,8,64,400``: the calls per trial only, through the same callback and
schedule with a stub client instead of a server (nothing timed), at each number of trials
running at a time: how far batching reduces them as concurrency grows.

``--checkpoint``: bytes of one trial checkpoint (``torch.save`` of model + optimizer state)
over all 108 architectures of the quickstart space, and the storage of 10,000 trials when each
keeps its last checkpoint or all of them.

Every server is started in its own process group and killed at the end, whatever happens
(the PostgreSQL cluster is stopped with ``pg_ctl``); the temporary folder is removed unless
``--keep``.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import os
import random
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
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import at_least

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HOST = "127.0.0.1"
BATCH_SIZES = (1, 8, 1000)
TRIALS_PER_HOUR_100_GPUS = 100 * 4 * 60  # 100 GPUs x 4 trials each x 1-minute trials


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

    from nascomp.search.driver import trial_base
    from nascomp.search.experiment import load_experiment
    from nascomp.search.samplers.space import DefineByRun

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


class Counting:
    """A thin wrapper over an ``MlflowClient`` that counts its method calls by name."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return call


@contextmanager
def counting_http(counter: Counter[str]) -> Iterator[None]:
    """Count the HTTP requests MLflow's REST client sends (``rest_utils.http_request``)."""
    import mlflow.utils.rest_utils as rest

    original = rest.http_request

    def counted(*args: Any, **kwargs: Any) -> Any:
        counter["http"] += 1
        return original(*args, **kwargs)

    rest.http_request = counted
    try:
        yield
    finally:
        rest.http_request = original


Event = tuple[str, int, int]  # (kind, trial index, epoch)


def tune_schedule(n_trials: int, n_epochs: int, slots: int, seed: int = 0) -> list[Event]:
    """The callback events of ``n_trials`` trials run ``slots`` at a time, in the order a Tune
    driver receives them: the first ``slots`` start together; each trial's epochs take its own
    time (0.5 to 1.5 units, drawn per trial), so the trials drift apart; a trial reports
    ``n_epochs`` results, then its final result and completes, and its slot starts the next
    trial. Kinds: ``start``, ``result`` (an epoch), ``final`` (final result + complete)."""
    rng = random.Random(seed)
    events: list[Event] = []
    running: list[tuple[float, int, int, float]] = []  # (time of next report, trial, epoch, dt)
    started = 0

    def start(now: float) -> None:
        nonlocal started
        events.append(("start", started, 0))
        epoch_s = rng.uniform(0.5, 1.5)
        heapq.heappush(running, (now + epoch_s, started, 1, epoch_s))
        started += 1

    for _ in range(min(slots, n_trials)):
        start(0.0)
    while running:
        now, trial, epoch, epoch_s = heapq.heappop(running)
        if epoch <= n_epochs:
            events.append(("result", trial, epoch))
            heapq.heappush(running, (now + epoch_s, trial, epoch + 1, epoch_s))
        else:
            events.append(("final", trial, 0))
            if started < n_trials:
                start(now)
    return events


@dataclass
class Block:
    """One small search's trials through the callback: time and calls."""

    ms: float
    trials: int
    calls: Counter[str]
    loop_ms: float = 0.0  # of ms, the time in the callback's calls (what Tune's loop waits)


def lifecycle_block(
    tracker: Any,
    folder: Path,
    config: dict[str, Any],
    schedule: list[Event],
    n_epochs: int,
    batch_s: float,
    background: bool = False,
) -> Block:
    """Run ``schedule`` through a fresh ``MlflowTrialCallback`` set up as the driver sets it up
    (own parent run, journal in the result folder, ``log.batch_s``), calling ``on_step_end``
    after every event as Tune's loop does, and ``log.drain`` at the end as the driver does
    when the search ends. Times everything from the first trial's start to the drain; the
    parent run's creation and ``setup`` are not timed. ``background``: the run log's writer
    thread applies the writes (as the driver runs it), stopped before the drain."""
    from nascomp.search.tracking.runlog import JOURNAL
    from nascomp.search.tune.callbacks import MlflowTrialCallback

    objectives = {"val_accuracy": "max", "size_bytes": "min", "latency_ms": "min"}
    search_run_id = tracker.start_search(
        run_name=f"bench-search-batch-{batch_s:g}",
        experiment_yaml="bench: true\n",
        space=[],
        objectives=objectives,
        git_commit=None,
    )
    folder.mkdir(parents=True)
    callback = MlflowTrialCallback(
        tracker,
        search_run_id,
        objectives,
        [],
        journal=folder / JOURNAL,
        echo=print,
        background=background,
    )
    callback.log.batch_s = batch_s  # as search/driver.py sets it from tracking.batch_s
    counting = Counting(callback.log.client)
    callback.log.client = counting
    callback.setup()  # as Tune does before the first trial
    counting.calls.clear()
    trials: dict[int, SimpleNamespace] = {}
    with counting_http(counting.calls):
        started = time.perf_counter()
        for kind, index, epoch in schedule:
            if kind == "start":
                trial = SimpleNamespace(
                    trial_id=uuid.uuid4().hex[:8], config=config, last_result=None
                )
                trials[index] = trial
                callback.on_trial_start(iteration=0, trials=[], trial=trial)
            elif kind == "result":
                callback.on_trial_result(0, [], trials[index], epoch_result(epoch))
            else:
                trial = trials[index]
                trial.last_result = final_result(n_epochs, index)
                callback.on_trial_result(0, [], trial, trial.last_result)
                callback.on_trial_complete(0, [], trial)
            callback.on_step_end(0, [])
        loop_ms = (time.perf_counter() - started) * 1e3
        callback.log.stop_writer()  # as the driver's end does
        if not callback.log.drain(60.0):
            raise RuntimeError(f"writes left after 60 s: {callback.log.last_error}")
        ms = (time.perf_counter() - started) * 1e3
    tracker.client.set_terminated(search_run_id, "FINISHED")
    return Block(ms=ms, trials=len(trials), calls=counting.calls, loop_ms=loop_ms)


class StubClient:
    """Stands in for ``MlflowClient`` where only the calls are counted: runs get fresh ids,
    the search has no earlier runs, every other method answers None."""

    tracking_uri = "stub"

    def get_experiment_by_name(self, name: str) -> Any:
        return SimpleNamespace(experiment_id="0", tags={})

    def get_experiment(self, experiment_id: str) -> Any:
        return SimpleNamespace(experiment_id=experiment_id, tags={})

    def create_run(self, *args: Any, **kwargs: Any) -> Any:
        return SimpleNamespace(info=SimpleNamespace(run_id=uuid.uuid4().hex))

    def search_runs(self, *args: Any, **kwargs: Any) -> list:
        return []

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def count_calls(slot_counts: list[int], folder: Path, args: argparse.Namespace) -> None:
    """Client calls per trial through the real callback and run log with no server (a stub
    client), at several numbers of trials running at a time: ``5 x slots`` trials each (at
    least 24), batch_s 0 and a batch_s no flush reaches before the final drain (as when the
    window holds many trials' writes)."""
    from nascomp.search.tracking.store import Tracker

    config = quickstart_config()
    print(
        f"\nclient calls per trial, no server (stub client), {args.epochs} epoch results + final "
        f"per trial, everything held until the final drain when batched:"
    )
    for slots in slot_counts:
        n_trials = max(24, 5 * slots)
        schedule = tune_schedule(n_trials, args.epochs, slots)
        counts = []
        for batch_s in (0.0, 1e9):
            tracker = Tracker("stub", "bench-lifecycle")
            tracker.__dict__["client"] = StubClient()  # Tracker.client is a cached_property
            where = folder / f"count-{slots}-{batch_s:g}"
            block = lifecycle_block(tracker, where, config, schedule, args.epochs, batch_s)
            counts.append(block.calls)
        per_trial = [sum(c.values()) / n_trials for c in counts]
        batched = ", ".join(f"{m} {c / n_trials:.2f}" for m, c in sorted(counts[1].items()))
        print(
            f"  {slots:4} at a time, {n_trials:5} trials: {per_trial[0]:.2f} calls per trial "
            f"unbatched, {per_trial[1]:.2f} batched ({batched}); ratio "
            f"{per_trial[1] / per_trial[0]:.2f}"
        )


# ---------------------------------------------------------------- checkpoint storage
def quickstart_archs() -> list[dict[str, Any]]:
    """Every architecture of the quickstart space (spaces/quickstart.yaml), as build_model
    takes it: 3 x 2 x 3 x 2 x 3 = 108."""
    from nascomp.search.experiment import load_experiment

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

    from nascomp.spaces.models import build_model

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


def run(urls: dict[str, str], folder: Path, args: argparse.Namespace) -> None:
    if not args.lifecycle_only:
        rates(urls, args)
    lifecycles(urls, folder, args)


def rates(urls: dict[str, str], args: argparse.Namespace) -> None:
    from mlflow.tracking import MlflowClient

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


def lifecycles(urls: dict[str, str], folder: Path, args: argparse.Namespace) -> None:
    """Blocks of ``args.trials`` trials, ``args.slots`` at a time, through the real callback
    with ``batch_s`` 0 and ``args.batch_s``, and ``batch_s`` 0 with the run log's writer
    thread (as the driver runs it); stores and settings take turns in every round, each round
    another first, on the same schedule of events."""
    from nascomp.search.tracking.store import Tracker

    config = quickstart_config()
    names = list(urls)
    settings = [(0.0, False), (args.batch_s, False), (0.0, True)]
    blocks: dict[tuple[str, tuple[float, bool]], list[Block]] = {
        (name, setting): [] for name in names for setting in settings
    }
    loads = [os.getloadavg()[0]]
    for index in range(args.lifecycle_rounds):
        schedule = tune_schedule(args.trials, args.epochs, args.slots, seed=index)
        for name in _rotated(names, index):
            for setting in _rotated(settings, index + names.index(name)):
                batch_s, background = setting
                where = folder / f"results-{name}-{batch_s:g}-{int(background)}-{index}"
                tracker = Tracker(urls[name], "bench-lifecycle")
                block = lifecycle_block(
                    tracker, where, config, schedule, args.epochs, batch_s, background
                )
                blocks[(name, setting)].append(block)
        loads.append(os.getloadavg()[0])
    print(
        f"\ntrial lifecycles through the MlflowTrialCallback: {args.lifecycle_rounds} "
        f"rounds of {args.trials} trials, {args.slots} at a time, interleaved as Tune delivers "
        f"them; {len(config)} params, {args.epochs} epoch results + the final result, end "
        f"tags, set_terminated, parent hypervolume per trial; on_step_end after every event, "
        f"log.drain at the end; load average {min(loads):.2f} to {max(loads):.2f}. 'in the "
        f"loop': the ms per trial spent in the callback's calls, which Tune's loop waits for:"
    )
    for name in names:
        per_trial: dict[tuple[float, bool], list[float]] = {}
        in_loop: dict[tuple[float, bool], list[float]] = {}
        for setting in settings:
            batch_s, background = setting
            done = blocks[(name, setting)]
            n = sum(block.trials for block in done)
            per_trial[setting] = [block.ms / block.trials for block in done]
            in_loop[setting] = [block.loop_ms / block.trials for block in done]
            calls: Counter[str] = sum((block.calls for block in done), Counter())
            mean_ms = sum(block.ms for block in done) / n
            per_hour = 3.6e6 / mean_ms
            methods = ", ".join(
                f"{method} {count / n:.2f}"
                for method, count in sorted(calls.items())
                if method != "http"
            )
            label = f"batch_s={batch_s:g}" + (" writer thread" if background else "")
            print(
                f"  {name:8} {label:26} {n} trials: {calls['http'] / n:.2f} HTTP "
                f"requests per trial ({methods}); ms per trial, per block "
                f"{_spread(per_trial[setting], '{:.0f}')}, mean {mean_ms:.0f}: {per_hour:,.0f} "
                f"trials/h, {per_hour / TRIALS_PER_HOUR_100_GPUS:.2f} of "
                f"{TRIALS_PER_HOUR_100_GPUS:,}/h; in the loop {_spread(in_loop[setting], '{:.1f}')}"
            )
        inline, batched, threaded = settings
        ratios = [b / a for a, b in zip(per_trial[inline], per_trial[batched], strict=True)]
        print(
            f"  {name:8} batch_s={args.batch_s:g} / batch_s=0, ms per trial, per round: "
            f"{_spread(ratios, '{:.2f}')}"
        )
        ratios = [b / a for a, b in zip(in_loop[inline], in_loop[threaded], strict=True)]
        print(
            f"  {name:8} batch_s=0, writer thread / the loop's own thread, ms per trial in the "
            f"loop, per round: {_spread(ratios, '{:.4f}')}"
        )


def _rotated(items: list[Any], index: int) -> list[Any]:
    shift = index % len(items)
    return items[shift:] + items[:shift]


def _load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds",
        type=at_least(1),
        default=5,
        help="rounds of the metrics-per-second measurement (default %(default)s)",
    )
    parser.add_argument("--metrics", type=int, default=400, help="metrics per rate and round")
    parser.add_argument("--lifecycle-only", action="store_true", help="no metrics-per-second")
    parser.add_argument("--lifecycle-rounds", type=int, default=3, help="blocks per setting")
    parser.add_argument("--trials", type=at_least(1), default=24, help="trials per lifecycle block")
    parser.add_argument("--slots", type=int, default=8, help="trials running at a time")
    parser.add_argument("--epochs", type=at_least(1), default=10, help="epoch results per trial")
    parser.add_argument(
        "--batch-s", type=float, default=10.0, help="tracking.batch_s of the batched setting"
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds of each, 8 trials")
    parser.add_argument(
        "--count-slots", help="e.g. 1,8,64,400: calls per trial at these concurrencies, no server"
    )
    parser.add_argument("--postgres", action="store_true", help="also a PostgreSQL-backed server")
    parser.add_argument("--server-pythonpath", help="prepended to the servers' PYTHONPATH")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--checkpoint", action="store_true", help="checkpoint sizes, no server")
    parser.add_argument(
        "--storage-trials",
        type=int,
        default=10_000,
        help="trials whose checkpoint storage --checkpoint reports (default %(default)s)",
    )
    parser.add_argument(
        "--checkpoint-epochs", type=int, default=15, help="checkpoints per trial if all are kept"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.lifecycle_rounds, args.trials = 2, 2, 8
    if args.checkpoint:
        checkpoint_storage(args.storage_trials, args.checkpoint_epochs)
        return 0
    if args.count_slots:
        with tempfile.TemporaryDirectory(prefix="nascomp-mlflow-count-") as folder:
            count_calls([int(n) for n in args.count_slots.split(",")], Path(folder), args)
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
            _timed(lambda: run(urls, folder, args))
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
