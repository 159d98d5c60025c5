"""The installed libraries are the releases nascomp was tested with (pyproject.toml's ranges).

nascomp uses private APIs of Ray, Optuna and torch-pruning (search/compat/, compressors/compat/);
a release outside the tested range may have moved them. This test names the library, the
installed version and the range, so the fix (pin, or test and widen the range) is obvious.
"""

from __future__ import annotations

import importlib.metadata

import pytest
from packaging.requirements import Requirement

REQUIRED = [
    Requirement(text)
    for text in importlib.metadata.requires("nascomp") or []
    if "extra ==" not in text
]


def test_every_dependency_has_a_tested_range_with_an_upper_bound() -> None:
    assert REQUIRED
    for requirement in REQUIRED:
        uppers = [spec for spec in requirement.specifier if spec.operator in ("<", "<=", "==")]
        assert uppers, f"{requirement.name}: no upper bound in pyproject.toml"


@pytest.mark.parametrize("requirement", REQUIRED, ids=lambda r: r.name)
def test_installed_version_is_in_the_tested_range(requirement: Requirement) -> None:
    installed = importlib.metadata.version(requirement.name)
    # Local build tags (torch's "+cu130") are not part of the release being compared.
    release = installed.split("+")[0]
    assert requirement.specifier.contains(release, prereleases=True), (
        f"{requirement.name} {installed} is installed, but nascomp is tested with "
        f"{requirement.name}{requirement.specifier} (pyproject.toml); install a version in "
        "that range, or run the whole suite on this one and widen the range"
    )
