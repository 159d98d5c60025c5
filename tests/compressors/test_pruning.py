from __future__ import annotations

import pytest
import torch
from torch import nn

from nascomp.compressors.measure import count_params
from nascomp.compressors.pruning import (
    PruneConfig,
    Pruner,
    PruningError,
    ignored_layers,
    lowest,
    make_pruner,
    scheduled_ratio,
)
from nascomp.compressors.quantization import QuantConfig, prepare_qat

EXAMPLE_1x8x8 = torch.zeros(1, 1, 8, 8)
EXAMPLE_3x8x8 = torch.zeros(1, 3, 8, 8)


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    # 60 + 50 + 10 = 120 prunable weights in three layers of different sizes.
    return nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 2))


def _zero_counts(model: nn.Module) -> list[int]:
    return [int((m.weight == 0).sum()) for m in model if isinstance(m, nn.Linear)]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"method": "magnitude"}, "method"),
        ({"ratio": 1.0}, "ratio"),
        ({"ratio": -0.1}, "ratio"),
        ({"importance": "taylor"}, "importance"),
        ({"scope": "model"}, "scope"),
        ({"analysis_timeout_s": 0}, "analysis_timeout_s"),
        ({"analysis_timeout_s": True}, "analysis_timeout_s"),
        ({"analysis_timeout_s": float("inf")}, "analysis_timeout_s"),
    ],
)
def test_config_validation_names_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        PruneConfig(**kwargs)


def test_cubic_schedule() -> None:
    assert scheduled_ratio(0.8, 0.0) == 0.0
    assert scheduled_ratio(0.8, 0.5) == pytest.approx(0.8 * 0.875)
    assert scheduled_ratio(0.8, 1.0) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="progress"):
        scheduled_ratio(0.8, 1.5)


def test_none_is_a_noop() -> None:
    model = _mlp()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    pruner = make_pruner(model, PruneConfig(), torch.zeros(1, 6))
    assert type(pruner) is Pruner
    assert pruner.update(1.0) is False
    pruner.after_step()
    assert pruner.sparsity == 0.0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_unstructured_global_exact_count_along_schedule() -> None:
    model = _mlp()
    pruner = make_pruner(model, PruneConfig("unstructured", 0.4, "l1", "global"), torch.zeros(1, 6))
    assert pruner.update(0.5) is False  # masks only: the structure stays
    assert sum(_zero_counts(model)) == round(0.4 * 0.875 * 120) == 42
    assert pruner.sparsity == pytest.approx(42 / 120)
    masks_half = {id(w): m.clone() for w, m in pruner.masks.items()}
    pruner.update(1.0)
    assert sum(_zero_counts(model)) == round(0.4 * 120) == 48
    assert pruner.sparsity == pytest.approx(48 / 120)
    # Masks only grow: everything pruned at half progress stays pruned.
    for weight, mask in pruner.masks.items():
        assert not torch.any(mask & ~masks_half[id(weight)])


def test_unstructured_global_ranks_across_layers() -> None:
    model = _mlp()
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[2].weight.fill_(0.01)  # the whole middle layer is the least important
        model[4].weight.fill_(2.0)
        model[4].weight[0, 0] = 0.001
    legacy = PruneConfig("unstructured", 0.45, "l2", emptied="zero")
    make_pruner(model, legacy, torch.zeros(1, 6)).update(1.0)
    # round(0.45 * 120) = 54: the 1 tiny weight of layer 3, then 50 of layer 2, then 3 ties
    # of layer 1 broken by position (the first three).
    assert _zero_counts(model) == [3, 50, 1]
    assert torch.equal((model[0].weight == 0).flatten().nonzero().flatten(), torch.arange(3))


