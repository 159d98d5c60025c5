"""nascomp: search neural architectures and their compression together.

The Python API (the same work as the ``nascomp`` command)::

    import nascomp
    summary = nascomp.run_search("experiment.yaml")     # or a dict, an Experiment, None
    summary.front                                        # the Pareto front, best first
    model = nascomp.load_exported("model/")              # from `nascomp reproduce --export`

The packages, in layers that import one way only (docs/architecture.md):
``nascomp.compressors`` < ``nascomp.spaces`` < ``nascomp.trainers`` < ``nascomp.search``.

The API's names are resolved on first use (PEP 562), so ``import nascomp.compressors`` does not
import Ray, Optuna or MLflow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = {
    "run_search": "nascomp.search.api",
    "load_experiment": "nascomp.search.api",
    "load_exported": "nascomp.search.api",
    "Experiment": "nascomp.search.api",
    "SearchSummary": "nascomp.search.api",
    "ConfigError": "nascomp.search.errors",
    # What else run_search raises: an unusable store, a search that cannot run, Ctrl-C.
    "TrackingError": "nascomp.search.errors",
    "SearchError": "nascomp.search.errors",
    "SearchInterrupted": "nascomp.search.errors",
    # For the user's own model builders and plugins (docs/experiment.md, "Your own model").
    "InfeasibleArchitecture": "nascomp.spaces.models",
    "register_model": "nascomp.spaces.models",
}

if TYPE_CHECKING:
    from nascomp.search.api import (
        Experiment,
        SearchSummary,
        load_experiment,
        load_exported,
        run_search,
    )
    from nascomp.search.errors import (
        ConfigError,
        SearchError,
        SearchInterrupted,
        TrackingError,
    )
    from nascomp.spaces.models import InfeasibleArchitecture, register_model


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'nascomp' has no attribute {name!r}")
    from nascomp.search.interrupts import signals_held

    # A Ctrl-C waits for the first use's import (torch: seconds), then acts: cut short, it
    # left torch half-imported, and every later call in the notebook failed.
    with signals_held():
        value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])


__all__ = [
    "ConfigError",
    "Experiment",
    "InfeasibleArchitecture",
    "SearchError",
    "SearchInterrupted",
    "SearchSummary",
    "TrackingError",
    "__version__",
    "load_experiment",
    "load_exported",
    "register_model",
    "run_search",
]
