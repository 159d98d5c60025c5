"""Models the user brings: the custom builder, torchvision and timm by name, plugins."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from nascomp.spaces.models import InfeasibleArchitecture, build_model, describe_arch
from nascomp.spaces.space import SpaceConfig
from nascomp.spaces.userfn import UserCodeError, load_callable
from nascomp.spaces.zoo import SMALL_INPUT, adapt_stem

USER = "tests.spaces.user_models"


def _space(arch: dict) -> SpaceConfig:
    return SpaceConfig.model_validate({"arch": arch})


def test_builder_arguments_are_leaves_of_the_space() -> None:
    space = _space(
        {
            "family": "custom",
            "builder": f"{USER}:tiny",
            "width": [8, 16],
            "depth": {"low": 1, "high": 3},
            "act": "gelu",
            "scale": [0.5, 1],
        }
    )
    params = {p.name: p for p in space.arch.params()}
    assert params["arch.width"].kind == "choice" and params["arch.width"].choices == (8, 16)
    assert (params["arch.depth"].kind, params["arch.depth"].low) == ("int", 1)
    assert params["arch.act"].kind == "fixed" and params["arch.act"].value == "gelu"
    assert params["arch.scale"].choices == (0.5, 1.0)  # ints among floats become floats
    first = space.arch.first_arch()
    assert first == {
        "family": "custom",
        "builder": f"{USER}:tiny",
        "width": 8,
        "depth": 1,
        "act": "gelu",
        "scale": 0.5,
    }
    assert describe_arch(first) == "custom tiny width=8 depth=1 act=gelu scale=0.5"


def test_varied_archs_change_one_leaf_at_a_time_to_its_other_values() -> None:
    space = _space(
        {
            "family": "custom",
            "builder": f"{USER}:tiny",
            "width": [8, 16, 32],
            "depth": {"low": 1, "high": 5, "step": 2},  # 1, 3, 5
            "act": "gelu",  # fixed: nothing to vary
            "scale": {"low": 0.5, "high": 2.0, "log": True},
        }
    )
    first = space.arch.first_arch()
    varied = space.arch.varied_archs()
    assert [(leaf, value) for leaf, value, _ in varied] == [
        ("width", 16),
        ("width", 32),
        ("depth", 5),
        ("scale", 2.0),
    ]
    for leaf, value, arch in varied:
        assert arch == {**first, leaf: value}
    assert isinstance(varied[2][1], int)


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ({"builder": "nowhere_module:f"}, "module 'nowhere_module' is not importable"),
        ({"builder": f"{USER}:missing"}, "has no attribute 'missing'"),
        ({"builder": f"{USER}:NOT_A_FUNCTION"}, "is an int, not a function"),
        ({"builder": "no colon"}, "must be 'package.module:function'"),
        ({"builder": f"{USER}:tiny", "width": [8, "x"]}, "width: give a number"),
        ({"builder": f"{USER}:tiny", "n_classes": 3}, "'n_classes' cannot be a builder argument"),
        ({"builder": f"{USER}:tiny", "width": []}, "width: choice list is empty"),
        ({}, "builder"),
    ],
)
def test_bad_custom_arch_is_one_line_naming_the_problem(arch: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _space({"family": "custom", **arch})


def test_custom_builder_gets_shape_classes_and_sampled_arguments() -> None:
    torch.manual_seed(0)
    model = build_model(
        {"family": "custom", "builder": f"{USER}:tiny", "width": 4, "depth": 2}, (3, 9, 9), 7
    )
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.in_channels for c in convs] == [3, 4] and convs[-1].out_channels == 4
    assert model(torch.zeros(5, 3, 9, 9)).shape == (5, 7)


@pytest.mark.parametrize(
    ("builder", "message"),
    [
        ("returns_dict", "returned a dict, not a torch.nn.Module"),
        ("wrong_classes", r"outputs \(2, 13\) for a batch of 2; expected \(2, 10\)"),
        # every trial failed in cross-entropy once the search had begun (a helper's sweep)
        ("integer_logits", r"outputs int64 values; expected floating-point logits \(an argmax"),
        ("fails_on_one", r"fails on one input \(1, 1, 8, 8\): RuntimeError: expects a batch"),
        ("squeezes", r"outputs \(10,\) for a batch of 1; expected \(1, 10\) logits, as for a"),
        ("raises", "raised RuntimeError: no GPU kernels here"),
        ("embeds", r"'indices' .+ \(the inputs reach the model as floats: integer ids must come"),
        (  # a conv built for RGB on grey images: image_size was the wrong hint
            "rgb_only",
            r"to have 3 channels, but got 1 channels instead \(the data has 1 channel per "
            r"image: build the first layer for them\)$",
        ),
        (  # its own error, not about sizes: the image-size hint misled
            "forward_raises",
            r"fails on a batch of shape \(2, 1, 8, 8\): RuntimeError: the lookup table is not "
            r"loaded$",
        ),
        (
            "breaks_on_input",
            r"fails on a batch of shape \(2, 1, 8, 8\): .+ \(if the model needs larger images, "
            r"set data.image_size, e.g. 224\)$",
        ),
    ],
)
def test_a_broken_builder_is_a_user_code_error_naming_it(builder: str, message: str) -> None:
    with pytest.raises(UserCodeError, match=message) as caught:
        build_model({"family": "custom", "builder": f"{USER}:{builder}"}, (1, 8, 8), 10)
    assert "\n" not in str(caught.value)


def test_a_slow_builder_is_named_while_it_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A builder (or forward, or factory) that hung held the checks without a word; after
    ``SLOW_CALL_S`` one line names it. A quick one says nothing."""
    monkeypatch.setattr("nascomp.spaces.userfn.SLOW_CALL_S", 0.2)
    build_model({"family": "custom", "builder": f"{USER}:slow"}, (1, 8, 8), 10)
    build_model({"family": "custom", "builder": f"{USER}:tiny"}, (1, 8, 8), 10)
    time.sleep(0.3)
    assert capsys.readouterr().err == (
        f"nascomp: still in builder {USER}:slow, called 0 s ago (Ctrl-C stops)\n"
    )


