"""The user's modules in a long-lived process (a notebook): a second search sees the files as
they are now (spaces/userfn.py: reload_if_changed)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from nascomp.spaces.userfn import UserCodeError, load_callable, reload_if_changed


def _write(path: Path, text: str, tick: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(tick * 10**9, tick * 10**9))  # a new time, however fast the test


def test_an_edited_module_or_helper_is_imported_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A builder fixed in its file, or in a helper it imports, then run again in the same
    process: Python kept the first import, so the search checked the old builder and trained
    the teacher with it (a helper's API sweep), while Ray's new workers imported the new one."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for name in ("nb_models", "nb_sizes"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        _edited_and_imported_again(tmp_path)
    finally:
        for name in ("nb_models", "nb_sizes"):
            sys.modules.pop(name, None)


def _edited_and_imported_again(tmp_path: Path) -> None:
    _write(tmp_path / "nb_sizes.py", "WIDTH = 4\n", 1)
    _write(tmp_path / "nb_models.py", "import nb_sizes\n\n\ndef build():\n    return 1\n", 1)
    assert load_callable("nb_models:build", "space.arch.builder")() == 1
    assert not reload_if_changed("nb_models:build", "space.arch.builder")  # nothing changed

    _write(tmp_path / "nb_models.py", "import nb_sizes\n\n\ndef build():\n    return 2\n", 2)
    assert reload_if_changed("nb_models:build", "space.arch.builder")
    assert load_callable("nb_models:build", "space.arch.builder")() == 2

    _write(tmp_path / "nb_sizes.py", "WIDTH = 16\n", 3)  # the helper alone
    assert reload_if_changed("nb_models:build", "space.arch.builder")
    assert sys.modules["nb_models"].nb_sizes.WIDTH == 16

    _write(tmp_path / "nb_models.py", "raise ValueError('half edited')\n", 4)
    with pytest.raises(UserCodeError, match=r"^space.arch.builder: importing 'nb_models' again"):
        reload_if_changed("nb_models:build", "space.arch.builder")
