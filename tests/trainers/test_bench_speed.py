"""The speed benchmarks' own logic: the no-GPU path and the pinned trial config they replay."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from _common import (  # noqa: E402
    CIFAR_ARCH,
    DIGITS_ARCH,
    PLAIN_TRAINING,
    fixed_trial_config,
    pinned_trial_config,
)


def test_gpu_sharing_without_a_gpu_says_so_and_exits_0() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_sharing.py"), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "no CUDA GPU" in done.stdout


@pytest.mark.parametrize("arch", [DIGITS_ARCH, CIFAR_ARCH])
def test_pinned_config_is_what_the_search_sends(arch: dict) -> None:
    # gpu_sharing builds the config without Optuna; it must equal the define-by-run one.
    overrides = {**PLAIN_TRAINING, **arch, "train.epochs": 3}
    config = pinned_trial_config(overrides)
    assert config == fixed_trial_config(overrides)
    assert config["arch.n_stages"] == arch["space.arch.n_stages"]
    assert (config["prune.method"], config["quant.bits"], config["distill.enabled"]) == (
        "none",
        32,
        False,
    )


def test_a_space_with_a_choice_is_refused() -> None:
    with pytest.raises(ValueError, match="not fixed"):
        pinned_trial_config({**PLAIN_TRAINING, **DIGITS_ARCH, "space.arch.n_stages": [1, 2]})


def test_eval_kernels_bench_checks_bit_equality_and_prints_ratios() -> None:
    # The bench exits non-zero if the new kernels' values, gradients or logits differ from
    # the ones they replaced: on this machine's CPU, they must not.
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "eval_kernels.py"), "--rounds", "1", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| (")]
    assert len(rows) == 12  # 4 activations x 2 passes, 4 models
    for row in rows:
        # one round: its ratio is the printed times' (median of one), within their rounding
        cells = [c.strip() for c in row.strip("|").split("|")]
        old_ms, new_ms = float(cells[-3]), float(cells[-2])
        ratio = float(cells[-1].split("**")[1])
        assert ratio > 0 and ratio == pytest.approx(old_ms / new_ms, rel=0.05, abs=0.02), row
