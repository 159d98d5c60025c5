"""What a user sees while a search runs: one line per ended trial, and the status of the
running ones (phase, epoch of total, elapsed) with the search's count and estimated time left.

On a terminal the status is one line redrawn in place under the trial lines; elsewhere (CI
logs, ``ray job submit``) it is printed as a plain line every ``every_s`` seconds while trials
run, so a slow search never looks like a hung one.

Why not rich or tqdm: the status is one line that must share the terminal with the trial
lines Tune's callbacks print between its redraws, and fall back to timed plain lines off a
terminal; rich's Live display and tqdm's bars each want the output to themselves (and Ray
workers' logs write there too), for what is here one carriage return and an erase.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from ray.tune import Callback

from nascomp.search.front.report import fmt
from nascomp.search.tune.results import INFO_PREFIX
from nascomp.spaces.constraints import Constraint, is_feasible
from nascomp.trainers.config import planned_epochs

_CLEAR = "\r\x1b[K"  # back to the line's start, erase it


@dataclass
class _Running:
    started: float
    total: int  # epochs the trial will run
    phase: str = "starting"
    epoch: int = 0


class ProgressLine(Callback):
    def __init__(
        self,
        n_trials: int | None,
        objectives: dict[str, str],
        echo: Callable[[str], Any] = print,
        *,
        live: TextIO | None = None,
        every_s: float = 30.0,
        clock: Callable[[], float] = time.perf_counter,
        budget_left: Callable[[], float | None] | None = None,
        waiting: Callable[[], str] | None = None,
        constraints: Sequence[Constraint] = (),
    ) -> None:
        """``n_trials``: the search's size (None: it runs until its budget is spent, so the
        lines count trials without a total). ``live``: a terminal to redraw the status line on
        (None: plain status lines through ``echo``, at most every ``every_s`` seconds).
        ``budget_left``: with ``search.budget``, the wall seconds the budget lasts at the
        current pace (``BudgetClock.seconds_left``; None: unknown yet): the time left is the
        sooner of the budget's end and the trials' (trials begun still finish after it).
        ``waiting``: what the trials wait for while none runs (a cluster without a node that
        fits one), said every ``every_s`` seconds instead of nothing. ``constraints``: the
        experiment's; a trial that ended ok but breaks one says which, as it stays off the
        front."""
        self.waiting = waiting
        self.constraints = list(constraints)
        self.n_trials = n_trials
        self.budget_left = budget_left
        self.objectives = list(objectives)
        self.echo = echo
        self.n_done = 0  # with a resume's, those Tune restored as ended (_count_ended_before)
        self.n_done_here = 0
        self._ended_before: set[str] | None = None  # the trials Tune restored as ended
        self.live = live
        self.every_s = every_s
        self.clock = clock
        self.started = clock()
        self.last_line = self.started
        self.last_status = self.started
        self.running: dict[str, _Running] = {}

    # ------------------------------------------------------------------ Tune's events
    def _count_ended_before(self, trials: list) -> None:
        """On Tune's first event with its trials: those it restored as ended (a resume) are
        the count's start, from Tune's own list. The tracking store's count was off: a killed
        driver's last writes wait in its journal (it restarted at [2/10]), and a trial that
        ended after Tune's last snapshot runs again to its end (a resume ended at [9/8])."""
        if self._ended_before is not None or not trials:
            return
        ended = ("TERMINATED", "ERROR")
        self._ended_before = {t.trial_id for t in trials if getattr(t, "status", None) in ended}
        self.n_done = len(self._ended_before)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self._count_ended_before(trials)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._count_ended_before(trials)
        self.running[trial.trial_id] = _Running(self.clock(), planned_epochs(trial.config))
        self._status()

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        running = self.running.get(trial.trial_id)
        if running is not None and "epoch" in result:
            running.phase = str(result.get("phase", running.phase))
            running.epoch = int(result["epoch"])
            self._status()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._count_ended_before(trials)
        if trial.trial_id in (self._ended_before or ()):
            return  # counted before the resume
        result = trial.last_result or {}
        status = result.get("nascomp_status", "ok")
        if status == "ok":
            detail = "  ".join(f"{name}={fmt(result.get(name))}" for name in self.objectives)
            broken = [str(c) for c in self.constraints if not is_feasible([c], result)]
            if broken:
                detail += f"  (breaks {' and '.join(broken)}: off the front)"
            for note in ("latency_fallback", "restarted"):  # info the user must see here
                if said := result.get(f"{INFO_PREFIX}{note}"):
                    detail += f"  ({said})"
        else:
            detail = str(result.get("nascomp_reason", ""))[:90]
        self._line(trial, status, detail)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._count_ended_before(trials)
        if trial.trial_id in (self._ended_before or ()):
            return
        self._line(trial, "failed", "see the trial's MLflow run for the reason")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.running and self.live is None:
            # A log (no terminal): the running trials and the time left every every_s, trial
            # lines or not; said only after every_s without one, a busy search's log (a
            # trial a second) never told the time left in an overnight run.
            if self.clock() - self.last_status >= self.every_s:
                self.echo(self.status_text())
                self.last_status = self.last_line = self.clock()
            return
        if self.clock() - self.last_line < self.every_s:
            return
        if not self.running and any(getattr(t, "status", None) == "PENDING" for t in trials):
            # Trials made but none started: on a terminal too, where no status line shows.
            pending = sum(getattr(t, "status", None) == "PENDING" for t in trials)
            why = self.waiting() if self.waiting is not None else ""
            self.echo(
                f"waiting: {pending} trial{'s' if pending != 1 else ''} to start"
                + (f"; {why}" if why else "")
            )
            self.last_line = self.clock()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.live is not None:
            self.live.write(_CLEAR)
            self.live.flush()

    # ------------------------------------------------------------------ lines
    def status_text(self) -> str:
        """``running: 3f2a1 train 3/10 12s, ... | 5/20 done, about 2m10s left``."""
        now = self.clock()
        parts = [
            f"{trial_id[-5:]} {r.phase} {r.epoch}/{r.total} {now - r.started:.0f}s"
            for trial_id, r in sorted(self.running.items(), key=lambda item: item[1].started)
        ]
        count = f"{self.n_done}" + ("" if self.n_trials is None else f"/{self.n_trials}")
        return f"running: {', '.join(parts) or 'none'} | {count} done{self._time_left(now)}"

    def _time_left(self, now: float) -> str:
        estimates = []
        if self.n_trials is not None and self.n_done_here:
            per_trial = (now - self.started) / self.n_done_here
            estimates.append(per_trial * (self.n_trials - self.n_done))
        budget = self.budget_left() if self.budget_left is not None else None
        if budget is not None and budget <= 0:
            return ", budget spent: the trials begun finish"
        if budget is not None:
            estimates.append(budget)
        return f", about {_duration(min(estimates))} left" if estimates else ""

    def _status(self) -> None:
        if self.live is not None:
            # Within one row: a wrapped line could not be erased by a carriage return.
            width = shutil.get_terminal_size().columns - 1
            self.live.write(_CLEAR + self.status_text()[:width])
            self.live.flush()

    def _line(self, trial: Any, status: str, detail: str) -> None:
        self.running.pop(trial.trial_id, None)
        self.n_done += 1
        self.n_done_here += 1
        elapsed = self.clock() - self.started
        if self.live is not None:
            self.live.write(_CLEAR)
        width = max(3, len(str(self.n_trials or "")))  # [ 999/3000] and [1000/3000] align
        count = f"{self.n_done:>{width}}" + ("" if self.n_trials is None else f"/{self.n_trials}")
        # seconds, then hours and minutes past 2.8 h, in the same 7 columns
        took = f"{elapsed:6.1f}s" if elapsed < 9999.95 else f"{_duration(elapsed):>7}"
        self.echo(f"[{count}] {took}  trial {trial.trial_id}  {status:<10} {detail}")
        self.last_line = self.clock()
        self._status()


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