def test_the_users_own_infeasible_class_marks_the_architecture_infeasible() -> None:
    build_model({"family": "custom", "builder": f"{USER}:picky", "width": 16}, (1, 8, 8), 10)
    with pytest.raises(InfeasibleArchitecture, match="width 32"):
        build_model({"family": "custom", "builder": f"{USER}:picky", "width": 32}, (1, 8, 8), 10)


def test_a_module_in_the_working_folder_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "workfolder_models.py").write_text("def build(**kw):\n    return kw\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert load_callable("workfolder_models:build", "builder")(a=1) == {"a": 1}


# ---------------------------------------------------------------- zoo stems


@pytest.mark.parametrize(
    ("name", "shape", "stem_stride", "pool_kept"),
    [
        ("resnet18", (1, 28, 28), 1, False),  # CIFAR-style stem on small inputs
        ("resnet18", (3, 96, 96), 2, True),  # large inputs keep the ImageNet stem
        ("mobilenet_v2", (3, 32, 32), 1, True),  # no max-pool to remove
    ],
)
def test_torchvision_stem_follows_the_input(
    name: str, shape: tuple[int, int, int], stem_stride: int, pool_kept: bool
) -> None:
    model = build_model({"family": "torchvision", "model": name}, shape, 10)
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert stem.in_channels == shape[0] and stem.stride == (stem_stride, stem_stride)
    if min(shape[1:]) < SMALL_INPUT:
        assert stem.kernel_size == (3, 3)
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert bool(pools) == (pool_kept and name == "resnet18")


def test_adapt_stem_says_what_it_changed() -> None:
    from torchvision.models import resnet18

    changes = adapt_stem(resnet18(num_classes=10), (1, 32, 32))
    assert changes == [
        "conv1: 3->1 channels, kernel 7->3, stride 2->1",
        "maxpool: max-pool removed",
    ]


def test_torchvision_arguments_are_searched_and_bad_ones_named() -> None:
    space = _space({"family": "torchvision", "model": "mobilenet_v2", "width_mult": [0.25, 0.5]})
    assert [p.name for p in space.arch.params()][-1] == "arch.width_mult"
    small = build_model(
        {"family": "torchvision", "model": "mobilenet_v2", "width_mult": 0.25}, (3, 32, 32), 10
    )
    large = build_model(
        {"family": "torchvision", "model": "mobilenet_v2", "width_mult": 0.5}, (3, 32, 32), 10
    )
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in large.parameters())
    with pytest.raises(UserCodeError, match=r"get_model\('resnet18'\) rejects width_mult=0.5"):
        build_model(
            {"family": "torchvision", "model": "resnet18", "width_mult": 0.5}, (3, 32, 32), 10
        )


