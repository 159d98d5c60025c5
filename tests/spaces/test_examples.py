"""Every shipped experiment file validates against the real data it names."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest

from nascomp.search.experiment import load_experiment

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["mnist.yaml", "fashion_mnist.yaml"])
def test_example_validates(name: str, data_root: Path) -> None:
    experiment = load_experiment(EXAMPLES / name, [f"data.root={data_root}"])
    assert experiment.search.trials > 1
    assert len(experiment.objectives) >= 2


def test_imagefolder_example_validates_on_extracted_images(data_root: Path, tmp_path: Path) -> None:
    # The example's instructions extract the tar; a few members in the same layout will do:
    # two images of two classes from the test split (the tar's first members), copied as the
    # train split too.
    with tarfile.open(data_root / "cifar10-jpeg.tar") as archive:
        members = []
        for name in ("airplane", "automobile"):
            prefix = f"CIFAR-10-images/test/{name}/"
            members += [m for m in archive.getmembers()[:3000] if m.name.startswith(prefix)][:2]
        assert len(members) == 4, "the tar layout changed"
        archive.extractall(tmp_path, members=members, filter="data")
    root = tmp_path / "CIFAR-10-images"
    shutil.copytree(root / "test", root / "train")
    experiment = load_experiment(EXAMPLES / "cifar10_imagefolder.yaml", [f"data.root={root}"])
    assert experiment.data.name == "imagefolder"


def test_imagefolder_example_names_the_missing_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nascomp.search.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="CIFAR-10-images"):
        load_experiment(EXAMPLES / "cifar10_imagefolder.yaml")


def test_your_model_example_runs_its_own_code_on_real_data(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example's builder and factory, imported from its folder as a user runs it: the
    pre-flight builds the model and the teacher on the factory's real Fashion-MNIST."""
    from nascomp.search.preflight import check_user_code

    folder = EXAMPLES / "your_model"
    monkeypatch.chdir(folder)
    experiment = load_experiment(folder / "experiment.yaml", [f"data.root={data_root}"])
    assert experiment.space.arch.family == "custom"
    check_user_code(experiment)
    data = experiment.data.load()
    assert data.input_shape == (1, 28, 28) and data.n_classes == 10


def test_torchvision_example_validates(tmp_path: Path) -> None:
    for name in ("airplane", "automobile"):  # the layout check wants class folders
        (tmp_path / name).mkdir()  # none are read
    experiment = load_experiment(EXAMPLES / "torchvision_cifar10.yaml", [f"data.root={tmp_path}"])
    assert experiment.space.arch.family == "torchvision"


def test_tabular_example_reads_its_rows_and_takes_an_mlp_teacher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The example's factory, imported from its folder: 30 float64 features per row, two named
    classes, and the pre-flight's MLP teacher (the experiment names none)."""
    from nascomp.search.preflight import check_user_code

    folder = EXAMPLES / "tabular"
    monkeypatch.chdir(folder)
    notes: list[str] = []
    experiment = check_user_code(load_experiment(folder / "experiment.yaml"), notes)
    assert experiment.space.arch.family == "mlp"
    assert experiment.teacher.arch["family"] == "mlp"
    assert [note.split(":")[0] for note in notes] == ["teacher.arch"]
    data = experiment.data.load()
    assert (data.input_shape, data.n_classes, data.classes) == ((30,), 2, ("malignant", "benign"))
    assert data.feature_names[:2] == ("mean radius", "mean texture")
    assert len(data.train) + len(data.val) + len(data.test) == 569
