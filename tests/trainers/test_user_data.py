"""The user's datasets in memory: a factory of their own (``custom``) and torchvision classes by
name, on real MNIST and Fashion-MNIST files; and each bad input's one-line error."""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from nascomp.trainers.data import DataNotFoundError, DataSplits, clear_cache, load_data
from nascomp.trainers.datasets import DatasetError, check_labels
from nascomp.trainers.settings import DataConfig
from nascomp.trainers.user_data import clear_user_cache
from tests.trainers.userdata import write_user_module


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The user's module, importable from the working folder as in their shell."""
    monkeypatch.chdir(tmp_path)
    clear_user_cache()
    yield write_user_module(tmp_path)
    clear_user_cache()


def custom(module: str, function: str, root: Path, **fields: object) -> DataConfig:
    return DataConfig(name="custom", factory=f"{module}:{function}", root=str(root), **fields)


def test_a_tensor_dataset_factory_loads_into_memory(module: str, data_root: Path) -> None:
    config = custom(module, "tensors", data_root, options={"n_train": 600, "n_test": 200})
    splits = config.load()
    assert isinstance(splits, DataSplits)  # 0.7 MB: far under any budget
    assert (splits.n_classes, splits.input_shape) == (10, (1, 28, 28))
    assert splits.classes[3] == "digit 3" and len(splits.classes) == 10  # its `classes`
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (540, 60, 200)
    # Normalised per channel over train + val: mean 0, std 1 (population).
    dev = torch.cat([splits.train_x, splits.val_x])
    assert dev.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert dev.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)
    # The test split is the factory's, and normalised with the same statistics.
    assert splits.test_x.shape == (200, 1, 28, 28) and splits.test_y.dtype == torch.int64
    assert config.load() is splits  # once per process


def test_the_same_labels_and_splits_as_the_built_in_reader(module: str, data_root: Path) -> None:
    """A factory over all of MNIST splits exactly as `name: mnist` does (same split_seed)."""
    clear_cache()
    built_in = load_data(
        "mnist", str(data_root), max_train_samples=500, split_seed=2, max_test_samples=700
    )
    user = custom(
        module, "tensors", data_root, options={"n_train": 60000, "n_test": 10000}
    ).model_copy(update={"max_train_samples": 500, "split_seed": 2, "max_test_samples": 700})
    splits = user.load()
    assert len(splits.test_y) == 700  # of the factory's 10,000, the same 700 as the reader's
    for part in ("train_y", "val_y", "test_y"):
        assert torch.equal(getattr(splits, part), getattr(built_in, part)), part
    # Statistics summed per sample rather than per chunk: equal to float32 rounding.
    assert torch.allclose(splits.train_x, built_in.train_x, atol=1e-5)
    assert torch.allclose(splits.test_x, built_in.test_x, atol=1e-5)


def test_a_hand_written_float_dataset_without_a_test_set(module: str, data_root: Path) -> None:
    splits = custom(module, "floats", data_root).load()
    n_test = math.ceil(0.2 * 600)  # TEST_FRACTION, held out of train
    assert len(splits.test_y) == n_test and len(splits.val_y) == math.ceil(0.1 * (600 - n_test))
    assert splits.input_shape == (1, 28, 28)  # (H, W) inputs get their channel axis
    assert splits.classes == ()  # a dataset without `classes` names none
    # Float inputs are used as given (not divided by 255): the statistics are the data's own.
    dev = torch.cat([splits.train_x, splits.val_x])
    assert dev.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert dev.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)
    # Stratified: every class keeps its share in the held-out test split.
    counts = torch.bincount(splits.test_y, minlength=10).float()
    assert counts.min() >= 0.6 * counts.mean()


