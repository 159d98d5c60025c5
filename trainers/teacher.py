"""The distillation teacher: trained once, cached on disk by a hash of everything it depends on."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from spaces.models import build_model
from trainers.config import TrialConfig, teacher_key
from trainers.data import DataSplits
from trainers.loop import accuracy, make_optimizer, predict_logits, train_epoch
from trainers.seeding import seed_everything

StateDict = dict[str, Tensor]
_LOGITS: dict[tuple[str, int], Tensor] = {}


def cache_dir() -> Path:
    return Path(os.environ.get("NASCOMP_CACHE", Path.home() / ".cache" / "nascomp"))


def teacher_path(config: TrialConfig) -> Path:
    return cache_dir() / "teachers" / f"{teacher_key(config)}.pt"


def load_or_train_teacher(config: TrialConfig) -> tuple[StateDict, dict[str, float]]:
    """The teacher's weights and facts about it (accuracy, training time, whether cached)."""
    if config.teacher.checkpoint:
        state = torch.load(config.teacher.checkpoint, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        return state, {"teacher_cached": 1.0, "teacher_train_seconds": 0.0}
    path = teacher_path(config)
    if path.is_file():
        facts = json.loads(path.with_suffix(".json").read_text())
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state, {**facts, "teacher_cached": 1.0, "teacher_train_seconds": 0.0}
    state, facts = train_teacher(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename: a concurrent reader never sees half a file.
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(state, partial)
    path.with_suffix(".json").write_text(json.dumps(facts))
    partial.replace(path)
    return state, {**facts, "teacher_cached": 0.0}


def train_teacher(config: TrialConfig) -> tuple[StateDict, dict[str, float]]:
    torch.set_num_threads(config.threads)
    data = config.data.load()
    seed_everything(config.seed)
    model = build_teacher(config, data).to(config.device)
    teacher = config.teacher
    optimizer = make_optimizer(model, teacher.optimizer, teacher.lr, 0.0, config.train.momentum)
    generator = torch.Generator().manual_seed(config.seed)
    x, y = data.train_x.to(config.device), data.train_y.to(config.device)
    started = time.perf_counter()
    for _ in range(teacher.epochs):
        train_epoch(
            model,
            x,
            y,
            optimizer=optimizer,
            batch_size=teacher.batch_size,
            generator=generator,
            augment=config.train.augmentation(),  # the teacher sees what the students see
        )
    seconds = time.perf_counter() - started
    val = accuracy(model, data.val_x.to(config.device), data.val_y.to(config.device))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return state, {"teacher_val_accuracy": val, "teacher_train_seconds": seconds}


def build_teacher(
    config: TrialConfig, data: DataSplits, state: StateDict | None = None
) -> nn.Module:
    model = build_model(config.teacher.arch, data.input_shape, data.n_classes)
    if state is not None:
        model.load_state_dict(state)
    return model


def teacher_logits(config: TrialConfig, data: DataSplits, state: StateDict) -> Tensor:
    """Logits of the teacher on the whole training split, computed once per worker process."""
    key = (teacher_key(config), id(data.train_x))
    if key not in _LOGITS:
        teacher = build_teacher(config, data, state).to(config.device)
        _LOGITS[key] = predict_logits(teacher, data.train_x.to(config.device))
    return _LOGITS[key]
