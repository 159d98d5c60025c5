"""A user's dataset module, as a user would write it, for the data tests: written into a temporary
folder that the test makes the working folder (``data.factory`` imports from there).

Every factory reads real MNIST (its IDX files under ``root``) through torchvision; none of this
is nascomp code.
"""

from __future__ import annotations

import itertools

USER_MODULE = '''
import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset
from torchvision.datasets import MNIST


def _mnist(root, train, n):
    data = MNIST(root, train=train, download=False)
    return data.data[:n].unsqueeze(1), data.targets[:n]


def tensors(root, n_train=600, n_test=200):
    """uint8 images and int64 labels, as TensorDataset gives them."""
    x, y = _mnist(root, True, n_train)
    test_x, test_y = _mnist(root, False, n_test)
    train = TensorDataset(x, y)
    train.classes = [f"digit {i}" for i in range(10)]  # torchvision's convention
    return train, TensorDataset(test_x, test_y)


class Pairs(Dataset):
    """Hand-written: float inputs in [-1, 1] without a channel axis, Python int labels."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, index):
        return self.x[index, 0].float() / 127.5 - 1.0, int(self.y[index])


def floats(root, n_train=600):
    return Pairs(*_mnist(root, True, n_train)), None


def raises(root):
    raise RuntimeError("the disk is on fire")


def one_dataset(root):
    return tensors(root)[0]


def shifted_labels(root):
    x, y = _mnist(root, True, 100)
    return TensorDataset(x, y - 1), None


def negative_labels(root):
    x, y = _mnist(root, True, 100)
    return TensorDataset(x, -1 - y), None


def a_number(root):
    return 3


def arrays_in_pairs(root):
    """(inputs, labels) per split, not datasets: the commonest slip."""
    x, y = _mnist(root, True, 100)
    return (x, y), (x, y)


def numpy_arrays(root):
    x, y = _mnist(root, True, 100)
    return x.numpy(), y.numpy()


def a_stray_huge_label(root):
    """One label far past the others: K = max + 1 would be a billion classes."""
    x, y = _mnist(root, True, 100)
    y[0] = 10**9
    return TensorDataset(x, y), None


def test_beyond_train(root):
    """No classes: K is the train labels' max + 1, and the test set holds a label past it."""
    x, y = _mnist(root, True, 100)
    keep = y < 9
    return TensorDataset(x[keep], y[keep]), TensorDataset(x, y)


def one_class(root):
    x, y = _mnist(root, True, 100)
    return TensorDataset(x, y * 0 + 4), None


def float_labels(root):
    x, y = _mnist(root, True, 100)
    return TensorDataset(x, y.float()), None


def arrays(root, n_train=600, n_test=200):
    """NumPy rows and NumPy integer labels, as scikit-learn and pandas users hold them."""
    x, y = _mnist(root, True, n_train)
    test_x, test_y = _mnist(root, False, n_test)
    return (
        [(image.numpy(), label) for image, label in zip(x, y.numpy())],
        [(image.numpy(), label) for image, label in zip(test_x, test_y.numpy())],
    )


def float64_rows(root):
    """Tabular rows as a float64 array gives them (pandas' ``.to_numpy()``)."""
    x, y = _mnist(root, True, 300)
    rows = x.reshape(len(x), -1)[:, ::49].double().numpy() / 255.0  # 16 features
    return [(row, int(label)) for row, label in zip(rows, y)], None


def float32_rows(root):
    """The rows of ``float64_rows`` as float32."""
    rows, _ = float64_rows(root)
    return [(row.astype("float32"), label) for row, label in rows], None


def complex_inputs(root):
    """Complex inputs: torch cast them to their real part, with a warning."""
    x = torch.randn(100, 6, dtype=torch.complex64)
    return TensorDataset(x, torch.arange(100) % 3), None


def strings(root):
    return [(np.array(["a", "b"]), i % 2) for i in range(20)], None


class Photos(Dataset):
    """A torchvision-style dataset without a transform: PIL images of mixed modes."""

    classes = [str(i) for i in range(10)]

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, index):
        from PIL import Image

        grey = Image.fromarray(self.x[index, 0].numpy())
        mode = ("RGB", "P", "RGBA")[index % 3]  # a palette and an alpha channel: read as RGB
        return grey.convert(mode), int(self.y[index])


class Jittered(Dataset):
    """Augmentation drawn in __getitem__, as many user datasets do."""

    def __init__(self, x, y):
        self.x, self.y = x, y
        self.reads = 0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, index):
        # another shift at each read, as augmentation drawn here gives: a random one drawn in
        # 0..2 was the same twice in a row once in three, and the test failed by chance
        self.reads += 1
        return torch.roll(self.x[index], self.reads % 27 + 1, dims=-1), int(self.y[index])


def jittered(root):
    return Jittered(*_mnist(root, True, 200)), None


def pil_images(root):
    return Photos(*_mnist(root, True, 300)), None


class GreyAndColour(Photos):
    """Grey (L) and colour (RGB) PIL images, as torchvision's Caltech101 gives them."""

    def __getitem__(self, index):
        image, label = super().__getitem__(index)
        return (image.convert("L") if index % 2 == 0 else image.convert("RGB")), label


def grey_and_colour(root):
    return GreyAndColour(*_mnist(root, True, 300)), None


def channels_last(root):
    """(H, W, C) uint8 images, as np.asarray of a PIL image or OpenCV give them."""
    x, y = _mnist(root, True, 300)
    return TensorDataset(x.permute(0, 2, 3, 1).repeat(1, 1, 1, 3).contiguous(), y), None


def test_lacks_a_class(root):
    """The torchvision recipe, ImageFolder per split, where test/ has no folder "0"."""
    x, y = _mnist(root, True, 300)
    test_x, test_y = _mnist(root, False, 300)
    keep = test_y != 0
    train = TensorDataset(x, y)
    train.classes = [str(i) for i in range(10)]
    test = TensorDataset(test_x[keep], test_y[keep] - 1)  # numbered from its first folder
    test.classes = [str(i) for i in range(1, 10)]
    return train, test


def test_lacks_the_last_class(root):
    train, test = test_lacks_a_class(root)
    keep = test.tensors[1] < 8
    test = TensorDataset(test.tensors[0][keep], test.tensors[1][keep] + 1)
    test.classes = [str(i) for i in range(9)]  # "9" missing: every label names its class
    return train, test


def too_many_for_classes(root):
    train, test = tensors(root)
    train.classes = ["a", "b"]
    return train, test


NOT_A_FUNCTION = 3
'''
_COUNTER = itertools.count()


def write_user_module(folder: object) -> str:
    """Write the module into ``folder`` under a fresh name (modules are cached by name)."""
    from pathlib import Path

    name = f"user_datasets_{next(_COUNTER)}"
    (Path(str(folder)) / f"{name}.py").write_text(USER_MODULE)
    return name