def test_numpy_samples_load_as_the_same_tensors_would(module: str, data_root: Path) -> None:
    """Rows of NumPy arrays with NumPy integer labels: the same splits, values and dtypes as the
    TensorDataset of the same images."""
    options = {"n_train": 600, "n_test": 200}
    from_tensors = custom(module, "tensors", data_root, options=options).load()
    from_arrays = custom(module, "arrays", data_root, options=options).load()
    assert from_arrays.input_shape == (1, 28, 28)  # (H, W) arrays get their channel axis
    for part in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(from_arrays, part), getattr(from_tensors, part)), part
    rows = custom(module, "float64_rows", data_root).load()
    assert rows.input_shape == (16,)  # a (F,) float64 row is a vector of features
    assert rows.train_x.dtype == torch.float32
    # The same rows as float32 load as the same inputs, normalised by the same statistics,
    # which undo to the raw rows (what preprocess.json tells a deployment): float64 samples
    # were once squared in place while their statistics were read (a model trained on x**2).
    single = custom(module, "float32_rows", data_root).load()
    assert rows.normalise is not None and single.normalise is not None
    assert np.allclose(rows.normalise.mean, single.normalise.mean, rtol=1e-5)
    assert np.allclose(rows.normalise.std, single.normalise.std, rtol=1e-5)
    for part in ("train_x", "val_x", "test_x"):
        assert torch.allclose(getattr(rows, part), getattr(single, part), atol=1e-5), part
    given = importlib.import_module(module).float64_rows(data_root)[0]
    raw = torch.as_tensor(np.stack([row for row, _ in given]))
    mean, std = (
        torch.as_tensor(v, dtype=torch.float64) for v in (rows.normalise.mean, rows.normalise.std)
    )
    undone = torch.cat([rows.train_x, rows.val_x, rows.test_x]).double() * std + mean
    assert torch.allclose(undone.sort(dim=0).values, raw.sort(dim=0).values, atol=1e-5)


def test_pil_images_of_any_mode_are_read_as_rgb(module: str, data_root: Path) -> None:
    """A dataset of PIL images (no transform), modes mixed: each is read as PILToTensor reads
    its RGB form, so grey digits become three equal uint8 channels."""
    from torchvision.datasets import MNIST

    splits = custom(module, "pil_images", data_root).load()
    assert splits.input_shape == (3, 28, 28) and splits.classes[7] == "7"
    images = torch.cat([splits.train_x, splits.val_x, splits.test_x])
    assert len(images) == 300  # the three splits partition the dataset
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 1], images[:, 2])
    normalise = splits.normalise
    assert normalise is not None
    mean, std = (torch.as_tensor(v).view(1, -1, 1, 1) for v in (normalise.mean, normalise.std))
    pixels = (images * std + mean) * 255  # back to the bytes the PIL images held
    assert torch.allclose(pixels, pixels.round(), atol=1e-3)
    grey = MNIST(str(data_root), train=True, download=False).data[:300]
    assert pixels[:, 0].round().sum().item() == grey.double().sum().item()


