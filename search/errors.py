"""Every error the search raises on purpose, in one place.

The CLI turns each into one line and an exit code (``nascomp.search.cli``); the Python API
lets them through, so a notebook can catch exactly what went wrong.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad experiment file or override: one line, naming the field and what is allowed."""


class SearchError(RuntimeError):
    """The search cannot start (e.g. no Ray cluster at the given address)."""


class SearchInterrupted(RuntimeError):
    """The search stopped before all its trials ended (Ctrl-C); ``--resume`` continues it."""


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, unknown experiment...)."""


class TrackingOutage(RuntimeError):
    """The search ended but the tracking server never came back for its last writes."""
