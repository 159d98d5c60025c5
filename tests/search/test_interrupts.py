"""Interrupts that Python swallows (search/interrupts.py): a signal whose handler ran inside a
weak-reference callback, as importlib's module locks run during every import. A Ctrl-C at
that moment was lost, and the search ran all its trials and exited 0."""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import weakref
from pathlib import Path

import pytest

from nascomp.search import interrupts
from tests.search.conftest import nascomp

# A module whose import swallows a SIGTERM as a module lock's callback would: the signal's
# handler runs in the callback (the loop's backward jumps are where Python runs handlers), and
# the KeyboardInterrupt it raises there goes to sys.unraisablehook, not to the importer.
SWALLOWS = textwrap.dedent(
    """
    import os
    import signal
    import weakref

    from torch import nn


    class Box:
        pass


    def _swallow(ref):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100_000):
            pass


    box = Box()
    ref = weakref.ref(box, _swallow)
    del box
    IMPORTED_TO_THE_END = True


    def build(input_shape, n_classes):
        return nn.Sequential(nn.Conv2d(input_shape[0], 4, 3), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(4, n_classes))
    """
)


def _swallowed_sigterm() -> bool:
    """Send SIGTERM from a weak-reference callback; True once the code after it runs."""

    class Box:
        pass

    def callback(ref: weakref.ref) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100_000):
            pass

    box = Box()
    ref = weakref.ref(box, callback)
    del box
    assert ref() is None
    return True


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals: main thread"
)
def test_an_interrupt_swallowed_in_a_callback_is_raised_by_check(
    capsys: pytest.CaptureFixture[str],
) -> None:
    restore = interrupts.install()
    try:
        interrupts.check()  # nothing came yet
        assert _swallowed_sigterm()  # the interrupt did not stop this code
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
    finally:
        restore()
    assert "KeyboardInterrupt" not in capsys.readouterr().err  # the command says it, once
    interrupts.check()  # restore forgot it: a later search in this process is not stopped
    assert signal.getsignal(signal.SIGTERM) is not interrupts.raise_interrupt


def test_ctrl_c_ignored_by_the_shell_stays_ignored() -> None:
    """A command started in the background by a shell script ignores SIGINT (the terminal's
    Ctrl-C is not for it): installing the handlers must not take that back."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        restore = interrupts.install()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is interrupts.raise_interrupt
        restore()
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_search_whose_interrupt_was_swallowed_stops_and_writes_nothing(tmp_path: Path) -> None:
    """The user's builder module swallows a SIGTERM while the search imports it: the search
    stops there, as after any interrupt before its trials, instead of running to its end."""
    (tmp_path / "shop.py").write_text(SWALLOWS)
    (tmp_path / "experiment.yaml").write_text(
        "space: {arch: {family: custom, builder: 'shop:build'}, distill: {enabled: false}}\n"
        "search: {trials: 1}\ntrain: {epochs: 1}\n"
    )
    written = {path.name for path in tmp_path.iterdir()}
    result = nascomp(
        "search", "experiment.yaml", cwd=tmp_path, timeout=300, env={"MLFLOW_TRACKING_URI": ""}
    )
    assert result.returncode == 130, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        "nascomp: interrupted (before the search's trials began, or after its results were "
        "saved: nothing to resume)"
    ]
    assert result.stdout == ""  # stopped before the banner: the user's modules import first
    left = {path.name for path in tmp_path.iterdir()} - written - {"__pycache__"}
    assert left == set(), left
