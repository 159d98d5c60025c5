"""The local Ray's start: nascomp's two cuts to it against Ray's own programs.

    python bench/ray_start.py              # 6 rounds of the three sides, 2 actors each
    python bench/ray_start.py --rounds 2   # a smoke run

nascomp's local Ray (``search/tune/head.py``, ``compat.ray.lean_local_node``) differs from what
``ray.init`` starts in two ways that environment variables switch back, one each:

- ``ray-setup-worker`` (``NASCOMP_RAY_SETUP_WORKER=ray``): the raylet starts each Python worker
  through Ray's ``setup_worker.py`` instead of ``search/compat/worker_start.py``. Ray Tune gives
  every trial's actor a runtime env (environment variables), so every trial's worker of a
  search goes through that first program.
- ``ray-api-server`` (``NASCOMP_RAY_API_SERVER=ray``): the head starts Ray's API server (the
  dashboard's process, with ``include_dashboard=False`` only its usage-stats module), and
  ``ray.init`` waits until it has published its address.

Each side is a fresh process that starts the local Ray as ``nascomp search`` does, connects,
and creates ``--actors`` one-CPU actors with the runtime env Ray Tune gives a trial's actor. It
reports the seconds until the child's Ray answered (its address), the seconds from the actors'
creation until all answer, the CPU-seconds each worker process had used when its actor's
constructor began (the first program, the interpreter, Ray's imports and connection; a
process's CPU time survives ``exec``), and the CPU-seconds of the head's own processes by then
(the child, GCS, raylet, agents, API server). The sides rotate and the differences are taken
per round, because the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import at_least, load_average, machine, spread

# Each side: the environment variables that give Ray's own program back.
SIDES = {
    "nascomp": {},
    "ray-setup-worker": {"NASCOMP_RAY_SETUP_WORKER": "ray"},
    "ray-api-server": {"NASCOMP_RAY_API_SERVER": "ray"},
}
# The runtime env Ray Tune gives each trial's actor (ray/tune/execution/class_cache.py, Ray 2.60:
# its default variables and those it propagates from the driver).
TUNE_ACTOR_ENV = {"env_vars": {"PL_DISABLE_FORK": "1", "RAY_CHDIR_TO_TRIAL_DIR": "0"}}


def group_cpu(pgid: int) -> float:
    """CPU-seconds (user and system) of the live processes of group ``pgid``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ...
            total += int(fields[11]) + int(fields[12])
    return total / tick


def side_main(actors: int) -> int:
    """Start the local Ray, start ``actors`` actors, print what it took (JSON)."""
    import ray

    from nascomp.search.compat.ray import loopback_driver, use_local_token
    from nascomp.search.tune.head import LocalRay

    @ray.remote(num_cpus=1, runtime_env=TUNE_ACTOR_ENV)
    class Probe:
        def __init__(self) -> None:
            times = os.times()
            self.start_cpu = times.user + times.system

        def report(self) -> float:
            return self.start_cpu

    started = time.perf_counter()
    with LocalRay.start() as local:
        address = local.address()
        address_s = time.perf_counter() - started
        use_local_token()
        with loopback_driver(address):
            ray.init(address=address, log_to_driver=False)
        try:
            started = time.perf_counter()
            probes = [Probe.remote() for _ in range(actors)]
            reports = ray.get([probe.report.remote() for probe in probes])
            ready = time.perf_counter() - started
            head_cpu = group_cpu(local.process.pid)  # Ray puts workers in groups of their own
        finally:
            ray.shutdown()
    print(
        json.dumps(
            {
                "address_s": address_s,
                "ready_s": ready,
                "start_cpu": sum(reports) / actors,
                "head_cpu": head_cpu,
            }
        )
    )
    return 0


def run_side(kind: str, actors: int) -> dict[str, float]:
    """One side in a fresh process: its JSON report."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's unix sockets
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    for switches in SIDES.values():
        for name in switches:
            env.pop(name, None)
    env.update(SIDES[kind], RAY_TMPDIR=str(ray_tmp))
    command = [sys.executable, str(Path(__file__).resolve()), "--side", "--actors", str(actors)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} side failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


MEASURES = {
    "address_s": "Ray answered, s",
    "ready_s": "actors ready, s",
    "start_cpu": "CPU-s per worker start",
    "head_cpu": "head's processes, CPU-s",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=at_least(1), default=6, help="rounds of the three sides")
    parser.add_argument(
        "--actors", type=at_least(1), default=2, help="actors per run, one CPU each"
    )
    parser.add_argument("--side", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        return side_main(args.actors)
    cpus = os.cpu_count() or 1
    if args.actors > cpus:  # the local Ray has one CPU per core: the rest never started
        parser.error(f"--actors: at most {cpus}, one CPU each on this machine; got {args.actors}")
    print(f"machine: {machine()}; load average {load_average()}")
    print(f"{args.actors} actors with Ray Tune's trial runtime env, {args.rounds} rounds")
    names = list(SIDES)
    runs: dict[str, list[dict[str, float]]] = {side: [] for side in names}
    for i in range(args.rounds):
        for side in names[i % len(names) :] + names[: i % len(names)]:  # rotate the order
            runs[side].append(run_side(side, args.actors))
            line = ", ".join(f"{key} {value:.2f}" for key, value in runs[side][-1].items())
            print(f"  round {i + 1} {side:16s} {line}  (load {load_average()})", flush=True)
    print()
    print("| side | " + " | ".join(MEASURES.values()) + " |")
    print("|---" * (len(MEASURES) + 1) + "|")
    for side in names:
        cells = [str(spread([run[key] for run in runs[side]])) for key in MEASURES]
        print(f"| {side} | " + " | ".join(cells) + " |")
    print("\nwhat each of Ray's programs costs more than nascomp's (per round):")
    for side in names[1:]:
        for key, label in MEASURES.items():
            diffs = [a[key] - b[key] for a, b in zip(runs[side], runs["nascomp"], strict=True)]
            print(f"  {side}: {label}: {spread(diffs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
