"""How a trial's own failures become outcomes (search/tune/trainable.py), without Ray: the trial
that diverges, runs out of memory or raises from its own code ends failed with its reason;
errors of the node or device propagate, so Tune retries them. And which checkpoint a restarted
trial takes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import ray
import torch

from nascomp.search.tune.results import EARLIER_KEY, earlier_epochs
from nascomp.search.tune.trainable import (
    FINAL_FILE,
    REPORTS_KEY,
    STATE_FILE,
    STATUS_FAILED,
    EpochReports,
    guarded,
    lookup_outcome,
    newest,
    trial_checkpoints,
)
from nascomp.trainers.checkpoint import save_state
from nascomp.trainers.trial import TrialOutcome

DIGITS = {"data.name": "digits", "data.root": None}


def _raising(exc: BaseException):
    def run() -> TrialOutcome:
        raise exc

    return run


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (FloatingPointError("training diverged: loss is nan"), "FloatingPointError: training"),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), "OutOfMemoryError"),
        (MemoryError("cannot allocate"), "MemoryError: cannot allocate"),
        # the GPU's form of an IndexError: the trial's own, retried as a device fault before
        (
            RuntimeError("CUDA error: device-side assert triggered\nCompile with ..."),
            "RuntimeError: CUDA error: device-side assert triggered Compile",
        ),
    ],
)
def test_divergence_and_out_of_memory_end_the_trial_failed_with_the_reason(
    exc: BaseException, reason: str
) -> None:
    outcome = guarded(_raising(exc), DIGITS)
    assert outcome.status == STATUS_FAILED
    assert outcome.reason.startswith(reason)
    assert outcome.model is None and outcome.metrics == {}


def test_an_error_of_the_trial_fails_it_with_the_reason_and_where() -> None:
    # A seeded trial raising from its own code raises again from its checkpoint: no retry.
    def run() -> TrialOutcome:
        torch.nn.functional.cross_entropy(torch.zeros(2, 3), torch.tensor([0, 8]))
        raise AssertionError("unreachable")

    outcome = guarded(run, DIGITS)
    assert outcome.status == STATUS_FAILED
    # The innermost frame of our (or the user's) code, then torch's frame that raised.
    assert re.fullmatch(
        r"IndexError: Target 8 is out of bounds\. \(in run, tests/search/test_trainable\.py:\d+; "
        r"raised in cross_entropy, torch/nn/functional\.py:\d+\)",
        outcome.reason,
    ), outcome.reason
    bare = guarded(_raising(KeyError("arch.width")), DIGITS)
    assert re.fullmatch(
        r"KeyError: 'arch\.width' \(in run, tests/search/test_trainable\.py:\d+\)", bare.reason
    ), bare.reason


@pytest.mark.parametrize(
    "exc",
    [
        OSError(28, "No space left on device"),
        RuntimeError("CUDA error: an illegal memory access was encountered"),
        ray.exceptions.RayTaskError("f", "traceback", ValueError("x")),
    ],
)
def test_errors_of_the_node_or_device_propagate_so_tune_retries(exc: BaseException) -> None:
    with pytest.raises(type(exc)):
        guarded(_raising(exc), DIGITS)


def test_a_good_run_passes_through() -> None:
    ok = TrialOutcome(status="ok", metrics={"val_accuracy": 0.9})
    assert guarded(lambda: ok, DIGITS) is ok


def test_a_lookup_that_raises_ends_failed_and_a_missing_table_is_retried(
    tmp_path: Path, data_root: Path
) -> None:
    """A lookup trial raising (a cell its table lacks) was retried as a dead worker, three
    attempts of a page of traceback each (a helper's sweep); it ends failed with the reason.
    A table missing on this node is the node's: Tune retries it, maybe elsewhere."""
    lines = (data_root / "nasbench201" / "nb201_accuracy.csv").read_text().splitlines()
    table = tmp_path / "two.csv"
    table.write_text("\n".join(lines[:3]) + "\n")
    absent = lines[3].split(",")[1]
    config = {"arch.family": "nb201", "arch.cell": absent, "nb201.dataset": "cifar10"}
    outcome = lookup_outcome({**config, "nb201.table": str(table)})
    assert outcome.status == STATUS_FAILED
    assert outcome.reason.startswith(f"KeyError: \"cell '{absent}' is not in the NAS-Bench-201")
    present = lookup_outcome(
        {**config, "arch.cell": lines[1].split(",")[1], "nb201.table": str(table)}
    )
    assert (
        present.status == "ok"
        and present.metrics["val_accuracy"] == float(lines[1].split(",")[3]) / 100
    )
    with pytest.raises(OSError):
        lookup_outcome({**config, "nb201.table": str(tmp_path / "gone.csv")})


def _checkpoint(folder: Path, epoch: int | None = None, final: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    if epoch is not None:
        save_state(folder / STATE_FILE, {"format": 1, "epoch": epoch})
    if final is not None:
        (folder / FINAL_FILE).write_text(json.dumps(final))
    return folder


def test_a_restarted_trial_finds_its_checkpoints_in_every_folder_of_its_id(tmp_path: Path) -> None:
    # A driver killed between snapshots: the trial restarts in a new folder, suffixed by Tune
    # since trial_<id> exists; the epochs it trained before are in the first one.
    first = _checkpoint(tmp_path / "trial_0042" / "checkpoint_000001", epoch=2)
    _checkpoint(tmp_path / "trial_0042" / "checkpoint_000000", epoch=1)
    again = _checkpoint(tmp_path / "trial_0042_ab12" / "checkpoint_000000", epoch=1)
    legacy = _checkpoint(tmp_path / "trial_fn_0042_3_arch=cnn_2026-11-24" / "checkpoint_000000", 1)
    for other in ("trial_00421", "trial_fn_00421_1_x", "trial_1_lr=0.0042_x", "trial_7"):
        _checkpoint(tmp_path / other / "checkpoint_000009", epoch=9)
    (tmp_path / "trial_0042" / "result.json").write_text("")

    found = trial_checkpoints(tmp_path, "0042")
    assert set(found) == {first, first.parent / "checkpoint_000000", again, legacy}
    assert newest(found) == ({"format": 1, "epoch": 2}, None)
    assert trial_checkpoints(tmp_path / "absent", "0042") == []


def test_the_final_checkpoint_wins_and_a_half_copied_one_is_passed_over(tmp_path: Path) -> None:
    epoch = _checkpoint(tmp_path / "a", epoch=5)
    final = _checkpoint(tmp_path / "b", final={"val_accuracy": 0.9})
    assert newest([epoch, final]) == (None, {"val_accuracy": 0.9})
    assert newest([]) == (None, None)

    cut = _checkpoint(tmp_path / "c", epoch=7)
    data = (cut / STATE_FILE).read_bytes()
    (cut / STATE_FILE).write_bytes(data[: len(data) // 2])  # killed while Tune copied it
    half_final = tmp_path / "d"
    half_final.mkdir()
    (half_final / FINAL_FILE).write_text('{"val_acc')
    assert newest([epoch, cut, half_final]) == ({"format": 1, "epoch": 5}, None)


def test_epochs_are_reported_at_most_every_every_s_and_none_is_lost() -> None:
    """Epochs held back ride along with the next report, oldest first; the state goes with the
    report's own epoch only; every_s 0 reports every epoch."""
    now = [0.0]
    sent: list[tuple[dict, dict]] = []
    reports = EpochReports(10.0, clock=lambda: now[0], send=lambda r, s: sent.append((r, s)))
    for epoch, at in enumerate([3.0, 6.0, 10.5, 12.0, 21.0, 22.0], start=1):
        now[0] = at
        reports({"epoch": epoch, "loss": 1.0 / epoch}, lambda epoch=epoch: {"epoch": epoch})
    assert [(r["epoch"], s["epoch"]) for r, s in sent] == [(3, 3), (5, 5)]
    assert [e["epoch"] for e in earlier_epochs(sent[0][0])] == [1, 2]
    assert [e["epoch"] for e in earlier_epochs(sent[1][0])] == [4]
    assert earlier_epochs(sent[0][0])[0] == {"epoch": 1, "loss": 1.0}
    held = reports.take_held()  # epoch 6: goes with the final report
    assert [e["epoch"] for e in earlier_epochs(held)] == [6]
    assert reports.take_held() == {} and earlier_epochs({}) == []

    every: list[dict] = []
    each = EpochReports(0.0, clock=lambda: 0.0, send=lambda r, s: every.append(r))
    for epoch in (1, 2, 3):
        each({"epoch": epoch}, dict)
    assert [r["epoch"] for r in every] == [1, 2, 3]
    assert all(EARLIER_KEY not in r for r in every)


def test_a_held_epoch_never_makes_its_state() -> None:
    """The state is a copy of the model and optimizer: made for the epochs sent, not for the
    ones held back (every epoch of a small model's trial, at the default 10 s)."""
    now = [0.0]
    made: list[int] = []

    def make(epoch: int) -> dict:
        made.append(epoch)
        return {"epoch": epoch}

    reports = EpochReports(10.0, clock=lambda: now[0], send=lambda r, s: None)
    for epoch, at in enumerate([3.0, 6.0, 10.5, 12.0], start=1):
        now[0] = at
        reports({"epoch": epoch}, lambda epoch=epoch: make(epoch))
    assert made == [3]


def test_a_checkpoint_carries_every_epoch_and_a_resumed_trial_sends_them_again() -> None:
    """The state of each report lists the epochs so far, held ones included; a trial resumed
    from it sends those again with its next report (the driver may never have taken them)."""
    now = [0.0]
    sent: list[tuple[dict, dict]] = []
    reports = EpochReports(10.0, clock=lambda: now[0], send=lambda r, s: sent.append((r, s)))
    for epoch, at in enumerate([3.0, 11.0, 12.0], start=1):
        now[0] = at
        reports({"epoch": epoch}, lambda epoch=epoch: {"epoch": epoch})
    assert [(r["epoch"], s["epoch"]) for r, s in sent] == [(2, 2)]
    state = sent[0][1]
    assert state[REPORTS_KEY] == [{"epoch": 1}, {"epoch": 2}]

    again: list[tuple[dict, dict]] = []
    resumed = EpochReports(
        0.0, clock=lambda: 0.0, send=lambda r, s: again.append((r, s)), sent=state[REPORTS_KEY]
    )
    resumed({"epoch": 3}, lambda: {"epoch": 3})
    resumed({"epoch": 4}, lambda: {"epoch": 4})
    assert [e["epoch"] for e in earlier_epochs(again[0][0])] == [1, 2]
    assert EARLIER_KEY not in again[1][0]
    assert [e["epoch"] for e in again[1][1][REPORTS_KEY]] == [1, 2, 3, 4]


def test_ctrl_c_sends_the_next_epoch_at_once() -> None:
    """Reports 10 s apart; Ctrl-C at 4 s: epoch 2 (4.5 s) goes at once with epoch 1 held, as
    do the epochs after it, so Tune's stop reaches the trial at its next epoch."""
    now, stop = [0.0], [False]
    sent: list[tuple[dict, dict]] = []
    reports = EpochReports(
        10.0,
        clock=lambda: now[0],
        send=lambda r, s: sent.append((r, s)),
        stop_requested=lambda: stop[0],
    )
    for epoch, at in enumerate([2.0, 4.5, 5.0], start=1):
        now[0] = at
        stop[0] = at > 4.0
        reports({"epoch": epoch}, lambda epoch=epoch: {"epoch": epoch})
    assert [(r["epoch"], s["epoch"]) for r, s in sent] == [(2, 2), (3, 3)]
    assert [e["epoch"] for e in earlier_epochs(sent[0][0])] == [1]


def test_the_interrupt_file_is_written_on_ctrl_c_and_cleared(tmp_path: Path) -> None:
    """The marker wraps the handler it finds (Tune's) and runs it after writing the file."""
    import signal

    from nascomp.search.tune.interrupt import InterruptMarker, interrupt_requested

    seen: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    terminate = signal.getsignal(signal.SIGTERM)
    try:
        (tmp_path / "nascomp").mkdir()
        (tmp_path / "nascomp" / "interrupted").touch()  # left by an earlier run
        marker = InterruptMarker(tmp_path)
        marker.setup()
        requested = interrupt_requested(tmp_path)
        assert not requested() and not marker.interrupted
        signal.raise_signal(signal.SIGINT)
        assert requested() and marker.interrupted and seen == [signal.SIGINT]
        marker.clear()
        assert not requested()
        signal.raise_signal(signal.SIGTERM)  # kill's signal stops the search as Ctrl-C does
        assert requested() and seen == [signal.SIGINT, signal.SIGTERM]
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, terminate)


SPLITTING = '''
import numpy as np
import torch
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset


def split(seed=None):
    """A user's own train/test split of the digits, drawn with numpy."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(0.8 * len(y))

    def part(rows):
        images = torch.tensor(x[rows], dtype=torch.float32).reshape(-1, 1, 8, 8)
        return TensorDataset(images, torch.tensor(y[rows]))

    return part(order[:cut]), part(order[cut:])
'''


@pytest.mark.parametrize("seeded", [True, False])
def test_a_factory_that_splits_otherwise_in_each_process_fails_its_trials(
    seeded: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unseeded split gave each process (the driver, every worker, export) its own: test
    samples of one trained another, and trials were ranked on different validation sets."""
    from nascomp.search.experiment import load_experiment, trial_constants
    from nascomp.search.tune.trainable import check_same_data, guarded
    from nascomp.trainers.data import labels_digest
    from nascomp.trainers.user_data import clear_user_cache
    from tests.trainers.configs import SMALL_CNN

    monkeypatch.chdir(tmp_path)
    module = f"splitting_{seeded}_{tmp_path.name}"
    (tmp_path / f"{module}.py").write_text(SPLITTING)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = ["data.name=custom", f"data.factory={module}:split"]
    if seeded:
        data.append("data.options={seed: 0}")
    experiment = load_experiment(None, data)
    flat = {**trial_constants(experiment), **SMALL_CNN}
    clear_user_cache()
    try:
        driver = labels_digest(experiment.data.load(threads=1))
        clear_user_cache()  # a worker: another process, which calls the factory again
        if seeded:
            check_same_data(flat, driver)
            return
        with pytest.raises(ValueError, match=rf"^data.factory {module}:split: it gave this work"):
            check_same_data(flat, driver)
        outcome = guarded(lambda: pytest.fail("ran"), flat, driver)  # fails before it runs
        assert outcome.status == "failed" and "seed it (e.g. np.random" in outcome.reason
    finally:
        clear_user_cache()


def test_a_failing_data_factory_is_placed_in_the_users_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A factory raising in a worker was placed in nascomp's _call_factory, not in the
    user's file, as a failing forward is (a helper's API sweep)."""
    from nascomp.trainers.datasets import DatasetError, DatasetSource, _call_factory

    (tmp_path / "shop_rows.py").write_text(
        "def make(root=None):\n    rows = []\n    raise ValueError('bad row 7')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)

    def run() -> TrialOutcome:
        _call_factory(DatasetSource(name="custom", factory="shop_rows:make"))
        raise AssertionError("unreachable")

    outcome = guarded(run, DIGITS)
    assert outcome.status == STATUS_FAILED
    assert outcome.reason == (
        f"{DatasetError.__name__}: data.factory: shop_rows:make raised ValueError: bad row 7 "
        f"(in make, {tmp_path / 'shop_rows.py'}:3)"
    )


def test_a_sample_failing_in_a_trial_is_placed_in_the_users_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A streamed dataset's __getitem__ raising in a trial was placed in nascomp's _sample."""
    from nascomp.trainers.datasets import sample_input

    (tmp_path / "shop_set.py").write_text(
        "class Rows:\n    def __getitem__(self, index):\n        raise OSError('gone')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import shop_set

    def run() -> TrialOutcome:
        sample_input(shop_set.Rows(), 3, "data")
        raise AssertionError("unreachable")

    outcome = guarded(run, DIGITS)
    assert outcome.reason.endswith(f"(in __getitem__, {tmp_path / 'shop_set.py'}:3)")
