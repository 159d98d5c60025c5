"""The garbage collector around a nascomp process's imports (search/collector.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from nascomp.search import collector


@pytest.fixture(autouse=True)
def _nothing_frozen() -> Iterator[None]:
    """Each test starts and ends with nothing frozen and the collector as it was."""
    was_on = gc.isenabled()
    gc.unfreeze()
    yield
    gc.unfreeze()
    if was_on:
        gc.enable()
    else:
        gc.disable()


def test_imports_run_uncollected_and_what_they_made_is_frozen() -> None:
    gc.enable()
    with collector.imports_uncollected():
        assert not gc.isenabled()
        made = [{"module": i} for i in range(2000)]  # what an import leaves: tracked objects
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    assert frozen >= len(made)
    later = [{"trial": i} for i in range(100)]  # made afterwards: collected as before
    # Not frozen: the count does not grow (it may fall: a frozen object another thread of
    # this test process lets go of, such as a finished test's, is freed all the same).
    assert gc.get_freeze_count() <= frozen and len(later) == 100


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    with collector.imports_uncollected():
        pass
    assert not gc.isenabled()


def test_the_collector_comes_back_when_the_imports_fail() -> None:
    gc.enable()
    with pytest.raises(ImportError), collector.imports_uncollected():
        raise ImportError("no module named 'absent'")
    assert gc.isenabled()


def test_a_worker_freezes_once_so_each_trial_stays_collectable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(collector, "_frozen", False)
    collector.freeze_imports()  # the first trial: the imports are frozen
    frozen = gc.get_freeze_count()
    assert frozen > 0
    trial = [{"weights": i} for i in range(500)]
    collector.freeze_imports()  # the next trials: nothing more (the 500 dicts stay out)
    # At most as many: a frozen object another thread frees leaves the permanent generation.
    assert gc.get_freeze_count() <= frozen and len(trial) == 500
