"""``nascomp ui``'s start: MLflow's job execution off (nascomp's default) against on (MLflow's).

    python bench/ui_start.py              # 5 alternating pairs
    python bench/ui_start.py --rounds 1   # a smoke run

``nascomp ui`` serves the MLflow UI with ``mlflow server``. MLflow 3 also runs its GenAI jobs
(trace rollups, prompt optimisation) from that server in huey consumer processes, each of
which imports MLflow; nothing of the runs pages, the model registry or nascomp's tags uses
them. ``nascomp ui`` turns them off unless ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` is set
(``search/cli.py: ui_server_env``); the ``mlflow-jobs`` side sets it to ``true``, as MLflow's
own default has it.

Each side is the real ``nascomp ui`` command on the same sqlite store (made once, before the
timed runs), in a session of its own as a terminal starts it. It reports the seconds until the
command printed the runs page's URL (the server answered its health check and the store was
read), then, ``--settle`` seconds later, the processes of its session (the command, the server,
its workers and helpers), their resident memory and the CPU-seconds they had used. Ctrl-C
stops it. The sides alternate (A B, B A, ...) and the differences are taken per pair, because
the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import at_least, load_average, machine, spread

JOBS = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
SIDES = {"nascomp": None, "mlflow-jobs": "true"}  # the variable's value on each side
MEASURES = {
    "answered_s": "URL printed, s",
    "processes": "processes",
    "rss_mb": "resident MB",
    "cpu_s": "CPU-s",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def session_usage(session: int) -> tuple[int, float, float]:
    """(processes, resident MB, CPU-seconds) of the live processes of ``session``."""
    tick, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    count, rss, cpu = 0, 0, 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        # fields after the name: state, ppid, pgrp, session, ...; utime, stime; ...; rss
        if int(fields[3]) != session or fields[0] == "Z":
            continue
        count += 1
        cpu += int(fields[11]) + int(fields[12])
        rss += int(fields[21])
    return count, rss * page / 2**20, cpu / tick


def run_side(kind: str, store: str, settle_s: float) -> dict[str, float]:
    """One ``nascomp ui`` of side ``kind``: its figures."""
    env = {key: value for key, value in os.environ.items() if key != JOBS}
    if SIDES[kind] is not None:
        env[JOBS] = str(SIDES[kind])
    exe = Path(sys.executable).with_name("nascomp")
    command = [str(exe), "ui", "--tracking-uri", store, "--port", str(free_port())]
    started = time.perf_counter()
    ui = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:  # to the end: the server logs its requests to this pipe
        assert ui.stdout is not None
        for line in ui.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, daemon=True).start()
    seen: list[str] = []
    try:
        while True:
            line = lines.get(timeout=180)
            if line is None:
                raise RuntimeError(f"{kind}: nascomp ui ended:\n{''.join(seen[-20:])}")
            seen.append(line)
            if line.startswith("MLflow UI: "):
                answered = time.perf_counter() - started
                break
        time.sleep(settle_s)
        count, rss, cpu = session_usage(ui.pid)
    finally:
        ui.send_signal(signal.SIGINT)
        try:
            ui.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
            ui.wait()
    return {"answered_s": answered, "processes": count, "rss_mb": rss, "cpu_s": cpu}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=at_least(1), default=5, help="alternating pairs")
    parser.add_argument(
        "--settle", type=float, default=5.0, help="seconds after the URL before the count"
    )
    args = parser.parse_args(argv)
    print(f"machine: {machine()}; load average {load_average()}")
    print(f"`nascomp ui` with MLflow's job execution off and on, {args.rounds} pair(s)")
    names = list(SIDES)
    runs: dict[str, list[dict[str, float]]] = {side: [] for side in names}
    with tempfile.TemporaryDirectory(prefix="nascomp-ui-") as folder:
        store = f"sqlite:///{folder}/mlflow.db"
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=store).search_experiments()  # the schema, once
        for i in range(args.rounds):
            for side in names if i % 2 == 0 else names[::-1]:
                runs[side].append(run_side(side, store, args.settle))
                line = ", ".join(f"{key} {value:.1f}" for key, value in runs[side][-1].items())
                print(f"  pair {i + 1} {side:12s} {line}  (load {load_average()})", flush=True)
    print()
    print("| side | " + " | ".join(MEASURES.values()) + " |")
    print("|---" * (len(MEASURES) + 1) + "|")
    for side in names:
        cells = [str(spread([run[key] for run in runs[side]])) for key in MEASURES]
        print(f"| {side} | " + " | ".join(cells) + " |")
    print("\nmlflow-jobs / nascomp, per pair:")
    for key, label in MEASURES.items():
        ratios = [
            a[key] / b[key] for a, b in zip(runs["mlflow-jobs"], runs["nascomp"], strict=True)
        ]
        print(f"  {label}: {spread(ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
