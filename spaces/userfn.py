"""The user's own functions named in an experiment file (``"package.module:function"``).

A model builder (``space.arch.builder``) or a dataset factory (``data.factory``) is named by its
import path. The module is imported from the folder the search was started in or from the
environment, exactly as ``python -c "import package.module"`` run there would find it. Every
failure is a :class:`UserCodeError` whose one line names the path and what went wrong, so the
CLI can print it without a traceback.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


class UserCodeError(ValueError):
    """The user's code named in the experiment failed: it does not import, is not a function,
    raised, or returned the wrong thing. The message names the function."""


class NotLogitsError(UserCodeError):
    """The user's model ran, and returned something other than one tensor of logits."""


def _working_folder_importable() -> None:
    # ``python -m`` and the console script do not put the working folder on sys.path; a user's
    # ``my_models.py`` in the folder they run nascomp from imports as it does in their shell.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


# After this long in one call of the user's code, a line says which function is running: a
# builder, forward or factory that hung held the search's checks with no word at all.
SLOW_CALL_S = 60.0


@contextlib.contextmanager
def calling(who: str, after_s: float | None = None) -> Iterator[None]:
    """Around a call of the user's code (``who``: e.g. ``builder my_models:net``): once it has
    run ``after_s`` seconds (``SLOW_CALL_S``), one line on stderr names it, and that it goes
    on; nothing when it returns sooner."""
    started = time.monotonic()

    def still_running() -> None:
        waited = time.monotonic() - started
        print(
            f"nascomp: still in {who}, called {waited:.0f} s ago (Ctrl-C stops)",
            file=sys.stderr,
            flush=True,
        )

    timer = threading.Timer(SLOW_CALL_S if after_s is None else after_s, still_running)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def module_file(path: str) -> Path | None:
    """The source file of the module of a ``"package.module:function"`` path, looked up where
    :func:`load_callable` imports it from (the working folder first), without importing the
    module itself; None when it has no ``.py`` file or is not found. Found before the import
    as after it: the teacher's cache key holds this file's digest, and ``nascomp reproduce``,
    which asks before anything imports the builder, missed the key the search had written."""
    _working_folder_importable()
    importlib.invalidate_caches()
    try:
        spec = importlib.util.find_spec(path.partition(":")[0])
    except (ImportError, ValueError):
        return None
    origin = spec.origin if spec is not None else None
    return Path(origin) if origin and origin.endswith(".py") else None


def source_files(path: str) -> list[Path]:
    """The source file of the module of a ``"package.module:function"`` path (``module_file``)
    and those of the user's modules it imports, found from its import statements, without
    importing anything, and theirs in turn: every module found in the folder that holds the
    path's top-level package (or module), outside site-packages. The teacher's cache key and
    the code digests ``reproduce`` compares hold them all: a builder taking its widths from the
    user's ``config.py`` was served a teacher cached before ``config.py`` changed. Imports made
    at run time (``importlib.import_module``) are not seen. Empty when the module has no
    ``.py`` file."""
    first = module_file(path)
    if first is None:
        return []
    name = path.partition(":")[0]
    depth = name.count(".") + (first.name == "__init__.py")
    if depth >= len(first.parents):
        return [first]
    # The folder of the path's top-level package, and the working folder, where a builder
    # found elsewhere on sys.path may read the user's cfg.py
    try:
        roots: tuple[Path, ...] = (first.parents[depth], Path.cwd().resolve())
    except OSError:  # a working folder removed meanwhile
        roots = (first.parents[depth],)
    found = [first]
    queue = [(first, name)]
    while queue:
        file, module = queue.pop(0)
        package = module if file.name == "__init__.py" else module.rpartition(".")[0]
        for imported in _imports(file, package):
            source = _user_file(imported, roots)
            if source is not None and source not in found:
                found.append(source)
                queue.append((source, imported))
    return found


def _imports(file: Path, package: str) -> list[str]:
    """The absolute names of the modules ``file``'s import statements name (for ``from a
    import b``: ``a`` and ``a.b``, which may be a module); none if it does not parse."""
    try:
        tree = ast.parse(file.read_bytes(), filename=str(file))
    except (OSError, SyntaxError, ValueError):
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                if node.level - 1 > len(parts):
                    continue
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, *([base] if base else [])])
            if base:
                names.append(base)
            names += [f"{base}.{alias.name}" if base else alias.name for alias in node.names]
    return names


def _user_file(name: str, roots: tuple[Path, ...]) -> Path | None:
    """The ``.py`` file of module ``name`` when it is the user's (in one of ``roots``, not
    Python's own nor an installed package's), looked up without importing it or its
    packages; else None. A package without ``__init__.py`` (a namespace package: a plain
    folder) is looked into as one with it."""
    parts = name.split(".")
    if not all(part.isidentifier() for part in parts) or parts[0] in sys.stdlib_module_names:
        return None
    try:
        spec = importlib.util.find_spec(parts[0])  # a top-level name imports nothing
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.origin and spec.origin.endswith(".py"):
        top = Path(spec.origin)
        if len(parts) == 1:
            return top if _users(top, roots) else None
        if top.name != "__init__.py":
            return None  # ``from module import name``: a name in it, not a module
        folders = [top.parent]
    elif spec.origin is None and spec.submodule_search_locations and len(parts) > 1:
        folders = [Path(location) for location in spec.submodule_search_locations]
    else:
        return None
    for folder in folders:
        inner = folder.joinpath(*parts[1:-1])
        for candidate in (inner / parts[-1] / "__init__.py", inner / f"{parts[-1]}.py"):
            if candidate.is_file():
                return candidate if _users(candidate, roots) else None
    return None


