"""Checks of the folders a command will write, made before it writes or trains anything."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from nascomp.search.errors import ConfigError


def check_writable_folder(path: str | Path, field: str) -> None:
    """A ConfigError naming ``field`` unless ``path`` is, or can be made, a folder this user
    writes in: a file at it or above it, or a folder without write access, is refused."""
    given = Path(path).expanduser()
    for link in (given, *given.parents):
        if link.is_symlink() and not link.exists():
            # resolve() followed it to a folder that is not there, whose parent was writable:
            # the command trained, logged its run, then died on mkdir with a traceback.
            raise ConfigError(
                f"{field}: {link} is a link to {os.readlink(link)}, which does not exist; give "
                f"a folder, or make the link's target first (got {str(path)!r})"
            )
    folder = given.resolve()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{field}: {existing} is a file; give a folder (got {str(path)!r})")
    if not os.access(existing, os.W_OK | os.X_OK) or not _can_make_folder_in(existing):
        raise ConfigError(f"{field}: this user cannot write in {existing} (got {str(path)!r})")


def _can_make_folder_in(folder: Path) -> bool:
    """Whether a folder can be made in ``folder``, tried: ``os.access`` says yes to root
    everywhere, also in /proc and on file systems mounted read-only by another layer."""
    try:
        with tempfile.TemporaryDirectory(dir=folder, prefix=".nascomp-write-check-"):
            return True
    except OSError:
        return False


def storage_probe(path: str, token: str) -> str:
    """Run on each node of a cluster: "" when the node sees the driver's storage folder as the
    driver does (the file at ``path`` reads ``token``) and can write in it, else what is wrong:
    ``"unseen"``, or the reason a file beside the marker could not be written (a read-only
    mount, another user's folder: the node's trials trained to the end and failed at their
    first checkpoint). A Ray task, kept in this light module, which a worker imports in a
    moment."""
    marker = Path(path)
    try:
        if marker.read_text() != token:
            return "unseen"
    except OSError:
        return "unseen"
    mine = marker.with_name(f"{marker.name}-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        mine.write_text(token)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    mine.unlink(missing_ok=True)
    return ""
