"""Python's cyclic garbage collector around the imports of nascomp's long-lived processes.

Importing torch, MLflow, Ray Tune and Optuna makes millions of objects, all of them live for
the whole process and none of them garbage. The collector does not know that: as they pile
up it runs full passes over every object made so far, each longer than the last. Traced with
``gc.callbacks`` on the 2-core VM (32-trial search of ``bench/overhead.py``'s workload): eight
full passes in the first 9 s of ``nascomp search`` (18 to 296 ms each, 1.1 s in all, before
any trial starts), and five in each worker from its imports to the end of its first trial
(71 to 439 ms each, about 0.9 s a worker). Both are on the path to the first results.

So the driver's command imports with the collector off, and then freezes what exists
(``gc.freeze``: later passes skip it); a worker freezes what its imports made when its first
trial starts. Only objects made before that moment are exempt, and those are modules,
classes and the state the process keeps anyway: a trial's model, data and optimizer are made
after it and collected as before. (``gc.freeze`` was made for servers that fork after their
imports; the fact it relies on, that what the imports made lives as long as the process, holds
here too.) nascomp does it only in processes of its own (the ``nascomp`` command, the local
Ray's child, Ray's workers), never in a user's process that imports ``nascomp``.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

_frozen = False


@contextlib.contextmanager
def imports_uncollected() -> Iterator[None]:
    """The block runs with the collector off; what exists when it ends is frozen. A collector
    that was off before stays off."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_on:
            gc.enable()


def freeze_imports() -> None:
    """Freeze what this process has made so far, the first time it is called (a worker's
    first trial); later calls do nothing, so each trial's own objects stay collectable."""
    global _frozen
    if not _frozen:
        gc.freeze()
        _frozen = True
