"""Fixtures of the trainer tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nascomp.trainers.user_data import clear_user_cache


@pytest.fixture
def user_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str, str], str]]:
    """Writes a user's module (a dataset factory, model builders) into a fresh working folder,
    as a user's own file next to their experiment; returns its importable name. Each test gets
    a new name (Python caches modules by name) and empty dataset and cache folders."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NASCOMP_CACHE", str(tmp_path / "cache"))
    clear_user_cache()

    def write(prefix: str, source: str) -> str:
        name = f"{prefix}_{tmp_path.name}"
        (tmp_path / f"{name}.py").write_text(source)
        return name

    yield write
    clear_user_cache()