def test_unstructured_pruning_leaves_each_output_channel_its_strongest_weight() -> None:
    """The ranking above emptied the middle layer: a model cut in two, at chance, logged as a
    sound trial. Now each of its 5 output channels keeps one weight (the first of equals), and
    the count stays exact: 5 more ties of layer 1 go instead."""
    model = _mlp()
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[2].weight.fill_(0.01)
        model[2].weight[3, 7] = 0.02  # row 3's strongest
        model[4].weight.fill_(2.0)
        model[4].weight[0, 0] = 0.001
    pruner = make_pruner(model, PruneConfig("unstructured", 0.45, "l2"), torch.zeros(1, 6))
    pruner.update(1.0)
    assert _zero_counts(model) == [8, 45, 1]
    kept = (model[2].weight != 0).nonzero().tolist()
    assert kept == [[0, 0], [1, 0], [2, 0], [3, 7], [4, 0]]
    assert pruner.sparsity == pytest.approx(54 / 120)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_unstructured_pruning_near_one_keeps_every_channel_alive(scope: str) -> None:
    """At 0.99 the target would zero all but one weight; each output channel keeps one, so the
    count falls short by what that needs, along the whole schedule."""
    model = _mlp()
    pruner = make_pruner(model, PruneConfig("unstructured", 0.99, scope=scope), torch.zeros(1, 6))
    for progress in (0.25, 0.5, 1.0):
        pruner.update(progress)
        for layer in (model[0], model[2], model[4]):
            assert bool((layer.weight != 0).any(dim=1).all())
    assert _zero_counts(model) == [50, 45, 8]  # one weight per output channel: 10, 5, 2
    assert pruner.sparsity == pytest.approx(103 / 120)


def test_unstructured_trials_logged_before_the_guard_reproduce_as_they_were() -> None:
    from nascomp.trainers.config import TrialConfig

    flat = {"arch.family": "mlp", "arch.depth": 1, "arch.width": 8}
    flat |= {"prune.method": "unstructured", "prune.ratio": 0.5}
    assert TrialConfig.from_flat(flat).prune.emptied == "zero"
    assert TrialConfig.from_flat({**flat, "prune.emptied": "leave_one"}).prune.emptied == (
        "leave_one"
    )
    with pytest.raises(ValueError, match=r"emptied must be one of .* for method unstructured"):
        PruneConfig("unstructured", 0.5, emptied="whole")
    with pytest.raises(ValueError, match=r"emptied must be one of .* for method structured"):
        PruneConfig("structured", 0.5, emptied="zero")


def test_unstructured_layer_scope_exact_per_layer() -> None:
    model = _mlp()
    make_pruner(model, PruneConfig("unstructured", 0.3, scope="layer"), torch.zeros(1, 6)).update(1)
    # round(0.3 * 60) = 18, round(0.3 * 50) = 15, round(0.3 * 10) = 3; a global ranking of
    # this model would not give the same split.
    assert _zero_counts(model) == [18, 15, 3]


def test_unstructured_layer_scope_keeps_largest() -> None:
    model = nn.Sequential(nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.3, -0.1, -0.4, 0.2]]))
    make_pruner(model, PruneConfig("unstructured", 0.5, scope="layer"), torch.zeros(1, 4)).update(1)
    assert model[0].weight[0].tolist() == pytest.approx([0.3, 0.0, -0.4, 0.0])


