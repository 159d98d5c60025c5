"""Image folders as people have them (trainers/imagefolder.py): split folders, what is not a
sample, links, wide and rotated images. Real files written with PIL, read by load_data."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nascomp.trainers.data import clear_cache, load_data
from nascomp.trainers.imagefolder import (
    DECODE,
    IMAGE_EXTENSIONS,
    decode_one,
    layout,
    skipped_note,
)


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    clear_cache()  # every test reads folders of its own, some of them twice
    yield
    clear_cache()


def _images(folder: Path, n: int, shade: int = 0, suffix: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(n):
        Image.new("L", (6, 6), shade + index).save(folder / f"{index}{suffix}")


def _split(root: Path, n: int = 4) -> None:
    for class_index, name in enumerate(("cat", "dog")):
        _images(root / name, n, shade=100 * class_index)


def test_train_and_val_folders_are_splits_not_classes(tmp_path: Path) -> None:
    """train/ + val/ (ImageNet's layout): val/ is the validation split, the classes are the
    folders inside, and the test split is drawn from train/, which a note says."""
    _split(tmp_path / "train", n=10)
    _split(tmp_path / "val", n=3)
    splits = load_data("imagefolder", str(tmp_path))
    assert splits.classes == ("cat", "dog")
    assert len(splits.val_y) == 6  # val/ itself: 3 per class
    assert len(splits.train_y) + len(splits.test_y) == 20 and len(splits.test_y) == 4
    assert splits.notes == (
        f"data: imagefolder: {tmp_path} has no test/ folder, so a stratified 20% of "
        f"{tmp_path / 'train'} is the test split",
    )


def test_train_val_and_test_folders_are_all_read(tmp_path: Path) -> None:
    _split(tmp_path / "train", n=5)
    _split(tmp_path / "validation", n=2)
    _split(tmp_path / "test", n=3)
    splits = load_data("imagefolder", str(tmp_path), val_fraction=0.5)
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (10, 4, 6)
    assert splits.notes == ()


def test_a_test_folder_may_lack_a_class_but_not_hold_another(tmp_path: Path) -> None:
    _split(tmp_path / "train")
    _images(tmp_path / "test" / "dog", 2)
    splits = load_data("imagefolder", str(tmp_path))
    assert splits.test_y.tolist() == [1, 1]  # dog is label 1, as in train/
    clear_cache()
    _images(tmp_path / "test" / "bird", 2)
    with pytest.raises(ValueError, match=r"test holds class folder\(s\) bird that the training"):
        load_data("imagefolder", str(tmp_path))


def test_split_roots_that_cannot_be_read_say_why(tmp_path: Path) -> None:
    _split(tmp_path / "data" / "test")
    with pytest.raises(ValueError, match=r"holds test but no train/ folder"):
        layout(str(tmp_path / "data"))
    _split(tmp_path / "data" / "train")
    (tmp_path / "data" / "extra").mkdir()
    with pytest.raises(ValueError, match=r"split folders \(test, train\) and other folders"):
        layout(str(tmp_path / "data"))
    # One level too high: the dataset's folder is the root's only sub-folder.
    (tmp_path / "data" / "extra").rmdir()
    with pytest.raises(
        ValueError, match=f"; if it holds the dataset, give data.root: {tmp_path}/data$"
    ):
        layout(str(tmp_path))


def test_classes_named_like_a_split_beside_others_are_classes(tmp_path: Path) -> None:
    for name in ("valid", "invalid"):  # a document checker's two classes
        _images(tmp_path / name, 4)
    assert load_data("imagefolder", str(tmp_path), val_fraction=0.25).classes == (
        "invalid",
        "valid",
    )


def test_hidden_and_zip_leftover_folders_at_any_depth_hold_no_sample(tmp_path: Path) -> None:
    """.ipynb_checkpoints inside a class folder held a ship photo, read as a cat."""
    _split(tmp_path)
    _images(tmp_path / "cat" / ".ipynb_checkpoints", 1)
    _images(tmp_path / "cat" / "@eaDir", 1)
    _images(tmp_path / "__MACOSX" / "cat", 1)
    (tmp_path / "cat" / "Thumbs.db").write_bytes(b"\x00")
    splits = load_data("imagefolder", str(tmp_path), val_fraction=0.25)
    assert splits.classes == ("cat", "dog")
    assert len(splits.train_y) + len(splits.val_y) + len(splits.test_y) == 8
    assert splits.notes[0].startswith("data: imagefolder: ")  # the split's note alone
    assert len(splits.notes) == 1


def test_other_files_are_counted_and_gif_and_jfif_are_read(tmp_path: Path) -> None:
    _split(tmp_path)
    Image.new("P", (6, 6), 3).save(tmp_path / "cat" / "anim.gif")
    Image.new("RGB", (6, 6), (1, 2, 3)).save(tmp_path / "dog" / "photo.jfif", format="JPEG")
    for name in ("labels.txt", "notes.txt", "scan.pdf"):
        (tmp_path / "dog" / name).write_text("x")
    splits = load_data("imagefolder", str(tmp_path), val_fraction=0.25)
    assert len(splits.train_y) + len(splits.val_y) + len(splits.test_y) == 10
    assert splits.notes[0].startswith(
        "data: imagefolder skipped 3 files that are not images it reads in the class folders "
        "(.txt 2, .pdf 1); it reads .jpg .jpeg"
    )
    assert skipped_note(Counter({".txt": 1})) == (  # it said "1 file that are"
        "data: imagefolder skipped 1 file that is not an image it reads in the class folders "
        f"(.txt 1); it reads {' '.join(IMAGE_EXTENSIONS)}"
    )


def test_a_link_loop_or_a_file_read_twice_is_an_error(tmp_path: Path) -> None:
    """A link to .. read every class again as cat (40 times); a link from train/ into test/
    leaked the test images into training."""
    _split(tmp_path / "train")
    _split(tmp_path / "test")
    os.symlink("..", tmp_path / "train" / "cat" / "up")
    with pytest.raises(ValueError, match=r"train/cat/up/cat is the folder .* reached again"):
        load_data("imagefolder", str(tmp_path))
    (tmp_path / "train" / "cat" / "up").unlink()
    os.symlink(tmp_path / "test" / "dog", tmp_path / "train" / "dog" / "more")
    with pytest.raises(ValueError, match=r"test/dog/0\.png is the file .*more/0\.png read again"):
        load_data("imagefolder", str(tmp_path))


def test_images_of_different_sizes_are_refused_naming_a_file_of_each(tmp_path: Path) -> None:
    _split(tmp_path)
    Image.new("L", (9, 5), 7).save(tmp_path / "dog" / "wide.png")
    with pytest.raises(ValueError) as caught:
        load_data("imagefolder", str(tmp_path))
    assert str(caught.value) == (
        f"imagefolder: images have 2 different sizes (height x width: 5x9: "
        f"{tmp_path / 'dog' / 'wide.png'}; 6x6: {tmp_path / 'cat' / '0.png'}); set image_size "
        "to resize them to one size"
    )
    assert load_data("imagefolder", str(tmp_path), image_size=6).input_shape == (1, 6, 6)


def test_wide_grey_images_keep_their_levels_and_float_ones_are_refused(tmp_path: Path) -> None:
    """PIL's convert('L') clipped a 16-bit scan to black and white."""
    levels = np.arange(0, 65536, 1024, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(levels).save(tmp_path / "scan.png")
    assert Image.open(tmp_path / "scan.png").mode.startswith("I")
    decoded = decode_one(str(tmp_path / "scan.png"), None)
    assert decoded.shape == (8, 8, 1) and len(np.unique(decoded)) == 64
    assert decoded.max() == round(64512 * 255 / 65535) and decoded.min() == 0
    # preprocess.json's decode says so, with the formula a deployment applies
    assert "(v * 255 + 32767) // 65535" in DECODE and "exif_transpose" in DECODE
    following = (levels.astype(np.int64) * 255 + 32767) // 65535
    np.testing.assert_array_equal(decoded[..., 0], following)
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)).save(tmp_path / "depth.tif")
    with pytest.raises(ValueError, match=r"depth\.tif is a 32-bit float image, whose value range"):
        decode_one(str(tmp_path / "depth.tif"), None)


