"""The user's code in keys and digests: the teacher's cache key, the cache folder, and the
sources a reproduction compares with the search's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nascomp.trainers.init import file_digest
from nascomp.trainers.listing import code_files_digest, code_paths
from nascomp.trainers.teacher import cache_dir

# Run as the console script runs: a script outside the working folder, so that the working
# folder is not on sys.path until nascomp puts it there to import the user's builder.
SCRIPT = """
from nascomp.spaces.userfn import load_callable
from nascomp.trainers.settings import AugmentSettings, DataConfig, TeacherConfig
from nascomp.trainers.teacher import TeacherJob, teacher_path, user_inputs

arch = {"family": "custom", "builder": "keyed_models:net"}
job = TeacherJob(
    teacher=TeacherConfig.model_construct(arch=arch, checkpoint=None, optimizer="adam"),
    data=DataConfig(),
    augment=AugmentSettings(),
    momentum=0.9,
    seed=0,
    threads=1,
    device="cpu",
)
before = (teacher_path(job).name, sorted(user_inputs(job).get("code", {})))
load_callable(arch["builder"], "teacher.arch.builder")  # what building the teacher does
after = (teacher_path(job).name, sorted(user_inputs(job).get("code", {})))
print(before)
print(after)
"""


def test_the_key_holds_the_builders_source_before_the_builder_is_imported(
    tmp_path: Path,
) -> None:
    """``nascomp reproduce`` looks the teacher up before anything imports the builder; the
    search writes it after. Both keys must be the same and hold the builder's file, or every
    reproduce of a distilled trial trained the teacher again (and an edited builder would not
    change the key)."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "keyed_models.py").write_text(
        "from torch import nn\n\n\ndef net(input_shape, n_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.LazyLinear(n_classes))\n"
    )
    script = tmp_path / "lookup.py"
    script.write_text(SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=work, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    before, after = result.stdout.strip().splitlines()
    assert before == after
    assert str(work / "keyed_models.py") in before


def test_an_empty_cache_variable_is_the_default_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NASCOMP_CACHE= (empty) cached teachers in the working folder's teachers/."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NASCOMP_CACHE", "")
    assert cache_dir() == tmp_path / ".cache" / "nascomp"
    monkeypatch.setenv("NASCOMP_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def test_a_trials_code_paths_and_their_sources_digests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What reproduce compares with the search's record: the builder, factory and teacher
    builder a flat config names, and the SHA-256 of each one's source file."""
    flat = {
        "arch.family": "custom",
        "arch.builder": "digest_models:net",
        "arch.width": 8,
        "data.factory": "digest_models:rows",
        "teacher.arch": {"family": "custom", "builder": "digest_teacher:big"},
        "train.init": "weights.pt",
    }
    assert code_paths(flat) == ["digest_models:net", "digest_models:rows", "digest_teacher:big"]
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "digest_models.py"
    source.write_text("def net():\n    pass\n")
    first = code_files_digest(["digest_models:net", "absent_module_here:f"])
    assert first == {"digest_models:net": file_digest(source)}  # one without a file: left out
    source.write_text("def net():\n    return 1\n")
    assert code_files_digest(["digest_models:net"]) != first


def _project(root: Path) -> None:
    """A user's project: a builder module importing their helpers, a package (with relative
    imports) and libraries."""
    (root / "pkg" / "sub").mkdir(parents=True)
    files = {
        "top.py": "import os\nimport torch\nimport helper\nfrom pkg import thing\n"
        "from pkg.sub import deep as d\nfrom helper import WIDTH\n\n\ndef build():\n    pass\n",
        "helper.py": "import cfg\nWIDTH = 4\n",
        "cfg.py": "MULT = 1\n",
        "pkg/__init__.py": "from . import sub\n",
        "pkg/thing.py": "Y = 2\n",
        "pkg/sub/__init__.py": "from .deep import Z\n",
        "pkg/sub/deep.py": "Z = 3\n",
        "unused.py": "raise SystemExit('never imported, never read')\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)


def test_source_files_are_the_module_and_the_users_modules_it_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found from the import statements, transitively, relative ones too; libraries (torch,
    os) and modules the code does not import are not; ``from helper import WIDTH`` names a
    value, not a module. Nothing is imported."""
    import sys

    from nascomp.spaces.userfn import source_files

    _project(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    found = {str(path.relative_to(tmp_path)) for path in source_files("top:build")}
    assert found == {
        "top.py",
        "helper.py",
        "cfg.py",
        "pkg/__init__.py",
        "pkg/thing.py",
        "pkg/sub/__init__.py",
        "pkg/sub/deep.py",
    }
    assert source_files("top:build")[0] == tmp_path / "top.py"
    assert not {"top", "helper", "cfg", "pkg"} & set(sys.modules)
    assert source_files("absent_module_here:f") == []


def test_an_edited_helper_changes_the_teacher_key_and_the_code_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A builder taking its widths from the user's cfg.py was served the teacher cached before
    cfg.py changed: every trial failed loading it (a shape mismatch), or, where the shapes
    held, distilled from another network than the one configured (a helper's API sweep)."""
    from nascomp.trainers.settings import AugmentSettings, DataConfig, TeacherConfig
    from nascomp.trainers.teacher import TeacherJob, teacher_path

    _project(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    job = TeacherJob(
        teacher=TeacherConfig.model_construct(
            arch={"family": "custom", "builder": "top:build"}, checkpoint=None, optimizer="adam"
        ),
        data=DataConfig(),
        augment=AugmentSettings(),
        momentum=0.9,
        seed=0,
        threads=1,
        device="cpu",
    )
    key, digest = teacher_path(job), code_files_digest(["top:build"])
    (tmp_path / "cfg.py").write_text("MULT = 3\n")
    assert teacher_path(job) != key
    assert code_files_digest(["top:build"]) != digest
    (tmp_path / "cfg.py").write_text("MULT = 1\n")
    assert (teacher_path(job), code_files_digest(["top:build"])) == (key, digest)
    (tmp_path / "unused.py").write_text("X = 1\n")  # not the builder's: no new teacher
    assert teacher_path(job) == key


def test_source_files_follow_namespace_packages_and_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain folder without __init__.py (a namespace package) was not looked into, and a
    builder found elsewhere on sys.path reading cfg.py in the working folder left cfg.py out
    (a helper's sweep): their edits reached neither the teacher's key nor reproduce."""
    from nascomp.spaces.userfn import source_files

    project, elsewhere = tmp_path / "project", tmp_path / "libs"
    (project / "plain").mkdir(parents=True)
    elsewhere.mkdir()
    (project / "plain" / "builder.py").write_text("from plain import helper\n")
    (project / "plain" / "helper.py").write_text("from plain.more import X\n")
    (project / "plain" / "more.py").write_text("X = 1\n")
    (project / "cfg.py").write_text("WIDTH = 8\n")
    (elsewhere / "far_builder.py").write_text("import cfg\n")
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(elsewhere))
    monkeypatch.syspath_prepend(str(project))
    found = [p.relative_to(project) for p in source_files("plain.builder:build")]
    assert [str(p) for p in found] == ["plain/builder.py", "plain/helper.py", "plain/more.py"]
    assert source_files("far_builder:build") == [elsewhere / "far_builder.py", project / "cfg.py"]


# Under a read-only mount of the cache: what the search is told, then a trained teacher's
# caching, and whether its file is there.
READ_ONLY_CACHE = """
import torch
from nascomp.search.experiment import load_experiment, teacher_job
from nascomp.trainers.teacher import cache_teacher, cache_unwritable, teacher_path

print(cache_unwritable())
job = teacher_job(load_experiment(None, []))
cache_teacher(job, {"weight": torch.zeros(1)}, {"teacher_val_accuracy": 0.5})
print(teacher_path(job).exists())
"""


def test_a_read_only_cache_is_said_and_costs_the_cache_alone(tmp_path: Path) -> None:
    """A read-only home: the teacher trained, then saving it was a traceback that lost it (a
    helper's sweep). The search is told before the teacher trains (``cache_unwritable``, a
    note), and the trained teacher serves the search uncached."""
    import os
    import shutil

    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"]).returncode:
        report = pytest.fail if os.environ.get("CI") else pytest.skip
        report("needs `unshare -m` (root) to mount a folder read-only")
    cache = tmp_path / "cache"
    cache.mkdir()
    mount = f"mount --bind {cache} {cache} && mount -o remount,ro,bind {cache} {cache}"
    python = [sys.executable, READ_ONLY_CACHE]  # bash's $0 and $1
    done = subprocess.run(
        ["unshare", "-m", "bash", "-c", f'{mount} && exec "$0" -c "$1"', *python],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NASCOMP_CACHE": str(cache)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [f"{cache} is on a read-only file system", "False"]
