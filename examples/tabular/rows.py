"""A user's tabular data: rows of features as NumPy arrays, the way scikit-learn and pandas
hold them. nascomp calls ``breast_cancer()`` and expects ``(train, test)`` datasets of
``(row, integer label)``; ``None`` as test has nascomp hold a stratified test split out.

scikit-learn's breast cancer data ships inside scikit-learn: 569 rows of 30 measurements,
malignant or benign. With pandas: ``Rows(frame[features].to_numpy(), frame[label].to_numpy(),
classes, features)``. A CSV file needs no code at all: ``data: {name: csv, root: my.csv}``.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_breast_cancer
from torch.utils.data import Dataset


class Rows(Dataset):
    """(row, label) pairs, with ``classes``: the name of each label, and ``feature_names``:
    the column of each feature (an export's ``preprocess.json`` gives both: what each output
    column means, and the order in which the model reads the features)."""

    def __init__(
        self, features: np.ndarray, labels: np.ndarray, classes: list[str], names: list[str]
    ) -> None:
        self.features, self.labels, self.classes = features, labels, classes
        self.feature_names = names

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.features[index], int(self.labels[index])


def breast_cancer() -> tuple[Rows, None]:
    data = load_breast_cancer()
    classes = [str(name) for name in data.target_names]
    return Rows(data.data, data.target, classes, [str(name) for name in data.feature_names]), None
