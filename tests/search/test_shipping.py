"""Which of the user's modules are shipped to Ray workers (runtime_env py_modules)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nascomp.search.experiment import validate_experiment
from nascomp.search.shipping import module_files, runtime_env


def test_modules_outside_the_environment_are_shipped_installed_ones_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shop_models.py").write_text(
        "from torch import nn\n\ndef net(input_shape, n_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.LazyLinear(n_classes))\n"
    )
    package = tmp_path / "shop_teachers"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "big.py").write_text("from shop_models import net as build\n")
    monkeypatch.chdir(tmp_path)
    experiment = validate_experiment(
        {
            "space": {"arch": {"family": "custom", "builder": "shop_models:net"}},
            "teacher": {"arch": {"family": "custom", "builder": "shop_teachers.big:build"}},
        }
    )
    assert module_files(experiment) == [str(tmp_path / "shop_models.py"), str(package)]
    assert runtime_env(experiment) == {"py_modules": module_files(experiment)}
    off = validate_experiment(
        {
            "space": {"arch": {"family": "custom", "builder": "shop_models:net"}},
            "resources": {"ship_code": False},
        }
    )
    assert runtime_env(off) is None


def test_nothing_is_shipped_for_nascomps_own_or_installed_code() -> None:
    experiment = validate_experiment({})
    assert runtime_env(experiment) is None
    zoo = validate_experiment({"space": {"arch": {"family": "torchvision", "model": "resnet18"}}})
    assert runtime_env(zoo) is None