def test_a_folder_of_16_bit_files_holding_8_bit_values_gets_a_note(tmp_path: Path) -> None:
    """Scaled over 0..65535, levels 0..255 in 16-bit files decode to 0 and 1: the images
    were nearly black, their levels lost, and nothing said so (a helper's sweep)."""
    for class_index, name in enumerate(("cat", "dog")):
        (tmp_path / name).mkdir()
        for k in range(4):
            levels = np.full((6, 6), 60 + 120 * class_index + k, dtype=np.uint16)
            Image.fromarray(levels).save(tmp_path / name / f"{k}.png")
    splits = load_data("imagefolder", str(tmp_path))
    assert splits.notes[-1] == (
        "data: imagefolder: every image decodes to levels 0..1 of 255 (nearly black): 16-bit "
        "images are scaled over their whole 0..65535 range, so 16-bit files that hold 8-bit "
        "values (0..255) lose them; save such files as 8-bit images"
    )
    clear_cache()
    for path in tmp_path.rglob("*.png"):  # the same levels as 8-bit files: no note
        Image.fromarray(np.asarray(Image.open(path)).astype(np.uint8)).save(path)
    assert not any("nearly black" in note for note in load_data("imagefolder", str(tmp_path)).notes)


def test_grey_with_alpha_stays_grey_and_exif_rotation_is_applied(tmp_path: Path) -> None:
    Image.new("LA", (5, 3), (80, 255)).save(tmp_path / "la.png")
    assert decode_one(str(tmp_path / "la.png"), None).shape == (3, 5, 1)
    photo = Image.new("RGB", (8, 4), (10, 20, 30))
    exif = photo.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view
    photo.save(tmp_path / "phone.jpg", exif=exif)
    assert decode_one(str(tmp_path / "phone.jpg"), None).shape == (8, 4, 3)  # as viewers show
