"""``nascomp``: search, replay, pareto, reproduce, export, ui."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from nascomp.search import interrupts
from nascomp.search.about import version
from nascomp.search.collector import imports_uncollected
from nascomp.search.errors import (
    ConfigError,
    SearchError,
    SearchInterrupted,
    TrackingError,
    TrackingOutage,
    one_line,
)
from nascomp.search.front.report import fmt as _fmt
from nascomp.search.paths import check_writable_folder
from nascomp.search.tune.head import machine_cpus, starting_local_ray

if TYPE_CHECKING:
    from nascomp.search.experiment import SearchConfig, TrackingConfig

# The experiment's schema (and describe_trial) import torch: 2 to 3 s on a 2-core machine.
# Commands import them when they run, so that `nascomp search` starts this machine's Ray
# before paying for them, and a command that needs neither never does.

EXIT_USAGE = 2
EXIT_UNLOGGED = 3  # the search ran, but its last results are only in its result folder
EXIT_NO_MODEL = 4  # the search ran, but no trial ended ok: its front is empty
# What --plot writes: matplotlib's formats, or the interactive page.
PLOT_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg", ".html", ".htm")
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    _OneLineParser.given = tuple(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    if extra:  # said by the command's own parser: `nascomp --help` lists none of its flags
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    _quiet_libraries()
    # SIGTERM (kill, timeout, a job scheduler) stops a command as Ctrl-C does, at any point:
    # Python's default ended it at once, silently (a search once connected, in Ray's handler:
    # exit 1 and a native stack dump, its parent run FAILED).
    # Ctrl-C that Python swallowed (search/interrupts.py) is raised again between a search's
    # stages.
    main_thread = threading.current_thread() is threading.main_thread()
    restore = interrupts.install() if main_thread else None
    try:
        return int(args.run(args) or 0)
    except ConfigError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        # A search's own interrupt is SearchInterrupted, with how to resume: this one came
        # before anything was started or after everything was saved.
        after = ""
        if args.run is cmd_search and getattr(args, "resume", None):
            # before its trials, the search it resumes is still there as it was
            after = (
                " (before the resumed search's trials began: the same command resumes it; or "
                "after its results were saved)"
            )
        elif args.run is cmd_search:
            after = (
                " (before the search's trials began, or after its results were saved: nothing "
                "to resume)"
            )
        print(f"nascomp: interrupted{after}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a known failure gets one line; anything else its traceback
        if isinstance(exc, SearchInterrupted):
            print(f"nascomp: {exc}", file=sys.stderr)
            return EXIT_INTERRUPTED
        if isinstance(exc, TrackingOutage):
            print(f"nascomp: error: {exc}", file=sys.stderr)
            return EXIT_UNLOGGED
        if _is_validation_error(exc):  # a config read back, e.g. by reproduce
            return _fail(one_line(exc))
        if isinstance(exc, TrackingError | SearchError | ValueError):
            return _fail(str(exc))
        raise
    finally:
        if restore is not None:
            # An interrupt here comes after the command's end, which the return in flight
            # carries: it gave a traceback (found by a helper's Ctrl-C at reproduce's end).
            with contextlib.suppress(KeyboardInterrupt):
                restore()


def _port(text: str) -> int:
    """argparse's type for a TCP port: a usage error (exit 2) at once, not a server that fails
    to bind after seconds."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number in 1..65535; got {text!r}")
    return port


def _host(text: str) -> str:
    """argparse's type for ``nascomp ui --host``: a name or an address, IPv6 with or without
    its brackets; a port in it is refused (``::1`` and ``127.0.0.1:80`` ended in Python's
    "Port could not be cast to integer value" after the server had started)."""
    import ipaddress

    host = text.strip()
    if not host:
        raise argparse.ArgumentTypeError(
            "give an address to listen on (127.0.0.1: this machine only; 0.0.0.0: all of its "
            "addresses); got an empty one"
        )
    if ":" in host or host.startswith("["):
        try:
            return str(ipaddress.IPv6Address(host.removeprefix("[").removesuffix("]")))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"an address without a port (give the port with --port); got {text!r}"
            ) from None
    return host


def _experiment(text: str) -> str:
    """argparse's type for ``nascomp ui --experiment``: an empty name (an unset variable) was
    taken for nascomp, which hid the store's only searched experiment."""
    if not text.strip():
        raise argparse.ArgumentTypeError("give the experiment's name; got an empty one")
    return text


def _rule(text: str) -> str:
    """argparse's type for --pick: an empty rule picks nothing (it printed the whole front)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("give a rule: 'knee', or e.g. 'max val_accuracy'")
    return text


def _run_id(text: str) -> str:
    """argparse's type for a run id: an empty one was MLflow's traceback (reproduce) or the
    latest search, unsaid (pareto --search-run)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("give a run id; got an empty one")
    return text


def _uri(text: str) -> str:
    """argparse's type for --tracking-uri: an empty one (an unset variable) is refused, not
    taken for the default store."""
    if not text.strip():
        raise argparse.ArgumentTypeError("give a tracking URI; got an empty one")
    return text


def _folder(text: str) -> Path:
    """argparse's type for a folder to write, ``~`` expanded: an empty one (an unset variable
    in ``--export "$OUT"``) is refused, not taken for the working folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("give a folder; got an empty path")
    # '~' as the shell expands it, also where it did not (quoted, a script's, a config's): the
    # checks read the expanded folder, and a folder named '~' in the working one is a trap.
    return Path(os.path.normpath(Path(text).expanduser()))  # `a/../b`: b, as the checks read


def _address(text: str) -> str:
    """argparse's type for --address: an empty one (``--address "$HEAD"`` with HEAD unset)
    ran the search on a local Ray, as if no address had been given."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "expected HOST:PORT (the cluster's GCS, port 6379 by default) or auto; got an empty "
            "address (leave --address out for a local Ray)"
        )
    return text


