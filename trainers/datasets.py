"""The user's datasets: a factory of their own (``data.name: custom``) or a torchvision dataset
class by name (``data.name: torchvision``), opened as map-style ``Dataset`` pairs and read once.

Reading is one pass over every sample (:func:`scan`) that checks it (an input tensor and an
integer label), records its label and per-sample pixel sums, and, when the dataset fits the
memory budget, keeps it. The splits and the normalisation are then computed from those records
alone, so a dataset kept in memory and the same dataset streamed (``trainers/stream.py``) get the
same splits and the same normalised values, bit for bit.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from nascomp.spaces.userfn import UserCodeError, calling, load_callable
from nascomp.trainers.data import DataNotFoundError
from nascomp.trainers.normalise import population_std
from nascomp.trainers.tables import TableError, check_table, open_table

FACTORY_FIELD = "data.factory"
DATASET_FIELD = "data.dataset"
CSV_FIELD = "data.root"
SCAN_BATCH_SIZE = 256  # samples per batch of the reading pass (the per-sample sums' batches)
# Below this many samples, worker processes cost more to start than they save.
MIN_SAMPLES_FOR_WORKERS = 4096
TORCHVISION_EXAMPLES = ("CIFAR10", "CIFAR100", "SVHN", "MNIST", "FashionMNIST", "ImageFolder")


class DatasetError(ValueError):
    """The user's dataset is not usable as it is; the one-line message names the field."""


@dataclass(frozen=True)
class DatasetSource:
    """Where a user dataset comes from: ``name`` is ``custom``, ``torchvision`` or ``csv``."""

    name: str
    root: str | None = None
    factory: str | None = None
    dataset: str | None = None
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def field(self) -> str:
        return {"custom": FACTORY_FIELD, "csv": CSV_FIELD}.get(self.name, DATASET_FIELD)


# ---------------------------------------------------------------------------- config checks


def check_source(source: DatasetSource) -> None:
    """Cheap checks for config validation (import and look-up, a CSV's header; no samples
    are read)."""
    if source.name == "custom":
        try:
            load_callable(source.factory, FACTORY_FIELD)
        except UserCodeError as exc:
            raise DatasetError(str(exc)) from None
    elif source.name == "csv":
        try:
            check_table(source.root, dict(source.options))
        except TableError as exc:
            raise DatasetError(str(exc)) from None
    else:
        torchvision_class(source.dataset)
        if source.root is None or not Path(source.root).is_dir():
            raise DataNotFoundError(
                f"data.root: dataset {source.dataset!r} needs the directory that holds its "
                f"files (nothing is downloaded); got {source.root!r}"
            )


def torchvision_class(name: str | None) -> type[Dataset]:
    from torchvision import datasets

    found = getattr(datasets, name, None) if isinstance(name, str) else None
    if not (isinstance(found, type) and issubclass(found, Dataset)):
        raise DatasetError(
            f"{DATASET_FIELD} must name a torchvision.datasets class (e.g. "
            f"{', '.join(TORCHVISION_EXAMPLES)}); got {name!r}"
        )
    # The base class (its len() raised NotImplementedError, a traceback) and a class of no
    # files (FakeData, which took data.root as its number of images)
    if found is datasets.VisionDataset or next(iter(_signature_names(found)), None) != "root":
        raise DatasetError(
            f"{DATASET_FIELD}: torchvision {name} is no dataset read from data.root (a base "
            f"class, or one of no files); name one that is (e.g. "
            f"{', '.join(TORCHVISION_EXAMPLES)})"
        )
    return found


def _signature_names(dataset_class: type) -> list[str]:
    try:
        return list(inspect.signature(dataset_class).parameters)
    except (TypeError, ValueError):
        return []


# ---------------------------------------------------------------------------- opening


def open_source(source: DatasetSource) -> tuple[Dataset, Dataset | None]:
    """The (train, test or None) datasets of ``source``, checked to be map-style datasets."""
    if source.name == "csv":
        try:
            return open_table(source.root, dict(source.options))
        except TableError as exc:
            raise DatasetError(str(exc)) from None
    pair = _call_factory(source) if source.name == "custom" else _open_torchvision(source)
    return _checked_pair(pair, source)


