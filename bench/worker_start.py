"""How a trial's Ray worker starts: nascomp's ``worker_start.py`` against Ray's ``setup_worker.py``.

    python bench/worker_start.py              # 6 alternating pairs, 2 actors each
    python bench/worker_start.py --pairs 2    # a smoke run

The raylet starts each Python worker through a first program that applies the actor's runtime
env and execs ``default_worker.py``. Ray Tune gives every trial's actor a runtime env
(environment variables), so every trial's worker of a search goes through it. nascomp's local
Ray names ``search/compat/worker_start.py`` for it (``compat.ray.lean_local_node``); with
``NASCOMP_RAY_SETUP_WORKER=ray`` it keeps Ray's ``setup_worker.py``.

Each side is a fresh process that starts the local Ray as ``nascomp search`` does
(``search/tune/head.py``), connects, and creates ``--actors`` one-CPU actors with the runtime
env Ray Tune gives a trial's actor. It reports the seconds from the actors' creation until all
answer, and the CPU-seconds each worker process had used when its actor's constructor began
(its start: the first program, the interpreter, Ray's imports and connection; the CPU time of a
process survives ``exec``). The sides alternate and the difference is taken per pair, because
the machine is shared.
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

from _common import load_average, machine, spread

SIDES = ("nascomp", "ray")
# The runtime env Ray Tune gives each trial's actor (ray/tune/execution/class_cache.py, Ray 2.60:
# its default variables and those it propagates from the driver).
TUNE_ACTOR_ENV = {"env_vars": {"PL_DISABLE_FORK": "1", "RAY_CHDIR_TO_TRIAL_DIR": "0"}}


def side_main(actors: int) -> int:
    """Start the local Ray, start ``actors`` actors, print what their starts took (JSON)."""
    import ray

    from nascomp.search.compat.ray import use_local_token
    from nascomp.search.tune.head import LocalRay

    @ray.remote(num_cpus=1, runtime_env=TUNE_ACTOR_ENV)
    class Probe:
        def __init__(self) -> None:
            times = os.times()
            self.start_cpu = times.user + times.system

        def report(self) -> float:
            return self.start_cpu

    with LocalRay.start() as local:
        use_local_token()
        ray.init(address=local.address(), log_to_driver=False)
        try:
            started = time.perf_counter()
            probes = [Probe.remote() for _ in range(actors)]
            reports = ray.get([probe.report.remote() for probe in probes])
            ready = time.perf_counter() - started
        finally:
            ray.shutdown()
    print(json.dumps({"ready_s": ready, "start_cpu": reports}))
    return 0


def run_side(kind: str, actors: int) -> dict[str, float | list[float]]:
    """One side in a fresh process: its JSON report."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's unix sockets
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}
    env.pop("RAY_ADDRESS", None)
    env.pop("NASCOMP_RAY_SETUP_WORKER", None)
    if kind == "ray":
        env["NASCOMP_RAY_SETUP_WORKER"] = "ray"
    command = [sys.executable, str(Path(__file__).resolve()), "--side", "--actors", str(actors)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} side failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=6, help="alternating pairs of runs")
    parser.add_argument("--actors", type=int, default=2, help="actors per run, one CPU each")
    parser.add_argument("--side", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        return side_main(args.actors)
    print(f"machine: {machine()}; load average {load_average()}")
    print(f"{args.actors} actors with Ray Tune's trial runtime env, {args.pairs} alternating pairs")
    ready: dict[str, list[float]] = {side: [] for side in SIDES}
    cpu: dict[str, list[float]] = {side: [] for side in SIDES}
    for i in range(args.pairs):
        for side in SIDES if i % 2 == 0 else SIDES[::-1]:
            report = run_side(side, args.actors)
            ready[side].append(float(report["ready_s"]))  # type: ignore[arg-type]
            cpu[side].append(sum(report["start_cpu"]) / args.actors)  # type: ignore[arg-type]
            print(
                f"  pair {i + 1} {side:7s} ready {ready[side][-1]:5.2f} s, "
                f"{cpu[side][-1]:.2f} CPU-s per worker start  (load {load_average()})",
                flush=True,
            )
    print()
    print("| first program | actors ready, s | CPU-s per worker start |")
    print("|---|---|---|")
    print(f"| worker_start.py (nascomp) | {spread(ready['nascomp'])} | {spread(cpu['nascomp'])} |")
    print(f"| setup_worker.py (Ray) | {spread(ready['ray'])} | {spread(cpu['ray'])} |")
    saved_s = [r - n for r, n in zip(ready["ray"], ready["nascomp"], strict=True)]
    saved_cpu = [r - n for r, n in zip(cpu["ray"], cpu["nascomp"], strict=True)]
    print(f"\nseconds saved until the actors answer (ray - nascomp, per pair): {spread(saved_s)}")
    print(f"CPU-s saved per worker start (ray - nascomp, per pair): {spread(saved_cpu)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