def _model_name(text: str) -> str:
    """argparse's type for a Model Registry name: refused at once, not after the trial has
    trained again (MLflow refuses '/' and ':' only when registering)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name the registered model; got an empty name")
    if "/" in text or ":" in text:
        raise argparse.ArgumentTypeError(f"a model's name cannot hold '/' or ':'; got {text!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        # MLflow registered 'a\nb', and its models:/ URI then loaded no model of that name.
        raise argparse.ArgumentTypeError(
            f"a model's name cannot hold control characters (a newline, a tab); got {text!r}"
        )
    # MLflow's own rule for the rest ('.', '..', names that resolve to another path), which it
    # applied only once the file was exported and logged: two tracebacks, exit 1.
    from nascomp.search.tracking.store import model_name_refusal

    if refusal := model_name_refusal(text):
        raise argparse.ArgumentTypeError(refusal)
    return text


def _is_validation_error(exc: BaseException) -> bool:
    from pydantic import ValidationError  # the experiment's schema imported it already

    return isinstance(exc, ValidationError)


def entry() -> NoReturn:
    """The ``nascomp`` console script: ``main``, then an exit that skips Python's module
    teardown (``exit_without_teardown``). An exception out of ``main`` (argparse's usage
    errors, a traceback) exits the normal way. Its stdout survives a reader that goes away
    (``| head``): see ``ClosedPipeSafe``."""
    _open_closed_streams()
    with contextlib.suppress(AttributeError, ValueError):  # a stream that is not a TextIOWrapper
        # A character the terminal's encoding lacks (a path's, under PYTHONIOENCODING=ascii)
        # is escaped, as on stderr: it raised UnicodeEncodeError, a ValueError, so a search
        # that had finished exited 2, "bad input" (a helper's sweep).
        sys.stdout.reconfigure(errors="backslashreplace")
    stdout = ClosedPipeSafe(sys.stdout)
    sys.stdout = stdout
    code = main()
    finish(1 if code == 0 and stdout.failed else code)


def _open_closed_streams() -> None:
    """Point a closed stdin, stdout or stderr (``nascomp pareto >&-``) at /dev/null. Python
    leaves ``sys.stdout`` None then (an AttributeError traceback at the first print), and the
    next file opened would take the free descriptor: an MLflow store that every print and
    every child process's output would write into."""
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            devnull = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
            if devnull != fd:  # the lowest free descriptor: fd itself, unless a lower one is
                os.dup2(devnull, fd)
                os.close(devnull)
            mode = "r" if fd == 0 else "w"
            setattr(sys, name, open(fd, mode, encoding="utf-8", closefd=False))  # noqa: SIM115


def finish(code: int) -> NoReturn:
    """Exit with the command's ``code`` (``exit_without_teardown``). The command is over: an
    interrupt while the exit handlers run (Ray's disconnect, torch's own, temporary folders)
    leaves at once with that code. It gave a traceback from whichever handler it cut, and
    exit status 0 or death by the signal, after a reproduce's export was complete."""
    if threading.current_thread() is threading.main_thread():

        def leave(signum: int, frame: Any) -> None:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
            os._exit(code)

        signal.signal(signal.SIGINT, leave)
        signal.signal(signal.SIGTERM, leave)
    exit_without_teardown(code)


class ClosedPipeSafe:
    """A text stream that drops what is written once its reader has gone (``nascomp pareto |
    head -1``, a log reader that died) instead of raising BrokenPipeError: a search goes on to
    its end and its MLflow runs are closed as finished, a reading command ends with its own
    exit code, and no traceback is printed. The stream's file descriptor is pointed at
    /dev/null then, so that the interpreter's last flush finds nowhere to fail either.

    Any other write error (a full disk, ``> /dev/full``; an I/O error) is said once on stderr
    and the output dropped the same way; ``failed`` holds it, and the console script exits 1
    where the command would have exited 0 (as ``cat`` does): it was a traceback, at a
    search's first line, before any trial."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.reader_gone = False
        self.failed: OSError | None = None

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                return self._stream.write(text)
            except OSError as exc:
                self._drop(exc)
        return len(text)

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self._stream.flush()
            except OSError as exc:
                self._drop(exc)

    def _drop(self, exc: OSError) -> None:
        if not isinstance(exc, BrokenPipeError):
            self.failed = exc
            with contextlib.suppress(OSError, ValueError):
                print(
                    f"nascomp: error: cannot write to stdout: {exc.strerror or exc}; "
                    "the rest of its output is dropped",
                    file=sys.stderr,
                    flush=True,
                )
        self.reader_gone = True
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def exit_without_teardown(code: int) -> NoReturn:
    """Exit with ``code`` as the interpreter would, less the module teardown: with torch, Ray
    and MLflow loaded that takes 1.7 to 2.0 s, against 0.13 s this way (measured on the 2-core
    AMD EPYC VM), at the end of every command. What the teardown does that matters is done
    first, in the interpreter's own order: threads still running are waited for (and idle
    executor threads stopped), the exit handlers run (Ray, logging, temporary folders,
    multiprocessing), stdout and stderr are flushed. These are private CPython functions;
    where one is missing, the normal exit happens."""
    wait_for_threads = getattr(threading, "_shutdown", None)
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if wait_for_threads is None or run_exit_handlers is None:
        sys.exit(code)
    wait_for_threads()
    run_exit_handlers()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to flush into
            stream.flush()
    os._exit(code)


def _quiet_libraries() -> None:
    # MLflow announces table creation at INFO; keep the terminal for nascomp's own lines.
    # MLflow resets its logger on import, so it reads an env var.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # `reproduce` downloads a run's one or two small artifacts: MLflow's tqdm bars for them
    # (three redraws each, on stderr) would sit between nascomp's lines.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # With a tracking server MLflow prints two links per run it ends, each trial's included,
    # after reading the run back (one more request): nascomp prints its own link once.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # Usage telemetry off, unless the user set these: MLflow 3 sends its own (and keeps an id in
    # ~/.config/mlflow), ONNX Runtime keeps a device id and an event queue in ~/.cache/Microsoft
    # (compressors.onnx_export.onnxruntime_module sets its variable where a trial imports it).
    # A search's local Ray and its trials inherit both.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def _quiet_optuna() -> None:
    """Optuna announces every study at INFO; only a search makes one. Optuna configures its
    logger lazily on first use, so only its own setter sticks."""
    import logging

    import optuna

    optuna.logging.set_verbosity(logging.WARNING)


# What MLflow's PyTorch model is, said once where its URI is printed (MLflow's own warning
# about it is dropped: search.tracking.store).
PICKLE_NOTE = (
    "PyTorch pickle: unpickling runs code, load it only from a store you trust; "
    "the ONNX model and model.onnx load without pickle"
)


def _at_once(experiment: Any, local: bool) -> str:
    """``2 at once``; on this machine, fewer when its CPUs hold fewer trials than asked."""
    asked = experiment.search.concurrent
    cpus = machine_cpus()
    fit = int(cpus // experiment.resources.cpus_per_trial) if local else asked
    if 0 < fit < asked and fit < experiment.search.trials:
        return f"{fit} at once ({asked} asked; {cpus} CPU{'' if cpus == 1 else 's'} hold {fit})"
    if experiment.search.trials < asked:  # "1 trial, 2 at once" read as a contradiction
        return "one at a time" if experiment.search.trials == 1 else "all at once"
    return f"{asked} at once"


def search_size(search: SearchConfig) -> str:
    """What ends the search, for its first line: a trial count, a budget, or either."""
    trials = f"{search.trials} trial{'' if search.trials == 1 else 's'}"
    if not search.budget.given:
        return trials
    budget = f"a budget of {search.budget.limit:g} {search.budget.unit}"
    if search.sized_by_budget:
        return budget
    return f"at most {trials} within {budget}"


def _trials_took(n_trials: int, seconds: float, resumed: bool) -> str:
    """``12 trials in 40 s``; after --resume the count is the whole search's, the time this
    run's: ``41 trials in all, 16 s since --resume``."""
    trials = f"{n_trials} trial{'' if n_trials == 1 else 's'}"
    if resumed:
        return f"{trials} in all, {seconds:.0f} s since --resume"
    return f"{trials} in {seconds:.0f} s"


