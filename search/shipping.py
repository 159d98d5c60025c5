"""Ship the user's own modules (model builders, dataset factories) to every Ray worker.

A builder named ``my_models:build`` imports on the driver because it sits in the folder the
search was started from; a Ray worker, on another node or started by ``ray start`` elsewhere,
has neither that folder nor its files. Ray's ``runtime_env`` ``py_modules`` uploads each module
(a package folder or a single ``.py`` file) once per job and puts it on every worker's path.
Modules installed in the Python environment (``site-packages``) are not shipped: the nodes are
expected to have the same environment, as they must for torch and nascomp themselves.
``resources.ship_code: false`` turns shipping off, for clusters whose nodes install the user's
code themselves.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import sysconfig
from pathlib import Path
from typing import Any

from nascomp.search.experiment import Experiment
from nascomp.spaces.models import code_families
from nascomp.spaces.userfn import module_of

_CODE_FIELDS = ("builder", "factory")


def user_code_paths(experiment: Experiment) -> list[str]:
    """Every ``"package.module:function"`` the experiment names (student, teacher, data)."""
    found: list[str] = []
    sources: list[Any] = [
        experiment.space.arch.model_dump(),
        experiment.teacher.arch,
        experiment.data.model_dump(),
    ]
    for source in sources:
        for key in _CODE_FIELDS:
            value = source.get(key)
            for path in value if isinstance(value, list) else [value]:
                if isinstance(path, str) and ":" in path and path not in found:
                    found.append(path)
    return found


def code_family_modules() -> list[str]:
    """The top-level modules the families the user's code registered with the decorator need
    on a worker (``spaces.models.code_families``): the builder's own module, or, for a builder
    defined in the script itself (``__main__``, which the search sends by value), the modules
    of what its code names (``from my_layers import block`` in the script: ``my_layers``)."""
    names: list[str] = []
    for family in code_families().values():
        for function in filter(None, (family.build, family.describe)):
            module = getattr(function, "__module__", None)
            if isinstance(module, str) and module != "__main__":
                names.append(module)
                continue
            code, scope = getattr(function, "__code__", None), getattr(function, "__globals__", {})
            for word in code.co_names if code is not None else ():
                value = scope.get(word)
                found = (
                    value.__name__
                    if inspect.ismodule(value)
                    else getattr(value, "__module__", None)
                )
                if isinstance(found, str) and found != "__main__":
                    names.append(found)
    return list(dict.fromkeys(name.split(".")[0] for name in names))


def _environment_folders() -> list[Path]:
    folders = {sysconfig.get_path(name) for name in ("purelib", "platlib", "stdlib")}
    return [Path(folder).resolve() for folder in folders if folder]


def module_files(experiment: Experiment) -> list[str]:
    """The files or package folders to ship: the top-level module of each named function,
    unless it is installed in the environment."""
    installed = _environment_folders()
    shipped: list[str] = []
    named = [module_of(path) for path in user_code_paths(experiment)]
    for name in dict.fromkeys([*named, *code_family_modules()]):
        if name in sys.builtin_module_names:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue  # the pre-flight has already said it does not import
        if spec.submodule_search_locations:  # a package: ship its folder
            location = Path(next(iter(spec.submodule_search_locations)))
        elif spec.origin and spec.origin.endswith(".py"):
            location = Path(spec.origin)
        else:
            continue  # a compiled extension: it must be installed on the nodes
        location = location.resolve()
        if any(location.is_relative_to(folder) for folder in installed):
            continue
        if name == "nascomp":
            continue
        shipped.append(str(location))
    return shipped


def runtime_env(experiment: Experiment) -> dict[str, Any] | None:
    """The ``runtime_env`` for ``ray.init``; None when nothing needs shipping."""
    if not experiment.resources.ship_code:
        return None
    modules = module_files(experiment)
    return {"py_modules": modules} if modules else None
