"""Datasets as in-memory tensors, loaded once per worker process and never downloaded.

Every dataset comes back as ``DataSplits``: float32 NCHW inputs normalised per channel and
int64 labels for train / val / test. Splits depend only on ``split_seed`` (never on a trial's
seed), so every trial of a search sees the same validation set.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nascomp.trainers.errors import DataNotFoundError
from nascomp.trainers.imagefolder import (
    Listing,
    dark_note,
    decode_images,
    layout,
    list_split,
    skipped_note,
)
from nascomp.trainers.normalise import Normalise, population_std
from nascomp.trainers.split import TensorSplit

DATASETS = ("digits", "mnist", "fashion_mnist", "imagefolder")
# The user's datasets (trainers/user_data.py): a factory of theirs, a torchvision class, or a
# CSV file of rows (trainers/tables.py).
USER_SOURCES = ("custom", "torchvision", "csv")

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# torchvision looks for the IDX files in <root>/<class name>/raw.
_IDX_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
_IDX_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
DIGITS_MAX_VALUE = 16.0  # load_digits pixels are counts 0..16 (4x4 blocks of a 32x32 bitmap)
STATS_CHUNK = 8192  # images per chunk for mean/std, so float64 copies stay small
RESIZED_STATS_CHUNK = 256  # the same for images resized first (data.image_size)
TEST_FRACTION = 0.2  # for datasets without an official test set (digits, a flat image folder)


@dataclass(frozen=True)
class DataSplits:
    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    n_classes: int
    input_shape: tuple[int, ...]  # one sample: (C, H, W) for images, (F,) for features
    name: str
    # How the inputs were normalised (what a shipped model must be fed); None: not known
    normalise: Normalise | None = None
    # The name of each class, by label (what a shipped model's outputs mean); () if not known
    classes: tuple[str, ...] = ()
    # Rows of features: the column of each input feature, in order; () if not known
    feature_names: tuple[str, ...] = ()
    # Rows of a CSV: each one-hot encoded column of words and its values, in input order
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # What the user should know about the data that is no error (a CSV's id columns, say)
    notes: tuple[str, ...] = ()
    # Validation samples from a split of their own (an image folder's val/): val_fraction
    # does not apply to them
    official_val: bool = False

    # The splits as the training loop reads them (trainers/split.py); a streamed dataset's
    # StreamedSplits has the same three.
    @property
    def input_dtype(self) -> torch.dtype:
        """What the model is fed: float32, or int64 for integer ids (``Normalise.ids``)."""
        return self.train_x.dtype

    @property
    def train(self) -> TensorSplit:
        return TensorSplit(self.train_x, self.train_y)

    @property
    def val(self) -> TensorSplit:
        return TensorSplit(self.val_x, self.val_y)

    @property
    def test(self) -> TensorSplit:
        return TensorSplit(self.test_x, self.test_y)


@dataclass(frozen=True)
class _RawData:
    """Decoded images (N, C, H, W) before any split; test (and val) None without a fixed one.

    Pixels stay in their stored type (uint8, 4x smaller than float32) until the split;
    ``images / max_value`` lies in [0, 1].
    """

    images: Tensor
    labels: Tensor
    test_images: Tensor | None
    test_labels: Tensor | None
    n_classes: int
    max_value: float = 255.0
    classes: tuple[str, ...] = ()  # each label's name, where the dataset says
    # An official validation split (an image folder's val/); None: drawn from the training one
    val_images: Tensor | None = None
    val_labels: Tensor | None = None
    notes: tuple[str, ...] = ()  # what the user should know about the data (DataSplits.notes)


# One entry per distinct load_data call; worker processes keep theirs for all their trials.
_SPLITS_CACHE: dict[tuple[object, ...], DataSplits] = {}
_RAW_CACHE: dict[tuple[object, ...], _RawData] = {}
# Splits already moved to a device, keyed by (id(splits), device). The value keeps the source
# splits alive, so their id cannot be reused by another object while the entry exists.
_DEVICE_CACHE: dict[tuple[int, str], tuple[DataSplits, DataSplits]] = {}


# ---------------------------------------------------------------------------- root checks


def labels_digest(splits: Any) -> str:
    """A digest of the labels of each split, in order (``DataSplits`` or ``StreamedSplits``):
    two processes that split the data alike agree on it. Labels alone: exact on every machine,
    where the normalised inputs' last bits may differ between the CPUs of a cluster's nodes,
    and a split drawn otherwise moves labels with the samples."""
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    for role in ("train", "val", "test"):
        labels = getattr(splits, role).labels
        digest.update(f"{role}:{len(labels)};".encode())
        digest.update(labels.cpu().to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_data_root(name: str, root: str | None) -> None:
    """Cheap existence check for config validation; loads nothing."""
    if name not in DATASETS + USER_SOURCES:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS + USER_SOURCES)}")
    if name == "custom" and root is not None and not Path(root).exists():
        raise DataNotFoundError(
            f"data.root: {root} does not exist (the factory gets it as root=; leave data.root "
            "out if it needs none)"
        )
    if name in ("digits", "custom", "csv"):
        # bundled with scikit-learn; a factory reads its root (a file or a folder) itself; a
        # CSV's files are checked with its options (trainers.datasets.check_source)
        return
    if name == "torchvision":
        if root is None or not Path(root).is_dir():
            raise DataNotFoundError(
                f"data.root: a torchvision dataset needs the directory that holds its files "
                f"(nothing is downloaded); got {root!r}"
            )
        return
    if name in _IDX_FOLDERS:
        _check_idx_root(name, root)
    else:
        layout(root)


def _check_idx_root(name: str, root: str | None) -> None:
    folder = _IDX_FOLDERS[name]
    hint = (
        f"copy the four {_IDX_TITLES[name]} IDX files ({', '.join(IDX_FILES)}) into "
        f"<root>/{folder}/raw/ (see ../shared/data); nothing is downloaded at run time"
    )
    if root is None:
        raise DataNotFoundError(f"dataset {name!r} needs a data root: {hint}")
    raw = Path(root) / folder / "raw"
    missing = [file for file in IDX_FILES if not (raw / file).is_file()]
    if missing:
        # A root one or two levels too deep (.../MNIST or .../MNIST/raw): the one that works
        for above in (Path(root).parent, Path(root).parent.parent):
            if above != Path(root) and all(
                (above / folder / "raw" / f).is_file() for f in IDX_FILES
            ):
                hint = f"give data.root: {above} (the folder that holds {folder}/raw/)"
                break
        raise DataNotFoundError(f"dataset {name!r}: expected {', '.join(missing)} in {raw}; {hint}")


# ---------------------------------------------------------------------------- loading


def load_data(
    name: str,
    root: str | None = None,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    max_train_samples: int | None = None,
    image_size: int | None = None,
    max_test_samples: int | None = None,
) -> DataSplits:
    """Load ``name`` once per process (cached by the arguments) and split it deterministically.

    The test split is the official one (MNIST, Fashion-MNIST, an image folder with train/ and
    test/), else a stratified 20% drawn with ``split_seed``. Validation is the official one
    (an image folder's val/), else a stratified ``val_fraction`` of the rest;
    ``max_train_samples`` then subsamples the training split, and ``max_test_samples`` the test
    split (:func:`stratified_subset`).
    """
    check_data_root(name, root)
    _check_split_args(val_fraction, max_train_samples, image_size)
    if max_test_samples is not None and max_test_samples < 1:
        raise ValueError(f"max_test_samples must be >= 1 or None, got {max_test_samples!r}")
    root_key = None if name == "digits" else str(Path(root).resolve())  # type: ignore[arg-type]
    key = (
        name,
        root_key,
        float(val_fraction),
        int(split_seed),
        max_train_samples,
        image_size,
        max_test_samples,
    )
    if key not in _SPLITS_CACHE:
        raw = _load_raw(name, root, image_size)
        # Images are resized once split and subsampled: MNIST resized whole to 224x224 before
        # max_train_samples cut it took 12 GB of float32 in every process that read it.
        resize = None if name == "imagefolder" or image_size is None else image_size
        _SPLITS_CACHE[key] = _split(
            name, raw, val_fraction, split_seed, max_train_samples, resize, max_test_samples
        )
    return _SPLITS_CACHE[key]


def stratified_subset(labels: Tensor, max_samples: int | None, split_seed: int) -> Tensor | None:
    """The positions (sorted) of a stratified subset of at most ``max_samples`` of a test
    split with these ``labels``, drawn with ``split_seed``; None to keep the whole split.

    Every trial evaluates the test split once, at its end; no rung reads it, nor the default
    objectives: on a training subset the whole test split can cost more than a phase of
    training (MNIST's 10,000 test images against 2,000 trained on: about 14% of a
    full-fidelity trial's CPU in ``bench/search_cost.py``'s setting, docs/benchmarks.md). A
    stratified subset keeps each class's share, and every class at least one sample where the
    subset has room: a proportional draw of 10 from 995 and 5 left the rare class out, and
    with it its recall from the balanced accuracy."""
    if max_samples is None or max_samples >= len(labels):
        return None
    kept, _ = _stratified_split(labels, len(labels) - max_samples, split_seed)
    return _every_class_kept(labels, kept, split_seed)


def _every_class_kept(labels: Tensor, kept: Tensor, seed: int) -> Tensor:
    """``kept`` (sorted positions of ``labels``) with each class that it lacks given one
    sample in place of one of the most kept class's, while there are as many as classes."""
    values = labels.numpy()
    chosen = kept.numpy().copy()
    missing = np.setdiff1d(np.unique(values), values[chosen])
    if len(missing) == 0 or len(chosen) < len(np.unique(values)):
        return kept
    rng = np.random.default_rng(seed)
    for cls in missing:  # the most kept class has 2 or more: some class is missing
        donor = np.bincount(values[chosen]).argmax()
        chosen[rng.choice(np.flatnonzero(values[chosen] == donor))] = rng.choice(
            np.flatnonzero(values == cls)
        )
    return torch.from_numpy(np.sort(chosen))


def _check_split_args(
    val_fraction: float, max_train_samples: int | None, image_size: int | None
) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if max_train_samples is not None and max_train_samples < 1:
        raise ValueError(f"max_train_samples must be >= 1 or None, got {max_train_samples!r}")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be >= 1 or None, got {image_size!r}")


def _load_raw(name: str, root: str | None, image_size: int | None) -> _RawData:
    """The dataset as stored; an image folder's images at ``image_size`` (theirs vary), the
    others' at their own size (``_split`` resizes the images it keeps)."""
    sized = image_size if name == "imagefolder" else None
    key = (name, None if root is None else str(Path(root).resolve()), sized)
    if key not in _RAW_CACHE:
        if name == "digits":
            raw = _load_digits()
        elif name in _IDX_FOLDERS:
            raw = _load_idx(name, root)  # type: ignore[arg-type]
        else:
            raw = _load_image_folder(root, image_size)  # type: ignore[arg-type]
        _RAW_CACHE[key] = raw
    return _RAW_CACHE[key]


def _load_digits() -> _RawData:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: works offline

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.uint8)).unsqueeze(1)  # exact: 0..16
    labels = torch.from_numpy(digits.target.astype(np.int64))
    n_classes = len(digits.target_names)
    return _RawData(
        images,
        labels,
        None,
        None,
        n_classes,
        max_value=DIGITS_MAX_VALUE,
        classes=tuple(str(name) for name in digits.target_names),
    )


