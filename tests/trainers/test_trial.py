"""run_trial on real digits data: phases, metrics, determinism, infeasible points, teacher cache."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from nascomp.compressors.pruning import prunable_weight_count
from nascomp.search.experiment import load_experiment, trial_constants
from nascomp.search.tracking.params import decode_param
from nascomp.trainers.config import TrialConfig, flatten, unflatten
from nascomp.trainers.teacher import TeacherJob, load_or_train_teacher, teacher_path
from nascomp.trainers.trial import STATUS_INFEASIBLE, run_trial

FAST = [
    "train.epochs=2",
    "train.prune_epochs=2",
    "train.qat_epochs=1",
    "teacher.epochs=2",
    "teacher.arch.base_channels=16",
    "measure.n_warmup=1",
    "measure.n_repeat=3",
    "measure.latency_batch_size=8",
]
METRICS = {
    "val_accuracy",
    "test_accuracy",
    "val_balanced_accuracy",
    "test_balanced_accuracy",
    "params",
    "nonzero_params",
    "size_bytes",
    "macs",
    "latency_ms",
    "latency_batch_ms",
    "train_seconds",
}


def trial_config(**sampled: Any) -> dict[str, Any]:
    base = {
        "arch.family": "cnn",
        "arch.n_stages": 2,
        "arch.blocks_per_stage": 1,
        "arch.base_channels": 8,
        "arch.width_mult": 1.0,
        "arch.kernel_size": 3,
        "arch.block": "residual",
        "prune.method": "none",
        "quant.bits": 32,
        "quant.act_bits": 8,
        "distill.enabled": False,
    }
    return {**trial_constants(load_experiment(None, FAST)), **base, **sampled}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NASCOMP_CACHE", str(tmp_path))
    return tmp_path


def test_phases_report_every_epoch_and_final_metrics() -> None:
    reports: list[dict] = []
    config = trial_config(
        **{
            "prune.method": "unstructured",
            "prune.ratio": 0.5,
            "prune.importance": "l1",
            "prune.scope": "global",
            "quant.bits": 4,
        }
    )
    outcome = run_trial(config, report=reports.append)
    assert outcome.status == "ok"
    assert [r["phase"] for r in reports] == ["train", "train", "prune", "prune", "quant"]
    assert [r["epoch"] for r in reports] == [1, 2, 3, 4, 5]
    assert set(outcome.metrics) >= METRICS
    metrics = outcome.metrics
    assert 0.5 < metrics["val_accuracy"] <= 1.0  # 2 epochs on digits learn something
    # digits' classes are nearly balanced: the mean recall is near top-1, and reported per epoch
    assert abs(metrics["val_balanced_accuracy"] - metrics["val_accuracy"]) < 0.1
    assert all("val_balanced_accuracy" in report for report in reports)
    # Half of the conv/linear weights are zero; the rest (BN, biases) stay.
    assert metrics["nonzero_params"] < 0.6 * metrics["params"]
    # what the ratio achieved: half of the pruned layers' weights (rounded to whole weights)
    assert metrics["pruned_fraction"] == pytest.approx(0.5, abs=1e-4)
    assert metrics["size_bytes"] < metrics["params"]  # under a byte a parameter (fp32: 4)


def test_structured_pruning_shrinks_the_model() -> None:
    dense_run = run_trial(trial_config())
    pruned_run = run_trial(
        trial_config(
            **{
                "prune.method": "structured",
                "prune.ratio": 0.5,
                "prune.importance": "l1",
                "prune.scope": "layer",
            }
        )
    )
    dense, pruned = dense_run.metrics, pruned_run.metrics
    assert pruned["params"] < 0.5 * dense["params"]
    assert pruned["macs"] < 0.5 * dense["macs"]
    # Half of the channels; the layers they feed narrow too: more than half of the weights
    weights = [prunable_weight_count(run.model) for run in (dense_run, pruned_run)]
    assert pruned["pruned_fraction"] == pytest.approx(1 - weights[1] / weights[0])
    assert 0.5 < pruned["pruned_fraction"] < 1.0
    assert "pruned_fraction" not in dense  # a trial that prunes nothing has no ratio to report


def test_a_structured_trial_logged_before_emptied_groups_were_kept_reproduces_as_it_was() -> None:
    """At 0.99 every hidden group of this MLP falls below the global threshold: torch-pruning
    alone left each whole; a trial now keeps each group's strongest channel, and a config
    logged without ``prune.emptied`` runs as before."""
    point = {
        "arch.family": "mlp",
        "arch.depth": 2,
        "arch.width": 32,
        "prune.method": "structured",
        "prune.ratio": 0.99,
        "prune.importance": "l1",
        "prune.scope": "global",
    }
    cnn = {k: v for k, v in trial_config().items() if k.startswith("arch.")}
    config = {k: v for k, v in trial_config(**point).items() if k not in cnn or k in point}
    config["prune.emptied"] = "leave_one"
    legacy = {k: v for k, v in config.items() if k != "prune.emptied"}
    assert TrialConfig.from_flat(legacy).prune.emptied == "whole"
    # The code before gave 275 parameters (the schedule's first step pruned, its last, to
    # 0.99, found every group emptied and pruned nothing more)
    assert run_trial(legacy).metrics["params"] == 275
    assert run_trial(config).metrics["params"] == (64 + 1) + (1 + 1) + (1 * 10 + 10)


def test_train_seconds_leave_out_the_time_spent_reporting_and_checkpointing() -> None:
    """Under mo_asha every epoch's state is copied and checkpointed: train_seconds were 0.31
    to 1.21 s against 0.12 to 0.41 s for the same trials without it, and cost_aware learnt
    from them. A checkpoint that takes 1 s an epoch (5 epochs) is left out: counted, it would
    add 5 s, far above what a loaded machine's noise moves a 2-second training by."""
    import time

    config = trial_config(**{"quant.bits": 8})
    plain = run_trial(config).metrics["train_seconds"]

    def slow(metrics: dict, make_state: Any) -> None:
        make_state()
        time.sleep(1.0)

    slowed = run_trial(config, checkpoint=slow).metrics["train_seconds"]
    assert slowed < plain + 2.5, (slowed, plain)  # 5 s of sleep would show


