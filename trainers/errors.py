"""Errors of the data layer that callers tell apart from a user's bad value."""

from __future__ import annotations


class DataNotFoundError(FileNotFoundError):
    """The dataset's files are not where the config says; the message says where to put them."""