def test_unknown_zoo_model_suggests_close_names() -> None:
    with pytest.raises(
        ValidationError, match=r"unknown torchvision model 'mobilenetv2'.*mobilenet_v2"
    ):
        _space({"family": "torchvision", "model": "mobilenetv2"})
    # A detection model exists, but is no classifier: "unknown" sent users looking for a typo.
    with pytest.raises(ValidationError, match=r"'fasterrcnn_resnet50_fpn' is a detection model"):
        _space({"family": "torchvision", "model": "fasterrcnn_resnet50_fpn"})
    with pytest.raises(ValidationError, match=r"'raft_small' is an optical flow model"):
        _space({"family": "torchvision", "model": "raft_small"})


def test_timm_model_by_name() -> None:
    pytest.importorskip("timm")
    model = build_model({"family": "timm", "model": "mobilenetv3_small_050"}, (1, 28, 28), 10)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValidationError, match="unknown timm model"):
        _space({"family": "timm", "model": "no_such_net_xyz"})


def test_a_vision_transformer_keeps_its_patch_embedding_on_small_inputs() -> None:
    """A stride-1 3x3 stem made 785 tokens of a 28x28 image where the position embedding
    holds 17 (7x7 patches): the model failed. Its patch embedding is kept (channels only),
    and the user's img_size / patch_size size it."""
    pytest.importorskip("timm")
    arch = {"family": "timm", "model": "vit_tiny_patch16_224", "img_size": 28, "patch_size": 7}
    model = build_model({**arch, "depth": 2}, (1, 28, 28), 10)
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert (stem.in_channels, stem.kernel_size, stem.stride) == (1, (7, 7), (7, 7))
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert adapt_stem(
        __import__("timm").create_model("vit_tiny_patch16_224", img_size=28, patch_size=7),
        (1, 28, 28),
    ) == [
        "patch_embed.proj: 3->1 channels, kernel 7->7, stride 7->7",
        "stem kept (the model does not run with a stride-1 stem)",
    ]


# ---------------------------------------------------------------- plugins


def test_an_installed_plugin_registers_its_family_by_entry_point(tmp_path: Path) -> None:
    """A real distribution on sys.path (dist-info with entry_points.txt), as `pip install`
    leaves it; run in a fresh interpreter so the registry starts empty."""
    (tmp_path / "acme_models.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def build(fields, input_shape, n_classes):
                return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0] * input_shape[1]
                                     * input_shape[2], n_classes))
            """
        )
    )
    dist = tmp_path / "acme_models-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-models\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[nascomp.models]\nacme = acme_models:build\nbroken = acme_missing:build\n"
    )
    script = textwrap.dedent(
        """
        import torch
        from nascomp.spaces.models import build_model, model_names
        assert "acme" in model_names(), model_names()
        model = build_model({"family": "acme"}, (1, 4, 4), 3)
        print(tuple(model(torch.zeros(2, 1, 4, 4)).shape))
        try:
            build_model({"family": "broken"}, (1, 4, 4), 3)
        except ValueError as exc:
            print(exc)
        import nascomp
        # Searched as experiments name the built-in families: every key a builder argument.
        experiment = nascomp.load_experiment({"space": {"arch": {"family": "acme", "w": [4, 8]}}})
        print([p.name for p in experiment.space.arch.params()])
        for arch in ({"family": "broken"}, None):
            try:
                nascomp.load_experiment({"space": {"arch": arch}} if arch else
                                        {"teacher": {"arch": {"family": "broken"}}})
            except nascomp.ConfigError as exc:
                print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "(2, 3)"
    assert "entry point 'broken'" in lines[1] and "ModuleNotFoundError" in lines[1]
    assert lines[2] == "['arch.family', 'arch.w']"
    assert lines[3].startswith("space.arch.family: the plugin 'acme_missing:build'")
    assert lines[4].startswith("teacher.arch: the plugin 'acme_missing:build'")


def _distribution(site: Path, name: str, entry_points: str) -> None:
    """A distribution's dist-info in ``site``, as `pip install --target` leaves it."""
    dist = site / f"{name}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[nascomp.models]\n{entry_points}")


