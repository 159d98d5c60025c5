"""The local Ray that ``nascomp search`` starts in a child process (search/tune/head.py): a real
Ray, connected to by a real driver, and gone with its process group however the search ends."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from nascomp.search.errors import SearchError
from nascomp.search.tune.head import LocalRay, check_ray_temp_root, check_ray_token_folder

pytestmark = pytest.mark.usefixtures("workdir")  # its own RAY_TMPDIR, no RAY_ADDRESS


def _gone(column: str, value: int, within: float = 20.0) -> bool:
    """No live process whose ``column`` (``pid``, ``pgid``) is ``value`` (zombies that init
    has not reaped yet aside) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["ps", "-eo", f"{column}=,stat="], capture_output=True, text=True, check=True
        ).stdout
        rows = [line.split() for line in out.splitlines()]
        if not [row for row in rows if row[0] == str(value) and not row[1].startswith("Z")]:
            return True
        time.sleep(0.1)
    return False


def _commands(pgid: int) -> list[str]:
    """The command lines of the live processes of group ``pgid``."""
    out = subprocess.run(
        ["ps", "-ww", "-eo", "pgid=,args="], capture_output=True, text=True, check=True
    ).stdout
    rows = [line.strip().split(maxsplit=1) for line in out.splitlines()]
    return [row[1] for row in rows if len(row) == 2 and row[0] == str(pgid)]


