"""Device-resident splits: one copy per process and device, none on the CPU."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from nascomp.trainers.data import clear_cache, load_data, release_device_copies, to_device


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    clear_cache()
    yield
    clear_cache()


def test_cpu_splits_come_back_as_they_are() -> None:
    splits = load_data("digits")
    assert to_device(splits, "cpu") is splits


def test_one_copy_per_device_shared_by_later_calls() -> None:
    # The "meta" device moves tensors without memory or a GPU: the cache logic is the same.
    splits = load_data("digits")
    moved = to_device(splits, "meta")
    assert to_device(splits, torch.device("meta")) is moved
    for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        source, copy = getattr(splits, name), getattr(moved, name)
        assert copy.device.type == "meta"
        assert (copy.shape, copy.dtype) == (source.shape, source.dtype)
    assert (moved.n_classes, moved.input_shape, moved.name) == (10, (1, 8, 8), "digits")
    clear_cache()
    # After clear_cache the data are loaded again, and moved again.
    assert to_device(load_data("digits"), "meta") is not moved


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_and_current_cuda_index_share_one_copy() -> None:
    splits = load_data("digits")
    moved = to_device(splits, "cuda")
    assert moved.train_x.is_cuda and torch.equal(moved.train_x.cpu(), splits.train_x)
    assert to_device(splits, f"cuda:{torch.cuda.current_device()}") is moved


def test_released_device_copies_are_made_again_and_the_cpu_splits_stay() -> None:
    splits = load_data("digits")
    moved = to_device(splits, "meta")
    release_device_copies()
    assert load_data("digits") is splits  # the loaded data stay cached
    again = to_device(splits, "meta")
    assert again is not moved and again.train_x.device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_teacher_trained_on_the_gpu_leaves_no_memory_there() -> None:
    """The driver trains the teacher, then runs the search: the GPU it trained on is the one
    Ray hands to trials (it kept the dataset's copy and the allocator's blocks)."""
    from nascomp.trainers.config import TrialConfig
    from nascomp.trainers.teacher import TeacherJob, train_teacher

    config = TrialConfig.from_flat(
        {"data.name": "digits", "device": "cuda", "distill.enabled": True}
    )
    job = TeacherJob.of_trial(config)
    before = torch.cuda.memory_reserved()
    state, _ = train_teacher(job)
    assert all(t.device.type == "cpu" for t in state.values())
    assert torch.cuda.memory_reserved() <= before
