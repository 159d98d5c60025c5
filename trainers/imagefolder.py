"""Image folders as people have them: one folder of images per class, split into ``train/``,
``val/`` (or ``valid/``, ``validation/``) and ``test/`` or not split at all.

What a folder holds besides images is handled here, not left to surprise the user:

- hidden files and folders (``.DS_Store``, macOS's ``._name.jpg``, ``.ipynb_checkpoints``
  at any depth), macOS zip leftovers (``__MACOSX``) and Synology thumbnails (``@eaDir``)
  are skipped;
- any other file whose extension is not an image format read here is skipped and counted,
  and a note says how many of which extension;
- a folder reached twice through links (a link to ``..``: a loop) and a file read twice (a
  link from ``train/`` into ``test/`` leaks test images into training) are errors;
- 16-bit grey images (medical, microscopy, depth) are scaled to 8 bits over their whole
  range (PIL's own conversion clips them to black and white); 32-bit float and integer
  images, whose range is not known, are refused;
- a photo's EXIF orientation is applied, as viewers show it.

The order of the samples is torchvision ``ImageFolder``'s (classes sorted, then the walk's
folders and each folder's files sorted), so the splits of a folder are what they were when
nascomp read it through ``ImageFolder``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from nascomp.trainers.errors import DataNotFoundError

# The extensions read as images: the formats Pillow reads without extra libraries that
# photos and datasets come in (torchvision's ImageFolder list, plus GIF, JFIF and the like).
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".png",
    ".gif",
    ".bmp",
    ".dib",
    ".ppm",
    ".pgm",
    ".pbm",
    ".pnm",
    ".tif",
    ".tiff",
    ".webp",
    ".tga",
)
# Split folders of a root, and the split each names.
SPLIT_FOLDERS = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
# Folders that are no class and hold no sample: what macOS zips and Synology leave behind.
_NOT_DATA = frozenset({"__MACOSX", "@eaDir"})
# Files that are no sample and not worth a note: what Windows leaves in image folders.
_SILENT = frozenset({"thumbs.db", "desktop.ini"})
_GREY_MODES = ("1", "L", "LA", "La")
_WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
# What decode_one does to a file, for the export's preprocess.json: a deployment that opened
# the files with PIL's convert() alone fed 16-bit scans as white and rotated photos unrotated.
DECODE = (
    "PIL: ImageOps.exif_transpose (the image as viewers show it); then modes 1, L, LA, La as "
    "convert('L'); 16-bit grey (I;16, I;16B, I;16L, I;16N, I) as L of (v * 255 + 32767) // "
    "65535, its whole 0..65535 range; any other mode as convert('RGB'); with image_mode RGB, "
    "grey images repeated to 3 channels; then the resize, if any"
)


@dataclass(frozen=True)
class Layout:
    """The folders of an image-folder root: ``train`` holds the class folders to train on
    (the root itself when it is not split), ``val`` and ``test`` the official splits."""

    train: Path
    val: Path | None = None
    test: Path | None = None


@dataclass(frozen=True)
class Listing:
    """The samples of one split folder, in ``ImageFolder``'s order."""

    root: Path
    classes: tuple[str, ...]
    paths: tuple[str, ...]
    labels: tuple[int, ...]
    skipped: Counter[str]  # files that are not images read here, by extension


def is_data_folder(name: str) -> bool:
    """Whether a folder of this name may hold samples (not hidden, not a zip's leftovers)."""
    return not name.startswith(".") and name not in _NOT_DATA


def class_folders(path: Path) -> list[Path]:
    """The class sub-folders of ``path``, sorted by name."""
    return sorted(c for c in path.iterdir() if c.is_dir() and is_data_folder(c.name))


_HINT = (
    "put one sub-folder of images per class in it, or train/ and test/ (and val/) sub-folders "
    "that each hold the class sub-folders"
)


