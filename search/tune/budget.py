"""``search.budget``: a search sized in time, not in trials.

Two pieces, both in the driver process:

- :class:`BudgetClock`, a Tune callback, counts what the search has spent, in the budget's
  unit: wall seconds of the trial phase, or each trial's running time times the CPUs (GPUs)
  it holds. It starts from what earlier runs of the same search spent, read from the result
  folder's manifest, and writes its count back there (at most every second, and whenever a
  trial ends), so a driver killed at any moment leaves the spent budget behind for
  ``--resume``.
- :class:`BudgetedLimiter`, Tune's ``ConcurrencyLimiter`` that answers ``FINISHED`` once the
  clock says the budget is spent: Tune starts no new trial and ends the search when the
  running ones end.

Running trials finish rather than being stopped: a trial cut short has no final result, so
it can never be on the front, and the compute it spent would be wasted; letting it finish
costs at most one trial's length past the budget per concurrent slot (docs/experiment.md).

The limiter is pickled with the Tuner and restored with it, so it finds this driver's clock
by the search's result folder in a process-wide table rather than holding it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.search import ConcurrencyLimiter, Searcher

from nascomp.search.experiment import BudgetConfig
from nascomp.search.resume import record_budget

_SECONDS_PER_HOUR = 3600.0
# The driver's live clocks, by result folder: what a (restored) BudgetedLimiter consults.
_CLOCKS: dict[str, BudgetClock] = {}


class BudgetClock(Callback):
    """The budget spent so far by one search, over all its runs (``spent_before`` + now)."""

    def __init__(
        self,
        budget: BudgetConfig,
        *,
        cpus_per_trial: float,
        gpus_per_trial: float,
        folder: Path,
        spent_before: float = 0.0,
        echo: Callable[[str], Any] = print,
        save_every_s: float = 1.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.unit, self.limit = budget.unit, budget.limit
        # Budget units per second of one trial's running time (the wall clock counts alone).
        self.per_trial_second = {
            "wall_s": 0.0,
            "cpu_hours": cpus_per_trial / _SECONDS_PER_HOUR,
            "gpu_hours": gpus_per_trial / _SECONDS_PER_HOUR,
        }[self.unit]
        self.folder, self.spent_before, self.echo = folder, spent_before, echo
        self.save_every_s, self.now = save_every_s, now
        self.started = now()
        self.running: dict[str, float] = {}  # trial id -> when its current attempt started
        self.trial_seconds = 0.0  # of attempts that have ended, in this run
        self.saved_at = -math.inf
        self.announced = False
        self.last_step = self.started
        self.stopped_at: float | None = None

    def start(self) -> None:
        """The trial phase starts now (the wall clock of this run counts from here)."""
        self.started = self.last_step = self.now()
        self.stopped_at = None

    def stop(self) -> None:
        """The trial phase ended at Tune's last step: what Tune does after its loop (stopping
        the trials of an interrupted search, its last snapshot: seconds) is not the search's
        spending, and a resumed search must not find it charged."""
        self.stopped_at = self.last_step

    def spent(self) -> float:
        now = self.now() if self.stopped_at is None else self.stopped_at
        if self.unit == "wall_s":
            return self.spent_before + now - self.started
        running = sum(now - started for started in self.running.values())
        return self.spent_before + (self.trial_seconds + running) * self.per_trial_second

    def seconds_left(self) -> float | None:
        """Wall seconds until the budget is spent at the current pace: exact for ``wall_s``;
        for CPU or GPU hours, what is left over what the running trials spend per second
        (None while none runs)."""
        left = max(self.limit - self.spent(), 0.0)
        if self.unit == "wall_s":
            return left
        rate = len(self.running) * self.per_trial_second
        return left / rate if rate > 0 else None

    def exhausted(self) -> bool:
        return self.spent() >= self.limit

    def describe(self) -> str:
        return f"{self.spent():.4g} of {self.limit:g} {self.unit}"

    def announce(self, live: int) -> None:
        """Say once that no trial starts any more, and why; ``live``: the trials already
        begun (running, or waiting for a worker) that will still finish."""
        if not self.announced:
            self.announced = True
            self.echo(f"budget spent ({self.describe()}): no new trials; {live} begun finish")

    def save(self) -> None:
        self.saved_at = self.now()
        record_budget(self.folder, self.unit, self.limit, self.spent())

    # Tune's callback hooks ---------------------------------------------------------------

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.setdefault(trial.trial_id, self.now())

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._attempt_ended(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._attempt_ended(trial)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._attempt_ended(trial)  # the failed attempt's time is spent; the retry counts anew

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.last_step = self.now()
        if self.now() - self.saved_at >= self.save_every_s:
            self.save()

    def _attempt_ended(self, trial: Any) -> None:
        started = self.running.pop(trial.trial_id, None)
        if started is not None:
            self.trial_seconds += self.now() - started
        self.save()


class BudgetedLimiter(ConcurrencyLimiter):
    """``ConcurrencyLimiter`` that ends the search's suggestions once its budget is spent."""

    def __init__(self, searcher: Searcher, max_concurrent: int, budget_key: str) -> None:
        super().__init__(searcher, max_concurrent=max_concurrent)
        self.budget_key = budget_key

    def suggest(self, trial_id: str) -> dict | None:
        clock = _CLOCKS.get(self.budget_key)
        if clock is not None and clock.exhausted():
            # Live: suggested and not ended, those still waiting for a worker included
            # (the clock's ``running`` holds only the started ones).
            clock.announce(len(self.live_trials))
            return Searcher.FINISHED
        return super().suggest(trial_id)


@contextmanager
def running_clock(clock: BudgetClock) -> Iterator[BudgetClock]:
    """Make ``clock`` the one the search's limiter consults while the Tuner runs; save it
    when the run ends, however it ends."""
    key = budget_key(clock.folder)
    _CLOCKS[key] = clock
    clock.start()
    try:
        yield clock
    finally:
        _CLOCKS.pop(key, None)
        clock.stop()
        clock.save()


def budget_key(folder: Path) -> str:
    return str(Path(folder).resolve())