def _load_idx(name: str, root: str) -> _RawData:
    from torchvision import datasets

    dataset_cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    # .data / .targets are the whole IDX arrays: no per-sample PIL round trip.
    train = dataset_cls(root, train=True, download=False)
    test = dataset_cls(root, train=False, download=False)
    return _RawData(
        train.data.unsqueeze(1).contiguous(),
        train.targets.long(),
        test.data.unsqueeze(1).contiguous(),
        test.targets.long(),
        n_classes=len(train.classes),
        classes=tuple(train.classes),
    )


def _resizer(image_size: int | None, max_value: float) -> Callable[[Tensor], Tensor]:
    """Images to ``image_size`` squared (bilinear, antialiased; each image alone, so a chunk
    resized is the same as its images in a whole); as they are when None or already so."""

    def resize(images: Tensor) -> Tensor:
        if image_size is None or images.shape[-2:] == (image_size, image_size):
            return images
        # Kept as float: rounding back to integers would coarsen 0..16 digits.
        return torch.nn.functional.interpolate(
            images.float(), size=(image_size, image_size), mode="bilinear", antialias=True
        ).clamp_(0.0, max_value)

    return resize


# ---------------------------------------------------------------------------- image folders


def _load_image_folder(root: str, image_size: int | None) -> _RawData:
    folders = layout(root)
    seen: dict[str, str] = {}  # every file read, so that none is read twice (a link)
    train = list_split(folders.train, seen)
    others = {
        split: list_split(folder, seen, classes=train.classes)
        for split, folder in (("val", folders.val), ("test", folders.test))
        if folder is not None
    }
    listings = [train, *others.values()]
    images = decode_images([p for listing in listings for p in listing.paths], image_size)
    parts = dict(
        zip(("train", *others), images.split([len(x.paths) for x in listings]), strict=True)
    )
    labels = {
        split: torch.tensor(listing.labels, dtype=torch.int64)
        for split, listing in zip(("train", *others), listings, strict=True)
    }
    skipped: Counter[str] = sum((listing.skipped for listing in listings), Counter())
    notes = [
        note
        for note in (skipped_note(skipped), _split_note(folders.train, others), dark_note(images))
        if note
    ]
    return _RawData(
        parts["train"],
        labels["train"],
        parts.get("test"),
        labels.get("test"),
        n_classes=len(train.classes),
        classes=train.classes,
        val_images=parts.get("val"),
        val_labels=labels.get("val"),
        notes=tuple(notes),
    )


