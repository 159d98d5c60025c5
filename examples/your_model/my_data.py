"""A user's own dataset factory: Fashion-MNIST read from its IDX files by a plain Dataset.

nascomp calls ``fashion_mnist(root=<data.root>, **data.options)`` and expects ``(train, test)``
map-style datasets of ``(image tensor, integer label)``; ``(train, None)`` would let nascomp
hold a test split out of train. Like ``my_models.py``, this is plain PyTorch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file: a magic number whose last byte is the rank, the sizes, then uint8 data."""
    data = path.read_bytes()
    rank = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank).reshape(shape)


class IdxImages(Dataset):
    """Images as 1xHxW float tensors in [0, 1], labels as Python ints."""

    def __init__(self, folder: Path, train: bool, limit: int | None = None) -> None:
        images_file, labels_file = _FILES[train]
        self.images = _read_idx(folder / images_file)[:limit]
        self.labels = _read_idx(folder / labels_file)[:limit]
        self.classes = [str(label) for label in range(int(self.labels.max()) + 1)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(self.images[index].astype(np.float32) / 255.0)
        return image.unsqueeze(0), int(self.labels[index])


def fashion_mnist(root: str, limit: int | None = None) -> tuple[Dataset, Dataset]:
    """Train and test splits from ``<root>/FashionMNIST/raw``; ``limit`` keeps the first N."""
    folder = Path(root) / "FashionMNIST" / "raw"
    if not folder.is_dir():
        raise FileNotFoundError(f"expected the Fashion-MNIST IDX files in {folder}")
    return IdxImages(folder, True, limit), IdxImages(folder, False, limit)
