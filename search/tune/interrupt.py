"""Ctrl-C reaches the running trials at the end of their epoch.

Tune's first Ctrl-C ends its loop, then asks each trial's actor to stop. A function trial
hears that only at its next report, which comes at most every ``search.checkpoint_every_s``
seconds (10 by default), and Tune kills an actor it has waited 5 s for: a search took 1.4 to
7 s to exit on the quickstart, and each running trial lost what it had trained since its last
report, up to ``checkpoint_every_s`` of it.

:class:`InterruptMarker`, a callback of the driver, writes a file into the search's folder on
Ctrl-C, then lets Tune's own handler run. A trial that finds the file after an epoch
(``search.tune.trainable.EpochReports``) reports that epoch at once, its checkpoint with it, so
Tune's stop reaches it and ``--resume`` continues from that epoch. Trials see the file where
the search's folder is on their node (one machine, or storage that every node mounts); the
others stop as before.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.tune import Callback

INTERRUPT_FILE = "nascomp/interrupted"


def interrupt_file(folder: str | Path) -> Path:
    """The file that tells the trials of the search in ``folder`` that Ctrl-C came."""
    return Path(folder) / INTERRUPT_FILE


def interrupt_requested(folder: str | Path) -> Callable[[], bool]:
    """Whether Ctrl-C came, asked of the file system each time (a ``stat``)."""
    return interrupt_file(folder).exists


class InterruptMarker(Callback):
    """Writes :func:`interrupt_file` on the first Ctrl-C or SIGTERM, before Ray Tune's Ctrl-C
    handler (which ends the search's loop) runs. Set up after Tune installed that handler, in
    the driver's main thread; it removes a file an earlier run left. Picklable: Tune saves
    callbacks."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = str(folder)
        # Whether Ctrl-C came: Tune's handler ends its loop and returns, counting the trials
        # it stopped (and those whose actors were still starting) as terminated.
        self.interrupted = False

    def setup(self, **info: Any) -> None:
        path = interrupt_file(self.folder)
        path.unlink(missing_ok=True)
        if threading.current_thread() is not threading.main_thread():
            return  # Tune installs no handler there either
        tune_handler = signal.getsignal(signal.SIGINT)
        if not callable(tune_handler):
            return

        def mark_then_stop(signum: int, frame: Any) -> None:
            self.interrupted = True
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            except OSError:
                pass  # the trials then stop as Tune stops them
            tune_handler(signum, frame)

        signal.signal(signal.SIGINT, mark_then_stop)
        # SIGTERM (kill, timeout, a job scheduler) ends the search as Ctrl-C does: the trials
        # checkpoint, the runs end KILLED, and it resumes. Ray's driver handler exited at
        # once (status 1, a native stack dump, the parent run FAILED).
        signal.signal(signal.SIGTERM, mark_then_stop)

    def clear(self) -> None:
        """Remove the file once the search's trials have stopped."""
        interrupt_file(self.folder).unlink(missing_ok=True)