def layout(root: str | None) -> Layout:
    """The layout of an image-folder root, or a one-line error that says what is expected."""
    if root is None:
        raise DataNotFoundError(f"dataset 'imagefolder' needs a data root directory: {_HINT}")
    path = Path(root)
    if not path.is_dir():
        raise DataNotFoundError(f"dataset 'imagefolder': expected a directory at {path}; {_HINT}")
    found = {c.name: c for c in class_folders(path) if c.name.lower() in SPLIT_FOLDERS}
    others = [c.name for c in class_folders(path) if c.name.lower() not in SPLIT_FOLDERS]
    splits: dict[str, list[Path]] = {}
    for name, folder in found.items():
        splits.setdefault(SPLIT_FOLDERS[name.lower()], []).append(folder)
    # Split folders: a train/ folder, or nothing but split names. Classes that happen to be
    # named so beside others ("valid" and "invalid") are classes.
    if found and ("train" in splits or not others):
        twice = [sorted(f.name for f in folders) for folders in splits.values() if len(folders) > 1]
        if twice:
            raise ValueError(
                f"dataset 'imagefolder': {path} holds {' and '.join(twice[0])}, two folders of one "
                "split; keep one"
            )
        if "train" not in splits:
            raise ValueError(
                f"dataset 'imagefolder': {path} holds {', '.join(sorted(found))} but no train/ "
                "folder; add train/ with the class sub-folders"
            )
        if others:
            raise ValueError(
                f"dataset 'imagefolder': {path} holds split folders ({', '.join(sorted(found))}) "
                f"and other folders ({', '.join(others[:5])}); a split root holds only train/, "
                "val/ and test/"
            )
        result = Layout(
            splits["train"][0],
            splits.get("val", [None])[0],
            splits.get("test", [None])[0],
        )
        for split in (result.train, result.val, result.test):
            if split is not None and not class_folders(split):
                raise DataNotFoundError(
                    f"dataset 'imagefolder': expected class sub-folders in {split}; {_HINT}"
                )
        _check_two_classes(result.train)
        return result
    if not class_folders(path):
        raise DataNotFoundError(
            f"dataset 'imagefolder': expected class sub-folders in {path}; {_HINT}"
        )
    _check_two_classes(path)
    return Layout(path)


def _check_two_classes(path: Path) -> None:
    """A classifier's training folder needs 2 classes; with one, which may be the dataset's
    own folder (a root one level too high), the error says which root to give."""
    folders = class_folders(path)
    if len(folders) == 1:
        inner = class_folders(folders[0])
        hint = (
            f"; if it holds the dataset, give data.root: {folders[0]}"
            if len(inner) >= 2 or any(c.name.lower() in SPLIT_FOLDERS for c in inner)
            else ""
        )
        raise ValueError(
            f"dataset 'imagefolder': {path} holds one class sub-folder ({folders[0].name}); a "
            f"classifier needs at least 2{hint}"
        )


def list_split(
    folder: Path, seen: dict[str, str] | None = None, classes: Sequence[str] | None = None
) -> Listing:
    """The images of ``folder``'s class folders, in ``ImageFolder``'s order. ``seen`` maps
    the real path of every file read so far (other splits' too) to the path it was read at:
    a file reached twice is an error, as is a folder reached twice (a link loop).
    ``classes``: the training split's, by label (a validation or test folder may lack some,
    and may hold no other)."""
    seen = {} if seen is None else seen
    here = [c.name for c in class_folders(folder)]
    if classes is None:
        classes = here
    extra = sorted(set(here) - set(classes))
    if extra:
        raise ValueError(
            f"imagefolder: {folder} holds class folder(s) {', '.join(extra[:5])} that the "
            f"training folder lacks ({len(extra)} in all); a class must be trained to be "
            "measured: add it to the training folder or remove it"
        )
    paths: list[str] = []
    labels: list[int] = []
    skipped: Counter[str] = Counter()
    for label, name in enumerate(classes):
        if name not in here:
            continue  # a rare class that this split lacks (the validation notes name it)
        found = _walk(folder / name, skipped)
        if not found:
            raise ValueError(
                f"imagefolder: class folder {name} in {folder} holds no image "
                f"({' '.join(IMAGE_EXTENSIONS)}): add images or remove the folder"
            )
        for path in found:
            real = os.path.realpath(path)
            if real in seen:
                raise ValueError(
                    f"imagefolder: {path} is the file {seen[real]} read again (a link?); a "
                    "sample must be read once, or it is trained on twice or leaks into "
                    "validation or test: remove the link"
                )
            seen[real] = path
            paths.append(path)
            labels.append(label)
    return Listing(folder, tuple(classes), tuple(paths), tuple(labels), skipped)


def _walk(class_folder: Path, skipped: Counter[str]) -> list[str]:
    """The image files under ``class_folder`` (links followed), sorted as ``ImageFolder``
    sorts them; other files are counted into ``skipped`` by extension."""
    visited: dict[str, str] = {}
    found: list[tuple[str, list[str]]] = []
    for top, dirs, files in os.walk(class_folder, followlinks=True):
        real = os.path.realpath(top)
        if real in visited:
            raise ValueError(
                f"imagefolder: {top} is the folder {visited[real]} reached again through a "
                "link (a link loop, or two links to one folder): remove the link"
            )
        visited[real] = top
        dirs[:] = [d for d in dirs if is_data_folder(d)]
        images = []
        for name in files:
            if name.startswith(".") or name.lower() in _SILENT:
                continue
            if name.lower().endswith(IMAGE_EXTENSIONS):
                images.append(name)
            else:
                skipped[os.path.splitext(name)[1].lower() or "(no extension)"] += 1
        found.append((top, images))
    return [os.path.join(top, name) for top, names in sorted(found) for name in sorted(names)]


