"""The user's dataset, loaded once per worker process: in memory when it fits the budget,
streamed when it does not.

Both forms come from the same reading pass (``trainers/datasets.py``): the same labels, the
same stratified splits (``split_seed``) and the same per-channel statistics, so they hold the
same normalised values. In memory the dataset becomes today's ``DataSplits`` (tensors sliced per
batch: the fast path); streamed it becomes ``StreamedSplits`` (a ``DataLoader`` per pass).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from nascomp.trainers.data import DataSplits, split_indices, stratified_subset
from nascomp.trainers.datasets import (
    DatasetSource,
    SampleFormat,
    Scan,
    channel_stats,
    check_labels,
    check_same_classes,
    class_names,
    declared_classes,
    feature_categories,
    feature_names,
    open_source,
    random_reads_note,
    sample_format,
    scan,
)
from nascomp.trainers.normalise import Normalise
from nascomp.trainers.stream import NormalisedInputs, StreamedSplit, StreamedSplits
from nascomp.trainers.tables import Table

FLOAT32_BYTES = 4
INT64_BYTES = 8
# The default budget: this share of the machine's memory, divided among the trials that can
# run on it at once; the rest is for the models, the optimizer, Ray and the OS.
MEMORY_SHARE = 0.25

# One entry per distinct load; a worker process keeps its one copy for all its trials.
_CACHE: dict[tuple[object, ...], DataSplits | StreamedSplits] = {}


@dataclass(frozen=True)
class SplitSettings:
    """How the splits are drawn (the fields of ``data`` that change which samples go where)."""

    val_fraction: float = 0.1
    split_seed: int = 0
    max_train_samples: int | None = None
    image_size: int | None = None
    layout: str = "auto"  # how a 2-D input is read (trainers.datasets.LAYOUTS)
    max_test_samples: int | None = None


def load_user_data(
    source: DatasetSource,
    settings: SplitSettings,
    *,
    stream: bool | str = "auto",
    memory_budget_mb: int | None = None,
    threads: int = 1,
) -> DataSplits | StreamedSplits:
    """The user's dataset as splits, cached per process by everything above but ``threads``."""
    # repr: options may hold lists (unhashable); the repr of equal sources is equal.
    key = (repr(source), settings, stream, memory_budget_mb)
    if key not in _CACHE:
        _CACHE[key] = _load(source, settings, stream, memory_budget_mb, threads)
    return _CACHE[key]


def clear_user_cache() -> None:
    _CACHE.clear()


def memory_budget_bytes(memory_budget_mb: int | None, threads: int) -> int:
    """The set budget, or a quarter of the machine's memory shared by the trials that fit on
    its CPUs at ``threads`` each (the search gives every trial the same count)."""
    if memory_budget_mb is not None:
        return memory_budget_mb * 2**20
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    concurrent = max(1, (os.cpu_count() or 1) // max(1, threads))
    return int(total * MEMORY_SHARE / concurrent)


def in_memory_bytes(n_samples: int, sample: SampleFormat) -> int:
    """What the in-memory form holds: every sample as normalised float32 (ids as int64)."""
    return n_samples * math.prod(sample.shape) * (INT64_BYTES if sample.ids else FLOAT32_BYTES)


def _load(
    source: DatasetSource,
    settings: SplitSettings,
    stream: bool | str,
    memory_budget_mb: int | None,
    threads: int,
) -> DataSplits | StreamedSplits:
    train, test = open_source(source)
    # A sample's error names the user's function: "data.factory (my_data:load): train sample"
    field = f"{source.field} ({source.factory})" if source.name == "custom" else source.field
    sample = sample_format(train, settings.image_size, field, settings.layout)
    n_samples = len(train) + (len(test) if test is not None else 0)  # type: ignore[arg-type]
    if stream == "auto":
        budget = memory_budget_bytes(memory_budget_mb, threads)
        streamed = in_memory_bytes(n_samples, sample) > budget
    else:
        streamed = bool(stream)
    keep = not streamed
    train_scan = scan(train, sample, field, keep=keep, n_workers=threads)
    test_scan = (
        scan(test, sample, field, keep=keep, n_workers=threads, role="test") if test else None
    )
    declared = declared_classes(train)
    n_classes = check_labels(train_scan.labels, declared, field, "train")
    if test_scan is not None:
        counted = "len(classes)" if declared is not None else "K = the train labels' max + 1"
        check_labels(test_scan.labels, n_classes, field, "test", counted)
        check_same_classes(train, test, field)
    parts = split_indices(
        train_scan.labels,
        test_scan is not None,
        settings.val_fraction,
        settings.split_seed,
        settings.max_train_samples,
    )
    shape = sample.shape
    mean, std = channel_stats(train_scan, parts.dev, math.prod(shape[1:]))
    normalise = Normalise(mean, std, sample.scale, sample_dim=len(shape), ids=sample.ids)
    # (dataset, its reading pass, positions) of each split; a held-out test comes from train.
    test_part = (train, train_scan, parts.test) if parts.test is not None else None
    if test_part is None:
        assert test is not None and test_scan is not None
        test_part = (test, test_scan, None)
    test_positions = _positions(test_part[1], test_part[2])
    kept = stratified_subset(
        test_part[1].labels[test_positions], settings.max_test_samples, settings.split_seed
    )
    if kept is not None:
        test_part = (test_part[0], test_part[1], test_positions[kept])
    splits = {"train": (train, train_scan, parts.train), "val": (train, train_scan, parts.val)}
    splits["test"] = test_part  # type: ignore[assignment]
    name = {"custom": source.factory, "csv": Path(str(source.root)).name}.get(
        source.name, source.dataset
    )
    classes = class_names(train, n_classes)
    features = feature_names(train, shape)
    categories = feature_categories(train, features)
    notes = train.notes if isinstance(train, Table) else ()
    if not streamed and not isinstance(train, Table):
        note = random_reads_note(train, field)
        notes = (*notes, note) if note is not None else notes
    if streamed:
        made = {role: _streamed(*part, sample, normalise) for role, part in splits.items()}
        return StreamedSplits(
            **made,
            n_classes=n_classes,
            input_shape=shape,
            name=str(name),
            normalise=normalise,
            classes=classes,
            feature_names=features,
            categories=categories,
            notes=notes,
        )
    tensors = {role: _in_memory(*part, normalise) for role, part in splits.items()}
    return DataSplits(
        train_x=tensors["train"][0],
        train_y=tensors["train"][1],
        val_x=tensors["val"][0],
        val_y=tensors["val"][1],
        test_x=tensors["test"][0],
        test_y=tensors["test"][1],
        n_classes=n_classes,
        input_shape=shape,
        name=str(name),
        normalise=normalise,
        classes=classes,
        feature_names=features,
        categories=categories,
        notes=notes,
    )


def _positions(scan_: Scan, indices: Tensor | None) -> Tensor:
    return torch.arange(len(scan_.labels)) if indices is None else indices


def _in_memory(
    dataset: Dataset, scan_: Scan, indices: Tensor | None, normalise: Normalise
) -> tuple[Tensor, Tensor]:
    assert scan_.images is not None, "the reading pass kept no images"
    positions = _positions(scan_, indices)
    return normalise(scan_.images[positions]), scan_.labels[positions].contiguous()


def _streamed(
    dataset: Dataset,
    scan_: Scan,
    indices: Tensor | None,
    sample: SampleFormat,
    normalise: Normalise,
) -> StreamedSplit:
    positions = _positions(scan_, indices)
    inputs = NormalisedInputs(dataset, positions, sample, normalise)
    return StreamedSplit(inputs, scan_.labels[positions].contiguous())