def test_torchvision_fashion_mnist_matches_the_built_in_reader(data_root: Path) -> None:
    clear_cache()
    config = DataConfig(
        name="torchvision", dataset="FashionMNIST", root=str(data_root), max_train_samples=300
    )
    splits = config.load()
    built_in = load_data("fashion_mnist", str(data_root), max_train_samples=300)
    assert splits.n_classes == 10 and splits.input_shape == (1, 28, 28)
    for part in ("train_y", "val_y", "test_y"):
        assert torch.equal(getattr(splits, part), getattr(built_in, part)), part
    assert torch.allclose(splits.test_x, built_in.test_x, atol=1e-5)
    # Each label's name, as the dataset declares it (what an exported model's columns mean)
    assert splits.classes[0] == built_in.classes[0] == "T-shirt/top"
    assert splits.classes == built_in.classes and len(splits.classes) == 10


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST"])
def test_torchvision_arrays_are_the_samples_its_reader_gives(name: str, data_root: Path) -> None:
    """The parsed arrays stand in for __getitem__'s PIL round trip: same images, same labels."""
    from torchvision import datasets
    from torchvision.transforms import PILToTensor

    from nascomp.trainers.datasets import DatasetSource, open_source

    train, test = open_source(DatasetSource("torchvision", str(data_root), dataset=name))
    reader = getattr(datasets, name)(str(data_root), train=False, transform=PILToTensor())
    assert len(test) == len(reader) == 10000 and train.classes == reader.classes
    for index in (0, 1234, 9999):
        image, label = test[index]
        expected, expected_label = reader[index]
        assert torch.equal(image, expected) and int(label) == expected_label


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("no_such_module_here:tensors", "data.factory: module 'no_such_module_here' is not"),
        ("{module}:missing", "has no attribute 'missing'"),
        ("{module}:NOT_A_FUNCTION", "is an int, not a function"),
        ("{module}", "must be 'package.module:function'"),
    ],
)
def test_a_factory_that_cannot_be_called_fails_at_config_load(
    module: str, data_root: Path, factory: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        DataConfig(name="custom", factory=factory.format(module=module), root=str(data_root))
    assert len(str(caught.value.errors()[0]["msg"]).splitlines()) == 1


@pytest.mark.parametrize(
    ("function", "error", "message"),
    [
        ("raises", DatasetError, r"raises raised RuntimeError: the disk is on fire"),
        ("one_dataset", DatasetError, r"must return \(train, test\) datasets.*got a TensorDataset"),
        ("shifted_labels", DatasetError, r"train labels must be integers in 0\.\.8 .*got -1\.\.8"),
        (  # "labels must be integers in 0..-1"
            "negative_labels",
            DatasetError,
            r"train labels must be class indices 0\.\.K-1; every one is negative \(-10\.\.-1\)",
        ),
        ("a_number", DatasetError, r"must return \(train, test\) datasets.*got an int$"),
        (  # "sample 0 must be an (input tensor, integer label) pair; got a Tensor"
            "arrays_in_pairs",
            DatasetError,
            r"returned its train set as a tuple of 2 arrays \(inputs, labels\), not a dataset "
            r"of \(input, label\) samples: wrap them as torch\.utils\.data\.TensorDataset\(",
        ),
        ("numpy_arrays", DatasetError, r"returned its train set as an ndarray alone, not a data"),
        ("float_labels", DatasetError, r"sample 0's label must be an integer.*float32"),
        ("one_class", DatasetError, r"every train label is 4; a classifier needs .* 2 classes"),
        (  # it took 21 GB of memory and the kernel's OOM killer before
            "a_stray_huge_label",
            DatasetError,
            r"train labels must be class indices 0\.\.K-1 \(K = max label \+ 1\); the largest "
            r"is 1000000000, and only 11 distinct labels occur: map them to 0\.\.10$",
        ),
        ("strings", DatasetError, r"sample 0's input is a NumPy array of dtype <U1; give numb"),
        ("complex_inputs", DatasetError, r"sample 0's input is torch.complex64; give real num"),
        ("too_many_for_classes", DatasetError, r"labels must be integers in 0\.\.1 \(len\(clas"),
        (  # a resize cannot make one of them: image_size was the hint
            "grey_and_colour",
            DatasetError,
            r"sample 1 is \(3, 28, 28\) torch.uint8, train sample 0 is \(1, 28, 28\) "
            r"torch.uint8; every input must have one shape and dtype \(images of 3 and 1 "
            r"channels: grey and colour mixed\? give them one mode",
        ),
        (  # it has no classes: len(classes) sent the user looking for one
            "test_beyond_train",
            DatasetError,
            r"test labels must be integers in 0\.\.8 \(K = the train labels' max \+ 1\); "
            r"got 0\.\.9$",
        ),
    ],
)
def test_a_factory_whose_output_is_wrong_fails_at_data_load(
    module: str, data_root: Path, function: str, error: type, message: str
) -> None:
    config = custom(module, function, data_root)  # importable and callable: valid config
    with pytest.raises(error, match=message) as caught:
        config.load()
    # it names the user's function
    assert str(caught.value).startswith(("data.factory: ", f"data.factory ({module}:{function}): "))
    assert len(str(caught.value).splitlines()) == 1


def test_a_bad_sample_deep_in_a_large_dataset_is_one_line(
    module: str, data_root: Path, tmp_path: Path
) -> None:
    """Found by a loader worker process, reported as the worker's cause, in one line."""
    (tmp_path / "late_bad.py").write_text(
        "import torch\nfrom torch.utils.data import Dataset\n"
        "class Late(Dataset):\n"
        "    def __len__(self): return 5000\n"
        "    def __getitem__(self, i):\n"
        "        return torch.zeros(1, 4, 4), (1.5 if i == 4321 else i % 3)\n"
        "def make(): return Late(), None\n"
    )
    config = DataConfig(name="custom", factory="late_bad:make")
    with pytest.raises(
        DatasetError, match=r"^data.factory \(late_bad:make\): sample 4321's label must be an int"
    ):
        config.load(threads=2)  # 5000 samples: read by worker processes


def test_unknown_torchvision_dataset_lists_some_allowed(data_root: Path) -> None:
    with pytest.raises(ValidationError, match=r"data.dataset must name a torchvision.datasets"):
        DataConfig(name="torchvision", dataset="CIFAR11", root=str(data_root))
    with pytest.raises(ValidationError, match="CIFAR10, CIFAR100, SVHN"):
        DataConfig(name="torchvision", dataset="Tensor", root=str(data_root))


@pytest.mark.parametrize(
    ("dataset", "options"),
    [
        ("CIFAR10", {}),  # train=...
        ("SVHN", {}),  # split=...
        # split= names one of its six datasets; train= is its parent MNIST's: a train/test
        # split= clashed with the user's ("got multiple values for keyword argument 'split'")
        ("EMNIST", {"split": "balanced"}),
    ],
)
def test_torchvision_files_missing_is_data_not_found(
    dataset: str, options: dict, tmp_path: Path
) -> None:
    config = DataConfig(name="torchvision", dataset=dataset, root=str(tmp_path), options=options)
    with pytest.raises(DataNotFoundError, match=rf"torchvision {dataset} found no dataset in"):
        config.load()


def test_a_torchvision_argument_the_class_requires_is_told_to_come_in_options(
    tmp_path: Path,
) -> None:
    config = DataConfig(name="torchvision", dataset="EMNIST", root=str(tmp_path))
    with pytest.raises(DatasetError, match=r"argument: 'split' \(give it in data.options\)$"):
        config.load()


def test_a_torchvision_class_of_named_splits_reads_them_from_options(tmp_path: Path) -> None:
    """Imagenette's splits are train and val: split=test was forced on it (as on OxfordIIITPet's
    trainval and test, Places365's train-standard and val), and options.split clashed with it
    ("got multiple values"). Real files laid out as torchvision's class reads them."""
    from PIL import Image

    for split in ("train", "val"):
        for wnid in ("n01440764", "n02102040"):  # tench, English springer
            folder = tmp_path / "imagenette2" / split / wnid
            folder.mkdir(parents=True)
            for i in range(6 if split == "train" else 3):
                Image.new("RGB", (8, 8), (30 * i, 90 if wnid.endswith("4") else 0, 0)).save(
                    folder / f"{i}.JPEG"
                )

    def config(**options: Any) -> DataConfig:
        clear_user_cache()
        return DataConfig(
            name="torchvision", dataset="Imagenette", root=str(tmp_path), options=options,
            val_fraction=0.2,
        )  # fmt: skip

    with pytest.raises(DatasetError) as caught:
        config().load()
    message = str(caught.value)
    assert message.startswith("data.dataset: torchvision Imagenette(") and "'test'" in message
    assert message.endswith(
        "(name the class's own splits in data.options.split: [TRAIN, TEST], or one split to "
        "hold the test split out of it)"
    )
    named = config(split=["train", "val"]).load()
    assert named.n_classes == 2 and named.input_shape == (3, 8, 8)
    assert named.classes == ("tench", "English springer")  # of its synonyms, the first
    assert len(named.test_y) == 6 and len(named.train_y) + len(named.val_y) == 12  # val is test
    one = config(split="train").load()  # one split: its test split held out of it
    assert len(one.train_y) + len(one.val_y) + len(one.test_y) == 12
    for bad in (["train"], ["train", "train"], 3):
        with pytest.raises(DatasetError, match=r"^data.options.split: give the class's train"):
            config(split=bad).load()


def test_torchvision_classes_no_search_can_read_are_refused(tmp_path: Path) -> None:
    """The base class (a NotImplementedError traceback from its len()), a class of no files
    (FakeData took data.root as its number of images), and a class whose optional package is
    missing (LSUN without lmdb: a ModuleNotFoundError traceback)."""
    for name in ("VisionDataset", "FakeData"):
        with pytest.raises(ValidationError, match=rf"torchvision {name} is no dataset read from"):
            DataConfig(name="torchvision", dataset=name, root=str(tmp_path))
    try:
        import lmdb  # noqa: F401
    except ImportError:
        config = DataConfig(name="torchvision", dataset="LSUN", root=str(tmp_path))
        with pytest.raises(DatasetError) as caught:
            config.load()
        assert str(caught.value) == (
            "data.dataset: torchvision LSUN needs the package 'lmdb', which is not installed "
            "here (pip install lmdb)"
        )


def test_torchvision_image_folder_on_split_folders_is_refused(tmp_path: Path) -> None:
    """ImageFolder made a class of each split folder and the search learnt "train or test",
    its accuracy the larger split's share."""
    from PIL import Image

    for split, count in (("train", 3), ("test", 2)):
        for label in ("cat", "dog"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(folder / f"{i}.png")
    config = DataConfig(name="torchvision", dataset="ImageFolder", root=str(tmp_path))
    with pytest.raises(DatasetError) as caught:
        config.load()
    assert str(caught.value) == (
        f"data.root: torchvision ImageFolder reads the folders of {tmp_path} as classes, and "
        f"they are splits ('test', 'train'): give it one split's folder (data.root: "
        f"{tmp_path / 'train'}), or use data.name: imagefolder, which reads train/, val/ and "
        "test/ folders as splits"
    )
    one = DataConfig(name="torchvision", dataset="ImageFolder", root=str(tmp_path / "train"))
    assert one.load().classes == ("cat", "dog")
    # a file it cannot read is named
    (tmp_path / "train" / "cat" / "0.png").write_bytes(b"not an image")
    clear_user_cache()
    with pytest.raises(DatasetError) as caught:
        one.load()
    assert str(caught.value).startswith(
        f"data.dataset: reading train sample 0 ({tmp_path / 'train' / 'cat' / '0.png'}) raised "
        "UnidentifiedImageError: "
    )


def test_a_test_set_whose_classes_number_other_names_is_refused(
    module: str, data_root: Path
) -> None:
    """ImageFolder per split, the test folder without class "0": its "1" was label 0, and
    the test split was scored against shifted labels without a word."""
    with pytest.raises(DatasetError) as caught:
        custom(module, "test_lacks_a_class", data_root).load()
    assert str(caught.value).startswith(
        f"data.factory ({module}:test_lacks_a_class): label 0 is '1' in the test set's "
        "classes and '0' in the training set's; a label must name one class in both"
    )
    splits = custom(module, "test_lacks_the_last_class", data_root).load()
    assert splits.classes[-1] == "9" and int(splits.test_y.max()) == 8


def test_augmentation_drawn_in_getitem_is_noted(module: str, data_root: Path) -> None:
    """Held in memory, such a dataset was read once: its augmentation drawn once, silently."""
    before = torch.random.get_rng_state()
    splits = custom(module, "jittered", data_root).load()
    assert splits.notes == (
        f"data.factory ({module}:jittered): sample 0 is another input each time it is read "
        "(augmentation drawn in __getitem__?): nascomp reads a dataset held in memory once, so "
        "it is drawn once, not every epoch; train.augment augments every epoch (or data.stream: "
        "true reads each epoch anew)",
    )
    assert not torch.equal(torch.random.get_rng_state(), before)  # the reading pass drew
    assert custom(module, "tensors", data_root).load().notes == ()


def test_channels_last_images_are_refused_naming_the_order(module: str, data_root: Path) -> None:
    """(28, 28, 3) was read as 28 channels of 28 x 3 images, silently."""
    with pytest.raises(DatasetError) as caught:
        custom(module, "channels_last", data_root).load()
    assert str(caught.value) == (
        f"data.factory ({module}:channels_last): sample 0's image has shape (28, 28, 3), "
        "channels last; nascomp reads images as (C, H, W), PyTorch's order: give it as "
        "(3, 28, 28) (e.g. torch.from_numpy(image).permute(2, 0, 1)), or set data.layout: "
        "channels_first if it is 28 channels"
    )
    # the user's word that the first axis is the channels
    given = custom(module, "channels_last", data_root).model_copy(
        update={"layout": "channels_first"}
    )
    assert given.load().input_shape == (28, 28, 3)


@pytest.mark.parametrize("shape", [(5, 3, 3), (16, 1, 1), (8, 4, 4), (2, 16, 3), (3, 32, 32)])
def test_small_channels_first_images_are_not_taken_for_channels_last(shape: tuple) -> None:
    """(8, 4, 4) is as likely 8 channels of 4 x 4 as a channels-last image: such inputs were
    refused, with no way to say otherwise."""
    from nascomp.trainers.datasets import sample_format

    images = torch.zeros(4, *shape, dtype=torch.uint8)
    dataset = torch.utils.data.TensorDataset(images, torch.tensor([0, 1, 0, 1]))
    assert sample_format(dataset, None, "data.factory").shape == shape


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "custom"}, "data.factory is required with name: custom"),
        ({"name": "torchvision", "root": "."}, "data.dataset is required with name: torchvision"),
        ({"name": "digits", "factory": "a:b"}, "data.factory is only read with name: custom"),
        ({"name": "digits", "options": {"n": 1}}, "data.options is only read with name: custom"),
        ({"name": "torchvision", "dataset": "MNIST"}, "data.root: a torchvision dataset needs"),
        (
            {"name": "digits", "stream": True},
            "data.stream: true is for custom, torchvision and csv",
        ),
        # read by nothing for these, and ignored without a word before
        ({"name": "digits", "root": "/tmp"}, "data.root is not read for dataset 'digits'"),
        ({"name": "digits", "memory_budget_mb": 5}, "data.memory_budget_mb is for custom"),
    ],
)
def test_fields_that_do_not_fit_the_name(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DataConfig(**fields)


def test_teacher_cache_keys_of_built_in_data_are_unchanged() -> None:
    """The new fields are left out of the key when unset, so cached teachers stay valid."""
    assert DataConfig().identity() == {
        "name": "digits",
        "root": None,
        "val_fraction": 0.1,
        "split_seed": 0,
        "max_train_samples": None,
        "image_size": None,
    }
    reading = DataConfig.model_construct(stream=False, memory_budget_mb=5).identity()
    assert "stream" not in reading and "memory_budget_mb" not in reading


def test_many_classes_are_taken_when_the_labels_fill_them() -> None:
    """K = max label + 1 over 100,000 is refused only where under a tenth of 0..K-1 occurs:
    150,000 classes of one sample each are a label space, 4 labels up to 200,000 are codes."""
    assert check_labels(torch.arange(150_000), None, "data.factory", "train") == 150_000
    spread = torch.arange(0, 300_000, 5)  # 60,000 labels: a fifth of 0..K-1
    assert check_labels(spread, None, "data.factory", "train") == 299_996
    with pytest.raises(DatasetError, match=r"only 4 distinct labels occur: map them to 0\.\.3"):
        check_labels(torch.tensor([0, 1, 2, 200_000]), None, "data.factory", "train")
    assert check_labels(torch.tensor([0, 1, 2, 99_999]), None, "data.factory", "train") == 100_000
