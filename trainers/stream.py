"""Streamed splits: a dataset too large for the worker's memory budget, read through a
``DataLoader`` batch by batch, in the order the training loop asks for.

The loop draws the same seeded permutation as for in-memory tensors and cuts it with the same
:func:`~nascomp.trainers.split.batch_indices`; the loader's ``batch_sampler`` is that list of
batches, so a streamed trial sees exactly the batches an in-memory one would, and on CPU ends
with exactly the same metrics. Augmentation runs on the device after the batch arrives (in the
loop), so loader workers only read, convert and normalise.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from nascomp.trainers.data import DataSplits, to_device
from nascomp.trainers.datasets import DatasetError, SampleFormat, prepare_input, sample_input
from nascomp.trainers.normalise import Normalise
from nascomp.trainers.split import EVAL_BATCH_SIZE, batch_indices


@dataclass(frozen=True)
class LoaderSettings:
    """How a trial reads a streamed split: set per trial (its CPUs and device), never cached."""

    n_workers: int = 0
    device: str = "cpu"

    @property
    def pin_memory(self) -> bool:
        # Page-locked host batches copy to the GPU asynchronously (non_blocking below).
        return torch.device(self.device).type == "cuda"


class NormalisedInputs(Dataset):
    """The inputs of ``dataset`` at ``indices``, prepared and normalised (labels are known)."""

    def __init__(
        self, dataset: Dataset, indices: Tensor, sample: SampleFormat, normalise: Normalise
    ) -> None:
        self.dataset, self.sample, self.normalise = dataset, sample, normalise
        self.indices = indices.tolist()  # plain ints: cheap to index, to fork and to pickle

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> Tensor:
        index = self.indices[position]
        value = sample_input(self.dataset, index, "data")
        return self.normalise(
            prepare_input(value, self.sample.image_size, "data", index, self.sample.layout)
        )


@dataclass(frozen=True)
class StreamedSplit:
    """One split of a streamed dataset: the user's dataset, the positions of this split in it,
    their labels (known from the reading pass) and how a trial reads it."""

    inputs: NormalisedInputs
    labels: Tensor
    loader: LoaderSettings = LoaderSettings()

    def __len__(self) -> int:
        return len(self.inputs)

    def head(self, n: int) -> Tensor:
        first = [self.inputs[position] for position in range(min(n, len(self)))]
        return torch.stack(first).to(self.loader.device)

    def batches(self, order: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        pieces = batch_indices(order, batch_size)
        device = self.labels.device
        for index, inputs in zip(pieces, self._read(pieces), strict=True):
            index = index.to(device)
            yield index, inputs, self.labels[index]

    def chunks(self, batch_size: int = EVAL_BATCH_SIZE) -> Iterator[Tensor]:
        n = len(self)
        starts = range(0, n, batch_size)
        yield from self._read([torch.arange(start, min(start + batch_size, n)) for start in starts])

    def _read(self, pieces: Sequence[Tensor]) -> Iterator[Tensor]:
        if not pieces:
            return
        settings = self.loader
        batches = [piece.tolist() for piece in pieces]
        loader = DataLoader(
            self.inputs,
            batch_sampler=batches,
            num_workers=settings.n_workers,
            pin_memory=settings.pin_memory,
            # Without a generator of its own, each pass over the loader draws its workers'
            # base seed from the global RNG, the trial's: a streamed trial would then draw
            # other dropout masks than the same trial in memory. Seeded by the batches (the
            # trial's seeded order: another one each epoch), the workers' seeds stay
            # reproducible and change from epoch to epoch.
            generator=torch.Generator().manual_seed(_seed_of(batches)),
        )
        try:
            for batch in loader:
                yield batch.to(settings.device, non_blocking=settings.pin_memory)
        except DatasetError as exc:  # from a loader's worker, its message is the traceback
            raise DatasetError(_original_line(str(exc))) from None


def _original_line(message: str) -> str:
    """A DatasetError's own line, out of the "Caught DatasetError in DataLoader worker process
    0. Original Traceback ..." text a loader's worker raises it again with."""
    marker = f"{DatasetError.__name__}: "
    lines = [line for line in message.splitlines() if marker in line]
    return lines[-1].split(marker, 1)[1] if lines else message


def _seed_of(batches: list[list[int]]) -> int:
    """A seed that depends on the first batch's positions, the same in every process (the hash
    of a tuple of ints is not salted)."""
    return hash(tuple(batches[0][:64])) & 0x7FFF_FFFF_FFFF_FFFF


@dataclass(frozen=True)
class StreamedSplits:
    """A streamed dataset's three splits, with the facts ``DataSplits`` has about its data."""

    train: StreamedSplit
    val: StreamedSplit
    test: StreamedSplit
    n_classes: int
    input_shape: tuple[int, ...]  # one sample: (C, H, W) for images, (F,) for features
    name: str
    normalise: Normalise | None = None  # how the inputs were normalised
    classes: tuple[str, ...] = ()  # each label's name, where the dataset says
    feature_names: tuple[str, ...] = ()  # rows of features: each one's column, if it says
    # rows of a CSV: each one-hot encoded column of words and its values
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what the user should know that is no error

    @property
    def input_dtype(self) -> torch.dtype:
        """What the model is fed: float32, or int64 for integer ids (``Normalise.ids``)."""
        return torch.int64 if self.normalise is not None and self.normalise.ids else torch.float32

    def reading(self, settings: LoaderSettings) -> StreamedSplits:
        """These splits as a trial reads them: same datasets (no copy), its loader settings."""

        def moved(split: StreamedSplit) -> StreamedSplit:
            return replace(split, labels=split.labels.to(settings.device), loader=settings)

        return replace(self, train=moved(self.train), val=moved(self.val), test=moved(self.test))


Data = DataSplits | StreamedSplits


def for_trial(data: Data, device: str, threads: int) -> Data:
    """``data`` ready for a trial on ``device`` with ``threads`` CPUs: in-memory splits moved
    there once per process; streamed splits read by ``threads`` loader workers."""
    if isinstance(data, DataSplits):
        return to_device(data, device)
    return data.reading(LoaderSettings(n_workers=loader_workers(threads), device=device))


def loader_workers(threads: int) -> int:
    """Loader processes for a trial with ``threads`` CPUs: as many, so reading and decoding
    overlap with training (they wait on I/O much of the time, and torch runs each on one
    thread)."""
    return max(1, threads)
