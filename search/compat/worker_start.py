"""The first program of each Python worker of nascomp's local Ray, in place of Ray's own
``ray/_private/workers/setup_worker.py`` (``compat.ray.lean_local_node`` names it).

The raylet starts the worker of an actor or task that has a runtime env (Ray Tune gives one to
every trial's actor) as ``python setup_worker.py default_worker.py ARGS
--serialized-runtime-env-context=JSON --language=PYTHON``. Ray's script imports part of Ray to
read that JSON, sets the context's environment variables, and execs ``bash -c "exec PYTHON
default_worker.py ARGS"``, which imports Ray again: 0.47 CPU-s more per worker start than this
script on a 2-core machine, Ray 2.60 (``bench/ray_start.py``). For a context that asks for
nothing but environment variables and an interpreter (every runtime env of a nascomp search:
Tune's variables, ``py_modules``' PYTHONPATH), this script does the same with the standard
library and execs the interpreter directly. Any other context (a command prefix such as a
container's or a conda environment's, Java jars, another entry point, another language) goes
to Ray's own script unchanged.

Standard library only, and nothing imported from this folder: Python puts the script's folder
first on ``sys.path``, where ``ray.py`` and ``optuna.py`` would shadow the real packages.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

# The context's keys this script carries out itself (ray/_private/runtime_env/context.py).
_HANDLED = {"env_vars", "py_executable"}
# Ray's update_envs: ${X} of a variable that is not set becomes the empty string.
_UNSET = re.compile(r"\$\{[A-Z0-9_]+\}")


def plain_context(serialized: str | None, language: str | None) -> dict[str, Any] | None:
    """The context as a dict when this script can start the worker itself, else None."""
    if language != "PYTHON":
        return None
    try:
        context = json.loads(serialized or "{}")
    except ValueError:
        return None
    if not isinstance(context, dict):
        return None
    extra = {key: value for key, value in context.items() if key not in _HANDLED and value}
    env_vars = context.get("env_vars") or {}
    if extra or not isinstance(env_vars, dict):
        return None
    return context


def set_env_vars(env_vars: dict[str, str]) -> None:
    """Set the context's variables in this process as Ray's ``update_envs`` does: in order,
    ``$X`` and ``${X}`` expanded, a ``${X}`` of a variable that is not set dropped."""
    for key, value in env_vars.items():
        os.environ[key] = _UNSET.sub("", os.path.expandvars(value))


def _ray_setup_worker(argv: list[str]) -> None:
    """Run Ray's own setup_worker.py as the raylet would have (it execs the worker)."""
    import importlib.util
    import runpy

    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.util.find_spec("ray")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("nascomp worker start: Ray is not importable")
    folder = os.path.join(next(iter(spec.submodule_search_locations)), "_private", "workers")
    script = os.path.join(folder, "setup_worker.py")
    sys.path.insert(0, folder)  # as if Ray's script had been started
    sys.argv = [script, *argv]
    runpy.run_path(script, run_name="__main__")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(add_help=False)  # the options Ray's script reads
    parser.add_argument("--serialized-runtime-env-context", type=str)
    parser.add_argument("--language", type=str)
    args, remaining = parser.parse_known_args(argv)
    context = plain_context(args.serialized_runtime_env_context, args.language)
    if context is None or not remaining:
        _ray_setup_worker(argv)
        return
    python = context.get("py_executable") or sys.executable
    set_env_vars(context.get("env_vars") or {})
    os.execv(python, [python, *remaining])


if __name__ == "__main__":
    main(sys.argv[1:])
