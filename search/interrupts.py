"""Ctrl-C and SIGTERM that Python swallowed, raised again where a command can stop.

A signal's Python handler runs in whatever Python code runs when the signal comes, and its
``KeyboardInterrupt`` is raised there. Where that code is a callback whose exceptions Python
only prints ("Exception ignored in: ..."), the interrupt is lost and the command goes on.
Importing runs many such callbacks (the weak-reference callback of each of importlib's
module locks): in 1 of 4 tries, a Ctrl-C during ``nascomp search``'s start-up printed
"Exception ignored in: <function _get_module_lock.<locals>.cb ...>", and the search then ran
all its trials and exited 0.

The commands' handler (:func:`raise_interrupt`) also records that the signal came, and a
search calls :func:`check` between its stages (imports, the user's code, the teacher,
``ray.init``, Tune's start): an interrupt that was lost is raised there, where the search
cleans up as after any Ctrl-C. The record is kept only by processes that installed the
handler (the ``nascomp`` command): :func:`check` does nothing in a user's own process.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

_seen = False


def raise_interrupt(signum: int, frame: Any) -> NoReturn:
    """The commands' handler of SIGINT and SIGTERM: records the signal, then raises."""
    global _seen
    _seen = True
    raise KeyboardInterrupt


def install() -> Callable[[], None]:
    """Handle SIGTERM, and SIGINT unless this process ignores it (started in the background
    by a shell: Ctrl-C is then not for it), with :func:`raise_interrupt`, and keep the
    interrupts that Python swallows from printing their traceback (the command says it was
    interrupted, in one line). Main thread only; returns what puts the previous back."""
    global _seen
    _seen = False
    signals = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signals.append(signal.SIGINT)
    previous = {signum: signal.signal(signum, raise_interrupt) for signum in signals}
    hook = sys.unraisablehook

    def quiet_interrupts(unraisable: Any) -> None:
        if not (_seen and unraisable.exc_type is KeyboardInterrupt):
            hook(unraisable)

    sys.unraisablehook = quiet_interrupts

    def restore() -> None:
        global _seen
        _seen = False
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = hook

    return restore


def check() -> None:
    """Raise ``KeyboardInterrupt`` if :func:`raise_interrupt` ran since :func:`install`:
    the interrupt it raised was either handled (the command is stopping: this runs no more)
    or swallowed where it was raised."""
    if _seen:
        raise KeyboardInterrupt


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done, then act as they would have (their
    handlers as they were: Ctrl-C's KeyboardInterrupt after it). Outside the main thread,
    where Python runs no handler, nothing is changed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    before = {number: signal.getsignal(number) for number in held}
    for number in held:
        signal.signal(number, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
        for number in dict.fromkeys(caught):
            signal.raise_signal(number)
