"""`nascomp reproduce` after the files under data.root changed says so, instead of blaming
the device: the search keeps a digest of the files it read (trainers/listing.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from nascomp.trainers.listing import data_files_digest
from tests.search.conftest import nascomp, tiny_args


def _folder(root: Path, n: int) -> None:
    for index, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            shade = 40 + 150 * index + k
            Image.new("L", (8, 8), shade).save(root / name / f"{k}.png")


def test_the_digest_changes_with_the_files_and_is_none_for_bundled_data(tmp_path: Path) -> None:
    _folder(tmp_path / "data", 3)
    first = data_files_digest("imagefolder", str(tmp_path / "data"))
    assert first is not None
    assert data_files_digest("imagefolder", str(tmp_path / "data")) == first
    Image.new("L", (8, 8), 9).save(tmp_path / "data" / "cat" / "extra.png")
    assert data_files_digest("imagefolder", str(tmp_path / "data")) != first
    assert data_files_digest("digits", None) is None
    assert data_files_digest("mnist", str(tmp_path)) is None  # official files


@pytest.mark.e2e
def test_reproduce_after_the_data_changed_says_so(tmp_path: Path) -> None:
    _folder(tmp_path / "data", 12)
    args = tiny_args(
        tmp_path,
        "--set",
        "data.name=imagefolder",
        "--set",
        f"data.root={tmp_path / 'data'}",
        "--set",
        "search.trials=1",
        "--set",
        "space.distill.enabled=false",
    )
    searched = nascomp("search", *args, cwd=tmp_path)
    assert searched.returncode == 0, searched.stderr[-3000:]
    store = ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    same = nascomp("reproduce", "--rank", "1", *store, cwd=tmp_path)
    assert same.returncode == 0 and "data.root" not in same.stdout, same.stdout
    _folder(tmp_path / "data", 20)  # more images of each class
    again = nascomp("reproduce", "--rank", "1", *store, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        f"note: the files under data.root ({tmp_path / 'data'}) were added, removed or changed "
        "since the search read them" in again.stdout
    )
    assert "another device" not in again.stdout