def _users(file: Path, roots: tuple[Path, ...]) -> bool:
    """Whether ``file`` is in one of ``roots`` and is neither Python's own nor an installed
    package's (a home folder can hold pyenv's Python)."""
    installed = {"site-packages", "dist-packages"} & set(file.parts) or any(
        file.is_relative_to(prefix) for prefix in {sys.prefix, sys.base_prefix}
    )
    return not installed and any(file.is_relative_to(root) for root in roots)


def split_path(path: Any, field: str) -> tuple[str, str]:
    """``("package.module", "function")`` of a ``"package.module:function"`` string."""
    if not isinstance(path, str) or path.count(":") != 1:
        raise UserCodeError(
            f"{field} must be 'package.module:function' (a module importable from the working "
            f"folder or the environment, and a function in it); got {path!r}"
        )
    module_name, _, attribute = path.partition(":")
    names = [*module_name.split("."), *attribute.split(".")]
    if not all(part.isidentifier() for part in names):
        raise UserCodeError(
            f"{field} must be 'package.module:function' with Python identifiers; got {path!r}"
        )
    return module_name, attribute


def load_callable(path: Any, field: str) -> Callable[..., Any]:
    """The function ``path`` names; ``field`` is the experiment field, for the message."""
    module_name, attribute = split_path(path, field)
    if module_name == "__main__":
        # Imports here (the checks pass), but Ray's workers run another __main__: the search
        # failed later with "__main__.__spec__ is None".
        raise UserCodeError(
            f"{field}: {path!r} is defined in the running script, which Ray's workers cannot "
            "import; move it into a module beside the script (e.g. my_code.py) and give "
            f"'my_code:{attribute}'"
        )
    _working_folder_importable()
    # A module written after Python listed its folder (a notebook, a test) must still import.
    importlib.invalidate_caches()
    first = module_name not in sys.modules
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UserCodeError(
                f"{field}: module {module_name!r} is not importable from {os.getcwd()} or the "
                f"environment ({path!r})"
            ) from None
        raise UserCodeError(
            f"{field}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # the user's module raised while importing (sys.exit too)
        raise UserCodeError(
            f"{field}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    if first or module_name not in _STAMPS:
        _STAMPS[module_name] = _stamps(source_files(path))
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise UserCodeError(f"{field}: {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    # A class is callable too: an nn.Module subclass taking the same arguments is a builder.
    if not callable(target):
        name = type(target).__name__
        article = "an" if name[:1].lower() in "aeiou" else "a"
        raise UserCodeError(f"{field}: {path!r} is {article} {name}, not a function")
    return target


# The modification time and size of each source file (``source_files``) of the user's modules
# as load_callable found them when it first imported each one, by module name.
_STAMPS: dict[str, dict[Path, tuple[int, int]]] = {}


def _stamps(files: list[Path]) -> dict[Path, tuple[int, int]]:
    found = {}
    for file in files:
        with contextlib.suppress(OSError):
            stat = file.stat()
            found[file] = (stat.st_mtime_ns, stat.st_size)
    return found


def reload_if_changed(path: str, field: str) -> bool:
    """Import again the module of ``path``, and the modules of the user's it imports, when
    one of their files changed since :func:`load_callable` imported it in this process (a
    notebook: the builder fixed, the cell run again). Python keeps the first import: a second
    ``run_search`` checked the old builder and trained the teacher with it, cached under the
    new file's digest, while Ray's new workers imported the new file. Returns whether it
    did; ``field`` names the path in the error of a module that no longer imports. Called by
    the search's driver, never in a trial's worker (a search's trials keep one version)."""
    module_name = path.partition(":")[0]
    recorded = _STAMPS.get(module_name)
    if recorded is None or module_name not in sys.modules or _stamps(list(recorded)) == recorded:
        return False
    files = source_files(path)
    by_file = {}
    for module in list(sys.modules.values()):
        source = getattr(module, "__file__", None)
        if isinstance(source, str):
            by_file[Path(source)] = module
    try:
        for file in reversed(files):  # the imported before the importers
            if file in by_file:
                importlib.reload(by_file[file])
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # as a first import's failure is said
        raise UserCodeError(
            f"{field}: importing {module_name!r} again (its source changed) failed: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    _STAMPS[module_name] = _stamps(files)
    return True


def module_of(path: str) -> str:
    """The top-level module a ``"package.module:function"`` path imports."""
    return path.partition(":")[0].split(".")[0]
