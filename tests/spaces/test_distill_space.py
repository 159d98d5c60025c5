"""The distillation part of the joint space: Hinton's loss and the optional feature hint."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nascomp.spaces.space import DistillSpace


def _by_name(space: DistillSpace) -> dict:
    return {param.name: param for param in space.params()}


def test_features_off_by_default_and_searchable() -> None:
    default = _by_name(DistillSpace())
    assert default["distill.features"].kind == "fixed"
    assert default["distill.features"].value is False
    searched = _by_name(DistillSpace(features=[False, True], feature_weight=2.0))
    features = searched["distill.features"]
    assert features.kind == "choice" and features.choices == (False, True)
    assert features.condition == ("distill.enabled", (True,))
    weight = searched["distill.feature_weight"]
    assert weight.value == 2.0 and weight.condition == ("distill.features", (True,))
    # Only sampled when distillation is on and the hint chosen.
    assert not weight.is_active({"distill.enabled": True, "distill.features": False})
    assert weight.is_active({"distill.enabled": True, "distill.features": True})
    names = [param.name for param in DistillSpace().params()]
    assert names.index("distill.features") < names.index("distill.feature_weight")


@pytest.mark.parametrize(("field", "value"), [("features", "yes please"), ("feature_weight", 0.0)])
def test_bad_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        DistillSpace(**{field: value})
