"""`nascomp reproduce` after the files under data.root changed says so, instead of blaming
the device: the search keeps a digest of the files it read (trainers/listing.py)."""

from __future__ import annotations

import hashlib
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


def test_the_digest_sees_files_in_linked_folders_and_names_that_are_not_utf8(
    tmp_path: Path,
) -> None:
    """Class folders that are links: Path.rglob did not enter them (Python < 3.13), so the
    digest was that of nothing, and a teacher cached on it survived swapping their images. A
    latin-1 folder name stopped the search with "'utf-8' codec can't encode"."""
    _folder(tmp_path / "images", 3)
    linked = tmp_path / "linked"
    linked.mkdir()
    for name in ("cat", "dog"):
        (linked / name).symlink_to(tmp_path / "images" / name, target_is_directory=True)
    (linked / "loop").symlink_to(linked, target_is_directory=True)  # walked once
    first = data_files_digest("imagefolder", str(linked))
    assert first not in (None, hashlib.sha256().hexdigest())  # the digest of no file
    (tmp_path / "images" / "cat" / "0.png").rename(tmp_path / "images" / "dog" / "moved.png")
    assert data_files_digest("imagefolder", str(linked)) != first
    latin1 = tmp_path / "latin1"
    (latin1 / "caf\udce9").mkdir(parents=True)  # the bytes caf\xe9, as os.listdir gives them
    Image.new("L", (8, 8), 9).save(latin1 / "caf\udce9" / "0.png")
    assert data_files_digest("imagefolder", str(latin1)) is not None


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
