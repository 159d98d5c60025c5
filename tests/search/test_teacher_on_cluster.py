"""A cluster's GPU trials with a driver that has no CUDA device (cluster.yaml's head has no
GPU): the teacher trains in a Ray task on a node like the trials', not on "cuda" here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nascomp.search.driver import _teacher_needs_a_gpu_node, _teacher_on_a_gpu_node
from nascomp.search.experiment import teacher_job
from nascomp.trainers.teacher import cache_teacher, has_teacher, load_or_train_teacher, teacher_path

from .conftest import tiny_experiment

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a driver without CUDA")


def test_only_an_untrained_teacher_for_gpu_trials_goes_to_a_gpu_node(workdir: Path) -> None:
    gpu = tiny_experiment(workdir, "resources.gpus_per_trial=1", "teacher.epochs=1")
    assert _teacher_needs_a_gpu_node(gpu)
    assert not _teacher_needs_a_gpu_node(tiny_experiment(workdir, "teacher.epochs=1"))  # CPU
    no_kd = tiny_experiment(workdir, "resources.gpus_per_trial=1", "space.distill.enabled=false")
    assert not _teacher_needs_a_gpu_node(no_kd)
    # Cached on this machine (an earlier search's): loaded here, no GPU needed.
    job = teacher_job(gpu)
    assert not has_teacher(job)
    cache_teacher(job, {"w": torch.zeros(1)}, {"teacher_val_accuracy": 0.5})
    assert has_teacher(job) and not _teacher_needs_a_gpu_node(gpu)
    teacher_path(job).unlink()


def test_the_teacher_task_trains_what_this_machine_would(workdir: Path) -> None:
    """Run for real on a local Ray (CPU trials stand in for the GPU node: same task, another
    device): the weights are the ones a local training gives, and this machine caches them."""
    import ray

    experiment = tiny_experiment(workdir, "teacher.epochs=2", "train.class_weight=balanced")
    job = teacher_job(experiment)
    lines: list[str] = []
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        state, facts, epochs = _teacher_on_a_gpu_node(experiment, lines.append)
    finally:
        ray.shutdown()
    assert [e["epoch"] for e in epochs] == [1.0, 2.0]
    assert lines[0] == (
        "teacher: this machine has no CUDA device; training it on a GPU node of the cluster"
    )
    assert lines[-1].startswith("teacher trained in ") and "val_accuracy" in lines[-1]
    assert has_teacher(job)  # cached here: reproduce on this machine finds it
    teacher_path(job).unlink()
    here, here_facts = load_or_train_teacher(job)  # trained again, in this process
    assert here.keys() == state.keys()
    assert all(torch.equal(here[k], state[k]) for k in state)
    assert here_facts["teacher_val_accuracy"] == facts["teacher_val_accuracy"]
