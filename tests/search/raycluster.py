"""A real multi-node Ray cluster on this machine, started with the `ray start` CLI.

Each node gets its own short temporary folder and its own session (``setsid``), so teardown can
find exactly the processes this cluster started, and never touches another Ray running here: a
bare ``ray stop`` would kill every Ray on the machine, other people's included.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

AUTH_TOKEN_FILE = "auth_token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    session: int
    zombie: bool
    cmdline: str


def _proc(pid: int) -> ProcInfo | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone between listing and reading
        return None
    # The command name in field 2 may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return ProcInfo(
        pid=pid,
        ppid=int(fields[1]),
        session=int(fields[3]),
        zombie=fields[0] in ("Z", "X"),
        cmdline=raw.replace(b"\0", b" ").decode(errors="replace"),
    )


def all_processes() -> list[ProcInfo]:
    found = (_proc(int(name)) for name in os.listdir("/proc") if name.isdigit())
    return [p for p in found if p is not None]


@dataclass
class LocalRayCluster:
    """Ray nodes on this machine; the head listens on a free port."""

    port: int = field(default_factory=free_port)
    temp_dirs: list[Path] = field(default_factory=list)
    sessions: set[int] = field(default_factory=set)
    node_sessions: list[int] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    token_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rt", dir="/tmp")))

    def __post_init__(self) -> None:
        # Ray 2.60 enables token authentication: every `ray start` and the driver need the same
        # mode and token (NOTES.md). The token is this cluster's own, in its own folder: never
        # read from or written to ~/.ray, so the tests pass on a machine with an empty home.
        token = self.token_dir / AUTH_TOKEN_FILE
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)

    @property
    def env(self) -> dict[str, str]:
        """What the nodes and any driver of this cluster must have in their environment."""
        return {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.token_dir / AUTH_TOKEN_FILE),
        }

    @property
    def address(self) -> str:
        # The head advertises the machine's own IP, but its GCS listens on every interface, so
        # loopback works for the second `ray start` and the driver, and survives IP changes.
        return f"127.0.0.1:{self.port}"

    def start_head(self, num_cpus: int = 1) -> None:
        self._ray_start(
            "--head",
            f"--port={self.port}",
            "--include-dashboard=false",
            num_cpus=num_cpus,
        )

    def add_node(self, num_cpus: int = 1, prefix: tuple[str, ...] = ()) -> None:
        """A worker node; ``prefix`` runs `ray start` under another command (e.g. ``unshare``
        to give the node a file system view of its own)."""
        self._ray_start(f"--address={self.address}", num_cpus=num_cpus, prefix=prefix)

    def node_processes(self, index: int) -> list[ProcInfo]:
        """Live processes of the ``index``-th node started (0: the head)."""
        everything = self.processes()
        marker, session = str(self.temp_dirs[index]), self.node_sessions[index]
        own = {p.pid for p in everything if p.session == session or marker in p.cmdline}
        changed = True
        while changed:
            more = {p.pid for p in everything if p.ppid in own} - own
            own |= more
            changed = bool(more)
        return [p for p in everything if p.pid in own]

    def kill_node(self, index: int) -> None:
        """SIGKILL every process of one node, as when a machine is lost."""
        for proc in self.node_processes(index):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)

    def _ray_start(self, *args: str, num_cpus: int, prefix: tuple[str, ...] = ()) -> None:
        # Ray's unix socket paths live under the temp dir and must stay under ~100 characters,
        # hence /tmp rather than pytest's long tmp_path. A node of its own per folder also puts
        # that folder in every command line of the node's daemons.
        temp_dir = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
        self.temp_dirs.append(temp_dir)
        ray = Path(sys.executable).with_name("ray")
        command = [
            *prefix,
            str(ray),
            "start",
            *args,
            f"--num-cpus={num_cpus}",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
        ]
        # A new session per node: its daemons and their worker processes (which call setpgid
        # but not setsid) keep this session id even when orphaned, so teardown finds them all.
        started = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        self.sessions.add(started.pid)
        self.node_sessions.append(started.pid)
        output, _ = started.communicate(timeout=120)
        self.log.append(output)
        if started.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{output}")

    def processes(self) -> list[ProcInfo]:
        """Live processes of this cluster: by session, by temp dir in the command line, and
        every descendant of those."""
        everything = [p for p in all_processes() if not p.zombie and p.pid != os.getpid()]
        markers = [str(d) for d in self.temp_dirs]
        ours = {
            p.pid
            for p in everything
            if p.session in self.sessions or any(m in p.cmdline for m in markers)
        }
        children: dict[int, list[int]] = {}
        for p in everything:
            children.setdefault(p.ppid, []).append(p.pid)
        stack = list(ours)
        while stack:
            for child in children.get(stack.pop(), []):
                if child not in ours:
                    ours.add(child)
                    stack.append(child)
        return [p for p in everything if p.pid in ours]

    def by_gcs_port(self) -> list[ProcInfo]:
        """Live processes that name this cluster's GCS port: a check independent of the temp
        dirs and sessions that `processes` goes by (workers renamed ray::... do not show it)."""
        pattern = re.compile(rf"--gcs[-_](address=\S+:|server_port=){self.port}\b")
        return [p for p in all_processes() if not p.zombie and pattern.search(p.cmdline)]

    def stop(self, grace_s: float = 8.0, kill_wait_s: float = 5.0) -> list[ProcInfo]:
        """SIGTERM this cluster's processes, SIGKILL what is left; return any survivors."""
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, kill_wait_s)):
            targets = self.processes()
            for proc in targets:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sig)
            deadline = time.monotonic() + wait_s
            while self.processes() and time.monotonic() < deadline:
                time.sleep(0.2)
        survivors = self.processes()
        if not survivors:
            for temp_dir in [*self.temp_dirs, self.token_dir]:
                shutil.rmtree(temp_dir, ignore_errors=True)
        return survivors


def processes_in_sessions(sessions: set[int]) -> list[ProcInfo]:
    """Live (not zombie) processes whose session id is one of ``sessions``."""
    return [p for p in all_processes() if p.session in sessions and not p.zombie]
