"""Data loading on the real offline datasets: sizes, label counts, normalisation, caching."""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nascomp.trainers import data
from nascomp.trainers.data import (
    DATASETS,
    DataNotFoundError,
    check_data_root,
    clear_cache,
    load_data,
)

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
# Mean / std of the 60,000 training images on the [0, 1] scale: the well-known constants.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
CIFAR_CLASSES = ("airplane", "automobile", "bird")
N_TRAIN_PER_CLASS, N_TEST_PER_CLASS = 20, 10


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    # Each test starts and ends empty, so caching is tested, not assumed, and memory is freed.
    clear_cache()
    yield
    clear_cache()


def histogram(labels: torch.Tensor, n_classes: int = 10) -> list[int]:
    return torch.bincount(labels, minlength=n_classes).tolist()


def assert_splits_are_well_formed(splits: data.DataSplits) -> None:
    for x, y in [(splits.train_x, splits.train_y), (splits.val_x, splits.val_y)]:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == splits.input_shape and len(x) == len(y)
    assert splits.test_x.shape[1:] == splits.input_shape
    assert splits.test_y.dtype == torch.int64


# ----------------------------------------------------------------------------- digits


def test_digits_sizes_and_stratified_splits() -> None:
    splits = load_data("digits")
    assert_splits_are_well_formed(splits)
    assert (splits.name, splits.n_classes, splits.input_shape) == ("digits", 10, (1, 8, 8))
    # 1797 images: ceil(20%) = 360 for test, ceil(10% of 1437) = 144 for val, 1293 train.
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (1293, 144, 360)
    full_counts = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]  # load_digits per class
    for count, full in zip(histogram(splits.test_y), full_counts, strict=True):
        assert abs(count - 0.2 * full) < 1  # stratified: each class keeps its 20%
    total = [
        a + b + c
        for a, b, c in zip(
            *map(histogram, (splits.train_y, splits.val_y, splits.test_y)), strict=True
        )
    ]
    assert total == full_counts


def test_max_test_samples_evaluates_a_stratified_subset_of_the_test_split() -> None:
    whole = load_data("digits", split_seed=3)
    capped = load_data("digits", split_seed=3, max_test_samples=100)
    assert len(capped.test_y) == 100
    for part in ("train_x", "train_y", "val_x", "val_y"):  # nothing else moves
        assert torch.equal(getattr(capped, part), getattr(whole, part)), part
    # Rows of the whole test split, in its order, each class keeping its share (36 of 360).
    kept = data.stratified_subset(whole.test_y, 100, split_seed=3)
    assert kept is not None and torch.equal(kept, kept.sort().values)
    assert torch.equal(capped.test_x, whole.test_x[kept])
    assert torch.equal(capped.test_y, whole.test_y[kept])
    for count, full in zip(histogram(capped.test_y), histogram(whole.test_y), strict=True):
        assert abs(count - full * 100 / 360) < 1
    # Drawn with split_seed: the same subset again, another for another seed.
    assert torch.equal(data.stratified_subset(whole.test_y, 100, split_seed=3), kept)  # type: ignore[arg-type]
    other = data.stratified_subset(whole.test_y, 100, split_seed=4)
    assert other is not None and not torch.equal(other, kept)
    # A cap at or over the split's size keeps it whole.
    assert data.stratified_subset(whole.test_y, 360, split_seed=3) is None
    assert torch.equal(
        load_data("digits", split_seed=3, max_test_samples=5000).test_x, whole.test_x
    )
    with pytest.raises(ValueError, match="max_test_samples must be >= 1"):
        load_data("digits", max_test_samples=0)