def _call_factory(source: DatasetSource) -> Any:
    try:
        factory = load_callable(source.factory, FACTORY_FIELD)
    except UserCodeError as exc:
        raise DatasetError(str(exc)) from None
    kwargs = dict(source.options)
    if source.root is not None:
        kwargs["root"] = source.root
    try:
        with calling(f"{FACTORY_FIELD} {source.factory}"):
            return factory(**kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # the user's code: any failure (sys.exit too), in one line
        message = f"{FACTORY_FIELD}: {source.factory} raised {type(exc).__name__}: {_line(exc)}"
        kind = DataNotFoundError if isinstance(exc, FileNotFoundError) else DatasetError
        # with the factory's frames: a failed trial's reason says where in it (it named this
        # function)
        raise kind(message).with_traceback(exc.__traceback__) from None


def _open_torchvision(source: DatasetSource) -> tuple[Dataset, Dataset | None]:
    from torchvision.transforms import PILToTensor

    dataset_class = torchvision_class(source.dataset)
    parameters = _init_parameters(dataset_class)
    kwargs: dict[str, Any] = dict(source.options)
    # A class whose splits are named (no train=) reads its split names from options.split:
    # OxfordIIITPet's are trainval and test, Places365's train-standard and val, ImageNet's
    # train and val; train and test were forced on every class ("got multiple values").
    splits = _split_names(kwargs.pop("split", None)) if _takes_split_names(parameters) else None
    if "download" in parameters:
        kwargs["download"] = False  # never: the machines that search have no network
    if "transform" in parameters:
        kwargs["transform"] = PILToTensor()  # PIL image -> uint8 (C, H, W), as stored

    def make(**split: Any) -> Dataset:
        try:
            return dataset_class(source.root, **kwargs, **split)
        # torchvision's "Dataset not found or corrupted."; USPS's file missing
        except (RuntimeError, FileNotFoundError) as exc:
            raise DataNotFoundError(
                f"data.root: torchvision {source.dataset} found no dataset in {source.root} "
                f"(download=False; put its files there as torchvision lays them out): "
                f"{_line(exc)}"
            ) from None
        except ImportError as exc:  # LSUN's lmdb: a package torchvision does not require
            package = exc.name or _line(exc)
            raise DatasetError(
                f"{DATASET_FIELD}: torchvision {source.dataset} needs the package {package!r}, "
                f"which is not installed here (pip install {package})"
            ) from None
        except Exception as exc:
            # EMNIST without split=: "missing 1 required positional argument: 'split'"
            needs = (
                " (give it in data.options)" if "required positional argument" in str(exc) else ""
            )
            if "split" in split and "split" in str(exc) and splits is None:
                needs = (
                    " (name the class's own splits in data.options.split: [TRAIN, TEST], or one "
                    "split to hold the test split out of it)"
                )
            raise DatasetError(
                f"{DATASET_FIELD}: torchvision {source.dataset}({source.root!r}, ...) raised "
                f"{type(exc).__name__}: {_line(exc)}{needs}"
            ) from None

    # With the user's own transforms the samples are theirs: read through __getitem__.
    plain = not ({"transform", "target_transform"} & {name for name, _ in source.options})
    if "train" in parameters:  # CIFAR10, CIFAR100, MNIST, FashionMNIST, KMNIST, USPS, EMNIST
        pair = make(train=True), make(train=False)
    elif "split" in parameters and isinstance(splits, str):  # one split: test held out
        return make(split=splits), None
    elif "split" in parameters:  # SVHN, STL10, Flowers102, ...
        train, test = splits or ("train", "test")
        pair = make(split=train), make(split=test)
    else:  # ImageFolder and others with one split: test is held out
        only = make()
        _refuse_split_folders_as_classes(only, source)
        return only, None
    return (_as_arrays(pair[0]), _as_arrays(pair[1])) if plain else pair


def _takes_split_names(parameters: set[str]) -> bool:
    """Whether a class's ``split`` names its train and test splits: it takes no ``train``
    (EMNIST's ``split`` names one of its datasets, and ``train`` the split)."""
    return "split" in parameters and "train" not in parameters


def _split_names(given: Any) -> tuple[str, str] | str | None:
    """``data.options.split`` of a class whose splits are named: ``[TRAIN, TEST]``, or one
    split (its test split held out), or None (train and test)."""
    if given is None:
        return None
    if isinstance(given, str) and given:
        return given
    if (
        isinstance(given, list | tuple)
        and len(given) == 2
        and all(isinstance(name, str) and name for name in given)
        and given[0] != given[1]
    ):
        return given[0], given[1]
    raise DatasetError(
        "data.options.split: give the class's train and test splits as [TRAIN, TEST] (e.g. "
        f"[trainval, test]), or one split to hold the test split out of it; got {given!r}"
    )


def _init_parameters(dataset_class: type) -> set[str]:
    """The keyword arguments a torchvision dataset takes, its parents' included: EMNIST's own
    signature names ``split`` (which of its six datasets) and passes ``train`` on to MNIST's;
    read as a train/test ``split``, it was unusable ("got multiple values for 'split'")."""
    names: set[str] = set()
    for kind in dataset_class.__mro__:
        init = kind.__dict__.get("__init__")
        if init is None or kind in (object, Dataset):
            continue
        try:
            parameters = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        names |= {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return names


def _refuse_split_folders_as_classes(dataset: Dataset, source: DatasetSource) -> None:
    """torchvision's ImageFolder on a root of ``train/`` and ``test/`` folders makes each
    split a class: the search learnt "train or test", and its accuracy was the share of the
    larger split."""
    from nascomp.trainers.imagefolder import SPLIT_FOLDERS

    classes = [str(c) for c in getattr(dataset, "classes", None) or ()]
    splits = [c for c in classes if c.lower() in SPLIT_FOLDERS]
    if len(splits) >= 2 or (splits and len(classes) == 1):
        train = [c for c in splits if SPLIT_FOLDERS[c.lower()] == "train"]
        inner = Path(str(source.root), (train or splits)[0])
        raise DatasetError(
            f"data.root: torchvision {source.dataset} reads the folders of {source.root} as "
            f"classes, and they are splits ({', '.join(map(repr, splits))}): give it one "
            f"split's folder (data.root: {inner}), or use data.name: imagefolder, which reads "
            "train/, val/ and test/ folders as splits"
        )


def _as_arrays(dataset: Dataset) -> Dataset:
    """The arrays torchvision's reader already parsed, as a TensorDataset of the same samples
    (uint8 (C, H, W) images, int64 labels, its ``classes``), for the classes that hold them.

    Their ``__getitem__`` makes a PIL image of each array only for PILToTensor to turn it back:
    the same values, slower (loading all of Fashion-MNIST took 4.2 to 12.5 s through
    ``__getitem__``, 1.4 to 2.1 s from the arrays, on 2 shared cores, 2026-12-01).
    """
    from torchvision import datasets

    kind = type(dataset)
    if kind in (datasets.MNIST, datasets.FashionMNIST, datasets.KMNIST):
        images, labels = dataset.data.unsqueeze(1), dataset.targets  # type: ignore[attr-defined]
    elif kind in (datasets.CIFAR10, datasets.CIFAR100):
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2)  # type: ignore[attr-defined]
        labels = torch.tensor(dataset.targets)  # type: ignore[attr-defined]
    elif kind is datasets.SVHN:
        images = torch.from_numpy(dataset.data)  # type: ignore[attr-defined]  # already NCHW
        labels = torch.from_numpy(dataset.labels)  # type: ignore[attr-defined]
    else:
        return dataset
    arrays = TensorDataset(images.contiguous(), labels.long())
    arrays.classes = list(getattr(dataset, "classes", []) or [])  # type: ignore[attr-defined]
    return arrays


def _checked_pair(pair: Any, source: DatasetSource) -> tuple[Dataset, Dataset | None]:
    what = source.factory if source.name == "custom" else source.dataset
    if not (isinstance(pair, tuple | list) and len(pair) == 2):
        raise DatasetError(
            f"{source.field}: {what} must return (train, test) datasets, or (train, None); "
            f"got {_kind(pair)}"
        )
    train, test = pair
    for role, dataset in (("train", train), ("test", test)):
        if dataset is None and role == "test":
            continue
        if _is_array(dataset) or (
            isinstance(dataset, tuple | list) and len(dataset) == 2 and all(map(_is_array, dataset))
        ):
            # (inputs, labels) arrays, the commonest slip: read as a set whose first sample
            # was the whole input array ("sample 0 must be an (input, label) pair; got a Tensor")
            given = (
                f"{_kind(dataset)} alone"
                if _is_array(dataset)
                else f"{_kind(dataset)} arrays (inputs, labels)"
            )
            raise DatasetError(
                f"{source.field}: {what} returned its {role} set as {given}, not a dataset of "
                "(input, label) samples: wrap them as torch.utils.data.TensorDataset(inputs, "
                "labels)"
            )
        if isinstance(dataset, IterableDataset) or not (
            hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")
        ):
            raise DatasetError(
                f"{source.field}: {what} returned a {role} set that is not a map-style "
                f"torch.utils.data.Dataset (with __getitem__ and __len__): {_kind(dataset)}"
            )
        if len(dataset) == 0:
            raise DatasetError(f"{source.field}: {what} returned an empty {role} set")
    return train, test


def _is_array(value: Any) -> bool:
    return isinstance(value, torch.Tensor | np.ndarray)


def _kind(value: Any) -> str:
    name = type(value).__name__
    # "an int", not "a int"; "an ndarray", said "en-d-array"
    article = "an" if name[:1].lower() in "aeiou" or name == "ndarray" else "a"
    if isinstance(value, tuple | list):
        return f"{article} {name} of {len(value)}"
    return f"{article} {name}"


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


# ---------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class SampleFormat:
    """What every sample of a dataset must look like, taken from its first sample."""

    # (C, H, W) images after the optional resize; (F,) feature vectors; any other rank as given
    shape: tuple[int, ...]
    dtype: torch.dtype  # as the dataset gives it
    scale: float  # 255 for uint8 images (to [0, 1]); 1 for anything else, used as given
    image_size: int | None
    layout: str = "auto"  # LAYOUTS: how a 2-D input is read

    @property
    def ids(self) -> bool:
        """Integer ids (tokens, categories): fed to the model as int64, not normalised."""
        return is_ids(self.dtype)


def is_ids(dtype: torch.dtype) -> bool:
    """An input of integer ``dtype`` other than uint8 (pixels) and bool (flags) holds ids: token,
    category or item indices that an ``nn.Embedding`` looks up, as they are."""
    return not dtype.is_floating_point and not dtype.is_complex and dtype not in _NOT_IDS


_NOT_IDS = (torch.uint8, torch.bool)


# How a 2-D float or uint8 input is read: "auto", an (H, W) image (given a channel axis of 1);
# "channels_first", (C, L): C channels of a signal of length L, as given, and a 1-D one (L,) is
# a signal of one channel, (1, L) (under "auto", F features). Every other rank reads the same
# under both: its first dimension is its channels.
LAYOUTS = ("auto", "channels_first")


def prepare_input(
    value: Any, image_size: int | None, field: str, index: int, layout: str = "auto"
) -> Tensor:
    """A sample's input in its own dtype: an (H, W) image as (1, H, W) (under the ``auto``
    layout; under ``channels_first``, a signal (L,) as (1, L)), a (C, H, W) image resized when
    ``image_size``, a vector of features (F,) or any
    other tensor as it is (its first dimension is its channels for the normalisation); integer
    ids of any shape as they are."""
    if not isinstance(value, Tensor):
        raise DatasetError(
            f"{field}: sample {index} must be (input tensor, integer label); its input is a "
            f"{type(value).__name__} (give a torch tensor, a NumPy array or a PIL image)"
        )
    if value.dim() == 0:
        raise DatasetError(f"{field}: sample {index}'s input is a 0-d tensor; it needs a shape")
    if value.dtype.is_complex:  # cut to its real part, with a warning of torch's alone
        raise DatasetError(
            f"{field}: sample {index}'s input is {value.dtype}; give real numbers (bool, "
            "integers or floats): e.g. the real and imaginary parts as two channels"
        )
    if is_ids(value.dtype):
        if image_size is not None:
            raise DatasetError(
                f"data.image_size: resizes images; {field}'s sample {index} holds integer ids "
                f"({value.dtype}) (leave data.image_size unset, or give images as uint8 or float)"
            )
        return value
    # An (H, W) image gets its channel axis; so does a one-channel signal given as (L,)
    one_channel = value.dim() == (2 if layout == "auto" else 1)
    image = value.unsqueeze(0) if one_channel else value
    if image_size is not None and image.dim() != 3:
        read_as = " (data.layout: channels_first reads it as (C, L))" if value.dim() == 2 else ""
        raise DatasetError(
            f"data.image_size: resizes (C, H, W) or (H, W) images; {field}'s sample {index} "
            f"has shape {tuple(value.shape)}{read_as} (leave data.image_size unset)"
        )
    if image_size is not None and image.shape[-2:] != (image_size, image_size):
        resized = F.interpolate(
            image[None].float(), size=(image_size, image_size), mode="bilinear", antialias=True
        )[0]
        image = resized.clamp_(0.0, 255.0) if value.dtype == torch.uint8 else resized
    return image


def label_of(value: Any, field: str, index: int) -> int:
    """A sample's label as a Python int: an int, a NumPy integer or an integer 0-d tensor."""
    integer_tensor = isinstance(value, Tensor) and value.dim() == 0
    if integer_tensor and not value.is_floating_point() and value.dtype != torch.bool:
        return int(value.item())
    if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
        return int(value)
    shown = (
        f"tensor of shape {tuple(value.shape)} {value.dtype}"
        if isinstance(value, Tensor)
        else repr(value)
    )
    raise DatasetError(
        f"{field}: sample {index}'s label must be an integer (a Python int or an integer 0-d "
        f"tensor); got {shown[:80]}"
    )


def sample_format(
    dataset: Dataset, image_size: int | None, field: str, layout: str = "auto"
) -> SampleFormat:
    """The format of the first sample, checked in this process (one-line errors)."""
    if layout not in LAYOUTS:
        raise DatasetError(f"data.layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    first = _sample(dataset, 0, field)
    if layout == "auto":  # channels_first: the user says the first axis is the channels
        _refuse_channels_last(first[0], field)
    image = prepare_input(first[0], image_size, field, 0, layout)
    label_of(first[1], field, 0)
    scale = 255.0 if first[0].dtype == torch.uint8 else 1.0
    return SampleFormat(tuple(image.shape), first[0].dtype, scale, image_size, layout)  # type: ignore[arg-type]


def random_reads_note(dataset: Dataset, field: str) -> str | None:
    """A note when reading sample 0 twice gives two inputs: augmentation drawn in the user's
    ``__getitem__``, which a dataset held in memory draws once, not every epoch. The random
    states are left as they were, so the reading pass draws what it would have."""
    import random

    states = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
    try:
        first, second = (_sample(dataset, 0, field)[0] for _ in range(2))
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
    alike = isinstance(first, Tensor) and isinstance(second, Tensor)
    if alike and first.shape == second.shape and torch.equal(first, second):
        return None
    return (
        f"{field}: sample 0 is another input each time it is read (augmentation drawn in "
        "__getitem__?): nascomp reads a dataset held in memory once, so it is drawn once, not "
        "every epoch; train.augment augments every epoch (or data.stream: true reads each "
        "epoch anew)"
    )


def _file_of(dataset: Dataset, index: int) -> str:
    """`` (PATH)``, the file of sample ``index`` where the dataset lists its files as
    torchvision's folder readers do (``samples``: (path, label) pairs), else ``""``: "reading
    train sample 0 raised OSError: Truncated File Read" left the user to find the image."""
    samples = getattr(dataset, "samples", None)
    try:
        path = samples[index][0]  # type: ignore[index]
    except (TypeError, IndexError, KeyError):
        return ""
    return f" ({path})" if isinstance(path, str | Path) else ""


# The smallest height and width read as a channels-last image's: (8, 4, 4) is as likely
# 8 channels of 4 x 4 as 8 x 4 pixels of 4 channels.
_CHANNELS_LAST_SIDE = 8


def _refuse_channels_last(value: Any, field: str) -> None:
    """A uint8 image as NumPy, PIL's ``np.asarray`` and OpenCV give it, (H, W, C), was read
    as H channels of W x C images, silently. uint8 inputs are pixels (integer ids are int64,
    int32 or int16), so a last axis of 1, 3 or 4 after two of 8 or more is channels last;
    ``data.layout: channels_first`` says otherwise."""
    if not (isinstance(value, Tensor) and value.dtype == torch.uint8 and value.dim() == 3):
        return
    h, w, c = value.shape
    if c in (1, 3, 4) and min(h, w) >= _CHANNELS_LAST_SIDE:
        raise DatasetError(
            f"{field}: sample 0's image has shape {(h, w, c)}, channels last; nascomp reads "
            f"images as (C, H, W), PyTorch's order: give it as {(c, h, w)} (e.g. "
            "torch.from_numpy(image).permute(2, 0, 1)), or set data.layout: channels_first if "
            f"it is {h} channels"
        )


def _sample(dataset: Dataset, index: int, field: str, role: str = "train") -> tuple[Any, Any]:
    try:
        sample = dataset[index]
    except Exception as exc:  # the user's __getitem__, whose frames place it in a trial's reason
        raise DatasetError(
            f"{field}: reading {role} sample {index}{_file_of(dataset, index)} raised "
            f"{type(exc).__name__}: {_line(exc)}"
        ).with_traceback(exc.__traceback__) from None
    if not (isinstance(sample, tuple | list) and len(sample) == 2):
        raise DatasetError(
            f"{field}: sample {index} must be an (input tensor, integer label) pair; got "
            f"{_kind(sample)}"
        )
    return _from_numpy(_from_pil(sample[0]), field, index), sample[1]


def sample_input(dataset: Dataset, index: int, field: str) -> Any:
    """The input of ``dataset``'s sample ``index`` as the in-memory reader takes it: a NumPy
    array or a PIL image made a tensor (a streamed split's reader: it refused both)."""
    return _sample(dataset, index, field)[0]


# PIL modes kept as they are: grey and colour, 8 bits a channel. Any other (palette, alpha,
# CMYK, 1-bit...) becomes RGB, as torchvision's ImageFolder loader makes every image.
_PIL_MODES = ("L", "RGB")


def _from_pil(value: Any) -> Any:
    """A PIL image (a torchvision-style dataset without a transform) as the uint8 (C, H, W)
    tensor torchvision's ``PILToTensor`` gives; anything else as it is."""
    from PIL import Image

    if not isinstance(value, Image.Image):
        return value
    from torchvision.transforms.functional import pil_to_tensor

    return pil_to_tensor(value if value.mode in _PIL_MODES else value.convert("RGB"))


# NumPy kinds an input may have: bool, signed and unsigned integers, floats.
_NUMPY_KINDS = "biuf"


def _from_numpy(value: Any, field: str, index: int) -> Any:
    """A NumPy array input (scikit-learn and pandas users' rows) as the tensor of its values and
    dtype; unsigned integers wider than 8 bits as int64 ids, which torch's operators take.
    Anything else as it is."""
    if not isinstance(value, np.ndarray):
        return value
    if value.dtype.kind not in _NUMPY_KINDS:
        raise DatasetError(
            f"{field}: sample {index}'s input is a NumPy array of dtype {value.dtype}; give "
            "numbers (bool, integers or floats)"
        )
    if value.dtype.kind == "u" and value.dtype.itemsize > 1:
        value = value.astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(value))


class CheckedSamples(Dataset):
    """``dataset``'s samples as (prepared input, int label), each checked against the format
    of the training split's first sample (``role``: which split ``dataset`` is)."""

    def __init__(
        self, dataset: Dataset, sample: SampleFormat, field: str, role: str = "train"
    ) -> None:
        self.dataset, self.format, self.field, self.role = dataset, sample, field, role

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        value, label = _sample(self.dataset, index, self.field, self.role)
        image = prepare_input(value, self.format.image_size, self.field, index, self.format.layout)
        if tuple(image.shape) != self.format.shape or value.dtype != self.format.dtype:
            raise DatasetError(
                f"{self.field}: {self.role} sample {index} is {tuple(image.shape)} "
                f"{value.dtype}, train sample 0 is {self.format.shape} {self.format.dtype}; "
                f"every input must have one shape and dtype{self._hint(image, value.dtype)}"
            )
        return image, label_of(label, self.field, index)

    def _hint(self, image: Tensor, dtype: torch.dtype) -> str:
        """What makes the inputs one: a size is resized, grey and colour are one mode; a
        resize does nothing for a dtype or a channel count."""
        shape = self.format.shape
        if dtype != self.format.dtype or image.dim() != 3 or len(shape) != 3:
            return ""
        if image.shape[0] != shape[0]:
            return (
                f" (images of {image.shape[0]} and {shape[0]} channels: grey and colour "
                "mixed? give them one mode, e.g. a transform doing PIL's image.convert('RGB'))"
            )
        return " (set data.image_size to resize images to one size)"


# ---------------------------------------------------------------------------- the reading pass


@dataclass(frozen=True)
class Scan:
    """One dataset read once: labels, per-sample channel sums (float64, on the [0, 1] scale for
    uint8) for the normalisation's statistics, and the inputs themselves when kept."""

    labels: Tensor  # (N,) int64
    sums: Tensor  # (N, C) float64, C the first dimension of a sample
    square_sums: Tensor  # (N, C) float64
    images: Tensor | None  # (N, *sample shape) as the samples are, when kept


def scan(
    dataset: Dataset,
    sample: SampleFormat,
    field: str,
    *,
    keep: bool,
    n_workers: int,
    role: str = "train",
) -> Scan:
    """Read every sample once through a DataLoader (``n_workers`` processes for large sets)."""
    checked = CheckedSamples(dataset, sample, field, role)
    workers = n_workers if len(checked) >= MIN_SAMPLES_FOR_WORKERS else 0
    loader = DataLoader(checked, batch_size=SCAN_BATCH_SIZE, num_workers=workers)
    labels, sums, squares, kept = [], [], [], []
    start = 0
    for images, batch_labels in _reading(loader, field):
        # per channel: a sample's first dimension (a feature vector's every feature). A copy
        # always: `.double()` of float64 samples is the same tensor, which the in-place steps
        # below would divide and square in `kept` too (a model trained on x**2).
        pixels = images.to(torch.float64, copy=True).div_(sample.scale)
        pixels = pixels.reshape(len(images), sample.shape[0], -1)
        sums.append(pixels.sum(dim=2))
        if not bool(torch.isfinite(sums[-1]).all()):  # a NaN or inf anywhere in the batch
            _refuse_non_finite(images, start, field, role)
        start += len(images)
        squares.append(pixels.square_().sum(dim=2))
        labels.append(batch_labels.long())
        if keep:
            kept.append(images)
    return Scan(
        labels=torch.cat(labels),
        sums=torch.cat(sums),
        square_sums=torch.cat(squares),
        images=torch.cat(kept) if keep else None,
    )


def _refuse_non_finite(images: Tensor, start: int, field: str, role: str) -> None:
    """One line naming the first sample of the batch with a NaN or an infinity: normalised by
    statistics that hold it, every input would be NaN, and every trial would fail to train."""
    flat = images.reshape(len(images), -1)
    row = int((~torch.isfinite(flat)).any(dim=1).nonzero()[0])
    position = int((~torch.isfinite(flat[row])).nonzero()[0])
    value = float(flat[row, position])
    where = tuple(int(i) for i in np.unravel_index(position, tuple(images.shape[1:])))
    raise DatasetError(
        f"{field}: {role} sample {start + row}'s input holds {value} at {where}; inputs must be "
        "finite (drop, clean or impute such samples in the dataset)"
    )


def _reading(loader: DataLoader, field: str) -> Iterator[tuple[Tensor, Tensor]]:
    """The loader's batches, with a failure in a worker process cut to its one-line cause."""
    try:
        yield from loader
    except Exception as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        if isinstance(exc, DatasetError) and len(lines) == 1:
            raise  # raised in this process: already one line
        # Re-raised from a worker: the message is a traceback whose last line is the cause.
        cause = lines[-1] if lines else type(exc).__name__
        marker = f"{DatasetError.__name__}: "
        if marker in cause:
            raise DatasetError(cause.split(marker, 1)[1]) from None
        raise DatasetError(f"{field}: reading the samples failed: {cause}") from None


# Above this many implied classes, labels that use under a tenth of 0..K-1 are codes, not class
# indices (ImageNet-21k has 21,841 classes).
SPARSE_LABELS_FROM = 100_000


def check_labels(
    labels: Tensor,
    n_classes: int | None,
    field: str,
    role: str,
    counted: str = "len(classes)",
) -> int:
    """The number of classes: ``n_classes`` (``counted`` says from what: a dataset's
    ``classes``, or the training labels for the test set's) or max label + 1."""
    low, high = int(labels.min()), int(labels.max())
    limit = n_classes if n_classes is not None else high + 1
    if n_classes is None and limit > SPARSE_LABELS_FROM:
        # K sizes the model's head and every per-class table: one stray label (10**9 among
        # 0..2) took 21 GB before the kernel killed the search, without a word.
        distinct = int(torch.unique(labels).numel())
        if limit > 10 * distinct:
            raise DatasetError(
                f"{field}: {role} labels must be class indices 0..K-1 (K = max label + 1); "
                f"the largest is {high}, and only {distinct} distinct labels occur: map them "
                f"to 0..{distinct - 1}"
            )
    if high < 0:  # "0..-1": every label below the first class
        raise DatasetError(
            f"{field}: {role} labels must be class indices 0..K-1; every one is negative "
            f"({low}..{high}): map them to 0..K-1"
        )
    if low < 0 or high >= limit:
        raise DatasetError(
            f"{field}: {role} labels must be integers in 0..{limit - 1} "
            f"({counted if n_classes is not None else 'K = max label + 1'}); "
            f"got {low}..{high}"
        )
    if role == "train" and low == high:
        raise DatasetError(
            f"{field}: every train label is {low}; a classifier needs samples of at least 2 classes"
        )
    return limit


def declared_classes(dataset: Dataset) -> int | None:
    classes = getattr(dataset, "classes", None)
    return len(classes) if isinstance(classes, list | tuple) and classes else None


def check_same_classes(train: Dataset, test: Dataset, field: str) -> None:
    """Where both datasets name their classes, label i must name the same class in both.
    torchvision's ImageFolder numbers the class folders it finds: a test folder without
    ``cat`` made ``dog`` label 0, and the test split was scored against shifted labels."""
    names = [getattr(d, "classes", None) for d in (train, test)]
    if not all(isinstance(n, list | tuple) and n for n in names):
        return
    ours, theirs = ([str(c) for c in n] for n in names)  # type: ignore[union-attr]
    for label, (one, other) in enumerate(zip(ours, theirs, strict=False)):
        if one != other:
            raise DatasetError(
                f"{field}: label {label} is {other!r} in the test set's classes and {one!r} in "
                "the training set's; a label must name one class in both (ImageFolder numbers "
                "the folders it finds: a class folder missing from one split shifts the "
                "others): give both the training set's classes, or use data.name: imagefolder, "
                "which matches class folders by name"
            )


def class_names(dataset: Dataset, n_classes: int) -> tuple[str, ...]:
    """Each label's name from the dataset's ``classes`` (torchvision's convention: the name
    of label i at position i); () when it has none, or not one per class."""
    classes = getattr(dataset, "classes", None)
    if not isinstance(classes, list | tuple) or len(classes) != n_classes:
        return ()
    return tuple(_class_name(name) for name in classes)


def _class_name(name: Any) -> str:
    """A class's name; of a class named by synonyms (torchvision's Imagenette: ``('tench',
    'Tinca tinca')``), the first, as the front's labels and ``preprocess.json`` show it."""
    if isinstance(name, list | tuple) and name and all(isinstance(n, str) for n in name):
        return name[0]
    return str(name)


def feature_names(dataset: Dataset, shape: tuple[int, ...]) -> tuple[str, ...]:
    """Each input feature's name from the dataset's ``feature_names`` (scikit-learn's word:
    the column of feature i at position i), for rows of features; () otherwise."""
    names = getattr(dataset, "feature_names", None)
    if len(shape) != 1 or not isinstance(names, list | tuple) or len(names) != shape[0]:
        return ()
    return tuple(str(name) for name in names)


def feature_categories(dataset: Dataset, features: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """A CSV's one-hot encoded columns of words and their values (``trainers.tables.Table``),
    where its inputs are named; {} otherwise."""
    categories = getattr(dataset, "categories", None)
    if not features or not isinstance(categories, dict):
        return {}
    return {str(name): tuple(map(str, values)) for name, values in categories.items()}


def channel_stats(scan_: Scan, indices: Tensor, pixels_per_channel: int) -> tuple[Tensor, Tensor]:
    """Per-channel mean and population std over the samples ``indices`` (float32)."""
    count = len(indices) * pixels_per_channel
    mean = scan_.sums[indices].sum(dim=0) / count
    variance = scan_.square_sums[indices].sum(dim=0) / count - mean.square()
    return mean.float(), population_std(variance).float()