def test_sparsity_kept_through_sgd_with_after_step() -> None:
    model = _mlp()
    pruner = make_pruner(model, PruneConfig("unstructured", 0.6), torch.zeros(1, 6))
    pruner.update(1.0)
    zeros_before = [m.weight == 0 for m in model if isinstance(m, nn.Linear)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
    for _ in range(5):
        optimizer.zero_grad()
        model(torch.randn(8, 6)).square().mean().backward()
        optimizer.step()
        pruner.after_step()
    zeros_after = [m.weight == 0 for m in model if isinstance(m, nn.Linear)]
    assert all(torch.equal(a, b) for a, b in zip(zeros_before, zeros_after, strict=True))
    assert sum(int(z.sum()) for z in zeros_after) == round(0.6 * 120)


def test_unstructured_masks_survive_prepare_qat(residual_cnn: nn.Module) -> None:
    pruner = make_pruner(residual_cnn, PruneConfig("unstructured", 0.5), EXAMPLE_1x8x8)
    pruner.update(1.0)
    prepare_qat(residual_cnn, QuantConfig(bits=4))
    optimizer = torch.optim.SGD(residual_cnn.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        optimizer.zero_grad()
        residual_cnn(torch.randn(4, 1, 8, 8)).square().mean().backward()
        optimizer.step()
        pruner.after_step()
    weights = [m.weight for m in residual_cnn.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    n_total = sum(w.numel() for w in weights)
    assert sum(int((w == 0).sum()) for w in weights) == round(0.5 * n_total)
    assert pruner.sparsity == pytest.approx(round(0.5 * n_total) / n_total)


def test_structured_plain_model_exact_parameter_count(plain_model: nn.Module) -> None:
    assert count_params(plain_model) == 1610
    pruner = make_pruner(plain_model, PruneConfig("structured", 0.5, scope="layer"), EXAMPLE_3x8x8)
    # Half progress: target 0.4375; kept channels int(8 * 0.5625) = 4, int(16 * 0.5625) = 9.
    assert pruner.update(0.5) is True
    assert (plain_model[0].out_channels, plain_model[3].out_channels) == (4, 9)
    # Full progress: 4 and 8 channels. conv1 4*27+4, bn 8, conv2 8*36+8, bn 16, fc 10*8+10.
    assert pruner.update(1.0) is True
    assert count_params(plain_model) == 112 + 8 + 296 + 16 + 90 == 522
    assert pruner.sparsity == pytest.approx(1 - (108 + 288 + 80) / (216 + 1152 + 160))
    assert pruner.update(1.0) is False  # already at target: nothing to rebuild
    assert plain_model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_structured_pruning_to_a_high_ratio_leaves_each_group_its_strongest_channel(
    scope: str,
) -> None:
    """torch-pruning skips a group that would lose every channel: at 0.99 this MLP kept all
    of them (layer scope) or lost fewer than at 0.9 (global), labelled 0.99 all the same."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
    )
    with torch.no_grad():
        model[0].weight[5].mul_(100.0)  # the strongest unit of each hidden layer
        model[2].weight[11].mul_(100.0)
    first, second = model[0].weight[5].clone(), model[2].weight[11, 5].clone()
    make_pruner(model, PruneConfig("structured", 0.99, scope=scope), torch.zeros(1, 20)).update(1)
    assert (model[0].out_features, model[2].out_features) == (1, 1)
    assert count_params(model) == (20 + 1) + (1 + 1) + (3 + 3)
    assert torch.equal(model[0].weight[0], first)  # the strong units are the ones kept
    assert torch.equal(model[2].weight[0, 0], second)
    assert model(torch.randn(2, 20)).shape == (2, 3)


def test_structured_pruning_leaves_a_grouped_convolution_one_channel_per_group() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.Conv2d(8, 8, 3, padding=1, groups=4),
        nn.GroupNorm(4, 8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )
    make_pruner(model, PruneConfig("structured", 0.95), EXAMPLE_1x8x8).update(1)
    # before: the groups that would have lost every channel were left whole (8 and 8)
    assert (model[0].out_channels, model[1].out_channels, model[2].num_channels) == (4, 4, 4)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_structured_keeps_channels_of_largest_norm(plain_model: nn.Module) -> None:
    with torch.no_grad():
        for channel in range(8):  # channel c has |w| = (c + 1) / 10 everywhere
            plain_model[0].weight[channel].fill_((channel + 1) / 10)
        plain_model[0].bias.zero_()
        plain_model[3].weight.fill_(0.1)  # the next layer sees every channel alike
    make_pruner(plain_model, PruneConfig("structured", 0.5, "l1", "layer"), EXAMPLE_3x8x8).update(1)
    kept = plain_model[0].weight[:, 0, 0, 0].tolist()
    assert kept == pytest.approx([0.5, 0.6, 0.7, 0.8])


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_structured_residual_cnn(residual_cnn: nn.Module, scope: str) -> None:
    n_before = count_params(residual_cnn)
    pruner = make_pruner(residual_cnn, PruneConfig("structured", 0.5, "l2", scope), EXAMPLE_1x8x8)
    assert pruner.update(1.0) is True
    x = torch.randn(3, 1, 8, 8)
    assert residual_cnn(x).shape == (3, 10)
    assert residual_cnn.head.out_features == 10  # the classifier's outputs are never pruned
    depthwise = residual_cnn.separable.depthwise
    assert depthwise.groups == depthwise.in_channels == depthwise.out_channels
    # The identity adds force the stem and both blocks' conv2 to keep equal widths.
    width = residual_cnn.stem[0].out_channels
    assert all(block.conv2.out_channels == width for block in residual_cnn.blocks)
    assert count_params(residual_cnn) < n_before
    if scope == "layer":
        # Every layer keeps half: width 16 -> 8, separable 32 -> 16. Stem 72 + bn 16; per block
        # 2 * (576 + 16); depthwise 72 + 16; pointwise 128 + 32; head 16 * 10 + 10.
        assert count_params(residual_cnn) == 88 + 2 * 1184 + 88 + 160 + 170 == 2874


def test_structured_then_optimizer_rebuild_trains(residual_cnn: nn.Module) -> None:
    pruner = make_pruner(residual_cnn, PruneConfig("structured", 0.3), EXAMPLE_1x8x8)
    for progress in (0.25, 0.5, 1.0):
        if pruner.update(progress):
            optimizer = torch.optim.SGD(residual_cnn.parameters(), lr=0.05)
        optimizer.zero_grad()
        residual_cnn(torch.randn(4, 1, 8, 8)).logsumexp(dim=1).mean().backward()
        optimizer.step()
        pruner.after_step()
    assert 0.0 < pruner.sparsity < 1.0


# ---------------------------------------------------------------- arbitrary models


def test_ignore_keeps_matching_layers_whole() -> None:
    model = _mlp()
    pruner = make_pruner(model, PruneConfig("unstructured", 0.5, ignore=("0",)), EXAMPLE_1x8x8)
    pruner.update(1.0)
    zeros = _zero_counts(model)
    assert zeros[0] == 0 and sum(zeros) == 30  # half of the 60 weights outside layer "0"


def test_ignore_pattern_that_names_no_layer_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"prune.ignore: 'stem\.\*' names no layer"):
        make_pruner(_mlp(), PruneConfig("unstructured", 0.5, ignore=("stem.*",)), EXAMPLE_1x8x8)
    # The layers it names, each once: all of a few, the first three and last two of many.
    few = nn.Sequential(*(nn.Linear(4, 4) for _ in range(4)))
    with pytest.raises(ValueError, match=r"its layers include 0, 1, 2, 3$"):
        ignored_layers(few, ("x",))
    many = nn.Sequential(*(nn.Linear(4, 4) for _ in range(7)))
    with pytest.raises(ValueError, match=r"its layers include 0, 1, 2, \.\.\., 5, 6$"):
        ignored_layers(many, ("x",))


def test_structured_ignore_keeps_a_layers_channels(plain_model: nn.Module) -> None:
    first = next(name for name, m in plain_model.named_modules() if isinstance(m, nn.Conv2d))
    before = dict(plain_model.named_modules())[first].out_channels
    pruner = make_pruner(
        plain_model, PruneConfig("structured", 0.5, ignore=(first,)), EXAMPLE_3x8x8
    )
    pruner.update(1.0)
    assert dict(plain_model.named_modules())[first].out_channels == before
    assert pruner.sparsity > 0.2  # the other layers were pruned


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0"])
def test_structured_pruning_of_zoo_models_shrinks_and_runs(name: str) -> None:
    """Depthwise and grouped convolutions, squeeze-excitation and residual adds."""
    from torchvision import models

    torch.manual_seed(0)
    model = models.get_model(name, weights=None, num_classes=10).eval()
    example = torch.randn(2, 3, 32, 32)
    n_before = count_params(model)
    pruner = make_pruner(model, PruneConfig("structured", 0.4), example)
    pruner.update(1.0)
    assert count_params(model) < 0.8 * n_before
    assert model(example).shape == (2, 10)
    assert model.classifier[-1].out_features == 10


def test_time_limit_stops_a_pure_python_loop_and_nothing_else() -> None:
    import time

    from nascomp.compressors.compat import torch_pruning as tp_compat

    started = time.perf_counter()
    with pytest.raises(tp_compat.AnalysisTimeout), tp_compat.time_limit(0.2):
        while True:
            pass
    assert 0.2 <= time.perf_counter() - started < 5.0
    with tp_compat.time_limit(0.2):
        total = sum(range(1000))
    time.sleep(0.5)  # past the limit: the block ended first, so nothing is raised
    assert total == 499500
    # One caught inside the block (torch-pruning's tracer has a bare except) is set again
    caught = 0
    with pytest.raises(tp_compat.AnalysisTimeout), tp_compat.time_limit(0.2):
        while True:
            try:
                while True:
                    pass
            except tp_compat.AnalysisTimeout:
                if caught:
                    raise
                caught += 1
    assert caught == 1


def test_the_layer_torch_pruning_worked_on_is_read_from_its_frames() -> None:
    """The innermost of torch-pruning's frames that holds a ``layer`` or ``module``: a
    failed step ("IndexError: index 1 is out of bounds", timm's fastvit_t8) named none."""
    import os

    from nascomp.compressors.compat import torch_pruning as tp_compat

    source = (
        "def importance(layer):\n    raise IndexError('index 1 is out of bounds')\n"
        "def prune(module, inner):\n    importance(inner)\n"
    )
    code = compile(source, os.sep.join(("", "x", "torch_pruning", "fake.py")), "exec")
    namespace: dict = {}
    exec(code, namespace)
    outer, inner = nn.Conv2d(1, 2, 1), nn.Conv2d(2, 2, 1)

    def ours(layer: nn.Module) -> None:  # a frame outside torch-pruning holds one too
        namespace["prune"](outer, inner)

    with pytest.raises(IndexError) as caught:
        ours(nn.Linear(1, 1))
    assert tp_compat.traced_layer(caught.value.__traceback__) is inner
    with pytest.raises(ValueError) as plain:
        raise ValueError("no frame of torch-pruning's")
    assert tp_compat.traced_layer(plain.value.__traceback__) is None


def test_an_analysis_torch_pruning_loops_on_is_stopped_and_names_the_layer() -> None:
    """Four of ReXNet's partial residuals in a row: torch-pruning's group of the last
    block's convolution (the first root it takes) grows for ever, and a trial hung without a
    word (timm's rexnet_100: more than 45 minutes). With the three blocks' convolutions in
    prune.ignore, the model prunes and runs."""
    from tests.spaces.user_models import partial_residual

    example = torch.zeros(2, 1, 8, 8)
    # A process's first pruner pays torch's first-time work (4 s under CI's load): paid here,
    # so that the limit below is spent in the analysis that loops
    make_pruner(partial_residual((1, 8, 8), 10, blocks=2), PruneConfig("structured", 0.5), example)
    model = partial_residual((1, 8, 8), 10)
    config = PruneConfig("structured", 0.5, analysis_timeout_s=3)
    with pytest.raises(PruningError) as caught:
        make_pruner(model, config, example)
    message = str(caught.value)
    assert message.startswith(
        "torch-pruning's analysis of Sequential did not end within prune.analysis_timeout_s "
        "(3 s), at the group of 4.conv.0 (Conv2d(80, 48, kernel_size=(3, 3), stride=(1, 1), "
        "padding=(1, 1))): it loops on some couplings"
    )
    assert "add 4.conv.0 to prune.ignore, give it more time, or use unstructured" in message
    model = partial_residual((1, 8, 8), 10)
    ignored = PruneConfig("structured", 0.5, ignore=("2.conv.0", "3.conv.0", "4.conv.0"))
    pruner = make_pruner(model, ignored, example)
    before = count_params(model)
    pruner.update(1.0)
    assert count_params(model) < before and model(example).shape == (2, 10)


def test_untraceable_model_is_a_pruning_error_with_the_reason() -> None:
    """torchvision's ShuffleNetV2 shuffles channels by reshapes torch-pruning cannot follow."""
    from torchvision import models

    from nascomp.compressors.pruning import PruningError

    model = models.get_model("shufflenet_v2_x0_5", weights=None, num_classes=10)
    with pytest.raises(PruningError, match="torch-pruning cannot trace ShuffleNetV2"):
        make_pruner(model, PruneConfig("structured", 0.5), torch.zeros(2, 3, 32, 32))


def test_a_pruned_model_that_no_longer_runs_is_named_at_once() -> None:
    from nascomp.compressors.pruning import PruningError

    class HardCodedWidth(nn.Module):
        """Reshapes by a channel count written in its code, which pruning cannot change."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.fc = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.fc(y.reshape(y.shape[0], 8, -1).mean(dim=2))

    pruner = make_pruner(HardCodedWidth(), PruneConfig("structured", 0.5), EXAMPLE_1x8x8)
    with pytest.raises(PruningError, match=r"HardCodedWidth no longer runs at fc \(Linear\("):
        pruner.update(1.0)


def test_a_pruned_model_that_no_longer_runs_names_the_layer_that_fails() -> None:
    """A grouped convolution beside a depthwise branch on one stem (a helper's sweep): pruned,
    the grouped one got 6 input channels for groups=4, and the message named no layer."""
    from nascomp.compressors.pruning import PruningError, failing_layer

    class Branches(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(1, 8, 3, padding=1)
            self.grouped = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=4))
            self.fc = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.grouped(self.stem(x)).mean(dim=(2, 3)))

    model = Branches().eval()
    assert failing_layer(model, EXAMPLE_1x8x8) is None
    with torch.no_grad():  # what a missed coupling leaves: 6 channels into groups=4
        model.stem = nn.Conv2d(1, 6, 3, padding=1)
    assert failing_layer(model, EXAMPLE_1x8x8) == "grouped.0"
    pruner = make_pruner(Branches(), PruneConfig("structured", 0.5), EXAMPLE_1x8x8)
    pruner.model.stem = nn.Conv2d(1, 6, 3, padding=1)
    with pytest.raises(PruningError, match=r"no longer runs at grouped\.0 \(Conv2d\(8, 8, "):
        pruner._check_runs()


def test_structured_pruning_of_attention_keeps_the_width_a_multiple_of_the_heads() -> None:
    """A ViT-style encoder: pruned to 0.33 without being told the heads, its 32-wide embedding
    lost channels one by one (22 left, 4 heads) and the model no longer ran."""

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.embed = nn.Conv2d(1, 32, 4, 4)
            self.pos = nn.Parameter(torch.zeros(1, 4, 32))
            layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = nn.Linear(32, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens = self.embed(x).flatten(2).transpose(1, 2) + self.pos
            return self.head(self.encoder(tokens).mean(1))

    model = Encoder().eval()
    n_before = count_params(model)
    example = torch.randn(2, 1, 8, 8)
    pruner = make_pruner(model, PruneConfig("structured", 0.33), example)
    pruner.update(1.0)
    assert model(example).shape == (2, 10)
    assert count_params(model) < 0.9 * n_before
    for attention in (m for m in model.modules() if isinstance(m, nn.MultiheadAttention)):
        assert attention.embed_dim % attention.num_heads == 0
    _round_trip(model, Encoder(), example)


def _round_trip(model: nn.Module, fresh: nn.Module, example: torch.Tensor) -> None:
    """The pruned model's skeleton (channel counts and free tensors' shapes) rebuilt on a
    freshly built model, filled from the artifact: the same outputs, bit for bit."""
    import tempfile
    from pathlib import Path

    from nascomp.compressors.export import (
        layer_shapes,
        load_compressed,
        reshape_layers,
        save_compressed,
    )
    from nascomp.compressors.shapes import free_tensor_shapes, reshape_free_tensors

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.nascomp"
        save_compressed(model, path)
        reshape_layers(fresh, layer_shapes(model))
        reshape_free_tensors(fresh, free_tensor_shapes(model))
        load_compressed(path, fresh)
    assert torch.equal(fresh.eval()(example), model.eval()(example))


def test_a_timm_vision_transformer_prunes_its_width_and_rebuilds_from_its_skeleton() -> None:
    """timm's attention packs q, k and v in one Linear and reads head_dim in its forward; the
    pruned width also shrinks the position embedding, the class token and every LayerNorm,
    which no Conv2d / Linear / BatchNorm count describes."""
    timm = pytest.importorskip("timm")

    def build() -> nn.Module:
        torch.manual_seed(0)
        return timm.create_model(
            "vit_tiny_patch16_224", img_size=16, patch_size=4, depth=2, in_chans=1, num_classes=5
        ).eval()

    model, example = build(), torch.randn(2, 1, 16, 16)
    n_before = count_params(model)
    pruner = make_pruner(model, PruneConfig("structured", 0.3), example)
    pruner.update(1.0)
    assert model(example).shape == (2, 5)
    assert count_params(model) < 0.8 * n_before
    assert model.pos_embed.shape[-1] < 192 and model.blocks[0].norm1.normalized_shape[0] < 192
    for attention in (block.attn for block in model.blocks):
        assert attention.head_dim * attention.num_heads * 3 == attention.qkv.out_features
    _round_trip(model, build(), example)


def test_recurrent_layers_stay_whole_and_the_rest_is_pruned() -> None:
    """torch-pruning's pruning of an LSTM's units raised IndexError: the trial failed."""

    class Recurrent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.encode = nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Linear(32, 16))
            self.lstm = nn.LSTM(16, 24, batch_first=True)
            self.head = nn.Linear(24, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.lstm(self.encode(x))
            return self.head(out[:, -1])

    model, example = Recurrent().eval(), torch.randn(2, 10, 3)
    pruner = make_pruner(model, PruneConfig("structured", 0.5), example)
    pruner.update(1.0)
    assert model(example).shape == (2, 4)
    assert (model.encode[0].out_features, model.encode[2].out_features) == (16, 8)
    # its own units whole; its inputs follow the layer before it
    assert (model.lstm.input_size, model.lstm.hidden_size) == (8, 24)
    _round_trip(model, Recurrent(), example)


def test_a_gru_after_a_prunable_layer_is_refused_with_what_to_use() -> None:
    """torch-pruning 1.6 knows nn.LSTM alone: a GRU's weights are unknown parameters to it,
    ignored or not, and its tracer raises IndexError. The reason says what works instead."""
    from nascomp.compressors.pruning import PruningError

    class Gated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj, self.gru = nn.Linear(3, 16), nn.GRU(16, 16, batch_first=True)
            self.head = nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.gru(self.proj(x))
            return self.head(out[:, -1])

    with pytest.raises(PruningError) as caught:
        make_pruner(Gated(), PruneConfig("structured", 0.5), torch.randn(2, 10, 3))
    message = str(caught.value)
    assert message.startswith("torch-pruning cannot trace Gated: IndexError")
    assert message.endswith("(torch-pruning traces no GRU: use unstructured pruning)")
    make_pruner(Gated(), PruneConfig("unstructured", 0.5), torch.randn(2, 10, 3)).update(1.0)


@pytest.mark.parametrize("recurrent", [nn.GRU, nn.LSTM])
def test_a_model_with_no_channel_to_remove_is_refused_not_left_unpruned(recurrent: type) -> None:
    """Embedding -> GRU or LSTM -> the classifier: the embedding's width is the recurrent
    layer's input, which keeps its width, and the classifier keeps the classes. The trial
    used to run unpruned under a "structured" label; it now fails, saying what to use."""
    from nascomp.compressors.pruning import PruningError

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(17, 16)
            self.rnn = recurrent(16, 32, batch_first=True)
            self.head = nn.Linear(32, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.rnn(self.embed(x))
            return self.head(out[:, -1])

    ids = torch.randint(0, 17, (2, 10))
    with pytest.raises(PruningError, match=r"finds no channel it may remove in Tokens: .*unstr"):
        make_pruner(Tokens(), PruneConfig("structured", 0.5), ids)
    make_pruner(Tokens(), PruneConfig("structured", 0.0), ids)  # nothing asked, nothing refused


@pytest.mark.parametrize(
    ("layer", "kept"),
    [
        (nn.GRU(16, 16, batch_first=True), "GRU keeps its units and inputs"),
        (nn.MultiheadAttention(16, 2, batch_first=True), "MultiheadAttention keeps its embedding"),
    ],
    ids=["GRU", "attention"],
)
def test_the_refusal_names_what_in_the_model_keeps_its_width(layer: nn.Module, kept: str) -> None:
    """The hint named LSTMs, GRUs and RNNs to a model of attention alone (a helper's sweep):
    it names what the model holds."""
    from nascomp.compressors.pruning import PruningError

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(17, 16)
            self.mix = layer
            self.head = nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.embed(x)
            out = self.mix(h, h, h) if isinstance(self.mix, nn.MultiheadAttention) else self.mix(h)
            return self.head(out[0][:, -1])

    with pytest.raises(PruningError) as caught:
        make_pruner(Tokens(), PruneConfig("structured", 0.5), torch.randint(0, 17, (2, 10)))
    message = str(caught.value)
    assert f"keeps its width (here: {kept}" in message, message
    assert message.endswith("); use unstructured pruning")
    assert ("LSTM" in message) is isinstance(layer, nn.LSTM)


def _all_convolutional(n_classes: int = 10) -> nn.Module:
    """A network-in-network head: the classes are a 1x1 convolution's channels, pooled."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, n_classes, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def test_a_convolution_that_computes_the_classes_keeps_them() -> None:
    """The classes leave through the last layer the forward pass runs, a Linear or not: a
    1x1 convolution head lost its outputs ("Target 8 is out of bounds" in the next epoch)."""
    from nascomp.compressors.pruning import output_layer

    torch.manual_seed(0)
    model = _all_convolutional()
    example = torch.randn(2, 1, 8, 8)
    head, shape = output_layer(model, example)
    assert head is model[2] and shape == (2, 10)
    pruner = make_pruner(model, PruneConfig("structured", 0.5), example)
    pruner.update(1.0)
    assert model[0].out_channels == 8 and model[2].out_channels == 10
    assert model(example).shape == (2, 10)


def test_squeezenet_prunes_and_keeps_its_classes() -> None:
    from torchvision import models

    torch.manual_seed(0)
    model = models.get_model("squeezenet1_0", weights=None, num_classes=10).eval()
    example = torch.randn(2, 3, 32, 32)
    n_before = count_params(model)
    make_pruner(model, PruneConfig("structured", 0.4), example).update(1.0)
    assert count_params(model) < 0.8 * n_before
    assert model(example).shape == (2, 10)


def test_pruning_that_changes_the_outputs_is_named_at_once() -> None:
    """Whatever torch-pruning removes, the model's output keeps its shape or the pruner says
    so, before the next epoch fails on it (here columns dropped behind the pruner's back)."""
    from nascomp.compressors.pruning import PruningError

    model = _all_convolutional()
    pruner = make_pruner(model, PruneConfig("structured", 0.5), torch.randn(2, 1, 8, 8))

    class FirstSeven(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :7]

    model[4] = FirstSeven()
    with pytest.raises(PruningError, match=r"output from shape \(2, 10\) to \(2, 7\)"):
        pruner.update(1.0)


class _Functional(nn.Module):
    """Weights used through torch.nn.functional: no Conv or Linear module to prune."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(4, 1, 3, 3))
        self.head = nn.Parameter(torch.randn(3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.conv2d(x, self.kernel, padding=1).mean(dim=(2, 3))
        return torch.nn.functional.linear(x, self.head)


def test_unstructured_pruning_of_a_model_with_no_layer_to_prune_says_so() -> None:
    """torch.cat() of no weights failed such a trial in torch's words; the structured
    pruner's own message advised unstructured pruning."""
    with pytest.raises(PruningError, match=r"^unstructured pruning finds no layer .* _Functional"):
        make_pruner(_Functional(), PruneConfig("unstructured", 0.5), EXAMPLE_1x8x8)
    make_pruner(_Functional(), PruneConfig("unstructured", 0.0), EXAMPLE_1x8x8).update(1.0)


def test_lowest_picks_what_a_stable_sort_picks() -> None:
    """The n lowest scores, ties to the earlier positions, already-pruned weights (-1) first,
    NaN last: the same mask as ``argsort(stable=True)[:n]`` on 2,000 random cases full of
    ties, and for n out of range."""
    generator = torch.Generator().manual_seed(0)
    for case in range(2000):
        size = int(torch.randint(1, 60, (1,), generator=generator))
        scores = torch.randint(0, 6, (size,), generator=generator).float()
        scores[torch.rand(size, generator=generator) < 0.2] = -1.0
        if case % 3 == 0:
            scores[torch.rand(size, generator=generator) < 0.2] = float("nan")
        n = int(torch.randint(-1, size + 2, (1,), generator=generator))
        expected = torch.zeros(size, dtype=torch.bool)
        expected[torch.argsort(scores, stable=True)[: max(n, 0)]] = True
        assert torch.equal(lowest(scores, n), expected), (scores, n)
    assert lowest(torch.tensor([3.0, 1.0, 1.0, 2.0]), 2).tolist() == [False, True, True, False]
    assert lowest(torch.tensor([1.0, 1.0, 1.0]), 2).tolist() == [True, True, False]
