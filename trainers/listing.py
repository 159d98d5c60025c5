"""What the files a dataset is read from look like, cheaply: each file's path, size and
modification time under the data root. It keys a cached teacher to the data it learnt from,
and lets ``nascomp reproduce`` say that the data changed since the search ran, instead of
blaming the device."""

from __future__ import annotations

import hashlib
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