def _fail(message: str) -> int:
    print(f"nascomp: error: {message}", file=sys.stderr)
    return EXIT_USAGE


class _OneLineParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line, as every other bad input is: its
    own printed the usage block (six lines for reproduce) above the error."""

    given: tuple[str, ...] = ()  # the command line, set by main

    def error(self, message: str) -> NoReturn:
        if "required" in message:
            # argparse says a missing argument before an unknown flag: `nascomp replay
            # --bogus` was told that its folder was missing
            unknown = self._unknown_flags()
            if unknown:
                message = f"unrecognized arguments: {' '.join(unknown)}"
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _unknown_flags(self) -> list[str]:
        """The flags of the command line that this parser does not know (a command's parser
        reads what follows the command's name; nothing after ``--``)."""
        tokens = list(self.given)
        if " " in self.prog:
            command = self.prog.rsplit(" ", 1)[1]
            tokens = tokens[tokens.index(command) + 1 :] if command in tokens else []
        if "--" in tokens:
            tokens = tokens[: tokens.index("--")]
        known = self._option_string_actions
        unknown = []
        for token in tokens:
            name = token.split("=", 1)[0]
            if not token.startswith("-") or token == "-" or _is_number(token) or name in known:
                continue
            # argparse takes an unambiguous prefix of a long flag (--trial for --trials)
            if not (self.allow_abbrev and name.startswith("--") and _prefixes(name, known)):
                unknown.append(token)
        return unknown


def _prefixes(name: str, flags: Iterable[str]) -> bool:
    return any(flag.startswith(name) for flag in flags)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="nascomp",
        description="Search architectures and their compression together: search, replay, "
        "pareto, reproduce, export, ui.",
    )
    parser.add_argument("--version", action="version", version=f"nascomp {version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    search = commands.add_parser("search", help="run a joint architecture + compression search")
    search.add_argument(
        "config", nargs="?", help="experiment YAML (default: the built-in quickstart)"
    )
    search.add_argument("--trials", type=int, help="number of trials (search.trials)")
    search.add_argument("--concurrent", type=int, help="trials at once (search.concurrent)")
    search.add_argument(
        "--address",
        type=_address,
        help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)",
    )
    search.add_argument("--seed", type=int, help="search seed (search.seed)")
    search.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any field, e.g. --set train.epochs=5",
    )
    search.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="FOLDER",
        help="continue an interrupted search: the latest unfinished one of this experiment, "
        "or the given result folder",
    )
    _tracking_args(search, of_a_file=True)
    search.set_defaults(run=cmd_search)

    replay = commands.add_parser(
        "replay",
        help="write into MLflow what a search buffered while its tracking server was away",
    )
    replay.add_argument("folder", type=Path, help="the search's result folder (nascomp-...)")
    replay.add_argument(
        "--tracking-uri",
        type=_uri,
        help="default: the URI the search used (its nascomp/manifest.json)",
    )
    replay.set_defaults(run=cmd_replay)

    pareto = commands.add_parser("pareto", help="print the Pareto front of the latest search")
    _tracking_args(pareto)
    pareto.add_argument(
        "--search-run", type=_run_id, help="the search's parent run id (default: the latest)"
    )
    pareto.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pareto.add_argument(
        "--plot",
        type=Path,
        metavar="FILE",
        help="write the Pareto plot to FILE: PNG, SVG, PDF or JPG by its suffix, or the "
        "interactive page for .html",
    )
    pareto.add_argument(
        "--pick",
        metavar="RULE",
        type=_rule,
        help="print one run: 'knee', or e.g. 'max val_accuracy where latency_ms <= 2'",
    )
    pareto.set_defaults(run=cmd_pareto)

    reproduce = commands.add_parser(
        "reproduce", help="re-run a trial from MLflow and export its model"
    )
    _target_args(reproduce)
    _tracking_args(reproduce)
    reproduce.add_argument(
        "--export",
        type=_folder,
        metavar="DIR",
        help="write model.onnx (the file to ship), the compressed artifact, state dict and "
        "TorchScript here",
    )
    reproduce.add_argument(
        "--fp16",
        action="store_true",
        help="with --export: also write model.fp16.onnx (fp16 weights, float32 input and "
        "output, for GPU runtimes) and print its agreement with the evaluated model",
    )
    reproduce.add_argument(
        "--register",
        metavar="NAME",
        type=_model_name,
        help="register the reproduced ONNX model in the MLflow Model Registry as NAME",
    )
    reproduce.add_argument(
        "--table",
        type=Path,
        metavar="CSV",
        help="a NAS-Bench-201 lookup: its table, where it is now if not where the search read "
        "it (another machine); a table whose bytes changed is noted",
    )
    reproduce.set_defaults(run=cmd_reproduce)

    export = commands.add_parser(
        "export",
        help="export a trial's model as the search trained it (its MLflow files): no training",
    )
    _target_args(export)
    _tracking_args(export)
    export.add_argument(
        "--to",
        type=_folder,
        metavar="DIR",
        required=True,
        help="write model.onnx (the file to ship), the compressed artifact, state dict and "
        "TorchScript here",
    )
    export.add_argument(
        "--fp16",
        action="store_true",
        help="also write model.fp16.onnx (fp16 weights, float32 input and output, for GPU "
        "runtimes) and print its agreement with the evaluated model",
    )
    export.add_argument(
        "--register",
        metavar="NAME",
        type=_model_name,
        help="register the exported model.onnx in the MLflow Model Registry as NAME (logged "
        "to the trial's run as shipped_onnx_model/)",
    )
    export.set_defaults(run=cmd_export)

    ui = commands.add_parser("ui", help="serve the MLflow UI on the tracking store")
    ui.add_argument(
        "--tracking-uri", type=_uri, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db"
    )
    ui.add_argument(
        "--experiment",
        type=_experiment,
        help="experiment whose runs page to print (default: nascomp, or the store's only "
        "experiment with searches)",
    )
    ui.add_argument("--port", type=_port, default=5000, help="default: 5000")
    ui.add_argument(
        "--host",
        type=_host,
        default="127.0.0.1",
        help="bind address (default 127.0.0.1: this machine only)",
    )
    ui.set_defaults(run=cmd_ui)
    return parser


def _target_args(parser: argparse.ArgumentParser) -> None:
    """Which trial a command takes: a run id, or a model of a search's front."""
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("run_id", nargs="?", type=_run_id, help="the trial's MLflow run id")
    target.add_argument("--rank", type=int, help="take the K-th model of the latest search's front")
    target.add_argument(
        "--pick",
        metavar="RULE",
        type=_rule,
        help="take the latest search's model chosen by RULE (see pareto)",
    )
    parser.add_argument(
        "--search-run",
        type=_run_id,
        help="with --rank or --pick: the search's parent run id (default: the latest)",
    )


def _tracking_args(parser: argparse.ArgumentParser, of_a_file: bool = False) -> None:
    """--tracking-uri and --experiment; ``of_a_file``: the search's, whose defaults are the
    experiment file's ``tracking`` section."""
    uri = "default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db"
    name = "the named run's, else nascomp, or the store's only experiment with searches"
    if of_a_file:
        uri = "default: the file's tracking.uri, else " + uri.removeprefix("default: ")
        name = "the file's tracking.experiment, else nascomp"
    parser.add_argument("--tracking-uri", type=_uri, help=uri)
    parser.add_argument("--experiment", help=f"MLflow experiment name (default: {name})")