def test_same_config_same_result_on_cpu() -> None:
    config = trial_config(
        **{
            "prune.method": "structured",
            "prune.ratio": 0.3,
            "prune.importance": "l2",
            "prune.scope": "global",
            "quant.bits": 8,
        }
    )
    first, second = run_trial(config).metrics, run_trial(config).metrics
    for name in ("val_accuracy", "test_accuracy", "params", "nonzero_params", "size_bytes", "macs"):
        assert first[name] == second[name], name
    losses = {seed: [] for seed in (0, 1)}
    for seed, sink in losses.items():
        run_trial({**config, "seed": seed}, report=lambda r, sink=sink: sink.append(r["loss"]))
    assert losses[0] != losses[1]  # the seed matters (init and batch order)


def test_infeasible_architecture_is_an_outcome_not_an_exception() -> None:
    outcome = run_trial(trial_config(**{"arch.n_stages": 5}))
    assert outcome.status == STATUS_INFEASIBLE
    assert "shrinks" in outcome.reason
    assert outcome.model is None and outcome.metrics == {}


def test_distillation_needs_the_teacher() -> None:
    config = trial_config(
        **{"distill.enabled": True, "distill.temperature": 4.0, "distill.alpha": 0.5}
    )
    with pytest.raises(ValueError, match="no teacher weights"):
        run_trial(config)


def _job(flat: dict) -> TeacherJob:
    return TeacherJob.of_trial(TrialConfig.from_flat(flat))


def test_teacher_is_trained_once_then_cached(cache: Path) -> None:
    config = _job(trial_config(**{"distill.enabled": True}))
    state, facts = load_or_train_teacher(config)
    assert facts["teacher_cached"] == 0.0 and facts["teacher_train_seconds"] > 0
    again, facts_again = load_or_train_teacher(config)
    assert facts_again["teacher_cached"] == 1.0 and facts_again["teacher_train_seconds"] == 0.0
    assert all((state[k] == again[k]).all() for k in state)
    assert len(list((cache / "teachers").glob("*.pt"))) == 1
    # A different teacher config is a different cache entry.
    other = _job({**trial_config(), "teacher.epochs": 3})
    assert load_or_train_teacher(other)[1]["teacher_cached"] == 0.0
    outcome = run_trial(
        {
            **trial_config(),
            "distill.enabled": True,
            "distill.temperature": 3.0,
            "distill.alpha": 0.7,
        },
        teacher_state=state,
    )
    assert outcome.status == "ok"