def test_plugins_that_clash_raise_or_return_no_model_are_named(tmp_path: Path) -> None:
    """Two plugins of one family name, a plugin taking a built-in's name, a module plugin
    that fails before registering its family, builders that raise or return no model: each
    is one line naming the plugin or builder; nascomp's families stay whole."""
    (tmp_path / "acme_models.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def build(fields, input_shape, n_classes):
                return nn.Sequential(nn.Flatten(), nn.LazyLinear(n_classes))

            def raises(fields, input_shape, n_classes):
                raise RuntimeError(f"acme cannot build width={fields.get('width')}")

            def nonmodule(fields, input_shape, n_classes):
                return "not a module"

            def wrong_logits(fields, input_shape, n_classes):
                return nn.Sequential(nn.Flatten(), nn.LazyLinear(n_classes + 1))
            """
        )
    )
    # A module plugin that registers a built-in's name with a builder of the built-in's own
    # function name (it replaced nascomp's mlp), and a family another plugin registers too.
    (tmp_path / "acme_dup.py").write_text(
        textwrap.dedent(
            """
            import nascomp
            from acme_models import build

            @nascomp.register_model("twice")
            def build_twice(fields, input_shape, n_classes):
                return build(fields, input_shape, n_classes)

            @nascomp.register_model("mlp")
            def build_mlp(fields, input_shape, n_classes):
                raise RuntimeError("not nascomp's mlp")
            """
        )
    )
    (tmp_path / "acme_other.py").write_text(
        "import nascomp\nfrom acme_models import build\nnascomp.register_model('twice')(build)\n"
    )
    (tmp_path / "acme_broken.py").write_text(
        "import not_installed_xyz\nimport nascomp\n"
        "nascomp.register_model('broken_family')(lambda f, s, n: None)\n"
    )
    _distribution(
        tmp_path,
        "acme_models",
        "acme_raise = acme_models:raises\nacme_str = acme_models:nonmodule\n"
        "acme_logits = acme_models:wrong_logits\ncnn = acme_models:build\n"
        "dupmod = acme_dup\nbroken_mod = acme_broken\n",
    )
    _distribution(tmp_path, "acme_other", "other = acme_other\n")
    script = textwrap.dedent(
        """
        import nascomp
        from nascomp.spaces import models
        from nascomp.spaces.models import build_model

        for arch in ({"family": "mlp"}, {"family": "cnn"}):
            print(type(build_model(arch, (1, 8, 8), 3)).__module__)
        for family in ("acme_raise", "acme_str", "acme_logits", "twice", "broken_family"):
            try:
                build_model({"family": family, "width": 4}, (1, 8, 8), 3)
            except ValueError as exc:
                print(exc)
        print(models._PLUGIN_ERRORS["cnn"])
        print(models._PLUGIN_ERRORS["dupmod"])
        try:
            nascomp.load_experiment({"space": {"arch": {"family": "broken_family"}}})
        except nascomp.ConfigError as exc:
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert len(lines) == 10, result.stdout
    assert lines[0] == "nascomp.spaces.classic" and lines[1] == "nascomp.spaces.cnn", lines
    assert lines[2] == (
        "builder acme_models:raises of model family 'acme_raise' raised RuntimeError: acme "
        "cannot build width=4 (called with fields={'width': 4}, input_shape=(1, 8, 8), "
        "n_classes=3)"
    )
    assert lines[3] == (
        "builder acme_models:nonmodule of model family 'acme_str' returned a str, not a "
        "torch.nn.Module"
    )
    assert lines[4].startswith("the model from builder acme_models:wrong_logits of model family")
    assert "outputs (2, 4) for a batch of 2; expected (2, 3) logits" in lines[4]
    assert lines[5].startswith("model family 'twice' is registered by two plugins")
    assert "acme_dup.build_twice" in lines[5] and "'acme_other'" in lines[5]
    assert lines[6].startswith("unknown model family 'broken_family'; allowed: ")
    assert (
        "entry point 'broken_mod'" in lines[6] and "No module named 'not_installed_xyz'" in lines[6]
    )
    assert "model family 'cnn' is already registered (by nascomp.spaces.cnn." in lines[7]
    assert "acme_models.build cannot take its name" in lines[7]
    assert "model family 'mlp' is already registered (by nascomp.spaces.classic." in lines[8]
    assert lines[9].startswith("space.arch.family: unknown model family 'broken_family'")


def test_a_family_registered_before_nascomps_own_cannot_take_a_built_in_name() -> None:
    """The decorator in the user's code before anything read the registry: refused at once
    (it replaced nascomp's cnn, and the registry lost mlp and lenet5 for the process)."""
    script = textwrap.dedent(
        """
        import nascomp
        from torch import nn
        try:
            @nascomp.register_model("cnn")
            def my_cnn(fields, input_shape, n_classes):
                return nn.Sequential(nn.Flatten(), nn.LazyLinear(n_classes))
        except ValueError as exc:
            print(exc)
        from nascomp.spaces.models import model_names
        print(",".join(model_names()))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    refused, names = result.stdout.splitlines()
    assert refused.startswith("model family 'cnn' is already registered (by nascomp.spaces.cnn.")
    assert "__main__.my_cnn cannot take its name" in refused
    assert {"cnn", "mlp", "lenet5", "lenet300100", "custom"} <= set(names.split(","))


def test_a_family_registered_by_the_decorator_is_searched() -> None:
    """``@nascomp.register_model`` in the user's own code, before the experiment is read."""
    script = textwrap.dedent(
        """
        import nascomp
        from torch import nn

        @nascomp.register_model("acme_api")
        def build(fields, input_shape, n_classes):
            return nn.Sequential(nn.Flatten(), nn.LazyLinear(n_classes))

        space = {"arch": {"family": "acme_api", "depth": {"low": 1, "high": 3}}}
        experiment = nascomp.load_experiment({"space": space})
        print(experiment.space.arch.first_arch())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "{'family': 'acme_api', 'depth': 1}"


def test_timm_family_without_timm_says_how_to_install_it() -> None:
    """In a fresh interpreter where `import timm` fails, as in an environment without it."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["timm"] = None  # makes `import timm` raise ImportError
        from pydantic import ValidationError
        from nascomp.spaces.space import SpaceConfig
        try:
            SpaceConfig.model_validate({"arch": {"family": "timm", "model": "resnet18"}})
        except ValidationError as exc:
            print(exc.errors()[0]["msg"])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert "pip install 'nascomp[timm]'" in result.stdout


def test_a_misspelt_zoo_argument_is_named_even_where_the_constructor_drops_it() -> None:
    """torchvision's MobileNetV3 takes **kwargs and ignores what it does not know."""
    with pytest.raises(UserCodeError, match=r"takes no argument 'width_mul'; it takes: .*"):
        build_model(
            {"family": "torchvision", "model": "mobilenet_v3_small", "width_mul": 0.5},
            (3, 32, 32),
            10,
        )
    build_model(
        {"family": "torchvision", "model": "mobilenet_v3_small", "dropout": 0.1}, (3, 32, 32), 10
    )


def test_arguments_a_builder_hands_on_through_its_kwargs_are_taken() -> None:
    """mobilenet_v3_small(**kwargs) passes width_mult, reduced_tail and dilated to
    _mobilenet_v3_conf, neither the builder's nor MobileNetV3's own parameter: they were
    refused as unknown, so a MobileNetV3's width could not be searched."""
    shape = (3, 32, 32)
    dense = build_model({"family": "torchvision", "model": "mobilenet_v3_small"}, shape, 10)
    slim = build_model(
        {
            "family": "torchvision",
            "model": "mobilenet_v3_small",
            "width_mult": 0.5,
            "reduced_tail": True,
        },
        shape,
        10,
    )
    count = [sum(p.numel() for p in m.parameters()) for m in (dense, slim)]
    assert count == [1_528_106, 171_650]  # torchvision's own counts for these arguments
    # efficientnet_b0 reads dropout from its kwargs itself (kwargs.pop("dropout", 0.2))
    build_model({"family": "torchvision", "model": "efficientnet_b0", "dropout": 0.3}, shape, 10)
    with pytest.raises(UserCodeError) as caught:
        build_model({"family": "torchvision", "model": "mobilenet_v3_small", "x": 1}, shape, 10)
    allowed = str(caught.value).split("it takes: ")[1].split(", ")
    # what the builder fills itself is not offered: giving it raised "multiple values"
    assert {"width_mult", "reduced_tail", "dilated", "dropout"} <= set(allowed)
    assert not {"inverted_residual_setting", "last_channel", "arch"} & set(allowed)


def test_a_zoo_model_built_for_larger_images_is_told_its_own_size_argument() -> None:
    pytest.importorskip("timm")
    with pytest.raises(
        UserCodeError,
        match=r"set data.image_size, e.g. 224, or build it for "
        r"these: its argument img_size \(with a patch_size that divides it\)\)$",
    ):
        build_model({"family": "timm", "model": "vit_tiny_patch16_224"}, (3, 16, 16), 10)
    model = build_model(
        {"family": "timm", "model": "vit_tiny_patch16_224", "img_size": 16, "patch_size": 4},
        (3, 16, 16),
        10,
    )
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 10)


def test_a_function_of_the_running_script_is_refused_with_where_to_put_it() -> None:
    """'__main__:make' imports in the driver (its checks passed) but not in Ray's workers,
    where the search failed with "__main__.__spec__ is None"."""
    with pytest.raises(UserCodeError, match=r"^data.factory: '__main__:make' is defined in the "):
        load_callable("__main__:make", "data.factory")