# --------------------------------------------------------------------------- search


def cmd_search(args: argparse.Namespace) -> int:
    flags = {
        "search.trials": args.trials,
        "search.concurrent": args.concurrent,
        "search.seed": args.seed,
        "tracking.uri": args.tracking_uri,
        "tracking.experiment": args.experiment,
    }
    names = {"tracking.uri": "--tracking-uri", "tracking.experiment": "--experiment"}
    for key, value in flags.items():
        given = [o for o in args.overrides if o.partition("=")[0].strip() == key]
        if value is not None and given:  # one would silently win over the other
            flag = names.get(key, "--" + key.rpartition(".")[2])
            raise ConfigError(f"{key}: given by {flag} and by --set {given[0]}; give one")
    overrides = list(args.overrides) + [
        f"{key}={json.dumps(v)}" for key, v in flags.items() if v is not None
    ]
    # This machine's Ray starts in a child process first, and comes up while the experiment
    # is checked and the driver's modules import (search/tune/head.py). An experiment that
    # fails its checks stops it (killed at once) before the error is printed.
    with starting_local_ray(args.address) as local_ray:
        with imports_uncollected():  # search/collector.py
            from nascomp.search.experiment import load_experiment

            experiment = load_experiment(args.config, overrides)
            _quiet_optuna()
            from nascomp.search.driver import run_search
        interrupts.check()

        source = args.config or "the built-in quickstart"
        on = experiment.data.name
        if experiment.trial == "nb201_lookup":  # the table's accuracies: no data is read
            on = f"NAS-Bench-201's {experiment.nb201.dataset} table (lookup)"
        banner = (
            f"nascomp search: {source} on {on}, "
            f"{search_size(experiment.search)}, "
            f"{_at_once(experiment, local_ray is not None)}, "
            f"objectives {_objectives_text(experiment.objectives)}"
        )
        summary = run_search(
            experiment,
            address=args.address,
            resume=args.resume,
            local_ray=local_ray,
            banner=banner,
        )
        from nascomp.search.tracking.store import Tracker

        tracker = Tracker(experiment.tracking.resolved_uri(), experiment.tracking.experiment)
        from nascomp.search.front.selection import broke_constraints, empty_front_reason

        broke = broke_constraints(summary.trials, experiment.constraints)
        print(
            f"\n{_trials_took(len(summary.trials), summary.wall_seconds, bool(args.resume))} "
            f"({summary.count('ok')} ok{f' ({broke} broke a constraint)' if broke else ''}, "
            f"{summary.count('infeasible')} infeasible, "
            f"{summary.count('pruned')} stopped early, {summary.count('failed')} failed)"
        )
        _print_failures(summary.trials)
        empty = empty_front_reason(
            summary.trials,
            summary.objectives,
            experiment.constraints,
            experiment.search.budget.shown(),
        )
        _print_front(
            summary.front,
            summary.objectives,
            summary.search_run_id,
            empty,
            experiment.constraints,
        )
        print(f"\nMLflow: {_browse_hint(tracker)}")
    if not summary.front:  # a script or CI job must not take "no model" for success
        print(f"nascomp: error: the front is empty: {empty}", file=sys.stderr)
        return EXIT_NO_MODEL
    return 0


def _print_failures(trials: list, shown: int = 5) -> None:
    """Why trials failed, most common reason first: a worker without the data, a NaN loss..."""
    from collections import Counter

    reasons = Counter(
        t.tags.get("nascomp.reason", "no reason recorded") for t in trials if t.status == "failed"
    )
    for reason, n in reasons.most_common(shown):
        print(f"  {n} failed: {reason}")


def _tracking(**fields: Any) -> TrackingConfig:
    """The experiment file's ``tracking`` section, with its defaults (imported on use)."""
    from nascomp.search.experiment import TrackingConfig

    return TrackingConfig(**fields)


def _describe(params: dict[str, Any]) -> str:
    """A trial's model in one line (``trainers.config.describe_trial``, imported on use)."""
    from nascomp.trainers.config import describe_trial

    return describe_trial(params)


def _objectives_text(objectives: dict[str, str]) -> str:
    return ", ".join(f"{mode} {name}" for name, mode in objectives.items())


def _browse_hint(tracker: Any) -> str:
    if tracker.uri.startswith("http"):
        return tracker.runs_url()
    uri_flag = (
        ""
        if tracker.uri == _tracking().resolved_uri()
        else f" --tracking-uri {shlex.quote(tracker.shown_uri)}"  # a path with spaces
    )
    return f"run `nascomp ui{uri_flag}`, then open {tracker.runs_url()}"


def cmd_replay(args: argparse.Namespace) -> int:
    from nascomp.search.replay import replay
    from nascomp.search.tracking.store import without_credentials

    if args.tracking_uri:  # a mistyped sqlite path made an empty MLflow database
        _check_store_exists(_tracking(uri=args.tracking_uri, experiment="nascomp").resolved_uri())
    written, uri = replay(args.folder, args.tracking_uri)
    uri = without_credentials(uri)
    if written:
        print(f"nascomp replay: {written} buffered writes applied to {uri}")
    else:
        print(f"nascomp replay: nothing to replay: every write of this search is in {uri}")
    return 0


# --------------------------------------------------------------------------- pareto


def _check_store_exists(uri: str) -> None:
    """Reading must not create an empty store as a side effect of a mistyped path, nor write
    MLflow's tables into a file that holds none (an empty one, or a user's own database)."""
    from nascomp.search.tracking.store import Tracker

    if not uri.startswith("sqlite:///"):
        return
    path = uri[len("sqlite:///") :]
    tables = Tracker(uri, "nascomp").sqlite_tables() if Path(path).is_file() else None
    if not tables:
        what = "" if tables is None else " (an empty database)"
        raise TrackingError(f"no MLflow store at {path}{what} (run `nascomp search` first)")


def _tracker(args: argparse.Namespace) -> Any:
    from nascomp.search.tracking.store import Tracker

    config = _tracking(uri=args.tracking_uri, experiment=args.experiment or "nascomp")
    uri = config.resolved_uri()
    _check_store_exists(uri)
    tracker = Tracker(uri, config.experiment)
    tracker.check_reachable()
    if getattr(args, "search_run", None):  # the start of an id, as reproduce's RUN_ID takes
        args.search_run = tracker.resolve_run_id(args.search_run, role="search")
    if getattr(args, "run_id", None):  # the start of one, or a trial's id: its experiment too
        args.run_id = tracker.resolve_run_id(args.run_id)
    # A run id names its experiment, whatever --experiment says (a search run read in another
    # experiment had no trials: an empty front, exit 0); a store with one searched experiment
    # needs no name.
    named_run = getattr(args, "run_id", None) or getattr(args, "search_run", None)
    if args.experiment is None or named_run:
        holding = tracker.default_experiment(named_run)
        if named_run and args.experiment is not None and holding not in (None, args.experiment):
            print(
                f"note: run {named_run} is in experiment {holding!r}, not --experiment "
                f"{args.experiment!r}: read there",
                file=sys.stderr,
            )
        tracker.experiment = holding or tracker.experiment
    if not named_run:  # a run of a deleted experiment still reads (export); reproduce checks
        tracker.check_experiment_active()
    return tracker


