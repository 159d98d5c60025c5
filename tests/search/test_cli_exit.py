"""The console script's exit skips Python's module teardown, and nothing the teardown would
have done that matters is lost: the exit code, other threads' work, exit handlers, output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nascomp.search import cli

# A process that leaves work for its exit, then runs the console script's entry on a command
# that fails on bad input (exit 2 with a one-line error, after torch is loaded).
SCRIPT = textwrap.dedent(
    """
    import atexit, sys, threading, time
    from pathlib import Path
    from nascomp.search import cli

    out = Path(sys.argv[1])
    atexit.register(lambda: (out / "handler").write_text("ran"))
    threading.Thread(
        target=lambda: (time.sleep(0.5), (out / "thread").write_text("done"))
    ).start()
    sys.stdout.write("x" * 100)  # held in the buffer of a pipe until a flush
    sys.argv = ["nascomp", "search", str(out / "missing.yaml")]
    cli.entry()
    """
)


def test_the_exit_keeps_code_threads_handlers_and_output(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered output
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == cli.EXIT_USAGE
    assert done.stderr.strip().splitlines()[-1] == (
        f"nascomp: error: experiment file '{tmp_path / 'missing.yaml'}' does not exist"
    )
    assert done.stdout == "x" * 100
    assert (tmp_path / "thread").read_text() == "done"  # waited for, as at a normal exit
    assert (tmp_path / "handler").read_text() == "ran"


def test_an_interrupt_while_the_exit_handlers_run_keeps_the_commands_code() -> None:
    """The command is over (here: exit 4); Ctrl-C while an exit handler runs (torch's,
    Ray's) cut it with a traceback and ended with status 0 or by the signal."""
    script = textwrap.dedent(
        """
        import atexit, sys, time
        from nascomp.search import cli

        atexit.register(lambda: time.sleep(60))
        atexit.register(lambda: print("exiting", flush=True))  # runs first
        print("done", flush=True)
        cli.finish(4)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "done\n"
    assert process.stdout.readline() == "exiting\n"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 4, err
    assert "Traceback" not in err and out == ""


def test_the_console_script_is_the_entry() -> None:
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "nascomp"]
    assert script.value == "nascomp.search.cli:entry"


def _with_reader_gone(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The console script with ARGS, its stdout a pipe whose reader closed at once (what
    `| head -1` leaves after its line): every write to it fails with EPIPE."""
    exe = Path(sys.executable).with_name("nascomp")
    process = subprocess.Popen(
        [str(exe), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    process.stdout.close()
    _, stderr = process.communicate(timeout=600)
    return subprocess.CompletedProcess(args, process.returncode, "", stderr)


def test_a_search_whose_reader_went_away_runs_to_its_end(tmp_path: Path) -> None:
    """A search piped into a reader that died (`| head -1`) went on failing: BrokenPipeError
    stopped its trials, the parent run was left FAILED and the exit code was 1 with a
    traceback. Its output is dropped now, and the search ends as usual; so does `pareto`."""
    from mlflow.tracking import MlflowClient

    from tests.search.conftest import tiny_args

    args = tiny_args(tmp_path, "--set", "search.trials=2")
    done = _with_reader_gone(["search", *args], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("nascomp").experiment_id])
    assert len(runs) == 3 and {run.info.status for run in runs} == {"FINISHED"}
    store = ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    for command in (["pareto", *store], ["pareto", "--pick", "knee", *store]):
        done = _with_reader_gone(command, tmp_path)
        assert done.returncode == 0 and "Traceback" not in done.stderr, command


# The console script's entry on a command that prints a line with a character ASCII lacks,
# then the descriptor the next file it opens takes (on stderr).
PRINTS = textwrap.dedent(
    """
    import os, sys
    from nascomp.search import cli

    def main():
        print("front of the search in /tmp/runs \u00e9")
        print(os.open(os.devnull, os.O_RDONLY), file=sys.stderr)
        return 0

    cli.main = main
    cli.entry()
    """
)


@pytest.mark.parametrize("stdout", ["closed", "/dev/full", "ascii"])
def test_a_stdout_that_cannot_take_the_output_is_no_traceback(stdout: str) -> None:
    """``>&-``: an AttributeError traceback (sys.stdout was None), and the next file opened
    took descriptor 1; ``> /dev/full``: an OSError traceback at a search's first line; an
    ASCII terminal with a path's accent: UnicodeEncodeError, so a finished search exited 2,
    "bad input" (a helper's sweep)."""
    command = [sys.executable, "-c", PRINTS]
    if stdout == "closed":
        done = subprocess.run(
            ["bash", "-c", 'exec "$@" >&-', "bash", *command],
            capture_output=True,
            text=True,
            timeout=120,
        )
    elif stdout == "/dev/full":
        with open("/dev/full", "w") as full:
            done = subprocess.run(
                command, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120
            )
    else:
        env = {**os.environ, "PYTHONIOENCODING": "ascii"}
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    *said, descriptor = done.stderr.splitlines()
    assert int(descriptor) > 2  # 0, 1 and 2 stay the standard streams
    if stdout == "/dev/full":
        assert done.returncode == 1  # the output is lost: as `cat` says it
        assert said == [
            "nascomp: error: cannot write to stdout: No space left on device; the rest of its "
            "output is dropped"
        ]
    else:
        assert done.returncode == 0 and said == [], done.stderr
    if stdout == "ascii":
        assert done.stdout == "front of the search in /tmp/runs \\xe9\n"


def test_the_ui_command_a_search_prints_quotes_a_path_with_spaces(tmp_path: Path) -> None:
    """The hint printed at a search's end was pasted into a shell as two arguments."""
    import shlex

    from mlflow.tracking import MlflowClient

    from nascomp.search.tracking.store import Tracker

    uri = f"sqlite:///{tmp_path / 'my runs' / 'mlflow.db'}"
    (tmp_path / "my runs").mkdir()
    MlflowClient(uri).create_experiment("nascomp")
    tracker = Tracker(uri, "nascomp")
    command = cli._browse_hint(tracker).split("`")[1]
    assert shlex.split(command) == ["nascomp", "ui", "--tracking-uri", tracker.shown_uri]
    assert " " in tracker.shown_uri


def test_an_interrupt_before_a_resumed_search_began_says_it_is_still_resumable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C while a resumed search's teacher trained said "nothing to resume", of a search
    that was still there to resume."""

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_search", interrupted)
    assert cli.main(["search", "--resume"]) == cli.EXIT_INTERRUPTED
    assert capsys.readouterr().err == (
        "nascomp: interrupted (before the resumed search's trials began: the same command "
        "resumes it; or after its results were saved)\n"
    )
    assert cli.main(["search"]) == cli.EXIT_INTERRUPTED
    assert "nothing to resume" in capsys.readouterr().err