# The brightest level (of 255) below which a whole folder is called nearly black: 16-bit files
# that hold 8-bit values (0..255) decode to 0 or 1 (scaled over 0..65535).
_DARK = 3


def dark_note(images: Tensor) -> str | None:
    """A note where every decoded image is nearly black (no value above ``_DARK`` of 255):
    what 16-bit files holding 8-bit values become, their levels lost, with no error."""
    if not images.numel() or int(images.max()) > _DARK:
        return None
    return (
        f"data: imagefolder: every image decodes to levels 0..{int(images.max())} of 255 "
        "(nearly black): 16-bit images are scaled over their whole 0..65535 range, so 16-bit "
        "files that hold 8-bit values (0..255) lose them; save such files as 8-bit images"
    )


def skipped_note(skipped: Counter[str]) -> str | None:
    """A note for the files that were not read, or None when every file was."""
    if not skipped:
        return None
    total = sum(skipped.values())
    kinds = ", ".join(f"{ext} {n}" for ext, n in skipped.most_common(6))
    which = "files that are not images" if total != 1 else "file that is not an image"
    return (
        f"data: imagefolder skipped {total} {which} it reads in the class folders ({kinds}); "
        f"it reads {' '.join(IMAGE_EXTENSIONS)}"
    )


# ---------------------------------------------------------------------------- decoding


def decode_images(paths: Sequence[str], image_size: int | None) -> Tensor:
    """Decode every image once into one uint8 (N, C, H, W) tensor."""
    # PIL releases the GIL while decoding, so threads give a real speed-up without the
    # pickling cost of processes. Kept beside torchvision's reader (data.name: torchvision,
    # dataset: ImageFolder, read per sample by trainers/datasets.scan) because it also mixes
    # grey and colour folders and resizes in PIL; it is not measurably faster: 5,000 CIFAR-10
    # JPEGs decoded in 0.52-0.58 s here, torchvision's reading pass took 0.51-1.7 s in all
    # (2 shared cores, 2026-12-01, bench/data_streaming.py's load line).
    n_workers = min(16, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        arrays = list(pool.map(lambda path: decode_one(path, image_size), paths))
    shapes = {array.shape[:2] for array in arrays}
    if len(shapes) > 1:
        # one file of each size (H, W), the first in reading order, so the user can look
        first: dict[tuple[int, int], str] = {}
        for path, array in zip(paths, arrays, strict=True):
            first.setdefault(array.shape[:2], path)
        shown = "; ".join(f"{h}x{w}: {first[(h, w)]}" for h, w in sorted(first)[:3])
        raise ValueError(
            f"imagefolder: images have {len(shapes)} different sizes (height x width: "
            f"{shown}{'; ...' if len(shapes) > 3 else ''}); set image_size to resize them to "
            "one size"
        )
    if any(array.shape[2] == 3 for array in arrays):
        # Mixed grey and colour folders: grey images become 3 equal channels.
        arrays = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in arrays]
    stacked = np.stack(arrays) if arrays else np.zeros((0, 1, 1, 1), dtype=np.uint8)
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


def decode_one(path: str, image_size: int | None) -> np.ndarray:
    """One image as uint8 (H, W, C), C 1 for grey images and 3 for any other."""
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)  # as viewers show it
            converted = _eight_bit(image, path)
            if image_size is not None and converted.size != (image_size, image_size):
                converted = converted.resize((image_size, image_size), Image.Resampling.BILINEAR)
            array = np.asarray(converted, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # truncated, not an image
        if isinstance(exc, ValueError) and str(exc).startswith("imagefolder: "):
            raise
        reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"imagefolder: cannot read {path} ({reason}); replace or remove the file"
        ) from None
    return array[:, :, None] if array.ndim == 2 else array


def _eight_bit(image: Image.Image, path: str) -> Image.Image:
    """``image`` as an 8-bit ``L`` or ``RGB`` image: grey modes (with alpha or not) stay
    grey, 16-bit grey is scaled over its whole range, any other mode becomes RGB."""
    if image.mode in _GREY_MODES:
        return image.convert("L")
    if image.mode in _WIDE_GREY_MODES or image.mode == "I":
        values = np.asarray(image, dtype=np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(
                f"imagefolder: {path} is a 32-bit integer image with values "
                f"{values.min()}..{values.max()}; convert it to 8 or 16 bits"
            )
        # 0..65535 onto 0..255, rounded: PIL's convert("L") clips it (every value above 255
        # becomes white, a 16-bit scan black and white).
        return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), mode="L")
    if image.mode == "F":
        raise ValueError(
            f"imagefolder: {path} is a 32-bit float image, whose value range is not known; "
            "convert it to 8 or 16 bits"
        )
    return image.convert("RGB")
