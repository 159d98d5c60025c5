"""How a trial's own failures become outcomes (search/trainable.py), without Ray: the trial
that diverges or runs out of memory ends failed with its reason; other errors propagate, so
Tune retries them (a worker that died, a bug)."""

from __future__ import annotations

import pytest
import torch

from search.trainable import STATUS_FAILED, guarded
from trainers.trial import TrialOutcome

DIGITS = {"data.name": "digits", "data.root": None}


def _raising(exc: BaseException):
    def run() -> TrialOutcome:
        raise exc

    return run


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (FloatingPointError("training diverged: loss is nan"), "FloatingPointError: training"),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), "OutOfMemoryError"),
        (MemoryError("cannot allocate"), "MemoryError: cannot allocate"),
    ],
)
def test_divergence_and_out_of_memory_end_the_trial_failed_with_the_reason(
    exc: BaseException, reason: str
) -> None:
    outcome = guarded(_raising(exc), DIGITS)
    assert outcome.status == STATUS_FAILED
    assert outcome.reason.startswith(reason)
    assert outcome.model is None and outcome.metrics == {}


def test_other_errors_propagate_and_a_good_run_passes_through() -> None:
    with pytest.raises(ValueError, match="a bug"):
        guarded(_raising(ValueError("a bug")), DIGITS)
    ok = TrialOutcome(status="ok", metrics={"val_accuracy": 0.9})
    assert guarded(lambda: ok, DIGITS) is ok