def test_the_teacher_cache_replaces_a_planted_link_and_retrains_over_a_bad_file(
    cache: Path, tmp_path: Path
) -> None:
    """Another user who can write the cache folder planted links at the cache's file names:
    the teacher's facts overwrote the file they pointed at. And a file that is no teacher
    (a pickle that would run code, a truncated write) stopped the search with torch's
    traceback, which advised weights_only=False."""
    import os
    import pickle

    job = _job(trial_config(**{"distill.enabled": True}))
    path = teacher_path(job)
    path.parent.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's own file")
    path.with_suffix(".json").symlink_to(victim)
    state, facts = load_or_train_teacher(job)
    assert facts["teacher_cached"] == 0.0
    assert victim.read_text() == "the user's own file"
    assert not path.with_suffix(".json").is_symlink()
    assert (path.stat().st_mode & 0o077) == 0  # the teacher is the user's alone
    assert {p.name for p in path.parent.iterdir()} == {path.name, f"{path.stem}.json"}

    class Runs:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    path.write_bytes(pickle.dumps({"weight": Runs()}))
    again, facts = load_or_train_teacher(job)
    assert facts["teacher_cached"] == 0.0 and not (tmp_path / "ran").exists()
    assert all(torch.equal(state[k], again[k]) for k in state)  # trained again, the same
    assert load_or_train_teacher(job)[1]["teacher_cached"] == 1.0
    path.unlink()
    path.mkdir()  # failed with a traceback after the teacher trained
    with pytest.raises(ValueError, match=r"^teacher cache: .* is in the way of the teacher"):
        load_or_train_teacher(job)


def test_the_teacher_logits_leave_the_trials_rng_alone() -> None:
    """Only a worker's first distilled trial builds the teacher for its logits: drawing its
    initial weights from the trial's RNG made that trial's dropout masks differ from a
    reproduction's, which finds the logits cached or builds them first as well."""
    import torch

    from nascomp.spaces.models import build_model
    from nascomp.trainers import teacher as teachers

    cfg = TrialConfig.from_flat(trial_config(**{"distill.enabled": True}))
    data = cfg.data.load()
    state = build_model(cfg.teacher.arch, data.input_shape, data.n_classes).state_dict()
    teachers._LOGITS.clear()
    torch.manual_seed(7)
    logits = teachers.teacher_logits(TeacherJob.of_trial(cfg), data, state)
    assert logits.shape == (len(data.train), data.n_classes)
    drawn = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(torch.rand(3), drawn)


def test_flat_config_survives_mlflow_strings() -> None:
    config = trial_config(
        **{"prune.method": "unstructured", "prune.ratio": 1e-05, "data.root": None}
    )
    as_logged = {key: str(value) for key, value in config.items()}  # MLflow keeps params as str
    decoded = {key: decode_param(value) for key, value in as_logged.items()}
    assert TrialConfig.from_flat(decoded) == TrialConfig.from_flat(config)
    assert decoded["prune.ratio"] == 1e-05 and decoded["data.root"] is None
    assert decoded["distill.enabled"] is False and decoded["arch.block"] == "residual"


def test_flatten_round_trip() -> None:
    nested = {"a": {"b": 1, "c": {"d": "x"}}, "e": None}
    assert flatten(nested) == {"a.b": 1, "a.c.d": "x", "e": None}
    assert unflatten(flatten(nested)) == nested


@pytest.mark.parametrize("nested", [False, True])
def test_teacher_from_a_named_checkpoint_is_not_trained(cache: Path, nested: bool) -> None:
    import torch

    trained, made = load_or_train_teacher(_job(trial_config(**{"distill.enabled": True})))
    checkpoint = cache / "teacher.pt"
    torch.save({"state_dict": trained} if nested else trained, checkpoint)
    loaded, facts = load_or_train_teacher(
        _job({**trial_config(), "teacher.checkpoint": str(checkpoint)})
    )
    assert facts["teacher_train_seconds"] == 0.0
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)
    # scored as the trained teacher was (an untrained file's noise went unsaid)
    assert facts["teacher_val_accuracy"] == made["teacher_val_accuracy"]


