"""pydantic's errors as the CLI's one line (search/errors.py: one_line)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError, field_validator

from nascomp.search.errors import one_line


class Inner(BaseModel):
    factory: str
    epochs: int = 1

    @field_validator("factory")
    @classmethod
    def _importable(cls, value: str) -> str:
        if value.startswith("nowhere"):
            raise ValueError(f"data.factory: module {value!r} is not importable from /tmp")
        return value


class Outer(BaseModel):
    data: Inner
    seed: int = 0


def _error(**fields: object) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Outer.model_validate(fields)
    return caught.value


def test_the_first_problem_with_its_field_and_how_many_more() -> None:
    error = _error(data={"factory": "ok:fn", "epochs": "three"}, seed="x")
    assert one_line(error) == (
        "data.epochs: Input should be a valid integer, unable to parse string as an integer "
        "(and 1 more problem(s))"
    )


def test_a_message_that_names_its_field_is_not_prefixed_again() -> None:
    error = _error(data={"factory": "nowhere:fn"})
    assert one_line(error) == "data.factory: module 'nowhere:fn' is not importable from /tmp"
    assert "\n" in str(error)  # pydantic's own text: several lines and a link


class Listed(BaseModel):
    constraints: list[str]
    groups: dict[str, list[int]] = {}


def test_a_lists_item_is_named_by_its_index_in_brackets() -> None:
    """As the experiment's own checks name items (constraints[0]), not pydantic's dots."""
    with pytest.raises(ValidationError) as caught:
        Listed.model_validate({"constraints": ["a", 3]})
    assert one_line(caught.value).startswith("constraints[1]: Input should be a valid string")
    with pytest.raises(ValidationError) as caught:
        Listed.model_validate({"constraints": [], "groups": {"2": [1, "x"]}})
    assert one_line(caught.value).startswith("groups.2[1]: Input should be a valid integer")