def _split_note(train: Path, official: Mapping[str, Listing]) -> str | None:
    """Which splits an image folder's images were drawn into, when not all are folders."""
    if "test" in official:
        return None
    val = "" if "val" in official else ", and data.val_fraction of the rest the validation split"
    where = (
        f"{train.parent} has no test/ folder"
        if train.name.lower() == "train"
        else f"{train} is not split into train/ and test/ folders"
    )
    share = f"{TEST_FRACTION:.0%}"
    return f"data: imagefolder: {where}, so a stratified {share} of {train} is the test split{val}"


# ---------------------------------------------------------------------------- splitting


@dataclass(frozen=True)
class SplitIndices:
    """Sorted positions of each split. ``dev`` (train + val) and ``train``/``val`` index the
    training images; ``test`` indexes them too when held out, else it is None (an official
    test set is used whole)."""

    dev: Tensor
    train: Tensor
    val: Tensor
    test: Tensor | None


def split_indices(
    labels: Tensor,
    has_test: bool,
    val_fraction: float,
    split_seed: int,
    max_train_samples: int | None,
) -> SplitIndices:
    """The deterministic, stratified splits of a dataset with these training ``labels``."""
    dev_idx, test_idx = torch.arange(len(labels)), None
    if not has_test:
        dev_idx, test_idx = _stratified_split(labels, _n_held(TEST_FRACTION, labels), split_seed)
    dev_labels = labels[dev_idx]
    train_idx, val_idx = _stratified_split(
        dev_labels, _n_held(val_fraction, dev_labels), split_seed
    )
    if max_train_samples is not None and max_train_samples < len(train_idx):
        n_dropped = len(train_idx) - max_train_samples
        keep, _ = _stratified_split(dev_labels[train_idx], n_dropped, split_seed)
        train_idx = train_idx[keep]
    return SplitIndices(dev_idx, dev_idx[train_idx], dev_idx[val_idx], test_idx)