def _front(tracker: Any, search_run: str | None = None) -> tuple[str, list, dict[str, str]]:
    from nascomp.search.front.selection import select_front

    search_run = search_run or tracker.latest_search()
    objectives = tracker.objectives(search_run)
    constraints = tracker.constraints(search_run)
    return search_run, select_front(tracker.trials(search_run), objectives, constraints), objectives


def _pick(tracker: Any, rule: str, search_run: str | None = None) -> Any:
    from nascomp.search.front.selection import pick_trial, select_front
    from nascomp.spaces.constraints import is_feasible, parse_pick
    from nascomp.trainers.settings import METRICS

    search_run = search_run or tracker.latest_search()
    trials, objectives = tracker.trials(search_run), tracker.objectives(search_run)
    constraints = tracker.constraints(search_run)
    picked = pick_trial(trials, objectives, rule, constraints)
    pick = parse_pick(rule, METRICS)
    if pick.kind == "knee":
        front = select_front(trials, objectives, constraints)
        members = [t for t in front if is_feasible(pick.where, t.metrics)]
        if len(members) == 2:
            # Two models have no knee: the rule's tie-break decides, which surprised users.
            which = "the front holds" if len(members) == len(front) else "the rule leaves"
            print(
                f"note: {which} 2 models, so the knee is a tie-break: the one nearest the "
                "ideal point, each objective scaled to their range; `nascomp pareto` shows "
                "both, and e.g. --pick 'max val_accuracy' picks by one objective",
                file=sys.stderr,
            )
    return picked


def _search_note(tracker: Any, search_run: str, named: bool) -> None:
    """On stderr (stdout may be parsed): a search not finished gives a front of the trials
    ended so far; a search chosen as the latest is named, when its experiment holds others."""
    run = tracker.client.get_run(search_run)
    status = run.info.status
    if status != "FINISHED":
        # an interrupted trial's run is KILLED, tagged interrupted: not ended, it resumes
        ended = sum(
            t.status not in ("running", "killed", "interrupted") for t in tracker.trials(search_run)
        )
        print(
            f"note: search {search_run} is {status} (a driver runs it, or it was interrupted: "
            f"`nascomp search ... --resume` continues it); this front is of its {ended} trials "
            "ended so far",
            file=sys.stderr,
        )
    if not named:
        others = tracker.client.search_runs(
            [run.info.experiment_id],
            filter_string=f"tags.`nascomp.role` = 'search' and attributes.run_id != '{search_run}'",
            max_results=1,
        )
        if others:
            print(
                f"note: from search {search_run} ({run.info.run_name}), the latest of experiment "
                f"{tracker.experiment!r}; --search-run ID reads another",
                file=sys.stderr,
            )


def _picked_on(rule: str, objectives: dict[str, str]) -> list[str]:
    """The objectives, then the metrics a ``--pick`` rule names that are not among them
    (``--pick "min latency_batch_ms"`` shows the value it picked on)."""
    from nascomp.spaces.constraints import parse_pick
    from nascomp.trainers.settings import METRICS

    pick = parse_pick(rule, METRICS)
    named = [pick.metric, *(c.metric for c in pick.where)]
    return list(dict.fromkeys([*objectives, *(m for m in named if m is not None)]))


def cmd_pareto(args: argparse.Namespace) -> int:
    tracker = _tracker(args)
    if args.search_run:  # a deleted experiment's trials are not listed: an empty front, exit 0
        tracker.check_experiment_active()
    search_run, front, objectives = _front(tracker, args.search_run)
    _search_note(tracker, search_run, named=args.search_run is not None)
    # The rule first: a bad one wrote the plot and then refused (exit 2, the file left).
    chosen = _pick(tracker, args.pick, search_run) if args.pick else None
    if args.plot:
        _write_plot(tracker, search_run, front, objectives, args.plot)
    if chosen is not None:
        if args.json:
            picked = {
                "search_run_id": search_run,
                "run_id": chosen.run_id,
                "model": _describe(chosen.params),  # the line the table shows
                "metrics": chosen.metrics,
                "params": chosen.params,
            }
            print(json.dumps(picked, default=str))
        else:
            shown = "  ".join(
                f"{m}={_fmt(chosen.metrics.get(m))}" for m in _picked_on(args.pick, objectives)
            )
            print(f"{chosen.run_id}  {shown}  {_describe(chosen.params)}")
        return 0
    if args.json:
        rows = [
            {
                "rank": i + 1,
                "run_id": r.run_id,
                "model": _describe(r.params),
                "objectives": {m: r.metrics.get(m) for m in objectives},
                "params": r.params,
            }
            for i, r in enumerate(front)
        ]
        print(
            json.dumps(
                {
                    "search_run_id": search_run,
                    "objectives": objectives,
                    "constraints": tracker.constraints(search_run),
                    "front": rows,
                },
                indent=2,
                default=str,
            )
        )
        return 0
    empty = _empty_reason(tracker, search_run, front)
    _print_front(front, objectives, search_run, empty, tracker.constraints(search_run))
    return 0


def _empty_reason(tracker: Any, search_run: str, front: list) -> str:
    """Why the front of ``search_run`` is empty ("" when it is not)."""
    from nascomp.search.front.selection import empty_front_reason

    if front:
        return ""
    return empty_front_reason(
        tracker.trials(search_run), tracker.objectives(search_run), tracker.constraints(search_run)
    )


def _write_plot(
    tracker: Any, search_run: str, front: list, objectives: dict[str, str], path: Path
) -> None:
    from nascomp.search.front.plot import write_html, write_plot
    from nascomp.search.front.selection import feasible_trials

    if path.is_dir():
        raise ValueError(f"--plot: {path} is a folder; give a file name, e.g. front.png")
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise ValueError(
            f"--plot: {path.name} has no picture's suffix; give one of {', '.join(PLOT_SUFFIXES)}"
        )
    check_writable_folder(path.parent, "--plot")
    trials = feasible_trials(
        tracker.trials(search_run), objectives, tracker.constraints(search_run)
    )
    if not trials:
        raise ValueError("--plot: nothing to plot: no feasible trial finished in this search")
    if path.suffix.lower() in (".html", ".htm"):  # the interactive page
        write_html(trials, front, objectives, path, describe=lambda t: _describe(t.params))
    else:
        write_plot(trials, front, objectives, path, search_run)
    print(f"plot written to {path}", file=sys.stderr)