def _listening(pids: set[int]) -> list[str]:
    """The local addresses (``ip:port``, IPv4-mapped IPv6 shown as IPv4) of the TCP sockets
    that ``pids`` listen on, read from /proc."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):  # a process that has exited meanwhile
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        inodes.add(link[len("socket:[") : -1])
    found = []
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            hexip, hexport = fields[1].split(":")
            raw = bytes.fromhex(hexip)
            # /proc writes each 32-bit word in the host's byte order (little-endian here)
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, width, 4))
            ip = ipaddress.ip_address(words)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            found.append(f"{ip}:{int(hexport, 16)}")
    return found


def _group_pids(pgid: int) -> set[int]:
    out = subprocess.run(["ps", "-eo", "pid=,pgid="], capture_output=True, text=True, check=True)
    rows = [line.split() for line in out.stdout.splitlines()]
    return {int(row[0]) for row in rows if row[1] == str(pgid)}


def test_a_driver_connects_and_ray_stops_with_the_child(tmp_path: Path) -> None:
    import ray

    shipped = tmp_path / "nascomp_t_shipped"
    shipped.mkdir()
    (shipped / "__init__.py").write_text("ANSWER = 'shipped'\n")

    from nascomp.search.compat.ray import WORKER_START, loopback_driver, use_local_token
    from nascomp.search.driver import check_ray_address

    with LocalRay.start() as local:
        address = local.address()
        host, port = address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0  # this machine's Ray, for this machine
        check_ray_address(address)  # a real GCS answers the gRPC check
        use_local_token()
        with loopback_driver(address):
            ray.init(
                address=address, log_to_driver=False, runtime_env={"py_modules": [str(shipped)]}
            )
        try:

            @ray.remote
            def pid() -> int:
                return os.getpid()

            worker = ray.get(pid.remote())
            assert worker != os.getpid()

            # A worker with a runtime env, as every Ray Tune trial's actor has, is started by
            # nascomp's worker_start.py (compat.ray.lean_local_node), which sets its variables.
            @ray.remote(runtime_env={"env_vars": {"NASCOMP_T_VAR": "${HOME}-${NASCOMP_T_NO}"}})
            def variable() -> str | None:
                return os.environ.get("NASCOMP_T_VAR")

            assert ray.get(variable.remote()) == os.environ["HOME"] + "-"

            # A user's module shipped as a search ships it (the job's runtime_env py_modules:
            # Ray puts its unpacked copy first on the worker's PYTHONPATH, a context variable).
            @ray.remote
            def from_shipped() -> str:
                import nascomp_t_shipped  # type: ignore[import-not-found]

                return nascomp_t_shipped.ANSWER

            assert ray.get(from_shipped.remote()) == "shipped"
            # A head without the log monitor and the autoscaler's monitor (compat.ray:
            # lean_local_node): nothing streams logs to a driver or scales one machine.
            group = _commands(local.process.pid)
            assert any("gcs_server" in c for c in group) and any("raylet" in c for c in group)
            assert not [c for c in group if "log_monitor.py" in c or "/monitor.py" in c]
            # Nor the API server (the dashboard's process; dashboard/agent.py is the raylet's).
            assert not [c for c in group if "dashboard/dashboard.py" in c]
            assert any("dashboard/agent.py" in c for c in group)  # the names are right
            (raylet,) = [c for c in group if "raylet/raylet" in c]
            assert f"--python_worker_command={sys.executable} {WORKER_START} " in raylet
            # Every server of this Ray (GCS, raylet, its agents, the workers' own) listens on
            # the loopback address alone: Ray on Linux listens on every interface otherwise.
            listening = _listening(_group_pids(local.process.pid) | {worker})
            assert f"127.0.0.1:{port}" in listening, listening  # the GCS: the check can fail
            assert all(a.startswith(("127.", "::1:")) for a in listening), listening
            # Ray wrote its token readable by every user
            token = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray/auth_token")
            assert not token.exists() or token.stat().st_mode & 0o077 == 0
        finally:
            ray.shutdown()
        started = time.monotonic()
    assert _gone("pgid", local.process.pid, within=1.0)  # killed at once: GCS, raylet, agents
    # Ray puts each worker in a group of its own; it exits when its raylet dies.
    assert _gone("pid", worker, within=10.0)
    print(f"worker gone {time.monotonic() - started:.2f} s after the close")


def test_a_raylets_port_or_a_refused_token_is_named_before_the_search(tmp_path: Path) -> None:
    """Another gRPC server (here the raylet's) passed the HTTP/2 check, and ray.init retried it
    for 20 s after the teacher had trained, then blamed the token; a cluster refusing this
    machine's token was named as late. Both now fail the address check, in seconds."""
    from nascomp.search.driver import check_ray_address

    with LocalRay.start() as local:
        address = local.address()
        gcs_port = address.rsplit(":", 1)[1]
        out = subprocess.run(
            ["ps", "-ww", "-eo", "pid=,pgid=,args="], capture_output=True, text=True, check=True
        ).stdout
        rows = [line.split(maxsplit=2) for line in out.splitlines()]
        (raylet_pid,) = [
            int(r[0]) for r in rows if r[1] == str(local.process.pid) and "raylet/raylet" in r[2]
        ]
        raylet = _listening({raylet_pid})[0]  # its node manager's or object manager's port
        started = time.monotonic()
        with pytest.raises(SearchError) as caught:
            check_ray_address(raylet)
        assert time.monotonic() - started < 10
        assert str(caught.value) == (
            f"--address {raylet}: a gRPC server answers there, but not a Ray cluster's GCS (it "
            "lacks the GCS's calls: a raylet's or another service's port?); give the GCS "
            "address, port 6379 by default"
        )
        # In a process of its own: Ray keeps the first token it reads for the process.
        check = (
            "from nascomp.search.driver import check_ray_address\n"
            "from nascomp.search.errors import SearchError\n"
            f"try:\n    check_ray_address('127.0.0.1:{gcs_port}')\n"
            "except SearchError as e:\n    print(e)\n"
            "else:\n    print('passed')\n"
        )
        env = {**os.environ, "RAY_AUTH_TOKEN": "not-the-clusters"}
        out = subprocess.run(
            [sys.executable, "-c", check], capture_output=True, text=True, env=env, timeout=60
        )
        assert out.stdout.startswith(
            f"--address 127.0.0.1:{gcs_port}: the cluster refused this machine's Ray token"
        ), out.stdout + out.stderr
        assert "gcs_client.cc" not in out.stderr  # Ray's C++ log line is held back
        del env["RAY_AUTH_TOKEN"]
        # A token file that is not there: a traceback before, and with RAY_AUTH_MODE=token
        # Ray's C++ client ended the process (exit 1) while its log was held: no word at all.
        env["RAY_AUTH_TOKEN_PATH"] = str(tmp_path / "none")
        for mode in ("token", None):
            if mode is None:
                env.pop("RAY_AUTH_MODE", None)
            else:
                env["RAY_AUTH_MODE"] = mode
            out = subprocess.run(
                [sys.executable, "-c", check], capture_output=True, text=True, env=env, timeout=60
            )
            assert out.stdout.startswith(
                f"--address 127.0.0.1:{gcs_port}: this machine's Ray token cannot be read ("
            ), f"{mode}: {out.returncode} {out.stdout} {out.stderr}"
        out = subprocess.run(  # this machine's own token: the GCS answers
            [sys.executable, "-c", check], capture_output=True, text=True, timeout=60
        )
        assert out.stdout == "passed\n", out.stdout + out.stderr
        # "auto", looked up as Ray looks it up (RAY_ADDRESS first), is checked the same way:
        # a refused token was Ray's error after the teacher had trained.
        auto = (
            "from nascomp.search.driver import check_ray_address\n"
            "from nascomp.search.errors import SearchError\n"
            "try:\n    print(check_ray_address('auto'))\n"
            "except SearchError as e:\n    print(e)\n"
        )
        env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{gcs_port}"}
        out = subprocess.run(
            [sys.executable, "-c", auto], capture_output=True, text=True, env=env, timeout=60
        )
        assert out.stdout == f"127.0.0.1:{gcs_port}\n", out.stdout + out.stderr
        env["RAY_AUTH_TOKEN"] = "not-the-clusters"
        out = subprocess.run(
            [sys.executable, "-c", auto], capture_output=True, text=True, env=env, timeout=60
        )
        assert out.stdout.startswith(
            f"--address auto, found at 127.0.0.1:{gcs_port}: the cluster refused this "
            "machine's Ray token"
        ), out.stdout + out.stderr
    # Ray's record of the cluster is stale once it has stopped: refused in seconds, not
    # retried by ray.init after the teacher.
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{gcs_port}"}
    out = subprocess.run(
        [sys.executable, "-c", auto], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.stdout.startswith(
        f"--address auto, found at 127.0.0.1:{gcs_port}: no Ray cluster answers there ("
    ), out.stdout + out.stderr


def test_auto_joins_one_cluster_never_a_searchs_own_local_ray() -> None:
    """Ray's "auto" takes any GCS on the machine, the first of a set: a local Ray another
    search started for itself (the second search died when the first ended), or one cluster
    of several at random."""
    from nascomp.search.compat.ray import SeveralRays, choose_running

    assert choose_running({"10.0.0.5:6379": False, "127.0.0.1:4001": True}) == "10.0.0.5:6379"
    with pytest.raises(SeveralRays, match=r"machine: 10\.0\.0\.5:6379, 10\.0\.0\.6:6379$"):
        choose_running({"10.0.0.6:6379": False, "10.0.0.5:6379": False, "127.0.0.1:1": True})
    with pytest.raises(ConnectionError, match=r"only the local Ray of another nascomp search"):
        choose_running({"127.0.0.1:4001": True})
    with pytest.raises(ConnectionError, match="no running instance"):
        choose_running({})


def test_a_searchs_own_local_ray_is_known_as_such(tmp_path: Path) -> None:
    from nascomp.search.compat.ray import running_rays

    with LocalRay.start() as local:
        address = local.address()
        assert running_rays()[address] is True
        # No RAY_ADDRESS and no recorded cluster (an empty temp folder): whatever else runs
        # here (other tests' clusters), auto never answers with this search's Ray.
        auto = (
            "from nascomp.search.driver import check_ray_address\n"
            "from nascomp.search.errors import SearchError\n"
            "try:\n    print(check_ray_address('auto'))\n"
            "except SearchError as e:\n    print(e)\n"
        )
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env["RAY_TMPDIR"] = str(tmp_path)
        out = subprocess.run(
            [sys.executable, "-c", auto], capture_output=True, text=True, env=env, timeout=60
        )
        assert out.returncode == 0 and out.stdout.strip(), out.stdout + out.stderr
        assert out.stdout.strip() != address, out.stdout
        assert f"found at {address}" not in out.stdout


def test_the_ray_token_file_is_made_the_users_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nascomp.search.compat.ray import keep_token_private

    token = tmp_path / "auth_token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    keep_token_private()  # none: nothing to do
    token.write_text("secret")
    token.chmod(0o644)  # as Ray 2.60 writes it
    keep_token_private()
    assert token.stat().st_mode & 0o777 == 0o600


def test_closed_before_ray_is_up_kills_its_group_at_once() -> None:
    local = LocalRay.start()
    time.sleep(1.0)  # mid-start: Ray's first processes exist, ray.init has not returned
    started = time.monotonic()
    local.close()
    assert time.monotonic() - started < 5
    assert local.process.returncode == -9
    assert _gone("pgid", local.process.pid)


def test_a_local_ray_never_connected_to_leaves_no_session_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A search refused by its checks (exit 2, "nothing written") left its Ray's session
    folder (logs, sockets: 120 KB) in Ray's temp folder (a helper's sweep). A search that
    connected keeps it, as Ray does: its logs."""
    root = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # a short path: Ray's sockets
    try:
        monkeypatch.setenv("RAY_TMPDIR", str(root))
        with LocalRay.start() as used:
            used.address()
        (kept,) = (root / "ray").glob("session_2*")
        unused = LocalRay.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(
            (root / "ray").glob(f"session_*_{unused.process.pid}")
        ):
            time.sleep(0.05)
        time.sleep(0.5)  # its Ray's first processes writing there
        unused.close()
        assert list((root / "ray").glob("session_2*")) == [kept]
        latest = root / "ray" / "session_latest"
        assert not latest.is_symlink() or latest.resolve() == kept  # none left dangling
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_driver_that_dies_takes_ray_with_it(tmp_path: Path) -> None:
    """A driver killed with SIGKILL runs no cleanup; the kernel closes the child's stdin."""
    script = tmp_path / "driver.py"
    script.write_text(
        "import os, signal\n"
        "from nascomp.search.tune.head import LocalRay\n"
        "local = LocalRay.start()\n"
        "print(local.process.pid, local.address(), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert out.returncode == -9
    child, address = out.stdout.split()
    assert ":" in address
    assert _gone("pgid", int(child))  # the child shut its Ray down when its stdin closed


def test_a_ray_that_cannot_start_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    monkeypatch.setenv("RAY_TMPDIR", str(not_a_folder / "ray"))
    with LocalRay.start() as local, pytest.raises(SearchError, match="local Ray did not start: "):
        local.address()
    assert local.process.returncode not in (0, None)


def test_a_temp_folder_ray_cannot_use_is_named_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ray failed in its core worker after the teacher had trained (an accent: an ASCII
    encoding error; a scheduler's long TMPDIR: a socket path over 107 bytes), naming neither
    variable (a helper's sweep)."""
    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    monkeypatch.setenv("TMPDIR", "/" + "t" * 38)  # 39 bytes: the longest that fits
    check_ray_temp_root()
    monkeypatch.setenv("TMPDIR", "/" + "t" * 39)
    with pytest.raises(SearchError) as caught:
        check_ray_temp_root()
    assert str(caught.value) == (
        f"TMPDIR: the local Ray keeps its sockets under /{'t' * 39}/ray, which it cannot use "
        "(TMPDIR is 40 bytes long; for its unix sockets Ray needs one of at most 39); set "
        "RAY_TMPDIR to a short ASCII folder, e.g. /tmp"
    )
    monkeypatch.setenv("RAY_TMPDIR", "/tmp/donn\u00e9es")  # it wins over TMPDIR, as in Ray
    with pytest.raises(SearchError, match=r"^RAY_TMPDIR: .*/tmp/données/ray.*ASCII paths alone"):
        check_ray_temp_root()


def test_a_home_the_local_ray_cannot_write_its_token_in_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read-only home: Ray failed to create ~/.ray/auth_token after the teacher had trained."""
    from nascomp.search.errors import ConfigError

    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/proc")  # a folder no one can make a folder in
    with pytest.raises(ConfigError) as caught:
        check_ray_token_folder()
    assert str(caught.value) == (
        "HOME (the local Ray writes its token in ~/.ray): this user cannot write in /proc "
        "(got '/proc/.ray')"
    )
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # no token to write then
    check_ray_token_folder()


def test_a_search_with_a_temp_folder_ray_cannot_use_is_one_line(tmp_path: Path) -> None:
    from tests.search.conftest import nascomp

    accented = tmp_path / "tmp é"
    accented.mkdir()
    run = tmp_path / "run"
    run.mkdir()
    env = {"RAY_TMPDIR": str(accented), "MLFLOW_TRACKING_URI": ""}
    done = nascomp("search", "--trials", "1", cwd=run, env=env, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("nascomp: error: RAY_TMPDIR: ") and done.stderr.count("\n") == 1
    assert list(run.iterdir()) == [] and list(accented.iterdir()) == []


@pytest.mark.timeout(120)  # joining the recorded address would wait for it for minutes
def test_a_cluster_ray_start_recorded_is_not_joined(tmp_path: Path) -> None:
    """A `ray start --head` records its address in Ray's temp folder, and a ray.init() without
    one joins it: the search's trials ran on the user's cluster (listening on every interface)
    as if on a local Ray. The child starts a Ray of its own whatever is recorded there."""
    recorded = Path(os.environ["RAY_TMPDIR"]) / "ray" / "ray_current_cluster"
    recorded.parent.mkdir(parents=True, exist_ok=True)
    recorded.write_text("127.0.0.1:9")  # nothing answers there: joining it fails
    with LocalRay.start() as local:
        address = local.address()
        assert address.startswith("127.0.0.1:") and address != "127.0.0.1:9"
        assert any("gcs_server" in c for c in _commands(local.process.pid))  # its own
    assert _gone("pgid", local.process.pid, within=5.0)
