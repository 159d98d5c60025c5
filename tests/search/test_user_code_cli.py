"""The user's own code in an experiment, met as a new user would: every mistake is one line,
exit code 2, and nothing written (no MLflow store, no run, no result folder)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.search.conftest import nascomp

MODULE = textwrap.dedent(
    """
    from torch import nn

    def good(input_shape, n_classes, width=4):
        return nn.Sequential(nn.Conv2d(input_shape[0], width, 3), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(width, n_classes))

    def gives_a_dict(input_shape, n_classes):
        return {}

    def thousand_classes(input_shape, n_classes):
        return good(input_shape, 1000)

    def raises(input_shape, n_classes):
        raise KeyError("layers")

    def picky(input_shape, n_classes, width=4, act="relu"):
        if width > 8:
            raise ValueError(f"width {width} does not fit the board")
        if act == "gelu":
            return None
        return good(input_shape, n_classes, width)

    def parses_argv(input_shape, n_classes):
        raise SystemExit(0)  # argparse's parse_args() in a builder, on nascomp's argv

    class Stop(BaseException):  # not an Exception: a traceback before
        pass

    def raises_its_own_base(input_shape, n_classes):
        raise Stop("no more")

    class Exits(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(1, 1)

        def forward(self, x):
            raise SystemExit(3)

    def exits_in_forward(input_shape, n_classes):
        return Exits()

    class Constant(nn.Module):
        def forward(self, x):
            return x.new_zeros(len(x), 10)

    def no_parameters(input_shape, n_classes):
        return Constant()

    class Logs(nn.Module):
        def __init__(self, n_inputs, n_classes):
            super().__init__()
            self.linear = nn.Linear(n_inputs, n_classes)

        def forward(self, x):
            return self.linear(x.flatten(1).log())  # NaN for the normalised inputs below 0

    def takes_logs(input_shape, n_classes):
        return Logs(input_shape[0] * input_shape[1] * input_shape[2], n_classes)

    VALUE = 1
    """
)


@pytest.mark.parametrize(
    ("experiment", "message"),
    [
        ("space: {arch: {family: custom, builder: 'shop:gives_a_dict'}}", "returned a dict"),
        (
            "space: {arch: {family: custom, builder: 'shop:thousand_classes'}}",
            "space.arch: the model from builder shop:thousand_classes outputs (2, 1000)",
        ),
        (
            "space: {arch: {family: custom, builder: 'shop:raises'}}",
            "space.arch: builder shop:raises raised KeyError: 'layers' (called with "
            "input_shape=(1, 8, 8), n_classes=10)",
        ),
        # A value other than the first that the builder rejects: named by its leaf.
        (
            "space: {arch: {family: custom, builder: 'shop:picky', width: {low: 2, high: 16}}}",
            "space.arch.width: value 16: builder shop:picky raised ValueError: width 16 does "
            "not fit the board (called with",
        ),
        (
            "space: {arch: {family: custom, builder: 'shop:picky', act: [relu, gelu]}}",
            "space.arch.act: value 'gelu': builder shop:picky returned a NoneType",
        ),
        (
            "space: {arch: {family: custom, builder: 'shop:raises_its_own_base'}}",
            "space.arch: builder shop:raises_its_own_base raised Stop: no more (called with",
        ),
        (
            "space: {arch: {family: custom, builder: 'shop:exits_in_forward'}}",
            "space.arch: the model from builder shop:exits_in_forward",
        ),
        ("space: {arch: {family: custom, builder: 'shop:VALUE'}}", "not a function"),
        (
            "space: {arch: {family: custom, builder: 'shop:parses_argv'}}",
            "space.arch: builder shop:parses_argv raised SystemExit: 0",
        ),
        (
            "space: {arch: {family: custom, builder: 'shop:no_parameters'}}",
            "space.arch: the model from builder shop:no_parameters has no parameters",
        ),
        ("space: {arch: {family: custom, builder: 'shoop:good'}}", "'shoop' is not importable"),
        # every trial failed with "training diverged" after the banner
        (
            "space: {arch: {family: custom, builder: 'shop:takes_logs'}}",
            "space.arch: the model from builder shop:takes_logs gives NaN outputs for 32 of "
            "the first 32 training inputs before any training",
        ),
        (
            "teacher: {arch: {family: custom, builder: 'shop:takes_logs'}}",
            "teacher.arch: the model from builder shop:takes_logs gives NaN",
        ),
        ("space: {arch: {family: custom, builder: 'shop:good', width: []}}", "width"),
        ("space: {arch: {family: torchvision, model: resnet181}}", "did you mean resnet18"),
        (
            "space: {arch: {family: custom, builder: 'shop:good'}, prune: {ignore: [stem]}}",
            "space.prune.ignore: 'stem' names no layer",
        ),
        (
            "space: {arch: {family: cnn}}\n"
            "teacher: {arch: {family: custom, builder: 'shop:thousand_classes'}}",
            "teacher.arch: the model from builder shop:thousand_classes",
        ),
        # one of nascomp's families as the teacher, too small a network for 8x8 digits
        (
            "teacher: {arch: {family: lenet5}}",
            "teacher.arch: lenet5: input height shrinks to 0 after a 5x5 conv",
        ),
        ("train: {init: absent.pt}", "train.init: checkpoint '/"),
        ("train: {init: shop.py}", "shop.py is not a checkpoint torch.load reads"),
        ("", "the experiment file is empty"),
        ("# nothing but a comment\n", "the experiment file is empty"),
    ],
)
def test_user_code_mistakes_exit_2_with_one_line_and_write_nothing(
    tmp_path: Path, experiment: str, message: str
) -> None:
    (tmp_path / "shop.py").write_text(MODULE)
    (tmp_path / "experiment.yaml").write_text(experiment)
    written = {path.name for path in tmp_path.iterdir()}
    result = nascomp(
        "search", "experiment.yaml", cwd=tmp_path, timeout=120, env={"MLFLOW_TRACKING_URI": ""}
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == "", result.stdout  # refused before the banner
    left = {path.name for path in tmp_path.iterdir()} - written - {"__pycache__"}
    assert left == set(), left


def test_an_unreadable_image_stops_the_search_before_it_starts(tmp_path: Path) -> None:
    """The user's image folder is read before anything runs, distillation or not: a file cut
    short is named, instead of failing every trial in turn."""
    from PIL import Image

    root = tmp_path / "images"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for index in range(6):
            Image.new("RGB", (8, 8), (index * 40, 0, 0)).save(root / name / f"{index}.png")
    whole = (root / "dog" / "0.png").read_bytes()
    (root / "dog" / "cut.png").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "experiment.yaml").write_text(
        f"data: {{name: imagefolder, root: '{root}'}}\nspace: {{distill: {{enabled: false}}}}\n"
    )
    written = {path.name for path in tmp_path.iterdir()}
    result = nascomp(
        "search", "experiment.yaml", cwd=tmp_path, timeout=120, env={"MLFLOW_TRACKING_URI": ""}
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"imagefolder: cannot read {root / 'dog' / 'cut.png'} (" in lines[0]
    assert {path.name for path in tmp_path.iterdir()} - written - {"__pycache__"} == set()


def test_reproduce_of_a_run_not_in_the_store_is_one_line(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).create_experiment("nascomp")
    result = nascomp(
        "reproduce", "0123456789abcdef0123456789abcdef", "--tracking-uri", uri, cwd=tmp_path
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "run '0123456789abcdef0123456789abcdef' is not in the tracking store" in lines[0]


def test_teacher_checkpoint_must_fit_the_teachers_arch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user's trained weights for their own teacher: nested under 'state_dict' as training
    scripts save them, loaded with weights_only; weights of another shape are named."""
    import torch

    from nascomp.search.errors import ConfigError
    from nascomp.search.experiment import validate_experiment
    from nascomp.search.preflight import check_user_code
    from nascomp.spaces.models import build_model

    (tmp_path / "shop.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    arch = {"family": "custom", "builder": "shop:good", "width": 6}
    weights = build_model(arch, (1, 8, 8), 10).state_dict()
    torch.save({"epoch": 3, "state_dict": weights}, tmp_path / "teacher.pt")
    torch.save(build_model({**arch, "width": 5}, (1, 8, 8), 10).state_dict(), tmp_path / "bad.pt")

    def experiment(checkpoint: str) -> dict:
        return {
            "space": {"distill": {"enabled": True}},
            "teacher": {"arch": arch, "checkpoint": str(tmp_path / checkpoint)},
        }

    check_user_code(validate_experiment(experiment("teacher.pt")))
    with pytest.raises(ConfigError) as caught:
        check_user_code(validate_experiment(experiment("bad.pt")))
    # counted, with the first of each kind: torch's own message lists every weight
    message = str(caught.value)
    assert message.startswith(f"teacher.checkpoint: {tmp_path / 'bad.pt'} does not load into")
    assert message.endswith("in the file, [6, 1, 3, 3] in the model)"), message
    assert "weight(s) of another shape (first: '" in message


def test_quant_groups_that_name_no_layer_or_overlap_are_refused_before_training() -> None:
    """The built-in CNN's layers are stem.0, stages.S.B.N and head.2: a glob for another
    model's names matched nothing, and every trial ran at widths its name did not say; two
    groups of one layer stopped every trial after it trained. A group for a layer that only a
    deeper point of the space has (stages.1.* with n_stages [1, 2]) is accepted."""
    from nascomp.search.errors import ConfigError
    from nascomp.search.experiment import validate_experiment
    from nascomp.search.preflight import check_user_code

    def experiment(groups: dict) -> dict:
        return {
            "space": {
                "arch": {"family": "cnn", "n_stages": [1, 2], "blocks_per_stage": 1},
                "quant": {"mixed": "groups", "bits": [4, 8], "groups": groups},
                "distill": {"enabled": False},
            }
        }

    checked = check_user_code(
        validate_experiment(experiment({"deep": ["stages.1.*"], "head": ["head.*"]}))
    )
    assert "quant.bits" in [p.name for p in checked.space.params()]  # stem.0 takes it
    # Groups that hold every layer of every built architecture leave bits unsearched: two
    # trials differing in it alone would be one model.
    covering = experiment({"convs": ["stem.*", "stages.*"], "head": ["head.*"]})
    names = [p.name for p in check_user_code(validate_experiment(covering)).space.params()]
    assert "quant.bits" not in names and "quant.group_bits.convs" in names
    with pytest.raises(ConfigError) as caught:
        check_user_code(validate_experiment(experiment({"convs": ["features.*"]})))
    assert str(caught.value).startswith(
        "space.quant.groups.convs: ['features.*'] match no layer the model quantizes; its "
        "layers: 'head.2', "
    )
    assert str(caught.value).endswith("(globs over model.named_modules() names, e.g. 'head.*')")
    with pytest.raises(ConfigError, match=r"layer 'stages.0.0.0' matches groups \['a', 'b'\]"):
        check_user_code(
            validate_experiment(experiment({"a": ["stages.*"], "b": ["stages.0.*", "head.*"]}))
        )


@pytest.mark.parametrize(("width", "others"), [(6, False), ([4, 6], True)])
def test_per_layer_groups_come_from_the_users_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, width: object, others: bool
) -> None:
    """``groups: layers``: the pre-flight builds the space's first architecture and gives each
    of its convolution / Linear layers a group; a trial-wide width is searched only when another
    architecture could hold layers the first one lacks."""
    from nascomp.search.experiment import validate_experiment
    from nascomp.search.preflight import check_user_code

    (tmp_path / "shop.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    arch = {"family": "custom", "builder": "shop:good", "width": width}
    quant = {"mixed": "groups", "bits": [4, 8], "groups": "layers"}
    experiment = validate_experiment({"space": {"arch": arch, "quant": quant}})
    resolved = check_user_code(experiment)
    assert resolved.space.quant.groups == {"0": ["0"], "3": ["3"]}
    names = [p.name for p in resolved.space.params() if p.name.startswith("quant.")]
    assert names == [
        "quant.mixed",
        "quant.act_bits",
        *(["quant.bits"] if others else []),
        "quant.group_bits.0",
        "quant.groups.0",
        "quant.group_bits.3",
        "quant.groups.3",
        "quant.layers",
    ]
    assert experiment.space.quant.groups == "layers"  # the user's experiment is not changed


def test_starting_weights_of_another_model_exit_2_before_anything_runs(tmp_path: Path) -> None:
    """``train.init`` with a file that fits no tensor of the model would train from scratch
    unnoticed: one line naming both sides' tensors instead."""
    import torch

    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "other.pt")
    (tmp_path / "experiment.yaml").write_text("train: {init: other.pt}\n")
    written = {path.name for path in tmp_path.iterdir()}
    result = nascomp(
        "search", "experiment.yaml", cwd=tmp_path, timeout=120, env={"MLFLOW_TRACKING_URI": ""}
    )
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        f"nascomp: error: train.init: {tmp_path / 'other.pt'} has no weight of the name and "
        "shape of space.arch's model (the file: weight, bias, ...; the model's weights: "
        "stem.0.weight, "
    )
    assert {path.name for path in tmp_path.iterdir()} - written == set()