def _print_front(
    front: list,
    objectives: dict[str, str],
    search_run: str,
    empty: str = "",
    constraints: Sequence[str] = (),
) -> None:
    models = f"{len(front)} model{'' if len(front) == 1 else 's'}"
    subject = f"; subject to {' and '.join(constraints)}" if constraints else ""
    print(
        f"Pareto front of search {search_run} ({models}; {_objectives_text(objectives)}{subject})"
    )
    if not front:
        print(f"  (empty: {empty or 'no trial finished'})")
        return
    names = list(objectives)
    header = ["rank", "run_id", *names, "model"]
    rows = [
        [str(i + 1), r.run_id, *(_fmt(r.metrics.get(m)) for m in names), _describe(r.params)]
        for i, r in enumerate(front)
    ]
    widths = [max(len(str(row[k])) for row in [header, *rows]) for k in range(len(header))]
    for row in [header, *rows]:
        cells = [
            str(c).rjust(w) if k < len(header) - 1 else str(c)
            for k, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  " + "  ".join(cells))


# --------------------------------------------------------------------------- reproduce


# Below this top-1 agreement of model.onnx with the evaluated model, an export says so.
ONNX_AGREEMENT_NOTED = 0.9


def onnx_note(exported: dict[str, Any], metrics: dict[str, float]) -> str | None:
    """A line for an exported model.onnx that often disagrees with the evaluated model (a
    collapsed model's near-ties, a width below 8 bits whose file has float activations)."""
    agreement = metrics.get("onnx_agreement", 1.0)
    if "onnx" not in exported or agreement >= ONNX_AGREEMENT_NOTED:
        return None
    return (
        f"note: model.onnx agrees with the evaluated model on {agreement:.1%} of the "
        "validation inputs (onnx_agreement), so its accuracy is not the logged one (its own "
        "is above): measure it on your data before shipping it"
    )


def cmd_reproduce(args: argparse.Namespace) -> int:
    from nascomp.search.export import check_export_folder
    from nascomp.search.reproduce import missing_device, reproduce, unfinished_trial
    from nascomp.trainers.datasets import FACTORY_FIELD

    if args.fp16 and args.export is None:
        return _fail("--fp16 writes model.fp16.onnx into the --export folder: give --export DIR")
    if args.export is not None:  # before the run is looked up, the trial trains or is logged
        check_writable_folder(args.export, "--export")
        check_export_folder(args.export, "--export", fp16=args.fp16)
    tracker = _tracker(args)
    tracker.check_writable()  # the reproduction is logged as a run
    run_id = _target_run(args, tracker, "reproduce")
    record = tracker.trial_record(run_id)
    lookup = record.params.get("trial") == "nb201_lookup"
    if args.table is not None and not lookup:
        return _fail(f"--table: run {run_id} trained: only a NAS-Bench-201 lookup reads a table")
    if lookup and (args.export is not None or args.register):
        flag = "--export" if args.export is not None else "--register"
        return _fail(f"{flag}: run {run_id} is a NAS-Bench-201 lookup: no trained weights")
    # before the header line, which read as if the work had begun
    if unfinished := unfinished_trial(record, "reproduce"):
        return _fail(unfinished)
    device = str(record.params.get("device", "cpu"))
    if missing := missing_device(run_id, device):
        return _fail(missing)
    if lookup:
        return _reproduce_lookup(record, args.table, _off_front_note(tracker, record))
    print(f"reproducing {run_id}: {_describe(record.params)}")
    if note := _off_front_note(tracker, record):
        print(note)
    result = reproduce(tracker, run_id, args.export, args.register, fp16=args.fp16, echo=print)
    print(f"  {'metric':<24}{'logged':>14}{'reproduced':>14}")
    for name, logged, again in result.comparison():
        same = logged is not None and again is not None and logged == again
        print(f"  {name:<24}{_fmt(logged):>14}{_fmt(again):>14}{'  =' if same else ''}")
    mismatched = result.differing_accuracies()
    for note in (result.reuse_note(), result.onnx_note()):
        if note:
            print(f"  ({note})")
    # Accuracies and sizes repeat exactly; times are measured again, on today's machine load.
    print("  (train_seconds and latencies are timed again: they move with the machine's load)")
    print(f"model logged as {result.model_uri} ({PICKLE_NOTE})")
    if args.export is not None:
        _print_exported(args.export, result.exported, result.fp16_agreement, result.shipped)
    if note := onnx_note(result.exported, result.outcome.metrics):
        print(note)
    _print_registered(result.registered)
    _print_changes(
        result.data_root,
        result.data_changed,
        result.code_changed,
        mismatched,
        "this reproduction trained on other data",
        "this reproduction built what that code builds now",
        # cuDNN's algorithms and CUDA's atomic adds order sums differently from run to run
        "GPU training does not repeat bit for bit"
        if device.startswith("cuda")
        else "another device or thread count?",
        result.source.params.get(FACTORY_FIELD),
        "this reproduction trained on the data that code gives now",
    )
    return 0


def _off_front_note(tracker: Any, record: Any) -> str | None:
    """A line for a trial named by its run id that broke its search's constraints: --rank and
    --pick never reach it, and its export said nothing of it (a helper's sweep)."""
    from nascomp.search.tracking.store import FEASIBLE_TAG
    from nascomp.spaces.constraints import is_feasible, parse_constraints
    from nascomp.trainers.settings import METRICS

    if record.tags.get(FEASIBLE_TAG) != "false":
        return None
    search = record.tags.get("mlflow.parentRunId")
    try:
        constraints = parse_constraints(tracker.constraints(search) if search else [], METRICS)
    except Exception:  # its search run deleted, or recorded by another nascomp: unnamed
        constraints = []
    broken = [
        f"{c} ({c.metric} {_fmt(record.metrics.get(c.metric))})"
        for c in constraints
        if not is_feasible([c], record.metrics)
    ]
    what = f"its search's {' and '.join(broken)}" if broken else "a constraint of its search"
    return f"note: run {record.run_id} breaks {what}: it is not on the front"


def _print_exported(
    folder: Path,
    exported: dict[str, Path],
    fp16_agreement: float | None,
    shipped: dict[str, float],
) -> None:
    from nascomp.search.export import foreign_files

    if shipped:
        shown = ", ".join(f"{name} {value:.4f}" for name, value in shipped.items())
        print(f"model.onnx (the file to ship) in ONNX Runtime: {shown}")
    for kind, path in exported.items():
        print(f"exported {kind}: {path} ({path.stat().st_size:,} bytes)")
    for path in foreign_files(folder, exported):
        print(f"note: {path} was in the folder before and is not of this export: left as it was")
    if fp16_agreement is not None:
        print(f"model.fp16.onnx top-1 agreement with the evaluated model: {fp16_agreement:.4f}")
    if "onnx_fp16" in exported:
        from nascomp.compressors.onnx_export import fp16_kept_float

        kept = fp16_kept_float(exported["onnx_fp16"])
        if kept:
            print(
                f"note: model.fp16.onnx keeps {', '.join(kept)} in float32: ONNX Runtime "
                "crashed or failed opening or running the fully fp16 form"
            )


def _print_changes(
    data_root: str | None,
    data_changed: bool | None,
    code_changed: list[str],
    mismatched: list[str],
    on_data: str,
    on_code: str,
    otherwise: str,
    factory: str | None = None,
    on_factory: str = "",
) -> None:
    """What changed since the search ran the trial (its data, its code: ``on_code`` is said of
    a builder, ``on_factory`` of its data ``factory``), and the accuracies that differ from
    the run's, with the likeliest reason."""
    if data_changed:
        print(
            f"note: the files under data.root ({data_root}) were added, removed or changed "
            f"since the search read them: {on_data}"
        )
    built = [path for path in code_changed if path != factory]
    read = [path for path in code_changed if path == factory]
    for changed, what in ((built, on_code), (read, on_factory)):
        if changed:
            print(
                f"warning: the source of {', '.join(changed)} changed since the search ran it "
                f"(its module's file, or a module of yours it imports): {what}"
            )
    if mismatched:
        why = (
            "the code changed"
            if code_changed
            else "the data changed"
            if data_changed
            else otherwise
        )
        verb = "differs" if len(mismatched) == 1 else "differ"
        print(f"warning: {', '.join(mismatched)} {verb} from the logged run ({why})")


def cmd_export(args: argparse.Namespace) -> int:
    from nascomp.search.export import check_export_folder
    from nascomp.search.export_run import export_trial
    from nascomp.search.reproduce import unfinished_trial
    from nascomp.trainers.datasets import FACTORY_FIELD

    check_writable_folder(args.to, "--to")  # before the run is looked up
    check_export_folder(args.to, "--to", fp16=args.fp16)
    tracker = _tracker(args)
    run_id = _target_run(args, tracker, "export")
    record = tracker.trial_record(run_id)
    if record.params.get("trial") == "nb201_lookup":
        return _fail(f"run {run_id} is a NAS-Bench-201 lookup: no trained weights to export")
    if unfinished := unfinished_trial(record, "export"):  # before the header line
        return _fail(unfinished)
    print(f"exporting {run_id}: {_describe(record.params)}")
    if note := _off_front_note(tracker, record):
        print(note)
    result = export_trial(
        tracker, run_id, args.to, fp16=args.fp16, echo=print, register=args.register
    )
    print(f"  {'metric':<24}{'logged':>14}{'from its files':>16}")
    for name, logged, again in result.comparison():
        same = logged is not None and logged == again
        print(f"  {name:<24}{_fmt(logged):>14}{_fmt(again):>16}{'  =' if same else ''}")
    _print_exported(args.to, result.exported, result.fp16_agreement, result.shipped)
    if note := onnx_note(result.exported, result.evaluated):
        print(note)
    _print_registered(result.registered)
    device = result.trial.config.device
    if result.recipe_changed:
        print(
            f"note: preprocess.json is the one the trial logged, how the model's inputs were "
            f"made; today's data gives another {', '.join(result.recipe_changed)}: feed the "
            "model as preprocess.json says"
        )
    _print_changes(
        result.trial.config.data.root,
        result.trial.data_changed,
        result.trial.code_changed,
        result.differing(),
        "the model and its preprocess.json are the ones the search trained and logged; its "
        "accuracies here are from today's files"
        if result.recipe_logged
        else "the model is the one the search trained; its accuracies here, and "
        "preprocess.json (the normalisation, a table's inputs and categories), are from "
        f"today's files: where those changed, `nascomp reproduce {run_id} --export DIR` trains "
        "a model that matches them",
        "the files were rebuilt by what that code builds now",
        f"the trial ran on {device}, this on the CPU"
        if device != "cpu"
        else "another thread count?",
        result.trial.flat.get(FACTORY_FIELD),
        "the model is the one the search trained; its accuracies here are on the data that "
        "code gives now",
    )
    return 0


def _print_registered(version: Any) -> None:
    """The Model Registry version ``--register`` made, if any."""
    if version is not None:
        print(
            f"registered {version.name} version {version.version} (models:/{version.name}/"
            f"{version.version})"
        )


def ui_server_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of ``nascomp ui``'s ``mlflow server``: MLflow's job execution off unless
    the user set ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION``. MLflow 3 runs its GenAI jobs (trace
    rollups, prompt optimisation; nothing the runs pages use) in six huey consumer processes
    that each import MLflow: on a 2-core machine the UI printed its URL 2.1x sooner without
    them, its processes 3 instead of 11, 1.3 GB instead of 3.2 (``bench/ui_start.py``,
    docs/scaling.md)."""
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **environ, "PYTHONUNBUFFERED": "1"}


def _target_run(args: argparse.Namespace, tracker: Any, verb: str) -> str:
    """The run id of the trial ``args`` name (``_target_args``)."""
    run_id = args.run_id  # resolved by _tracker: the start of an id, a trial's id
    if args.search_run is not None and run_id is not None:
        raise ConfigError(
            "--search-run: a run id names its trial; give --search-run with --rank or --pick"
        )
    if args.pick:
        search_run = args.search_run or tracker.latest_search()
        run_id = _pick(tracker, args.pick, search_run).run_id  # an unknown search: one line
        _search_note(tracker, search_run, named=args.search_run is not None)
    if run_id is None:
        search_run, front, _ = _front(tracker, args.search_run)
        if not front:
            raise ValueError(
                f"the front of search {search_run} is empty "
                f"({_empty_reason(tracker, search_run, front)}): no model to {verb}"
            )
        if not 1 <= args.rank <= len(front):
            raise ValueError(
                f"--rank must be in 1..{len(front)} (the front's size); got {args.rank}"
            )
        run_id = front[args.rank - 1].run_id
    return run_id


def _reproduce_lookup(record: Any, table: Path | None, note: str | None) -> int:
    """A lookup trial has no weights to export: look the cell up again (in ``table``, where
    the table moved) and compare (before the header line: a table that is gone is one line)."""
    from nascomp.trainers.nb201_lookup import look_up_again

    searched = record.params.get("nb201.table")
    fix = (
        "give the table the search read"
        if table is not None
        else "put the table the search read back there or give --table PATH where it is now"
    )
    named = "--table" if table is not None else "nb201.table"
    try:
        outcome, changed = look_up_again(record.params, table, named, fix)
    except ValueError as exc:
        raise ValueError(f"run {record.run_id}: {exc}") from None
    print(f"reproducing {record.run_id}: {_describe(record.params)}")
    if note:
        print(note)
    print(f"  {'metric':<24}{'logged':>14}{'reproduced':>14}")
    for name, value in outcome.metrics.items():
        logged = record.metrics.get(name)
        same = "  =" if logged == value else ""
        print(f"  {name:<24}{_fmt(logged):>14}{_fmt(value):>14}{same}")
    if changed:
        print(
            f"note: the table {table or searched} changed since the search read it (its "
            "SHA-256): the reproduced accuracies are today's table's"
        )
    elif table is not None and not record.params.get("nb201.table_sha256"):
        print(
            f"note: run {record.run_id} logged no SHA-256 of its table (an older search): "
            f"whether {table} holds what {searched} held is not known"
        )
    return 0


# --------------------------------------------------------------------------- ui


def cmd_ui(args: argparse.Namespace) -> int:
    from nascomp.search.tracking.store import Tracker

    uri = _tracking(uri=args.tracking_uri).resolved_uri()
    _check_store_exists(uri)
    # A store search and pareto refuse (MLflow's file store: a folder, file://) is refused
    # here too, in their line: the server started on it gave 26 lines of MLflow's traceback.
    # An http store down is one line in seconds, as for pareto: MLflow's own retries took 4
    # minutes to end in a traceback.
    Tracker(uri, args.experiment or "nascomp").check_reachable()
    if uri.startswith("http"):
        server = Tracker(uri, args.experiment or "nascomp")
        if args.experiment is None:  # the server's only searched experiment, as pareto reads
            server.experiment = server.default_experiment() or server.experiment
        print(f"the store is a tracking server already: {server.runs_url()}")
        return 0
    base = f"http://{_url_host(args.host)}:{args.port}"
    # Another server there would answer the health check and be taken for this one.
    if (problem := _bind_problem(args.host, args.port)) is not None:
        return _fail(problem)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--workers",
        "1",
    ]
    # SIGTERM (kill, service managers) and SIGHUP (its terminal closed) must stop the server
    # like Ctrl-C does: Python's default action exits without running `finally`, which
    # orphaned `mlflow server` on the port.
    previous = {
        signum: signal.signal(signum, interrupts.raise_interrupt)
        for signum in (signal.SIGTERM, signal.SIGHUP)
    }
    # The server takes 5 to 20 s to answer on a busy 2-core machine: say so at once, so a
    # silent terminal is not taken for a hang.
    from nascomp.search.tracking.store import without_credentials

    shown = without_credentials(uri)
    print(f"starting the MLflow UI on {base} (store {shown}); Ctrl-C stops it", flush=True)
    # A process group of its own: mlflow server starts helpers (gunicorn workers, the jobs'
    # huey consumers) that outlive a terminated parent; stopping the group stops them all.
    # Its log on stderr (fd 2): stdout keeps nascomp's two lines, the URL for scripts to read.
    # Under a guard in that group, which stops the group if this process ends without doing
    # so (SIGKILL): the server held the port, orphaned.
    server = subprocess.Popen(
        [sys.executable, "-c", _UI_GUARD, str(os.getpid()), *command],
        env=ui_server_env(os.environ),
        stdout=2,
        preexec_fn=os.setpgrp,
    )
    try:
        if not _wait_healthy(base, server) or server.poll() is not None:
            if (problem := _bind_problem(args.host, args.port)) is not None:
                return _fail(problem)  # another server took the port meanwhile
            return _fail(f"the MLflow UI did not start on {base} (its server's log is above)")
        tracker = Tracker(uri, args.experiment or "nascomp")
        try:
            if args.experiment is None:
                tracker.experiment = tracker.default_experiment() or tracker.experiment
            try:
                tracker.check_experiment_active()
            except TrackingError as exc:  # its runs are hidden in the UI with it
                print(f"MLflow UI: {base} ({exc})", flush=True)
            else:
                print(f"MLflow UI: {tracker.runs_url(base)}", flush=True)
                if note := tracker.served_files_note():
                    print(note, flush=True)
        except TrackingError:
            searched = tracker.searched_experiments() if args.experiment is None else []
            if not searched:
                print(
                    f"MLflow UI: {base} (no experiment named {tracker.experiment!r} yet)",
                    flush=True,
                )
            else:  # several, none named nascomp: the latest search's, and the others named
                tracker.experiment = searched[0]
                others = ", ".join(searched[1:])
                print(
                    f"MLflow UI: {tracker.runs_url(base)} (experiment {searched[0]!r}, the "
                    f"latest search's; also {others}: --experiment NAME)",
                    flush=True,
                )
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _stop_group(server)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# `nascomp ui`'s server runs under this, in the server's process group: it starts the server
# and ends with it, and stops the group (SIGTERM, then SIGKILL) once the nascomp process that
# started it is gone (its parent changes), which a SIGKILL gives no time to do itself.
_UI_GUARD = """
import os, signal, subprocess, sys, time
parent = int(sys.argv[1])
server = subprocess.Popen(sys.argv[2:])
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group's stop ends the server, then this
while server.poll() is None:
    if os.getppid() != parent:
        os.killpg(0, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        finally:
            os.killpg(0, signal.SIGKILL)
    time.sleep(0.5)
sys.exit(server.returncode if server.returncode >= 0 else 128 - server.returncode)
"""


def _stop_group(server: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the server's process group, wait for it, then SIGKILL whatever is left. The UI
    server holds nothing a kill would lose (the store's writes are transactions), so the
    grace is short (on an idle machine the whole stop takes a few seconds)."""
    _signal_group(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _signal_group(server.pid, signal.SIGKILL)
        server.wait()
    deadline = time.monotonic() + 5.0
    while _group_lives(server.pid) and time.monotonic() < deadline:
        time.sleep(0.2)  # helpers finishing their own shutdown
    _signal_group(server.pid, signal.SIGKILL)


def _group_lives(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs. A signal 0 reaches zombies too: where
    no init reaps the helpers (a container's), the stop waited its whole 5 s on them."""
    try:
        stats = [entry / "stat" for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    except OSError:
        return _signal_group(pgid, 0)  # no /proc: zombies are waited on
    for stat in stats:
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to process group ``pgid``; False when no process of it is left."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True


def _url_host(host: str) -> str:
    """``host`` as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def _bind_problem(host: str, port: int) -> str | None:
    """Why a server cannot listen on ``host:port`` now, in one line naming the option to
    change; None when it can. Only a port in use is the port's fault: an address that is not
    this machine's was told to give another port, and a name that does not resolve took the
    server 18 s to fail in its own log."""
    import errno
    import socket

    where = f"{_url_host(host)}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"--host {host}: no address of that name here ({exc.strerror or exc})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"--port {port}: {where} is in use; give another port"
            if exc.errno == errno.EADDRNOTAVAIL:
                return (
                    f"--host {host}: not an address of this machine (127.0.0.1: this machine "
                    "only; 0.0.0.0: all of its addresses)"
                )
            if exc.errno == errno.EACCES:
                return f"--port {port}: this user may not listen on {where}; give another port"
            return f"--host {host} --port {port}: cannot listen on {where} ({exc.strerror})"
    return None


def _wait_healthy(base: str, server: subprocess.Popen, timeout_s: float = 90.0) -> bool:
    """Whether the server ``server`` started answers at ``base`` (and is the one answering:
    a second `nascomp ui` on the port, started before the first bound it, took the first's
    answer for its own, while its own server died on the bound port)."""
    deadline = time.monotonic() + timeout_s
    port = urllib.parse.urlsplit(base).port
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as reply:
                if reply.status == 200 and _listening_in_group(port, server.pid) is not False:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def _listening_in_group(port: int | None, pgid: int) -> bool | None:
    """Whether a process of group ``pgid`` listens on TCP ``port`` (read from /proc); None
    where that cannot be told (no port, no /proc)."""
    if port is None:
        return None
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()  # local address HEX:PORT, state 0A is LISTEN, inode
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                return True
        except OSError:
            continue
    return False


if __name__ == "__main__":
    entry()
