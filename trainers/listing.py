"""What the files a dataset is read from look like, cheaply: each file's path, size and
modification time under the data root. It keys a cached teacher to the data it learnt from,
and lets ``nascomp reproduce`` say that the data changed since the search ran, instead of
blaming the device."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MAX_LISTED = 100_000  # files under a data root whose sizes and times a digest holds, at most
# Datasets read from the user's own files under data.root (the others are bundled or official).
USERS_FILES = ("imagefolder", "custom", "torchvision", "csv")


def listing_digest(root: Path) -> str:
    """A digest of each file's path, size and modification time under ``root`` (a file or a
    folder): cheap for a folder of many images, and changed by any file edited, added or
    removed."""
    digest = hashlib.sha256()
    files = [root] if root.is_file() else sorted(_files(root))
    for path in files[:MAX_LISTED]:
        stat = path.stat()
        # os.fsencode: a name that is not UTF-8 (a latin-1 zip's "caf\xe9") as its bytes
        name = os.fsencode(path.relative_to(root.parent))
        digest.update(name + f"\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _files(root: Path) -> list[Path]:
    """The files under ``root``, through linked folders as the image reader walks them
    (``Path.rglob`` did not enter them before Python 3.13: a folder of linked class folders
    had the digest of nothing, and a teacher cached on it outlived their images). A folder
    reached twice (a link loop) is walked once."""
    seen: set[str] = set()
    found: list[Path] = []
    for top, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        found += [path for name in names if (path := Path(top, name)).is_file()]
    return found


def data_files_digest(name: str, root: str | None) -> str | None:
    """``listing_digest`` of ``data.root`` for a dataset read from the user's files; None for
    the bundled and official datasets, and where there is no such root."""
    if name not in USERS_FILES or root is None or not Path(root).exists():
        return None
    return listing_digest(Path(root))


def code_files_digest(paths: list[str]) -> dict[str, str]:
    """SHA-256 of the source of each ``"package.module:function"`` in ``paths`` (the user's
    builders and factories), by path: of its module's file, or, where it imports modules of
    the user's (``source_files``), of those files' digests by their place beside the first;
    a path whose module has no ``.py`` file (or is not found) is left out. ``nascomp
    reproduce`` compares the search's with today's: an edited builder built another model,
    and the reproduction said only that its metrics differed ("another device or thread
    count?")."""
    from nascomp.spaces.userfn import source_files
    from nascomp.trainers.init import file_digest

    found: dict[str, str] = {}
    for path in paths:
        files = [file for file in source_files(path) if file.is_file()]
        if len(files) == 1:  # a module alone: its file's digest, as runs logged before hold
            found[path] = file_digest(files[0])
        elif files:
            # by place relative to the first, so a project that moved keeps its digests
            digests = {os.path.relpath(f, files[0].parent): file_digest(f) for f in files}
            found[path] = hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()
    return found


def code_paths(flat: dict[str, object]) -> list[str]:
    """The ``"package.module:function"`` values a trial's flat config names: its builder, its
    data factory, its teacher's builder."""
    found: list[str] = []

    def visit(key: str, value: object) -> None:
        if isinstance(value, dict):
            for inner, item in value.items():
                visit(str(inner), item)
        elif key.rpartition(".")[2] in ("builder", "factory") and isinstance(value, str):
            found.extend([value] if ":" in value and value not in found else [])

    for key, value in flat.items():
        visit(key, value)
    return found