def test_a_test_subset_keeps_every_class_while_it_has_room() -> None:
    """A proportional draw of 10 from 995 and 5 kept none of the rare class (re-check)."""
    labels = torch.cat([torch.zeros(995, dtype=torch.int64), torch.ones(5, dtype=torch.int64)])
    for seed in range(5):
        kept = data.stratified_subset(labels, 10, split_seed=seed)
        assert kept is not None and len(kept) == 10 == len(set(kept.tolist()))
        assert torch.equal(kept, kept.sort().values)
        assert torch.bincount(labels[kept]).tolist() == [9, 1], seed
    again = data.stratified_subset(labels, 10, split_seed=3)
    assert torch.equal(again, data.stratified_subset(labels, 10, split_seed=3))  # type: ignore[arg-type]
    # Fewer places than classes: no class can be promised one.
    many = torch.arange(20).repeat_interleave(3)
    kept = data.stratified_subset(many, 10, split_seed=0)
    assert kept is not None and len(kept) == 10


def test_a_split_that_cannot_stratify_leaves_every_class_a_sample() -> None:
    """Fewer held-out samples than classes: sklearn cannot stratify, and its unstratified draw
    took all 3 images of a class for validation (1,000 classes). The held-out samples are
    drawn by class in proportion, never a class's last one while another can give."""
    many = torch.arange(1000).repeat_interleave(3)
    kept, held = data._stratified_split(many, 300, seed=0)
    assert len(held) == 300 and len(kept) == 2700
    assert np.bincount(many[kept].numpy(), minlength=1000).min() == 2
    # A class of one sample: it stays; the others give in proportion (1,000 and 10 of 1,011).
    skewed = torch.tensor([0] * 1000 + [1] * 10 + [2])
    kept, held = data._stratified_split(skewed, 101, seed=3)
    assert np.bincount(skewed[held].numpy(), minlength=3).tolist() == [100, 1, 0]
    again = data._stratified_split(skewed, 101, seed=3)
    assert torch.equal(again[1], held)  # seeded


def test_digits_are_scaled_from_0_16_and_normalised() -> None:
    splits = load_data("digits")
    dev_x = torch.cat([splits.train_x, splits.val_x])
    assert abs(dev_x.mean().item()) < 1e-4 and abs(dev_x.std().item() - 1) < 1e-3
    # Undoing the normalisation (0 and 16 map to the min and max) gives back the counts 0..16.
    counts = (dev_x - dev_x.min()) / (dev_x.max() - dev_x.min()) * 16
    assert torch.allclose(counts, counts.round(), atol=1e-3)
    assert counts.round().unique().tolist() == list(range(17))


def test_digits_splits_depend_on_split_seed_only() -> None:
    first = load_data("digits", split_seed=0)
    clear_cache()
    again = load_data("digits", split_seed=0)
    other = load_data("digits", split_seed=1)
    assert torch.equal(first.test_x, again.test_x) and torch.equal(first.val_y, again.val_y)
    torch.manual_seed(123)  # a trial's seed must not matter
    assert torch.equal(load_data("digits", split_seed=0, val_fraction=0.1).train_x, again.train_x)
    assert not torch.equal(first.test_x, other.test_x)


def test_cache_returns_the_same_object_per_arguments() -> None:
    first = load_data("digits")
    assert load_data("digits") is first
    assert load_data("digits", val_fraction=0.2) is not first
    assert len(load_data("digits", val_fraction=0.2).val_y) == 288  # ceil(0.2 * 1437)


def test_max_train_samples_and_zero_val_fraction() -> None:
    small = load_data("digits", max_train_samples=100)
    assert len(small.train_y) == 100 and len(small.val_y) == 144
    assert all(9 <= count <= 11 for count in histogram(small.train_y))  # stratified
    no_val = load_data("digits", val_fraction=0.0)
    assert len(no_val.val_y) == 0 and len(no_val.train_y) == 1437
    assert no_val.val_x.shape == (0, 1, 8, 8)


def test_image_size_resizes() -> None:
    splits = load_data("digits", image_size=16)
    assert splits.input_shape == (1, 16, 16) and splits.test_x.shape == (360, 1, 16, 16)


