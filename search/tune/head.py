"""A local Ray started in a child process, so that it comes up while the driver imports.

``ray.init()`` on a machine without a cluster starts Ray's processes (GCS, raylet, agents)
and waits for them: 3 to 4.5 s of wall time on a 2-core machine, most of it with one core
idle. Before it, the driver spends 3 to 4 s on one core importing MLflow, Ray Tune and
Optuna and checking the experiment. In one process the two run one after the other; a
thread cannot overlap them (both load shared libraries, which deadlocked in the dynamic
loader, docs/benchmarks.md). So ``nascomp search`` starts this module as a child process
first, before it even imports the experiment's schema (torch, 2 to 3 s): the child calls
``ray.init()``, prints the cluster's address and waits; the driver connects to that address
when it needs Ray (0.1 s instead of 3 to 4.5 s). An experiment that fails its checks kills
the child before the error is printed.

The child owns the cluster, and the cluster lives exactly as long as the driver needs it:

- the child runs in a process group of its own, with every process of its Ray: once the
  driver has disconnected (or if it never connected: a failed check, an interrupt), the
  driver kills that group, and nothing is left behind;
- a driver that dies without doing so (SIGKILL) closes the child's stdin with it, and the
  child shuts Ray down as ``ray.init``'s own driver would;
- the child ignores Ctrl-C (its own session): the driver handles the interrupt and stops it.

Standard library only in the parent: this module is imported before the driver's imports.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from nascomp.search.errors import SearchError
from nascomp.search.paths import check_writable_folder


def set_ray_environment() -> None:
    """The environment every nascomp driver and its local Ray share (set before either starts,
    inherited by Ray's processes and workers). Values the user set are kept."""
    # Intermediate reports carry the cheap metrics only (latency is measured once, at the end);
    # Tune would otherwise insist that every report holds every objective.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune's CSV and JSON trial logs are added by the driver (search.driver); its TensorBoard
    # one is left out: nascomp logs to MLflow, and tensorboardX printed "NaN or Inf found in
    # input tensor." into the search's output for every diverged trial, and took a thread and
    # about 11 ms of the driver per trial.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Trials run in the folder `nascomp search` was started in, not in Tune's trial folder:
    # a path the user's own code opens relative to where they work (a data file, a label
    # map) resolves in the trials as it did in the checks before the search. Nothing of ours
    # writes relative to it.
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    # Snapshot the experiment (trials, Optuna study) every second rather than every 10 s or
    # more while it is small: a driver killed between snapshots loses the trials it started
    # since the last one. "auto": the period grows with the snapshot's cost
    # (compat.ray.snapshots_every, which the driver applies).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "auto")
    # A new local Ray starts one Python worker per CPU when the driver connects. Tune puts
    # every trial's actor in a placement group, and Ray gives those new workers, never the
    # prestarted ones, which it kills once idle: 0.7 CPU-s each, spent while the driver starts
    # (measured on the 2-core VM, Ray 2.60). Connecting to a running cluster, it changes nothing.
    os.environ.setdefault("RAY_prestart_worker_first_driver", "0")


# Ray reads this when it is imported (ray_constants.ENABLE_RAY_CLUSTER; Ray 2.60). False, as
# on macOS and Windows by default, makes a node's IP the loopback address: its GCS, raylet and
# workers then listen on 127.0.0.1 alone. On Linux Ray otherwise takes the machine's address
# and listens on every interface, which a search on one machine never needs.
LOCAL_ONLY_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def local_only_environment() -> dict[str, str]:
    """The environment of the child that starts this machine's Ray (inherited by every process
    of that Ray): Ray serving this machine alone, unless the user set the variable."""
    env = dict(os.environ)
    env.setdefault(LOCAL_ONLY_VARIABLE, "0")
    return env


def machine_cpus() -> int:
    """The CPUs this process may run on (its affinity), which the local Ray offers trials."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def starting_local_ray(address: str | None) -> contextlib.AbstractContextManager[LocalRay | None]:
    """This machine's Ray, starting now in a child process, unless the search runs on a
    cluster (``address``, or ``RAY_ADDRESS``); leaving the block stops it."""
    if address or os.environ.get("RAY_ADDRESS"):
        return contextlib.nullcontext()
    check_ray_temp_root()
    check_ray_token_folder()
    return LocalRay.start()


def check_ray_token_folder() -> None:
    """ConfigError (one line) where the local Ray would write its token file and cannot: Ray
    2.60 creates ``~/.ray/auth_token`` as it starts unless told otherwise, and under a
    read-only home it failed after the teacher had trained (a helper's sweep)."""
    told = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled" or any(map(os.getenv, told)):
        return
    token = Path.home() / ".ray" / "auth_token"
    if not token.is_file():
        check_writable_folder(token.parent, "HOME (the local Ray writes its token in ~/.ray)")


# The longest path under the temp root Ray binds a unix socket at (a session named by its start
# time and the pid, up to 7 digits on Linux), and the longest such path Linux takes (108 bytes
# with the terminating NUL).
_LONGEST_SOCKET = "/session_2000-01-01_00-00-00_000000_4194304/sockets/plasma_store"
_SOCKET_PATH_MAX = 107


def check_ray_temp_root() -> None:
    """SearchError (one line, naming the variable that chose it) where a local Ray cannot keep
    its sessions under :func:`ray_temp_root`: a path with a character ASCII lacks (Ray's core
    worker encodes it as ASCII) or too long for its sockets (a cluster scheduler's scratch
    TMPDIR). Ray failed only after the teacher had trained, naming neither variable."""
    root = ray_temp_root()
    variable = "RAY_TMPDIR" if "RAY_TMPDIR" in os.environ else "TMPDIR"
    why = None
    if not str(root).isascii():
        why = "Ray takes ASCII paths alone"
    elif len(os.fsencode(f"{root}{_LONGEST_SOCKET}")) > _SOCKET_PATH_MAX:
        room = _SOCKET_PATH_MAX - len(_LONGEST_SOCKET) - len("/ray")
        why = (
            f"{variable} is {len(os.fsencode(root.parent))} bytes long; for its unix sockets "
            f"Ray needs one of at most {room}"
        )
    if why is not None:
        raise SearchError(
            f"{variable}: the local Ray keeps its sockets under {root}, which it cannot use "
            f"({why}); set RAY_TMPDIR to a short ASCII folder, e.g. /tmp"
        )


def ray_temp_root() -> Path:
    """The folder where a local Ray keeps its sessions' logs and sockets, as Ray 2.60 picks it
    (``ray._common.utils.get_default_ray_temp_dir``)."""
    if "RAY_TMPDIR" in os.environ:
        base = os.environ["RAY_TMPDIR"]
    elif sys.platform.startswith("linux") and "TMPDIR" in os.environ:
        base = os.environ["TMPDIR"]
    elif sys.platform.startswith(("linux", "darwin")):
        base = "/tmp"
    else:
        base = tempfile.gettempdir()
    return Path(base) / "ray"


class LocalRay:
    """The child process that runs this machine's Ray for one search (see the module)."""

    def __init__(self, process: subprocess.Popen[str], log: IO[str]) -> None:
        self.process = process
        self.log = log
        self.started = time.time()
        self._address: str | None = None
        self._closed = False

    @classmethod
    def start(cls) -> LocalRay:
        set_ray_environment()
        log = tempfile.TemporaryFile(mode="w+", prefix="nascomp-ray-")  # noqa: SIM115 (close)
        process = subprocess.Popen(
            [sys.executable, "-m", __name__],
            env=local_only_environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,  # its own process group: Ray's processes, killable at once
        )
        return cls(process, log)

    def address(self) -> str:
        """The cluster's address, once the child's ``ray.init`` has returned."""
        if self._address is None:
            assert self.process.stdout is not None
            line = self.process.stdout.readline().strip()
            if not line:
                self.process.wait()
                raise SearchError(f"the local Ray did not start: {self._last_error()}")
            self._address = line
        return self._address

    def close(self) -> None:
        """Stop Ray: kill the child's process group, which holds every process of this Ray
        (GCS, raylet, agents, workers). Called once the driver has disconnected, or never
        connected: nothing in it is still needed then. 0.04 s, against 1.4 to 1.7 s for
        ``ray.shutdown`` in the child (measured on the 2-core VM, Ray 2.60). Idempotent."""
        if self._closed:
            return
        self._closed = True
        # Even when the child has exited (its Ray failed to start), its processes may not have.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.log):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if self._address is None:
            self._discard_session()

    def _discard_session(self) -> None:
        """Remove the session folder of a Ray the driver never connected to (a search refused
        by its checks, or interrupted before it needed Ray): bad input leaves nothing behind.
        Ray's session folders (its logs) of a search that ran stay, as Ray leaves them. The
        folder is named after the child's process id, and made after it started."""
        root = ray_temp_root()
        latest = root / "session_latest"
        for folder in root.glob(f"session_*_{self.process.pid}"):
            with contextlib.suppress(OSError):
                if folder.stat().st_mtime < self.started - 1:
                    continue  # an older Ray's, whose process had the same id
                if latest.is_symlink() and Path(os.readlink(latest)) == folder:
                    latest.unlink()
                shutil.rmtree(folder, ignore_errors=True)

    def _last_error(self) -> str:
        self.log.seek(0)
        lines = [line.strip() for line in self.log.read().splitlines() if line.strip()]
        return lines[-1] if lines else f"exit status {self.process.returncode}"

    def __enter__(self) -> LocalRay:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _serve() -> None:
    """The child: start Ray, print its address, hold it until stdin closes, shut it down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import logging

    from nascomp.search.collector import imports_uncollected

    with imports_uncollected():  # Ray's modules and state are no garbage
        import ray

        from nascomp.search.compat.ray import keep_token_private, lean_local_node

        lean_local_node()
        # "local": a Ray of its own, always. Without an address ray.init joins the cluster a
        # `ray start` on this machine recorded (<temp dir>/ray_current_cluster), unsaid, on
        # whatever interfaces it listens on (found by a helper's sweep).
        context = ray.init(
            address="local",
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
        keep_token_private()
    print(context.address_info["gcs_address"], flush=True)
    # The parent reads one line: anything printed later must not fill a pipe nobody reads.
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), sys.stdout.fileno())
    sys.stdin.read()
    ray.shutdown()


if __name__ == "__main__":
    _serve()
