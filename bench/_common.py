"""Helpers shared by the speed benchmarks: the machine's description, fixed trial configs,
a CIFAR-10 subset, and timing statistics.

The benchmarks compare nascomp with a bare baseline *in the same run*, alternating the two
sides, because the machines they run on are shared and their speed drifts by tens of percent
over minutes; a ratio of interleaved runs cancels most of that drift.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``low``. A count of 0 (``--pairs 0``,
    ``--seeds 0``) ended in a StatisticsError or IndexError traceback after the setup work,
    or printed a table of nothing."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"an integer; got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"at least {low}; got {value}")
        return value

    parse.__name__ = f"integer of at least {low}"
    return parse


def above_zero(text: str) -> float:
    """An argparse type: a number above 0 (a budget, a time)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number; got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"a number above 0; got {text}")
    return value


def output_file(text: str) -> Path:
    """An argparse type: a file to write, in a folder that exists. Checked when the flags are
    read: a wrong path was found after the run it was to hold (an hour's, or training's)."""
    path = Path(text)
    if path.is_dir() or not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"a file in an existing folder; got {text}")
    return path


def write_whole(path: Path, text: str) -> None:
    """``text`` to ``path``, whole or not at all: a temporary file beside it, renamed (a run
    stopped during the write kept a truncated file)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATA_ROOT = Path(os.environ.get("NASCOMP_DATA_ROOT", ROOT.parent / "shared" / "data"))
CIFAR_TAR = "cifar10-jpeg.tar"

# The two models of issue 6. The digits model is a mid-sized point of the quickstart space;
# the CIFAR-10-sized one is a 3-stage residual CNN on 3x32x32 inputs.
DIGITS_ARCH = {
    "space.arch.n_stages": 2,
    "space.arch.blocks_per_stage": 1,
    "space.arch.base_channels": 16,
    "space.arch.kernel_size": 3,
    "space.arch.block": "residual",
}
CIFAR_ARCH = {
    "space.arch.n_stages": 3,
    "space.arch.blocks_per_stage": 1,
    "space.arch.base_channels": 16,
    "space.arch.kernel_size": 3,
    "space.arch.block": "residual",
}
# No pruning, no quantization, no distillation: every trial does the same, plain training.
PLAIN_TRAINING = {
    "space.prune.method": "none",
    "space.quant.bits": 32,
    "space.distill.enabled": False,
    "train.prune_epochs": 0,
    "train.qat_epochs": 0,
}


def as_sets(overrides: dict[str, Any]) -> list[str]:
    """``--set`` values (YAML) for a dict of dotted keys."""
    out = []
    for key, value in overrides.items():
        text = "false" if value is False else "true" if value is True else str(value)
        out.append(f"{key}={text}")
    return out


def fixed_trial_config(overrides: dict[str, Any]) -> dict[str, Any]:
    """The flat trial config ``nascomp search --set ...`` sends when every field is fixed.

    It goes through the real schema and the real define-by-run space, so a baseline that
    replays it runs exactly what the search's trials run.
    """
    import optuna

    from nascomp.search.driver import trial_base
    from nascomp.search.experiment import load_experiment
    from nascomp.search.samplers.space import DefineByRun

    experiment = load_experiment(None, as_sets(overrides))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study().ask()
    config = DefineByRun(experiment.space.params(), trial_base(experiment))(trial)
    if trial.params:
        raise ValueError(f"the space is not fixed: it samples {sorted(trial.params)}")
    return config


def pinned_trial_config(overrides: dict[str, Any]) -> dict[str, Any]:
    """The same config as :func:`fixed_trial_config` without importing Optuna, Ray or MLflow.

    For machines that only have the trial's own dependencies (the GPU machine): the fixed
    parameters of an all-fixed space are taken as ``nascomp.search.samplers.space.suggest``
    takes them.
    """
    from nascomp.search.experiment import load_experiment, trial_constants

    experiment = load_experiment(None, as_sets(overrides))
    chosen: dict[str, Any] = {}
    for param in experiment.space.params():
        if not param.is_active(chosen):
            continue
        if param.kind != "fixed":
            raise ValueError(f"the space is not fixed: {param.name} is a {param.kind}")
        chosen[param.name] = param.value
    return {**chosen, **trial_constants(experiment)}


def cifar_subset(dest: Path, n_train_per_class: int, n_test_per_class: int) -> Path:
    """Extract the first images of each class of the shared CIFAR-10 tar into ``dest``.

    Returns the image-folder root (``train/`` and ``test/`` of class folders). Real images, a
    chosen size: a benchmark need not decode all 60,000 JPEGs on a 2-core machine.
    """
    tar_path = DEFAULT_DATA_ROOT / CIFAR_TAR
    if not tar_path.is_file():
        raise FileNotFoundError(f"{tar_path} not found; set NASCOMP_DATA_ROOT to ../shared/data")
    root = dest / "CIFAR-10-images"
    if (root / "train").is_dir():
        return root
    limits = {"train": n_train_per_class, "test": n_test_per_class}
    counts: dict[tuple[str, str], int] = {}
    with tarfile.open(tar_path) as tar:
        members = []
        for member in tar:
            parts = Path(member.name).parts  # CIFAR-10-images/<split>/<class>/<file>
            if not member.isfile() or len(parts) != 4 or parts[1] not in limits:
                continue
            key = (parts[1], parts[2])
            if counts.get(key, 0) < limits[parts[1]]:
                counts[key] = counts.get(key, 0) + 1
                members.append(member)
        tar.extractall(dest, members=members, filter="data")
    return root


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.median:.3f} [{self.low:.3f}, {self.high:.3f}] (n={self.n})"


def child_value(code: str, *args: str) -> float:
    """Run ``code`` with ``args`` in a fresh Python process; the number on the last line it
    prints (its own measure, free of this process's imports and memory)."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def spread(values: Sequence[float]) -> Spread:
    return Spread(statistics.median(values), min(values), max(values), len(values))


def machine() -> str:
    """One line: CPU model and cores (and the GPU, if any), Python and torch versions."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = ""
    if torch.cuda.is_available():
        gpu = f", GPU {torch.cuda.get_device_name(0)}"
    return (
        f"{cpu}, {os.cpu_count()} cores{gpu}; Python {platform.python_version()}, "
        f"torch {torch.__version__}; {time.strftime('%Y-%m-%d')}"
    )


def load_average() -> str:
    """The 1-minute load average: on a shared machine it says how noisy the figures are."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"
