"""predict_costs against what run_trial measures at the end of the same config."""

from __future__ import annotations

import pytest

from nascomp.trainers.predicted import predict_costs
from nascomp.trainers.trial import run_trial
from tests.trainers.test_trial import trial_config


@pytest.mark.parametrize(
    ("sampled", "size_tolerance"),
    [
        # No pruning at 32 bits: the bytes follow from the shapes alone.
        ({"quant.bits": 32}, 0.0),
        # Below 16 bits a weight that rounds to code 0 is not stored: training decides which.
        ({"quant.bits": 8}, 0.01),
        # Unstructured: the kept count is exact, the bytes of their positions depend on the
        # pattern, which training changes.
        ({"prune.method": "unstructured", "prune.ratio": 0.6, "quant.bits": 4}, 0.03),
    ],
)
def test_prediction_matches_the_trained_trial(sampled: dict, size_tolerance: float) -> None:
    config = trial_config(
        **sampled, **{"train.epochs": 1, "train.prune_epochs": 1, "train.qat_epochs": 1}
    )
    predicted = predict_costs(config)
    measured = run_trial(config).metrics
    assert predicted["params"] == measured["params"]
    assert predicted["macs"] == measured["macs"]
    assert predicted["size_bytes"] == pytest.approx(measured["size_bytes"], rel=size_tolerance)


def test_prediction_sees_compression_and_leaves_the_random_state_alone() -> None:
    import torch

    dense = predict_costs(trial_config())
    before = torch.random.get_rng_state()
    small = predict_costs(
        trial_config(**{"prune.method": "unstructured", "prune.ratio": 0.8, "quant.bits": 4})
    )
    assert torch.equal(torch.random.get_rng_state(), before)
    assert small["params"] == dense["params"]  # unstructured zeros are still parameters
    # 20% of the weights at 4 bits instead of all at 32: well under a tenth of the bytes.
    assert small["size_bytes"] < dense["size_bytes"] / 10
