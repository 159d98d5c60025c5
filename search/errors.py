"""Every error the search raises on purpose, in one place.

The CLI turns each into one line and an exit code (``nascomp.search.cli``); the Python API
lets them through, so a notebook can catch exactly what went wrong.
"""

from __future__ import annotations

import re
from typing import Any


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


_FIELD_FIRST = re.compile(r"^[\w.\[\]]+: ")


def dotted(loc: Any) -> str:
    """An error location as the experiment's own messages name a field: ``data.factory``, a
    list's item by its index in brackets (``constraints[0]``, not pydantic's ``constraints.0``)."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).removeprefix(".")


def exception_line(exc: BaseException) -> str:
    """An exception as ``Type: its first non-empty line`` (its type alone when it says nothing),
    for a one-line error that quotes what failed."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def one_line(exc: Any) -> str:
    """A pydantic ``ValidationError`` as one line: the first problem, prefixed by its field
    unless its message names one already (``data.factory: module 'my_data' is not...``), and
    how many more there are. (pydantic's own text is several lines and a link.)"""
    errors = exc.errors(include_url=False)
    error = errors[0]
    message = " ".join(str(error["msg"]).removeprefix("Value error, ").split())
    field = dotted(error["loc"])
    if field and not _FIELD_FIRST.match(message):
        message = f"{field}: {message}"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return message + more
