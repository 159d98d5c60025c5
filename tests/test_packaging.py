"""nascomp installs one top-level import name, and the bare folder names are not ours.

The folders at the repository root (search/, spaces/, trainers/, compressors/) install as
nascomp.search, nascomp.spaces, ...: PyPI has packages that install `spaces` and `compressors`
as top-level folders, and a bare `search` or `trainers` would be shadowed by any file of that
name in the user's working folder.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
BARE_NAMES = ("search", "spaces", "trainers", "compressors")


def _top_level(path: str) -> str:
    return Path(path).parts[0]


def test_the_installed_distribution_puts_only_nascomp_on_the_path() -> None:
    # From the environment's site-packages: a build's nascomp.egg-info in the working folder
    # (on sys.path under pytest) is not what pip installed.
    site = sysconfig.get_paths()["purelib"]
    (dist,) = importlib.metadata.distributions(name="nascomp", path=[site])
    assert (dist.read_text("top_level.txt") or "").split() == ["nascomp"]
    files = [str(f) for f in dist.files or []]
    assert files, "nascomp's installed RECORD lists no files"
    importable: set[str] = set()
    for name in files:
        top = _top_level(name)
        if top in ("..", "__pycache__") or top.endswith((".dist-info", ".pth")):
            continue  # scripts in bin/, bytecode, metadata, the editable path hook
        if top.startswith("__editable__") and top.endswith("_finder.py"):
            # An editable install maps import names to folders: read its mapping.
            finder = Path(dist.locate_file(name)).read_text()
            mapping = next(
                node.value
                for node in ast.walk(ast.parse(finder))
                if isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and node.target.id == "MAPPING"
            )
            importable |= {key.split(".")[0] for key in ast.literal_eval(mapping)}
            continue
        importable.add(top.removesuffix(".py"))
    assert importable == {"nascomp"}, importable


def test_a_built_wheel_holds_nascomp_alone(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    had_build = (REPO_ROOT / "build").exists()
    try:
        built = subprocess.run(
            [*command, "-w", str(tmp_path), str(REPO_ROOT)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        if not had_build:  # setuptools builds in ./build: leave the checkout as it was
            shutil.rmtree(REPO_ROOT / "build", ignore_errors=True)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("nascomp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {_top_level(n) for n in names if not _top_level(n).endswith(".dist-info")}
    assert tops == {"nascomp"}, tops
    # Every sub-package made it in, and the quickstart's data file with them.
    for expected in (
        "nascomp/__init__.py",
        "nascomp/search/cli.py",
        "nascomp/search/samplers/pareto_local.py",
        "nascomp/search/tracking/store.py",
        "nascomp/search/tune/trainable.py",
        "nascomp/search/front/pareto.py",
        "nascomp/search/compat/ray.py",
        "nascomp/compressors/compat/torch_pruning.py",
        "nascomp/spaces/quickstart.yaml",
        "nascomp/trainers/trial.py",
    ):
        assert expected in names, expected


def test_every_python_package_folder_is_installed() -> None:
    """A new sub-package must be listed in pyproject's [tool.setuptools] packages."""
    import tomllib

    listed = set(
        tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {"nascomp"}
    for folder in BARE_NAMES:
        for init in (REPO_ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO_ROOT)
            found.add(".".join(("nascomp", *relative.parts)))
    assert found == listed, (found - listed, listed - found)


def test_outside_the_repository_the_bare_names_are_not_ours(tmp_path: Path) -> None:
    probe = (
        "import importlib.util, json, sys\n"
        f"names = {BARE_NAMES!r}\n"
        "specs = {n: importlib.util.find_spec(n) for n in names}\n"
        "print(json.dumps({n: (s.origin if s else None) for n, s in specs.items()}))\n"
        "import nascomp.compressors\n"
        "print(json.dumps(sorted(m for m in ('ray', 'mlflow', 'optuna') if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    origins, heavy = (json.loads(line) for line in done.stdout.splitlines())
    for name, origin in origins.items():
        # Another project's package of that name may be installed; ours never answers.
        assert origin is None or str(REPO_ROOT) not in origin, (name, origin)
    # The lazy API: a lower layer imports neither the search nor its libraries.
    assert heavy == []


def test_the_python_api_is_importable_from_nascomp() -> None:
    import nascomp
    from nascomp.search.api import load_experiment, load_exported, run_search

    assert nascomp.run_search is run_search
    assert nascomp.load_experiment is load_experiment
    assert nascomp.load_exported is load_exported
    assert set(nascomp.__all__) <= set(dir(nascomp))
    with pytest.raises(AttributeError, match="no attribute 'search_run'"):
        nascomp.search_run  # noqa: B018
