"""The teacher's cache key where the user's code builds the teacher."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