def _split(
    name: str,
    raw: _RawData,
    val_fraction: float,
    split_seed: int,
    max_train_samples: int | None,
    image_size: int | None = None,
    max_test_samples: int | None = None,
) -> DataSplits:
    """The splits of ``raw``, their images resized to ``image_size`` (None: as they are) and
    the test split capped at ``max_test_samples`` (:func:`stratified_subset`)."""
    images, labels = raw.images, raw.labels
    resize = _resizer(image_size, raw.max_value)
    has_test = raw.test_images is not None and raw.test_labels is not None
    official_val = raw.val_images is not None and raw.val_labels is not None
    # An official validation split (an image folder's val/) leaves all of train/ to train on.
    held = 0.0 if official_val else val_fraction
    parts = split_indices(labels, has_test, held, split_seed, max_train_samples)
    if parts.test is None:
        test_images, test_labels = raw.test_images, raw.test_labels
    else:
        test_images, test_labels = images[parts.test], labels[parts.test]
    kept = stratified_subset(test_labels, max_test_samples, split_seed)  # type: ignore[arg-type]
    if kept is not None:
        test_images, test_labels = test_images[kept], test_labels[kept]  # type: ignore[index]
    if official_val:
        val_images, val_labels = raw.val_images, raw.val_labels
        dev = (images[parts.dev], val_images)
    else:
        val_images, val_labels = images[parts.val], labels[parts.val]
        dev = (images[parts.dev],)
    # Statistics over train + val only (never test), so val_fraction and max_train_samples
    # do not change what the inputs look like.
    # unresized images are summed in the chunks they always were: the same statistics, bit
    # for bit, as runs logged before
    prepare = resize if image_size is not None else None
    mean, std = _channel_stats(*dev, max_value=raw.max_value, prepare=prepare)
    # Always a fresh copy: a part may be the cached raw test tensor itself.
    normalised = Normalise(mean, std, raw.max_value, sample_dim=images.dim() - 1)

    return DataSplits(
        train_x=normalised(resize(images[parts.train])),
        train_y=labels[parts.train].contiguous(),
        val_x=normalised(resize(val_images)),  # type: ignore[arg-type]
        val_y=val_labels.contiguous(),  # type: ignore[union-attr]
        test_x=normalised(resize(test_images)),  # type: ignore[arg-type]
        test_y=test_labels.contiguous(),  # type: ignore[union-attr]
        n_classes=raw.n_classes,
        input_shape=tuple(resize(images[:1]).shape[1:]),
        name=name,
        normalise=normalised,
        classes=raw.classes,
        notes=raw.notes,
        official_val=official_val,
    )


