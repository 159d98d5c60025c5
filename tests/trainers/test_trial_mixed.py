"""Mixed-precision trials: per-group widths and the budget allocator, end to end on digits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from nascomp.compressors.allocation import average_bits
from nascomp.compressors.export import (
    layer_shapes,
    load_compressed,
    reshape_layers,
    save_compressed,
)
from nascomp.compressors.quantization import weight_bits_by_layer
from nascomp.search.experiment import load_experiment, trial_constants
from nascomp.spaces.models import build_model
from nascomp.trainers.config import TrialConfig, describe_trial, planned_epochs
from nascomp.trainers.loop import predict_logits
from nascomp.trainers.trial import TrialOutcome, run_trial
from tests.trainers.configs import SMALL_CNN, fast

FAST = fast(epochs=2)
PRUNED = {
    "prune.method": "unstructured",
    "prune.ratio": 0.5,
    "prune.importance": "l1",
    "prune.scope": "global",
}
# The flat keys a `mixed: groups` search samples for a 2-stage cnn (spaces.mixed).
GROUPS = {
    "quant.mixed": "groups",
    "quant.group_bits.stem": 8,
    "quant.group_bits.stage1": 4,
    "quant.group_bits.stage2": 2,
    "quant.group_bits.head": 32,
    "quant.groups.stem": ("stem.*",),
    "quant.groups.stage1": ("stages.0.*",),
    "quant.groups.stage2": ("stages.1.*",),
    "quant.groups.head": ("head.*",),
}
BUDGET = {
    "quant.mixed": "budget",
    "quant.budget": 3.0,
    "quant.widths": (2, 4, 8),
    "quant.sensitivity": "kl",
}


def config(**sampled: Any) -> dict[str, Any]:
    flat = {**trial_constants(load_experiment(None, FAST)), **SMALL_CNN, **PRUNED, **sampled}
    del flat["quant.bits"]  # a mixed trial samples no trial-wide width
    return flat


@pytest.fixture(scope="module")
def groups_trial() -> tuple[dict[str, Any], TrialOutcome]:
    flat = config(**GROUPS)
    return flat, run_trial(flat)


@pytest.fixture(scope="module")
def budget_trial() -> tuple[dict[str, Any], TrialOutcome]:
    flat = config(**BUDGET)
    return flat, run_trial(flat)


def test_groups_give_each_layer_its_groups_width(groups_trial) -> None:
    flat, outcome = groups_trial
    widths = weight_bits_by_layer(outcome.model)
    assert {name: bits for name, bits in widths.items() if name.startswith("stem")} == {"stem.0": 8}
    assert {bits for name, bits in widths.items() if name.startswith("stages.0")} == {4}
    assert {bits for name, bits in widths.items() if name.startswith("stages.1")} == {2}
    assert widths["head.2"] == 32
    assert json.loads(outcome.info["layer_bits"]) == widths
    # Mixed widths: the shipped file runs the 8-bit stem int8, the rest float, and says so.
    assert (
        outcome.info["latency_form"]
        == f"onnxruntime int8-qdq mixed (1 of {len(widths)} layers int8)"
    )
    forms = json.loads(outcome.info["latency_layers"])
    assert forms == {
        name: {8: "int8", 32: "fp32"}.get(bits, f"fp32-folded-{bits}bit")
        for name, bits in widths.items()
    }
    assert outcome.metrics["onnx_agreement"] >= 0.95
    assert planned_epochs(flat) == outcome.metrics["epochs"] == 4
    assert "| bits head=32 stage1=4 stage2=2 stem=8 |" in describe_trial(flat)


def _skeleton(flat: dict[str, Any], model: nn.Module) -> nn.Module:
    cfg = TrialConfig.from_flat(flat)
    data = cfg.data.load()
    return reshape_layers(
        build_model(cfg.arch, data.input_shape, data.n_classes), layer_shapes(model)
    )


@pytest.mark.parametrize("which", ["groups", "budget"])
def test_artifact_holds_the_widths_and_predicts_what_was_evaluated(
    request: pytest.FixtureRequest, tmp_path: Path, which: str
) -> None:
    flat, outcome = request.getfixturevalue(f"{which}_trial")
    path = tmp_path / "model.nascomp"
    assert save_compressed(outcome.model, path) == outcome.metrics["size_bytes"]
    restored = load_compressed(path, _skeleton(flat, outcome.model)).eval()
    assert weight_bits_by_layer(restored) == weight_bits_by_layer(outcome.model)
    data = TrialConfig.from_flat(flat).data.load()
    expected = predict_logits(outcome.model, data.test_x)
    assert torch.equal(predict_logits(restored, data.test_x), expected)


def test_budget_allocation_stays_within_the_budget(budget_trial) -> None:
    _, outcome = budget_trial
    widths = weight_bits_by_layer(outcome.model)
    assert set(widths.values()) <= {2, 4, 8}
    assert json.loads(outcome.info["layer_bits"]) == widths
    layers = dict(outcome.model.named_modules())
    kept = {name: int(layers[name].weight.count_nonzero()) for name in widths}
    assert average_bits(widths, kept) <= 3.0
    assert len(set(widths.values())) > 1  # 3 bits on average from {2, 4, 8}: mixed


def test_reproduce_of_a_budget_trial_is_exact(budget_trial) -> None:
    # What `nascomp reproduce` does: the same flat config through run_trial again.
    flat, outcome = budget_trial
    again = run_trial(dict(flat))
    assert again.info["layer_bits"] == outcome.info["layer_bits"]
    for name in ("val_accuracy", "test_accuracy", "size_bytes", "nonzero_params"):
        assert again.metrics[name] == outcome.metrics[name], name
    for (name, tensor), twin in zip(
        outcome.model.state_dict().items(), again.model.state_dict().values(), strict=True
    ):
        assert torch.equal(tensor, twin), name


def test_resume_keeps_the_chosen_widths(budget_trial) -> None:
    flat, outcome = budget_trial
    states: list[dict[str, Any]] = []
    run_trial(dict(flat), checkpoint=lambda _metrics, state: states.append(state()))
    qat_state = states[-1]  # taken after the QAT epoch: the widths are in it
    assert qat_state["layer_bits"] == weight_bits_by_layer(outcome.model)
    resumed = run_trial(dict(flat), resume=states[-2])  # before QAT: chosen again, the same
    assert resumed.info["layer_bits"] == outcome.info["layer_bits"]
    assert resumed.metrics["val_accuracy"] == outcome.metrics["val_accuracy"]


def test_entropy_coding_is_the_artifact_and_its_size(tmp_path: Path) -> None:
    from nascomp.search.export import load_exported, write_artifact

    flat = {**config(**GROUPS), "measure.coding": "entropy", "train.epochs": 1}
    outcome = run_trial(flat)
    model = outcome.model
    packed = save_compressed(model, tmp_path / "packed")
    assert outcome.metrics["size_bytes"] < packed  # 50% sparse: the coder saves bytes
    data = TrialConfig.from_flat(flat).data.load()
    files = write_artifact(model, data.test_x[:1], flat, tmp_path / "export")
    assert files["artifact"].stat().st_size == outcome.metrics["size_bytes"]
    restored = load_exported(tmp_path / "export")
    expected = predict_logits(model, data.test_x)
    assert torch.equal(predict_logits(restored, data.test_x), expected)


@pytest.mark.parametrize("sampled", [GROUPS, BUDGET])
def test_the_logged_config_rebuilds_the_same_trial_config(sampled: dict[str, Any]) -> None:
    # reproduce reads the flat config back from MLflow's JSON document (tuples come back as
    # lists): it must validate to the very config the search ran.
    from nascomp.search.tracking.params import config_document, config_from_document

    flat = config(**sampled)
    back = config_from_document(json.loads(json.dumps(config_document(flat))))
    assert TrialConfig.from_flat(back) == TrialConfig.from_flat(flat)


def test_a_distillation_weighted_at_nothing_is_not_labelled_kd() -> None:
    """alpha 0 trains on cross-entropy alone (loss curves equal at any temperature): the
    label said "KD T=8.0"."""
    from nascomp.trainers.config import describe_trial

    flat = {"arch.family": "mlp", "arch.depth": 1, "arch.width": 8, "prune.method": "none"}
    kd = {**flat, "quant.bits": 32, "distill.enabled": True, "distill.temperature": 8.0}
    assert describe_trial({**kd, "distill.alpha": 0.5}).endswith("| KD T=8.0")
    assert describe_trial({**kd, "distill.alpha": 0.0}).endswith("| no KD (alpha 0)")
    hinted = {**kd, "distill.alpha": 0.0, "distill.features": True}
    assert describe_trial(hinted).endswith("| KD feature hint alone (alpha 0)")
    # alpha and the hint, searched, told models apart on the front
    assert describe_trial({**kd, "distill.alpha": 0.7}).endswith("| KD T=8.0 a=0.70")
    # a searched alpha, to two decimals as the pruning ratio is (it was a=0.657179)
    assert describe_trial({**kd, "distill.alpha": 0.657179}).endswith("| KD T=8.0 a=0.66")
    hinted = {**kd, "distill.alpha": 0.5, "distill.features": True}
    assert describe_trial(hinted).endswith("| KD T=8.0 + hint")


def test_a_small_temperature_is_not_labelled_zero() -> None:
    """A searched temperature below 0.05 read "KD T=0.0" on the front."""
    from nascomp.trainers.config import describe_trial

    kd = {"arch.family": "mlp", "arch.depth": 1, "arch.width": 8, "prune.method": "none"}
    kd = {**kd, "quant.bits": 32, "distill.enabled": True}
    labels = {
        t: describe_trial({**kd, "distill.temperature": t}).rsplit("| ", 1)[1]
        for t in (0.01, 0.04, 0.15, 1.0, 2.34, 12.0)
    }
    assert labels == {
        0.01: "KD T=0.01",
        0.04: "KD T=0.04",
        0.15: "KD T=0.15",
        1.0: "KD T=1.0",
        2.34: "KD T=2.3",
        12.0: "KD T=12.0",
    }


def test_activation_widths_other_than_the_default_are_labelled_where_they_apply() -> None:
    """Searched act_bits left front rows of different models alike ("4 bit" both)."""
    from nascomp.trainers.config import describe_trial

    flat = {"arch.family": "mlp", "arch.depth": 1, "arch.width": 8, "prune.method": "none"}
    assert "| 4 bit act 4 |" in describe_trial({**flat, "quant.bits": 4, "quant.act_bits": 4})
    assert "| 4 bit float act |" in describe_trial({**flat, "quant.bits": 4, "quant.act_bits": 32})
    assert "| 4 bit |" in describe_trial({**flat, "quant.bits": 4, "quant.act_bits": 8})
    # fp16 and float weights leave activations float: nothing to tell
    assert "| 16 bit |" in describe_trial({**flat, "quant.bits": 16, "quant.act_bits": 4})


def test_pruning_per_layer_is_labelled() -> None:
    """A searched scope: at 0.99 global and per-layer unstructured pruning can give the same
    model, and the front showed two rows that read alike (a helper's sweep)."""
    from nascomp.trainers.config import describe_trial

    flat = {"arch.family": "mlp", "arch.depth": 1, "arch.width": 8, "quant.bits": 32}
    flat |= {"prune.method": "unstructured", "prune.ratio": 0.99}
    assert "| prune unstructured 0.99 |" in describe_trial({**flat, "prune.scope": "global"})
    assert "| prune unstructured 0.99 per layer |" in describe_trial(
        {**flat, "prune.scope": "layer"}
    )
    assert "| prune unstructured 0.99 |" in describe_trial(flat)  # the default, global
