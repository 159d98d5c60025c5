"""What this installation of nascomp is (its version, as the installed distribution says)."""

from __future__ import annotations


def version() -> str:
    """The installed distribution's version; a checkout run without installing has none."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("nascomp")
    except PackageNotFoundError:  # run from a checkout that was not installed
        return "(not installed)"
