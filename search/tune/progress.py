"""One line per finished trial, so a user sees the search move."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ray.tune import Callback


class ProgressLine(Callback):
    def __init__(
        self,
        n_trials: int,
        objectives: dict[str, str],
        echo: Callable[[str], Any] = print,
        n_done: int = 0,
    ) -> None:
        self.n_trials = n_trials
        self.objectives = list(objectives)
        self.echo = echo
        self.n_done = n_done  # trials a resumed search had already ended
        self.started = time.perf_counter()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        status = result.get("nascomp_status", "ok")
        if status == "ok":
            detail = "  ".join(f"{name}={_fmt(result.get(name))}" for name in self.objectives)
        else:
            detail = str(result.get("nascomp_reason", ""))[:90]
        self._line(trial, status, detail)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, "failed", "see the trial's MLflow run for the reason")

    def _line(self, trial: Any, status: str, detail: str) -> None:
        self.n_done += 1
        elapsed = time.perf_counter() - self.started
        self.echo(
            f"[{self.n_done:>3}/{self.n_trials}] {elapsed:6.1f}s  "
            f"trial {trial.trial_id}  {status:<10} {detail}"
        )


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4g}"
    return f"{int(value):,}"