def test_image_size_resizes_the_kept_images_to_what_resizing_all_gave(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole dataset was resized before max_train_samples cut it: MNIST at 224x224 took
    12 GB of float32 in every process that read it, for 1,000 training images (a helper's
    sweep). Only the kept images are resized now, to the same values, normalised by the same
    statistics (of the whole training and validation splits, resized)."""
    from dataclasses import replace

    from nascomp.trainers import data

    raw = data._load_digits()
    whole = replace(raw, images=data._resizer(16, raw.max_value)(raw.images))
    expected = data._split("digits", whole, 0.1, 0, 300, None, 100)
    resized: list[int] = []
    resizer = data._resizer

    def counting(image_size: int | None, max_value: float):  # type: ignore[no-untyped-def]
        inner = resizer(image_size, max_value)

        def resize(images: torch.Tensor) -> torch.Tensor:
            if image_size is not None:
                resized.append(len(images))
            return inner(images)

        return resize

    monkeypatch.setattr(data, "_resizer", counting)
    monkeypatch.setattr(data, "_SPLITS_CACHE", {})
    got = load_data("digits", max_train_samples=300, image_size=16, max_test_samples=100)
    for part in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(got, part), getattr(expected, part)), part
    assert got.input_shape == expected.input_shape == (1, 16, 16)
    assert torch.equal(got.normalise.mean, expected.normalise.mean)
    assert torch.equal(got.normalise.std, expected.normalise.std)
    kept = len(got.train_y) + len(got.val_y) + len(got.test_y) + 1  # + the shape's one
    statistics = len(raw.images) - 360  # the training and validation splits, in chunks
    assert sum(resized) == kept + statistics


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"val_fraction": 1.0}, "val_fraction"), ({"max_train_samples": 0}, "max_train_samples")],
)
def test_bad_split_arguments(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        load_data("digits", **kwargs)


# ----------------------------------------------------------------------------- MNIST family


def test_mnist_known_answers(data_root: Path) -> None:
    splits = load_data("mnist", str(data_root))
    assert_splits_are_well_formed(splits)
    assert (splits.n_classes, splits.input_shape) == (10, (1, 28, 28))
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (54_000, 6_000, 10_000)
    assert histogram(splits.test_y) == MNIST_TEST_COUNTS and sum(MNIST_TEST_COUNTS) == 10_000
    assert splits.test_y[0].item() == 7 and splits.test_y[:5].tolist() == [7, 2, 1, 0, 4]
    train_plus_val = np.add(histogram(splits.train_y), histogram(splits.val_y)).tolist()
    assert train_plus_val == MNIST_TRAIN_COUNTS
    assert all(
        abs(v - t / 10) <= 1
        for v, t in zip(histogram(splits.val_y), MNIST_TRAIN_COUNTS, strict=True)
    )
    # Normalised with MNIST's mean / std: black pixels -> -0.4242, white -> 2.8215.
    assert splits.test_x.min().item() == pytest.approx(-MNIST_MEAN / MNIST_STD, abs=1e-3)
    assert splits.test_x.max().item() == pytest.approx((1 - MNIST_MEAN) / MNIST_STD, abs=1e-3)
    assert load_data("mnist", str(data_root)) is splits


def test_mnist_max_train_samples_is_seeded_and_stratified(data_root: Path) -> None:
    small = load_data("mnist", str(data_root), max_train_samples=1000, split_seed=3)
    assert len(small.train_y) == 1000 and len(small.val_y) == 6000 and len(small.test_y) == 10_000
    assert all(
        abs(count - 1000 * t / 60_000) <= 1
        for count, t in zip(histogram(small.train_y), MNIST_TRAIN_COUNTS, strict=True)
    )
    clear_cache()
    again = load_data("mnist", str(data_root), max_train_samples=1000, split_seed=3)
    assert torch.equal(small.train_x, again.train_x)


def test_fashion_mnist_known_answers(data_root: Path) -> None:
    splits = load_data("fashion_mnist", str(data_root))
    assert_splits_are_well_formed(splits)
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (54_000, 6_000, 10_000)
    assert histogram(splits.test_y) == [1000] * 10
    assert histogram(splits.val_y) == [600] * 10 and histogram(splits.train_y) == [5400] * 10
    assert splits.test_y[:5].tolist() == [9, 2, 1, 1, 6]  # ankle boot, pullover, trouser, ...
    assert splits.test_x.min().item() == pytest.approx(-FASHION_MEAN / FASHION_STD, abs=1e-3)


# ----------------------------------------------------------------------------- image folders


@pytest.fixture(scope="session")
def cifar_subset(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few CIFAR-10 JPEGs of 3 classes, both splits, extracted into a temporary folder."""
    wanted = {("train", c): N_TRAIN_PER_CLASS for c in CIFAR_CLASSES}
    wanted |= {("test", c): N_TEST_PER_CLASS for c in CIFAR_CLASSES}
    target = tmp_path_factory.mktemp("cifar")
    with tarfile.open(data_root / "cifar10-jpeg.tar") as tar:
        for member in tar:  # streams member by member: only the chosen images are written
            parts = member.name.split("/")
            key = tuple(parts[1:3])
            if member.isfile() and len(parts) == 4 and wanted.get(key, 0) > 0:
                wanted[key] -= 1
                tar.extract(member, target, filter="data")
            if not any(wanted.values()):
                break
    assert not any(wanted.values()), f"tar lacks images: {wanted}"
    return target / "CIFAR-10-images"


def read_jpeg(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


def test_imagefolder_with_train_and_test(cifar_subset: Path) -> None:
    splits = load_data("imagefolder", str(cifar_subset))
    assert_splits_are_well_formed(splits)
    assert (splits.n_classes, splits.input_shape) == (3, (3, 32, 32))
    n_train = 3 * N_TRAIN_PER_CLASS  # 60 -> ceil(6) = 6 val, 54 train
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (n_train - 6, 6, 30)
    assert histogram(splits.val_y, 3) == [2, 2, 2]
    assert histogram(splits.test_y, 3) == [N_TEST_PER_CLASS] * 3
    # The first test image, normalised by the per-channel stats of all training JPEGs.
    train_pixels = np.stack([read_jpeg(p) for p in sorted(cifar_subset.glob("train/*/*.jpg"))])
    mean, std = train_pixels.mean(axis=(0, 1, 2)), train_pixels.std(axis=(0, 1, 2))
    first_test = read_jpeg(sorted((cifar_subset / "test" / "airplane").glob("*.jpg"))[0])
    expected = torch.from_numpy((first_test - mean) / std).permute(2, 0, 1).float()
    assert torch.allclose(splits.test_x[0], expected, atol=1e-5)
    assert splits.test_y[0].item() == 0  # classes sorted: airplane, automobile, bird
    assert splits.classes == ("airplane", "automobile", "bird")  # the folders, by label


def test_imagefolder_flat_layout_and_resize(cifar_subset: Path, tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    shutil.copytree(cifar_subset / "train", flat)
    splits = load_data("imagefolder", str(flat), image_size=16)
    assert splits.input_shape == (3, 16, 16)
    # 60 images: ceil(20%) = 12 stratified test, then ceil(10% of 48) = 5 val, 43 train.
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (43, 5, 12)
    assert histogram(splits.test_y, 3) == [4, 4, 4]


def test_imagefolder_mixed_sizes_need_image_size(tmp_path: Path) -> None:
    for index, size in enumerate([(8, 8), (10, 6)] * 4):
        folder = tmp_path / ("a" if index % 2 else "b")
        folder.mkdir(exist_ok=True)
        Image.new("RGB", size, (index * 20, 0, 0)).save(folder / f"{index}.png")
    with pytest.raises(ValueError, match="image_size"):
        load_data("imagefolder", str(tmp_path))
    assert load_data("imagefolder", str(tmp_path), image_size=4).input_shape == (3, 4, 4)


def _two_classes(root: Path, n: int = 4) -> None:
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(n):
            Image.new("L", (6, 6), index * 30).save(root / name / f"{index}.png")


def test_imagefolder_skips_hidden_files_and_folders(tmp_path: Path) -> None:
    """What macOS, Finder and Jupyter leave in a folder is no image and no class."""
    _two_classes(tmp_path)
    (tmp_path / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    splits = load_data("imagefolder", str(tmp_path), val_fraction=0.25)
    assert splits.n_classes == 2 and splits.classes == ("cat", "dog")
    assert len(splits.train_y) + len(splits.val_y) + len(splits.test_y) == 8


def test_imagefolder_bad_files_are_named(tmp_path: Path) -> None:
    _two_classes(tmp_path)
    good = tmp_path / "cat" / "0.png"
    truncated = tmp_path / "dog" / "cut.png"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(ValueError) as caught:
        load_data("imagefolder", str(tmp_path))
    message = str(caught.value)
    assert message.startswith(f"imagefolder: cannot read {truncated} (")
    assert message.endswith("); replace or remove the file") and "\n" not in message
    truncated.write_text("not an image")
    with pytest.raises(ValueError, match=f"cannot read {truncated} \\(cannot identify"):
        load_data("imagefolder", str(tmp_path))
    truncated.unlink()
    (tmp_path / "bird").mkdir()
    (tmp_path / "bird" / "notes.txt").write_text("no image here")
    with pytest.raises(ValueError) as caught:
        load_data("imagefolder", str(tmp_path))
    assert str(caught.value) == (
        f"imagefolder: class folder bird in {tmp_path} holds no image (.jpg .jpeg .jpe .jfif "
        ".png .gif .bmp .dib .ppm .pgm .pbm .pnm .tif .tiff .webp .tga): add images or remove "
        "the folder"
    )


# ----------------------------------------------------------------------------- root checks


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_missing_idx_files_name_the_path(name: str, tmp_path: Path) -> None:
    folder = "MNIST" if name == "mnist" else "FashionMNIST"
    with pytest.raises(DataNotFoundError) as error:
        check_data_root(name, str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / folder / "raw") in message and "t10k-labels-idx1-ubyte" in message
    assert f"<root>/{folder}/raw/" in message and "\n" not in message
    assert isinstance(error.value, FileNotFoundError)
    with pytest.raises(DataNotFoundError, match="needs a data root"):
        check_data_root(name, None)
    with pytest.raises(DataNotFoundError, match=str(tmp_path)):
        load_data(name, str(tmp_path))


def test_partial_idx_folder_lists_only_missing_files(data_root: Path, tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    shutil.copy(data_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", raw)
    with pytest.raises(DataNotFoundError) as error:
        check_data_root("mnist", str(tmp_path))
    missing_part = str(error.value).split(" in ")[0]
    assert "train-images-idx3-ubyte" in missing_part and "t10k-labels" not in missing_part


@pytest.mark.parametrize("deeper", ["MNIST", "MNIST/raw"])
def test_a_root_too_deep_names_the_root_that_holds_the_files(data_root: Path, deeper: str) -> None:
    with pytest.raises(DataNotFoundError) as error:
        check_data_root("mnist", str(data_root / deeper))
    assert str(error.value).endswith(
        f"; give data.root: {data_root} (the folder that holds MNIST/raw/)"
    )


def test_imagefolder_root_errors(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=f"expected a directory at {tmp_path / 'nope'}"):
        check_data_root("imagefolder", str(tmp_path / "nope"))
    with pytest.raises(DataNotFoundError, match=f"expected class sub-folders in {tmp_path}"):
        check_data_root("imagefolder", str(tmp_path))
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "test").mkdir()
    with pytest.raises(DataNotFoundError, match=f"class sub-folders in {tmp_path / 'test'}"):
        check_data_root("imagefolder", str(tmp_path))
    (tmp_path / "test" / "cat").mkdir()
    with pytest.raises(ValueError, match="holds one class sub-folder \\(cat\\); a classifier"):
        check_data_root("imagefolder", str(tmp_path))
    (tmp_path / "train" / "dog").mkdir()
    (tmp_path / "test" / "dog").mkdir()
    check_data_root("imagefolder", str(tmp_path))  # two classes: a root to read


def test_valid_roots_and_unknown_name(data_root: Path) -> None:
    check_data_root("digits", None)
    check_data_root("mnist", str(data_root))
    check_data_root("fashion_mnist", str(data_root))
    with pytest.raises(ValueError, match="allowed: digits, mnist, fashion_mnist, imagefolder"):
        check_data_root("cifar10", None)
    assert DATASETS == ("digits", "mnist", "fashion_mnist", "imagefolder")