def test_a_teacher_checkpoint_changed_since_the_search_is_refused(cache: Path) -> None:
    """Its path alone was recorded: a checkpoint overwritten after the search reproduced a
    student of another teacher (val_accuracy 0.1158 against 0.6738 logged) with exit 0."""
    trained, _ = load_or_train_teacher(_job(trial_config(**{"distill.enabled": True})))
    checkpoint = cache / "teacher.pt"
    torch.save(trained, checkpoint)
    config = {**trial_config(), "teacher.checkpoint": str(checkpoint)}
    recorded = TrialConfig.from_flat(config)
    assert recorded.teacher.checkpoint_sha256 is not None
    logged = flatten(recorded.model_dump())  # as the trial's run holds it
    torch.save({k: v + 1 for k, v in trained.items()}, checkpoint)
    with pytest.raises(ValueError, match=r"^teacher.checkpoint: .* changed since the search"):
        load_or_train_teacher(TeacherJob.of_trial(TrialConfig.from_flat(logged)))
    assert load_or_train_teacher(_job(config))[1]["teacher_cached"] == 1.0  # read anew


def test_augmented_training_is_seeded_and_distils_per_batch(cache: Path) -> None:
    augmented = {"train.augment.padding": 1, "train.augment.flip": False}
    config = trial_config(**augmented)
    first, second = run_trial(config).metrics, run_trial(config).metrics
    assert first["val_accuracy"] == second["val_accuracy"]  # crops come from the trial's seed
    losses: dict[str, list[float]] = {"plain": [], "augmented": []}
    run_trial(trial_config(), report=lambda r: losses["plain"].append(r["loss"]))
    run_trial(config, report=lambda r: losses["augmented"].append(r["loss"]))
    assert losses["plain"] != losses["augmented"]  # the batches really were augmented
    # The teacher learns on augmented batches too, so augmentation is part of its cache key.
    plain_teacher = _job(trial_config(**{"distill.enabled": True}))
    augmented_teacher = _job({**config, "distill.enabled": True})
    assert plain_teacher.key() != augmented_teacher.key()
    state, _ = load_or_train_teacher(augmented_teacher)
    distilled = {
        **config,
        "distill.enabled": True,
        "distill.temperature": 2.0,
        "distill.alpha": 0.5,
    }
    assert run_trial(distilled, teacher_state=state).status == "ok"


def test_balanced_class_weights_reach_the_trial_and_the_teachers_key() -> None:
    """``train.class_weight: balanced`` weighs the loss (digits' classes hold 174 to 183
    samples: weights near 1, a loss that differs) and keys a teacher of its own; ``none``
    keeps the key teachers had before the setting existed."""
    from nascomp.trainers.config import TrialConfig
    from nascomp.trainers.teacher import TeacherJob

    plain: list[dict] = []
    weighted: list[dict] = []
    run_trial(trial_config(), report=plain.append)
    outcome = run_trial(trial_config(**{"train.class_weight": "balanced"}), report=weighted.append)
    assert outcome.status == "ok"
    assert plain[0]["loss"] != weighted[0]["loss"]
    assert abs(plain[0]["loss"] - weighted[0]["loss"]) < 0.05 * plain[0]["loss"]
    keys = {
        weight: TeacherJob.of_trial(
            TrialConfig.from_flat(trial_config(**{"train.class_weight": weight}))
        ).key()
        for weight in ("none", "balanced")
    }
    assert keys["none"] != keys["balanced"]
    unset = dict(trial_config())
    del unset["train.class_weight"]  # a config logged before the setting
    assert TeacherJob.of_trial(TrialConfig.from_flat(unset)).key() == keys["none"]
    # The teacher never reads the test split: capping it keeps the teacher (re-check: it
    # trained again), while the split itself still keys it.
    capped = TeacherJob.of_trial(
        TrialConfig.from_flat(trial_config(**{"data.max_test_samples": 50}))
    )
    assert capped.key() == keys["none"]
    other = TeacherJob.of_trial(TrialConfig.from_flat(trial_config(**{"data.split_seed": 1})))
    assert other.key() != keys["none"]