def _n_held(fraction: float, labels: Tensor) -> int:
    return int(np.ceil(fraction * len(labels)))


def _stratified_split(labels: Tensor, n_held: int, seed: int) -> tuple[Tensor, Tensor]:
    """(kept, held-out) sorted index tensors with ``n_held`` held out, stratified if possible."""
    indices = np.arange(len(labels))
    if n_held <= 0:
        return torch.from_numpy(indices), torch.from_numpy(indices[:0])
    # Imported here: sklearn.model_selection pulls in pandas and scipy.stats, 1.4 s that every
    # `nascomp` command and every Ray worker paid at start-up (python -X importtime).
    from sklearn.model_selection import train_test_split

    label_array = labels.numpy()
    counts = np.bincount(label_array)
    n_classes = int((counts > 0).sum())
    # sklearn cannot stratify when a side gets fewer samples than classes, or a class has one.
    can_stratify = min(n_held, len(labels) - n_held) >= n_classes and counts[counts > 0].min() > 1
    if not can_stratify:
        held = _held_by_quota(label_array, n_held, seed)
        return torch.from_numpy(np.setdiff1d(indices, held)), torch.from_numpy(np.sort(held))
    kept, held = train_test_split(
        indices, test_size=n_held, random_state=seed, stratify=label_array
    )
    return torch.from_numpy(np.sort(kept)), torch.from_numpy(np.sort(held))


