"""Work the driver would do on the search's critical path, done earlier, while it waits.

Two first-time costs fell where the trials waited for the driver (profiled on a 2-core VM,
py-spy of the driver and timestamps in the trainable, 2026-12-02):

- the first trial's MLflow ONNX model (``search.tracking.models``): MLflow imports its pyfunc
  flavour and maps every installed package to its modules, 0.9 s, in the callback that ends
  the trial, before its worker gets the next one, while the other finished worker waits in its
  report;
- the front's plots after the last trial (``search.front.plot``): pyplot, its fonts and
  plotly's validators, 1.4 s of the first plots' 1.5 s, after every trial has ended.

Between the start of the first trials and the first result, Tune's loop has nothing to do for
seconds (the workers load their data and train). :class:`WarmUp` runs those first times there,
once, on the driver's main thread, when every trial that Tune has created is running. Never in
a thread of its own: a warm-up thread that loaded matplotlib's extension while ``ray.init``
loaded a library through ctypes deadlocked on the dynamic loader's lock (a fresh-clone CI run,
2026-12-02). Here it runs where every import of the driver runs, with no thread of ours
beside it; Ray's and Tune's own threads are in their steady loops by then.

It moves work, it does not remove it: about 2.5 CPU-s of the driver's. Where a core is spare
(fewer trials at once than cores, or GPU trials) a search ends about 2 s sooner; where the
trials take every core, the driver takes that time from them instead and the wall time stays
as it was (``bench/overhead.py``, docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial


class WarmUp(Callback):
    """Call each of ``steps`` once, at the end of the first step of Tune's loop in which a
    trial runs and none waits to start. A step that fails is skipped: the work it prepares
    reports its own errors when it is really done. Picklable (Tune saves the callbacks) when
    the steps are module-level functions."""

    def __init__(self, steps: Sequence[Callable[[], Any]]) -> None:
        self.steps = list(steps)
        self.done = False

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.done or not ready(trials):
            return
        self.done = True
        for step in self.steps:
            try:
                step()
            except Exception:  # a warm-up only moves work; the real use reports its errors
                continue


def ready(trials: Sequence[Any]) -> bool:
    """Whether the driver may pause: some trial runs, and none waits for its actor to start
    (a pause then would delay its start)."""
    statuses = {getattr(trial, "status", None) for trial in trials}
    # PENDING: created, its actor not started yet
    return Trial.RUNNING in statuses and Trial.PENDING not in statuses