def test_the_teacher_cache_sees_the_users_code_and_data_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A teacher built by the user's builder from the user's factory's data is cached under a
    key that holds both source files and the files under ``data.root``: an edited builder,
    factory or data file trains a new teacher. nascomp's own teachers keep their keys."""
    from nascomp.trainers.settings import AugmentSettings, DataConfig, TeacherConfig
    from nascomp.trainers.teacher import teacher_path

    (tmp_path / "acme_code.py").write_text(
        "from torch import nn\n"
        "def net(input_shape, n_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.LazyLinear(n_classes))\n"
        "def rows(root):\n"
        "    raise NotImplementedError\n"
    )
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.npy").write_bytes(b"1")
    monkeypatch.syspath_prepend(str(tmp_path))

    def path() -> Path:
        return teacher_path(
            TeacherJob(
                teacher=TeacherConfig(arch={"family": "custom", "builder": "acme_code:net"}),
                data=DataConfig.model_construct(
                    name="custom", factory="acme_code:rows", root=str(tmp_path / "files")
                ),
                augment=AugmentSettings(),
                momentum=0.9,
                seed=0,
                threads=1,
                device="cpu",
            )
        )

    first = path()
    assert path() == first
    (tmp_path / "files" / "a.npy").write_bytes(b"22")
    second = path()
    assert second != first
    (tmp_path / "acme_code.py").write_text((tmp_path / "acme_code.py").read_text() + "# edit\n")
    assert path() not in (first, second)
    own = _job(trial_config(**{"distill.enabled": True}))
    assert teacher_path(own).stem == own.key()
    # An image folder's images are the user's files too: one added is other data.
    (tmp_path / "images").mkdir()
    folder = TeacherJob(
        teacher=TeacherConfig(),
        data=DataConfig.model_construct(name="imagefolder", root=str(tmp_path / "images")),
        augment=AugmentSettings(),
        momentum=0.9,
        seed=0,
        threads=1,
        device="cpu",
    )
    before = teacher_path(folder)
    (tmp_path / "images" / "new.png").write_bytes(b"x")
    assert teacher_path(folder) != before
    # So are those torchvision's ImageFolder reads (its official datasets' keys stay)
    data = DataConfig.model_construct(
        name="torchvision", dataset="ImageFolder", root=str(tmp_path / "images")
    )
    read = dataclasses.replace(folder, data=data)
    before = teacher_path(read)
    (tmp_path / "images" / "other.png").write_bytes(b"y")
    assert teacher_path(read) != before


def test_a_teacher_family_defined_with_no_source_file_is_keyed_by_its_code() -> None:
    """`python -` (no file): hashing '<stdin>' raised FileNotFoundError while the teacher's
    cache key was made. Its compiled code keys it, so an edited body trains a new teacher."""
    import subprocess
    import sys

    script = (
        "import nascomp\n"
        "from torch import nn\n"
        "from nascomp.trainers.settings import AugmentSettings, DataConfig, TeacherConfig\n"
        "from nascomp.trainers.teacher import TeacherJob, teacher_path\n"
        "@nascomp.register_model('stdin_net')\n"
        "def net(input_shape, n_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.LazyLinear(n_classes * WIDTH))\n"
        "job = TeacherJob(teacher=TeacherConfig.model_construct(arch={'family': 'stdin_net'}),\n"
        "    data=DataConfig(), augment=AugmentSettings(), momentum=0.9, seed=0, threads=1,\n"
        "    device='cpu')\n"
        "print(teacher_path(job).name)\n"
    )

    def key(width: str) -> str:
        done = subprocess.run(
            [sys.executable, "-"],
            input=script.replace("WIDTH", width),
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert key("1") == key("1") != key("2")


def test_a_teachers_model_that_fails_as_it_trains_is_one_line_naming_it() -> None:
    """It was a traceback from the optimizer or the model (sparse gradients under Adam, an id
    the embedding lacks), exit 1 (a helper's sweep)."""
    from nascomp.search.experiment import load_experiment, teacher_job
    from nascomp.trainers.teacher import train_teacher

    builder = "tests.spaces.user_models:fails_in_training"
    teacher = f"teacher.arch={{family: custom, builder: '{builder}'}}"
    job = teacher_job(load_experiment(None, [teacher, "teacher.epochs=1"]))
    with pytest.raises(ValueError) as caught:
        train_teacher(job)
    assert str(caught.value) == (
        f"teacher.arch: model family 'custom' ({builder}) failed in training epoch 1: "
        "RuntimeError: sparse gradients are not supported"
    )