def _held_by_quota(labels: np.ndarray, n_held: int, seed: int) -> np.ndarray:
    """``n_held`` indices drawn class by class in proportion to the class sizes, never a
    class's last sample while another class can give one: where sklearn cannot stratify, an
    unstratified draw could take every sample of a class (1,000 classes of 3 images and 300
    held out for validation: classes left with no training image)."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels)
    exact = n_held * counts / counts.sum()
    spare = np.maximum(counts - 1, 0)  # what a class can give and keep one
    quota = np.minimum(np.floor(exact).astype(np.int64), spare)
    for limit in (spare, counts):  # the spare samples first, classes' last ones only then
        while quota.sum() < n_held:
            open_ = np.flatnonzero(quota < limit)
            if len(open_) == 0:
                break
            # the largest shortfall first, ties in a seeded order
            order = open_[np.lexsort((rng.random(len(open_)), -(exact - quota)[open_]))]
            quota[order[: n_held - quota.sum()]] += 1
    members = [rng.permutation(np.flatnonzero(labels == c)) for c in range(len(counts))]
    return np.concatenate([m[:q] for m, q in zip(members, quota, strict=True)]).astype(np.int64)


def _channel_stats(
    *parts: Tensor, max_value: float, prepare: Callable[[Tensor], Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std of the images of ``parts`` together, on the [0, 1] scale, in
    float64 chunks (MNIST: 47M pixels), each chunk ``prepare``d (resized) first."""
    n_channels = parts[0].shape[1]
    total = torch.zeros(n_channels, dtype=torch.float64)
    total_sq = torch.zeros(n_channels, dtype=torch.float64)
    count = 0
    # Resized chunks are made smaller: 8,192 MNIST digits at 224x224 are 3.3 GB in float64.
    size = STATS_CHUNK if prepare is None else RESIZED_STATS_CHUNK
    for chunk in (chunk for images in parts for chunk in images.split(size)):
        chunk = prepare(chunk) if prepare is not None else chunk
        pixels = chunk.to(torch.float64, copy=True).div_(max_value)  # never the images
        total += pixels.sum(dim=(0, 2, 3))
        total_sq += pixels.square_().sum(dim=(0, 2, 3))
        count += chunk.numel() // n_channels
    mean = total / count
    variance = total_sq / count - mean.square()
    return mean.float(), population_std(variance).float()


def to_device(splits: DataSplits, device: str | torch.device) -> DataSplits:
    """``splits`` with every tensor on ``device``, copied once per process and device.

    The trials a worker process runs one after another then share one device-resident copy:
    on a GPU no trial pays the host-to-device copy of the dataset again (CIFAR-10's training
    split is 600 MB of float32). On the CPU the splits come back as they are, with no copy.
    """
    target = torch.device(device)
    if target.type == "cuda" and target.index is None:
        # "cuda" and "cuda:0" (the current device) must share one entry, not hold two copies.
        target = torch.device("cuda", torch.cuda.current_device())
    if splits.train_x.device == target:
        return splits
    key = (id(splits), str(target))
    if key not in _DEVICE_CACHE:
        moved = DataSplits(
            train_x=splits.train_x.to(target),
            train_y=splits.train_y.to(target),
            val_x=splits.val_x.to(target),
            val_y=splits.val_y.to(target),
            test_x=splits.test_x.to(target),
            test_y=splits.test_y.to(target),
            n_classes=splits.n_classes,
            input_shape=splits.input_shape,
            name=splits.name,
            normalise=splits.normalise,
            classes=splits.classes,
        )
        _DEVICE_CACHE[key] = (splits, moved)
    return _DEVICE_CACHE[key][1]


def release_device_copies() -> None:
    """Forget the copies ``to_device`` made on devices other than the CPU and give the GPU's
    cached blocks back. The driver trains the teacher on a GPU, then runs the search for
    hours: the copy it kept (CIFAR-10 is 0.7 GB) and its freed blocks sat on the GPU that Ray
    hands to trials, outside Ray's accounting. The CPU's loaded splits stay cached."""
    for key in [k for k in _DEVICE_CACHE if not k[1].startswith("cpu")]:
        del _DEVICE_CACHE[key]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def clear_cache() -> None:
    """Forget every loaded dataset (frees memory; tests use it to prove a fresh load)."""
    _SPLITS_CACHE.clear()
    _RAW_CACHE.clear()
    _DEVICE_CACHE.clear()
