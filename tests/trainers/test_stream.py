"""Streamed datasets: the same splits, batches and trial results as in memory (same seed, CPU),
and the choice between the two by the memory budget. Real MNIST through a user factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from nascomp.search.experiment import load_experiment, trial_constants
from nascomp.trainers.config import TrialConfig
from nascomp.trainers.data import DataSplits
from nascomp.trainers.settings import DataConfig
from nascomp.trainers.split import batch_indices
from nascomp.trainers.stream import StreamedSplits, for_trial
from nascomp.trainers.teacher import TeacherJob, load_or_train_teacher
from nascomp.trainers.trial import run_trial
from nascomp.trainers.user_data import clear_user_cache
from tests.trainers.userdata import write_user_module

FAST = [
    "train.epochs=2",
    "train.prune_epochs=1",
    "train.qat_epochs=1",
    "train.batch_size=32",
    "teacher.epochs=1",
    "teacher.arch.base_channels=8",
    "measure.n_warmup=1",
    "measure.n_repeat=2",
    "measure.latency_batch_size=8",
]
# Everything but the timings: the results that must not depend on how the data are read.
RESULTS = ("val_accuracy", "test_accuracy", "params", "nonzero_params", "size_bytes", "macs")


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NASCOMP_CACHE", str(tmp_path / "cache"))
    clear_user_cache()
    yield write_user_module(tmp_path)
    clear_user_cache()


def data_config(module: str, root: Path, **fields: Any) -> DataConfig:
    return DataConfig(
        name="custom",
        factory=f"{module}:tensors",
        root=str(root),
        options={"n_train": 600, "n_test": 200},
        **fields,
    )


def test_streamed_splits_hold_the_in_memory_values(module: str, data_root: Path) -> None:
    memory = data_config(module, data_root, stream=False).load()
    streamed = for_trial(data_config(module, data_root, stream=True).load(), "cpu", threads=1)
    assert isinstance(memory, DataSplits) and isinstance(streamed, StreamedSplits)
    assert streamed.classes == memory.classes and memory.classes[9] == "digit 9"
    for role in ("train", "val", "test"):
        kept, read = getattr(memory, role), getattr(streamed, role)
        assert torch.equal(read.labels, kept.labels) and len(read) == len(kept)
        assert torch.equal(torch.cat(list(read.chunks(100))), kept.x), role  # bit for bit
        assert torch.equal(read.head(3), kept.x[:3])
    # A capped test split: the same subset read either way.
    capped = data_config(module, data_root, stream=False, max_test_samples=50).load()
    read = for_trial(
        data_config(module, data_root, stream=True, max_test_samples=50).load(), "cpu", threads=1
    )
    assert len(capped.test) == len(read.test) == 50
    assert torch.equal(read.test.labels, capped.test.labels)
    assert torch.equal(torch.cat(list(read.test.chunks(20))), capped.test.x)
    # A training epoch's batches: the same seeded order, the same inputs.
    order = torch.randperm(len(memory.train), generator=torch.Generator().manual_seed(5))
    pairs = zip(memory.train.batches(order, 64), streamed.train.batches(order, 64), strict=True)
    for (index, inputs, labels), (s_index, s_inputs, s_labels) in pairs:
        assert torch.equal(index, s_index) and torch.equal(inputs, s_inputs)
        assert torch.equal(labels, s_labels)


def test_reading_a_streamed_split_leaves_the_trials_rng_alone(module: str, data_root: Path) -> None:
    """A DataLoader draws its workers' base seed from the global RNG unless it has its own
    generator: a streamed trial's dropout masks then differed from the same trial in memory."""
    streamed = for_trial(data_config(module, data_root, stream=True).load(), "cpu", threads=1)
    assert isinstance(streamed, StreamedSplits) and streamed.train.loader.n_workers == 1
    torch.manual_seed(3)
    order = torch.randperm(len(streamed.train), generator=torch.Generator().manual_seed(5))
    assert len(list(streamed.train.batches(order, 64))) == -(-len(streamed.train) // 64)
    assert len(list(streamed.val.chunks(100))) > 0
    drawn = torch.rand(3)
    torch.manual_seed(3)
    assert torch.equal(torch.rand(3), drawn)


def test_batches_drop_only_a_last_batch_of_one() -> None:
    assert [len(b) for b in batch_indices(torch.arange(9), 4)] == [4, 4]
    assert [len(b) for b in batch_indices(torch.arange(10), 4)] == [4, 4, 2]


def _trial(module: str, root: Path, stream: bool, **sampled: Any) -> dict[str, Any]:
    flat = trial_constants(load_experiment(None, FAST))
    flat.update({f"data.{k}": v for k, v in data_config(module, root).model_dump().items()})
    flat.update(
        {
            "data.stream": stream,
            "arch.family": "cnn",
            "arch.n_stages": 2,
            "arch.blocks_per_stage": 1,
            "arch.base_channels": 8,
            "arch.width_mult": 1.0,
            "arch.kernel_size": 3,
            "arch.block": "residual",
            "prune.method": "structured",
            "prune.ratio": 0.3,
            "prune.importance": "l1",
            "prune.scope": "global",
            "quant.bits": 8,
            "quant.act_bits": 8,
            "distill.enabled": True,
            "distill.temperature": 4.0,
            "distill.alpha": 0.5,
        }
    )
    flat.update(sampled)
    return flat


@pytest.mark.parametrize(
    "sampled",
    [
        {},  # teacher logits for the whole split, once; pruning's probe; int8 calibration
        {"distill.features": True, "train.augment.padding": 2},  # hint probe, per-batch teacher
    ],
    ids=["logits", "augmented-hint"],
)
def test_a_streamed_trial_ends_exactly_as_in_memory(
    module: str, data_root: Path, sampled: dict[str, Any]
) -> None:
    outcomes, losses = {}, {}
    for stream in (False, True):
        flat = _trial(module, data_root, stream, **sampled)
        teacher, _ = load_or_train_teacher(TeacherJob.of_trial(TrialConfig.from_flat(flat)))
        reports: list[dict[str, Any]] = []
        outcomes[stream] = run_trial(flat, teacher_state=teacher, report=reports.append)
        losses[stream] = [(r["loss"], r["val_accuracy"]) for r in reports]
    assert outcomes[True].status == "ok", outcomes[True].reason
    assert losses[True] == losses[False]  # every epoch's loss, to the last bit
    for name in RESULTS:
        assert outcomes[True].metrics[name] == outcomes[False].metrics[name], name
    assert outcomes[True].info == outcomes[False].info  # int8 agreement on the val split


def test_the_teacher_is_the_same_trained_on_streamed_data(module: str, data_root: Path) -> None:
    """Streaming is not in the teacher's cache key: the weights are the same."""
    jobs = [
        TeacherJob.of_trial(TrialConfig.from_flat(_trial(module, data_root, stream)))
        for stream in (False, True)
    ]
    assert jobs[0].key() == jobs[1].key()
    from nascomp.trainers.teacher import train_teacher

    memory, streamed = train_teacher(jobs[0])[0], train_teacher(jobs[1])[0]
    assert all(torch.equal(memory[k], streamed[k]) for k in memory)


def test_auto_streams_only_what_is_over_the_budget(module: str, data_root: Path) -> None:
    memory = data_config(module, data_root, memory_budget_mb=100).load()
    assert isinstance(memory, DataSplits)
    # 800 samples of 1x28x28 float32: 2.5 MB, over a 1 MB budget.
    streamed = data_config(module, data_root, memory_budget_mb=1).load()
    assert isinstance(streamed, StreamedSplits)
    # One copy per process however many trials ask for it.
    assert data_config(module, data_root, memory_budget_mb=1).load() is streamed


def test_streamed_loader_uses_the_trial_s_cpus(module: str, data_root: Path) -> None:
    streamed = data_config(module, data_root, stream=True).load()
    assert isinstance(streamed, StreamedSplits)
    read = for_trial(streamed, "cpu", threads=2)
    assert read.train.loader.n_workers == 2 and not read.train.loader.pin_memory
    assert read.train.inputs is streamed.train.inputs  # a view, not a copy
    chunks = list(read.val.chunks(16))
    assert torch.equal(torch.cat(chunks), torch.cat(list(streamed.val.chunks(16))))


@pytest.mark.parametrize(("factory", "options"), [("arrays", {"n_train": 300}), ("pil_images", {})])
def test_numpy_and_pil_samples_stream_as_they_read_in_memory(
    module: str, data_root: Path, factory: str, options: dict[str, Any]
) -> None:
    """NumPy rows and PIL images, both documented inputs, were refused by every streamed
    read: "its input is a ndarray (give a torch tensor, a NumPy array or a PIL image)", the
    search stopped at the teacher or every trial failed (a helper's sweep). The streamed
    reader now makes them tensors as the in-memory one does."""

    def config(stream: bool) -> DataConfig:
        return DataConfig(
            name="custom",
            factory=f"{module}:{factory}",
            root=str(data_root),
            options=options,
            stream=stream,
        )

    memory = config(False).load()
    streamed = for_trial(config(True).load(), "cpu", threads=1)
    assert isinstance(streamed, StreamedSplits) and streamed.train.loader.n_workers == 1
    for role in ("train", "val"):
        kept, read = getattr(memory, role), getattr(streamed, role)
        assert torch.equal(torch.cat(list(read.chunks(100))), kept.x), role


def test_a_loader_workers_dataset_error_is_its_own_line() -> None:
    """A DataLoader's worker raises the error again with its traceback as the message: a
    search printed 19 lines of it."""
    from nascomp.trainers.stream import _original_line

    text = (
        "Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback (most recent "
        'call last):\n  File "x.py", line 1, in f\nnascomp.trainers.datasets.DatasetError: '
        "data: sample 7 raised ValueError: bad"
    )
    assert _original_line(text) == "data: sample 7 raised ValueError: bad"
    assert _original_line("data: sample 7 raised ValueError: bad") == (
        "data: sample 7 raised ValueError: bad"
    )
