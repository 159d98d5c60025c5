"""What the pre-flight notes before a search starts, in one line each, without stopping it.

Weights that nascomp does not quantize (a bare parameter, a transposed convolution) stay
float32 at every bit-width a trial draws: a student made mostly of them
gets a note with exact counts. A validation split too small to rank trials gets one too."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from nascomp.compressors.layers import layer_kinds
from nascomp.compressors.pruning import PruneConfig, make_pruner
from nascomp.compressors.size import float_weights
from nascomp.search.errors import ConfigError
from nascomp.search.experiment import load_experiment, validate_experiment
from nascomp.search.preflight import (
    check_user_code,
    float_weights_note,
    small_validation_note,
    unpruned_weights_note,
    untrained_classes_note,
    unvalidated_classes_note,
)

MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    class Rows(nn.Module):
        def __init__(self, width, n_classes, hidden):
            super().__init__()
            self.rnn = nn.GRU(width, hidden, batch_first=True)
            self.head = nn.Linear(hidden, n_classes)

        def forward(self, x):  # (N, 1, H, W): the rows of an image as time steps
            out, _ = self.rnn(x[:, 0])
            return self.head(out[:, -1])

    def gru(input_shape, n_classes, hidden=8):
        return Rows(input_shape[-1], n_classes, hidden)

    class Attends(nn.Module):
        def __init__(self, width, n_classes):
            super().__init__()
            self.attn = nn.MultiheadAttention(width, 2, batch_first=True)
            self.head = nn.Linear(width, n_classes)

        def forward(self, x):  # (N, 1, H, W): the rows of an image as tokens
            rows = x[:, 0]
            return self.head(self.attn(rows, rows, rows)[0].mean(1))

    def attention(input_shape, n_classes):
        return Attends(input_shape[-1], n_classes)

    class Codebook(nn.Module):
        def __init__(self, width, n_classes):
            super().__init__()
            self.codes = nn.Parameter(torch.randn(16, width))
            self.head = nn.Linear(16, n_classes)

        def forward(self, x):
            return self.head(x.flatten(1) @ self.codes.t())

    def codebook(input_shape, n_classes):
        return Codebook(input_shape[0] * input_shape[1] * input_shape[2], n_classes)

    def few(n=60):
        x = torch.randn(n, 8, generator=torch.Generator().manual_seed(0))
        return TensorDataset(x, (x[:, 0] > 0).long()), None

    def counted_from_one(n=300):
        x = torch.randn(n, 8, generator=torch.Generator().manual_seed(0))
        return TensorDataset(x, 1 + (x[:, 0] > 0).long() + (x[:, 1] > 0).long()), None

    def features(input_shape, n_classes):
        return nn.Linear(input_shape[0], n_classes)

    def conv(input_shape, n_classes):
        return nn.Sequential(nn.Conv2d(input_shape[0], 4, 3), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(4, n_classes))
    """
)


class _Tokens(nn.Module):
    def __init__(self, position: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.position = nn.Parameter(torch.zeros(position, 8))
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.up = nn.ConvTranspose1d(8, 8, 2)
        self.head = nn.Linear(8, 2)


def test_the_weights_outside_quantized_layers_are_counted_by_name() -> None:
    model = _Tokens(position=4)
    # attention (its input projection, and its output projection, a Linear) is quantized
    assert float_weights(model) == {"position": 32, "up.weight": 8 * 8 * 2}
    assert float_weights(nn.Sequential(nn.Conv1d(2, 3, 3), nn.BatchNorm1d(3))) == {}
    total = sum(p.numel() for p in model.parameters())
    assert total == 80 + 32 + (192 + 24 + 64 + 8) + (128 + 8) + 18
    note = float_weights_note(model)
    assert note == (
        f"space.arch: 160 of {total} parameters (29%) are weights outside the layers nascomp "
        "quantizes (Conv1d / Conv2d / Conv3d / Linear / Embedding / LSTM / GRU / RNN / "
        "MultiheadAttention): up (ConvTranspose1d) 128; position (_Tokens) 32; they stay "
        "float32 at every bit-width, unstructured pruning leaves them whole, and they count at "
        "32 bits in size_bytes"
    )


def test_the_weights_unstructured_pruning_leaves_whole_are_counted_by_layer() -> None:
    """A GRU model asked for unstructured 0.6 came out 3% zeros: its ratio is of the
    convolution and Linear weights alone, which the trial's label did not say."""
    model = nn.Sequential(nn.Embedding(10, 4), nn.GRU(4, 8), nn.Linear(8, 2))
    total = sum(p.numel() for p in model.parameters())
    assert total == 40 + (3 * 8 * 4 + 3 * 8 * 8 + 2 * 24) + 18
    assert unpruned_weights_note(model) == (
        f"space.prune: unstructured pruning zeroes convolution and Linear weights alone; 328 "
        f"of {total} parameters (83%) are in layers it leaves whole: 1 (GRU) 288; 0 "
        "(Embedding) 40 (quantized all the same); a trial's prune.ratio is of the rest"
    )
    assert unpruned_weights_note(nn.Sequential(nn.Conv1d(2, 3, 3), nn.Linear(3, 2))) is None
    # quant.layers: conv2d_linear leaves the table and the GRU float (the notes said "all")
    with layer_kinds("conv2d_linear"):
        assert unpruned_weights_note(model) is None
        assert float_weights_note(model) == (
            f"space.arch: 328 of {total} parameters (83%) are weights outside the layers "
            "nascomp quantizes (Conv2d / Linear): 1 (GRU) 288; 0 (Embedding) 40; they stay "
            "float32 at every bit-width, unstructured pruning leaves them whole, and they count "
            "at 32 bits in size_bytes"
        )


def test_a_small_share_gets_no_note() -> None:
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 2))
    model.register_parameter("offset", nn.Parameter(torch.zeros(8, 8)))  # 64 of 4,354: 1.5%
    assert float_weights(model) == {"offset": 64}
    assert float_weights_note(model) is None


@pytest.mark.parametrize(
    ("builder", "noted"),
    [("codebook", True), ("attention", False), ("gru", False), ("conv", False)],
)
def test_the_search_notes_a_student_made_mostly_of_float_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, builder: str, noted: bool
) -> None:
    name = f"rows_{tmp_path.name}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    arch = {"family": "custom", "builder": f"{name}:{builder}"}
    # structured pruning finds no channel these may lose (the pre-flight refuses it)
    prune = {"method": ["none", "unstructured"]}
    space = {"arch": arch, "prune": prune, "distill": {"enabled": [False]}}
    notes: list[str] = []
    checked = check_user_code(validate_experiment({"space": space}), notes)
    assert checked.space.arch.family == "custom"
    # digits are 8x8: a codebook of 16 rows of 64 pixels, and a Linear head of 16 * 10 + 10
    expected = [
        "space.arch: 1,024 of 1,194 parameters (86%) are weights outside the layers nascomp "
        "quantizes (Conv1d / Conv2d / Conv3d / Linear / Embedding / LSTM / GRU / RNN / "
        "MultiheadAttention): codes (Codebook) 1,024; they stay float32 at every bit-width, "
        "unstructured pruning leaves them whole, and they count at 32 bits in size_bytes"
    ]
    assert [n for n in notes if n.startswith("space.arch")] == (expected if noted else [])
    # the default space prunes unstructured too: a GRU's, attention's weights are named
    pruned_whole = [n for n in notes if n.startswith("space.prune: unstructured pruning")]
    assert len(pruned_whole) == (builder in ("attention", "gru"))
    if builder == "gru":  # with quant.layers conv2d_linear its weights stay float: said so
        space["quant"] = {"layers": "conv2d_linear"}
        notes = []
        check_user_code(validate_experiment({"space": space}), notes)
        assert any("quantizes (Conv2d / Linear): " in n for n in notes), notes
        assert not any(n.startswith("space.prune: unstructured pruning") for n in notes)


def test_float_weights_of_another_point_of_the_space_are_noted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first builder holds no float weights, the second mostly: the note names the leaf
    and value that brings them, as the pre-flight builds each leaf's other values."""
    name = f"pair_{tmp_path.name}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    arch = {"family": "custom", "builder": [f"{name}:gru", f"{name}:codebook"]}
    notes: list[str] = []
    check_user_code(
        validate_experiment({"space": {"arch": arch, "distill": {"enabled": [False]}}}), notes
    )
    # the first builder's GRU is noted for unstructured pruning (the default space's)
    assert len(notes) == 2 and notes[0].startswith("space.prune: unstructured pruning")
    assert notes[1].startswith(
        f"space.arch.builder: '{name}:codebook': 1,024 of 1,194 parameters (86%) are weights "
        "outside the layers nascomp quantizes"
    )


def test_a_small_validation_split_is_noted_with_its_step() -> None:
    assert small_validation_note(100, 0.1) is None
    assert small_validation_note(8, 0.1) == (
        "data: the validation split holds 8 samples (val_fraction 0.1), so val_accuracy moves "
        "in steps of 12.5% and close models rank by chance (raise data.val_fraction, or bring "
        "more data)"
    )
    assert "holds 1 sample (" in (small_validation_note(1, 0.25) or "")
    # Near val_fraction's limit (below 0.5) raising it is no way out
    assert (small_validation_note(40, 0.49) or "").endswith(
        "(bring more data; data.val_fraction stays below 0.5)"
    )


def test_notes_on_an_image_folders_own_validation_split_name_its_folder(
    tmp_path: Path,
) -> None:
    """With a val/ folder, val_fraction draws nothing: the notes told the user to raise it."""
    from PIL import Image

    for split, classes, count in (("train", "ab", 12), ("val", "a", 3), ("test", "ab", 2)):
        for label in classes:
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                shade = 40 * i + (120 if label == "b" else 0)
                Image.new("L", (8, 8), shade % 256).save(folder / f"{i}.png")
    data = {"name": "imagefolder", "root": str(tmp_path)}
    notes: list[str] = []
    check_user_code(validate_experiment({"data": data}), notes)
    assert notes[:2] == [
        "data: the validation split holds 3 samples (the val/ folder), so val_accuracy moves in "
        "steps of 33.3% and close models rank by chance (bring more images to val/)",
        "data: 1 of 2 classes have no sample in the validation split (class b): val_accuracy "
        "and val_balanced_accuracy, which rank the trials, cannot see them (a model that never "
        "answers them can score 1.0); give them images in the val/ folder",
    ]


def test_the_search_notes_the_users_small_validation_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"few_{tmp_path.name}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    data = {"name": "custom", "factory": f"{name}:few"}
    arch = {"family": "custom", "builder": f"{name}:features"}
    space = {"arch": arch, "prune": {"method": ["none"]}, "distill": {"enabled": [False]}}
    notes: list[str] = []
    check_user_code(validate_experiment({"data": data, "space": space}), notes)
    # 60 samples: 12 held out for test (20%), 10% of the other 48 for validation
    assert notes == [small_validation_note(5, 0.1)]


def test_classes_without_a_training_sample_are_noted() -> None:
    labels = torch.tensor([1, 2, 3, 1, 2, 3])
    assert untrained_classes_note(labels, 3 + 1) == (
        "data: 1 of 4 classes have no sample in the training split (label 0): no model can "
        "learn them; labels start at 1: give 0..K-1"
    )
    assert untrained_classes_note(labels, 4, ("bird", "cat", "dog", "frog")) == (
        "data: 1 of 4 classes have no sample in the training split (class bird): no model "
        "can learn them; give each class more samples"
    )
    assert untrained_classes_note(torch.tensor([0, 1, 2, 3]), 4) is None
    # labels that skip values: "give each class more samples" was the wrong fix (a helper's
    # sweep); a label far past the others is refused when the data load
    assert untrained_classes_note(torch.tensor([0, 5, 10, 0, 5, 10]), 11) == (
        "data: 8 of 11 classes have no sample in the training split (label 1, 2, 3, 4, 6 and 3 "
        "more): no model can learn them; labels that skip values are no classes: map the 3 "
        "that occur to 0..2; else give each class more samples"
    )


def test_classes_without_a_validation_sample_are_noted() -> None:
    """A rare class held out of validation: a majority-class model scored val_balanced_accuracy
    1.0 there. A class no split holds is the training note's alone."""
    trained = torch.tensor([0, 0, 0, 1, 2])
    assert unvalidated_classes_note(torch.tensor([0, 0, 1]), trained, 3, ("a", "b", "nine")) == (
        "data: 1 of 3 classes have no sample in the validation split (class nine): "
        "val_accuracy and val_balanced_accuracy, which rank the trials, cannot see them (a "
        "model that never answers them can score 1.0); give them more samples or raise "
        "data.val_fraction"
    )
    assert unvalidated_classes_note(torch.tensor([0, 1, 2]), trained, 3) is None
    assert unvalidated_classes_note(torch.tensor([1, 2]), torch.tensor([1, 2]), 3) is None


def test_the_search_notes_labels_that_start_at_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Labels 1..3 and no ``classes``: 4 classes, the first never seen, trained for nothing."""
    name = f"from_one_{tmp_path.name}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    data = {"name": "custom", "factory": f"{name}:counted_from_one"}
    arch = {"family": "custom", "builder": f"{name}:features"}
    space = {"arch": arch, "prune": {"method": ["none"]}, "distill": {"enabled": [False]}}
    notes: list[str] = []
    check_user_code(validate_experiment({"data": data, "space": space}), notes)
    assert notes[-1] == (
        "data: 1 of 4 classes have no sample in the training split (label 0): no model can "
        "learn them; labels start at 1: give 0..K-1"
    )


def test_an_image_folder_is_the_users_data_and_gets_the_notes(tmp_path: Path) -> None:
    """Read before the search like a custom dataset: its small validation split is noted."""
    from PIL import Image

    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for index in range(12):
            Image.new("L", (8, 8), index * 20).save(tmp_path / name / f"{index}.png")
    notes: list[str] = []
    check_user_code(
        validate_experiment({"data": {"name": "imagefolder", "root": str(tmp_path)}}), notes
    )
    assert notes == [
        small_validation_note(2, 0.1),
        f"data: imagefolder: {tmp_path} is not split into train/ and test/ folders, so a "
        f"stratified 20% of {tmp_path} is the test split, and data.val_fraction of the rest the "
        "validation split",
    ]


def test_values_a_builder_declines_as_infeasible_pass_the_checks() -> None:
    # tests.spaces.user_models:picky raises InfeasibleArchitecture above width 16: the
    # documented way to skip a value, so the pre-flight builds on and the search may start.
    arch = {"family": "custom", "builder": "tests.spaces.user_models:picky", "width": [8, 32]}
    experiment = validate_experiment({"space": {"arch": arch, "distill": {"enabled": [False]}}})
    assert check_user_code(experiment) is experiment
    # Any other error at that value stops the search: test_user_code_cli.py.


def test_rows_without_a_named_teacher_are_taught_by_an_mlp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default teacher, a CNN, cannot take (F,) rows: an MLP teaches them, with a note. A
    teacher the experiment names is kept, and one that takes images only is refused."""
    name = f"rows_{tmp_path.name}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    data = {"name": "custom", "factory": f"{name}:counted_from_one", "options": {"n": 600}}
    space = {"arch": {"family": "mlp"}}
    notes: list[str] = []
    checked = check_user_code(validate_experiment({"data": data, "space": space}), notes)
    assert checked.teacher.arch == {"family": "mlp", "hidden": [256, 128]}
    assert notes[-1] == (
        "teacher.arch: the default teacher is a CNN for images; inputs of shape (8,) are taught "
        "by an MLP (hidden layers 256-128). Set teacher.arch to choose"
    )
    named = {"arch": {"family": "mlp", "hidden": [16]}}
    kept = check_user_code(validate_experiment({"data": data, "space": space, "teacher": named}))
    assert kept.teacher.arch == {"family": "mlp", "hidden": [16]}
    cnn = {"arch": {"family": "cnn"}}
    with pytest.raises(ConfigError, match=r"^teacher.arch: model family 'cnn' takes \(C, H, W\)"):
        check_user_code(validate_experiment({"data": data, "space": space, "teacher": cnn}))
    # Without distillation there is no teacher to replace.
    off = {**space, "distill": {"enabled": [False]}}
    assert check_user_code(validate_experiment({"data": data, "space": off})).teacher.arch == (
        validate_experiment({}).teacher.arch
    )


def test_rows_without_a_named_space_search_an_mlp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default space, CNNs, cannot take (F,) rows: the MLP space is searched, with a note;
    a family the experiment names is kept (and refused when it takes images only)."""
    name = f"rows_{tmp_path.name}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    data = {"name": "custom", "factory": f"{name}:counted_from_one", "options": {"n": 600}}
    notes: list[str] = []
    checked = check_user_code(validate_experiment({"data": data}), notes)
    assert checked.space.arch.family == "mlp"
    assert checked.space.arch.first_arch()["family"] == "mlp"
    assert notes[-2] == (
        "space.arch: the default space searches CNNs for images; inputs of shape (8,) search "
        "an MLP (depth [1, 2, 3] x width [32, 64, 128, 256]). Set space.arch to choose"
    )
    assert checked.space.prune == validate_experiment({}).space.prune  # the rest as it was
    cnn = {"arch": {"family": "cnn"}}
    with pytest.raises(ConfigError, match=r"^space.arch: model family 'cnn' takes \(C, H, W\)"):
        check_user_code(validate_experiment({"data": data, "space": cnn}))


def test_starting_weights_cut_short_are_noted_and_nan_ones_refused(tmp_path: Path) -> None:
    """A file without one of the model's weights trained that layer from scratch with no
    word (val 0.05 against 0.97); one holding NaN failed every trial as diverged."""
    from nascomp.spaces.models import build_model

    arch = {"family": "cnn", "n_stages": 2, "blocks_per_stage": 1, "base_channels": 8}
    arch.update(kernel_size=3, block="plain")
    state = build_model(arch, (1, 8, 8), 10).state_dict()
    first = next(name for name, tensor in state.items() if tensor.dim() >= 2)
    torch.save({k: v for k, v in state.items() if k != first}, tmp_path / "short.pt")
    space = {"arch": arch, "distill": {"enabled": [False]}}
    notes: list[str] = []
    experiment = {"space": space, "train": {"init": str(tmp_path / "short.pt")}}
    check_user_code(validate_experiment(experiment), notes)
    assert notes == [
        f"train.init: {tmp_path / 'short.pt'} lacks 1 of space.arch's parameters ({first}): "
        "they start from their initialisation"
    ]
    nan = torch.full((3,), float("nan"))
    torch.save({**state, "unused.weight": nan}, tmp_path / "extra.pt")  # never loaded: fine
    experiment = {"space": space, "train": {"init": str(tmp_path / "extra.pt")}}
    check_user_code(validate_experiment(experiment), [])
    torch.save({**state, first: state[first] * float("nan")}, tmp_path / "nan.pt")
    experiment = {"space": space, "train": {"init": str(tmp_path / "nan.pt")}}
    with pytest.raises(ConfigError) as caught:
        check_user_code(validate_experiment(experiment), [])
    assert str(caught.value) == (
        f"train.init: {tmp_path / 'nan.pt'} holds NaN or infinite values ({first}): every "
        "trial would diverge from them; give a checkpoint of finite weights"
    )


def test_starting_weights_of_another_width_are_refused_or_noted(tmp_path: Path) -> None:
    """``train.init`` of another base width fits only BatchNorm's counters: refused. One of
    fewer stages fits the stem and its first stage, under half the weights: noted."""
    from nascomp.spaces.models import build_model

    arch = {"family": "cnn", "n_stages": 2, "blocks_per_stage": 1, "base_channels": 8}
    arch.update(kernel_size=3, block="plain")
    wide = build_model({**arch, "base_channels": 16}, (1, 8, 8), 10)
    torch.save(wide.state_dict(), tmp_path / "wide.pt")
    space = {"arch": arch, "distill": {"enabled": [False]}}
    with pytest.raises(
        ConfigError,
        match=r"has no weight of the name and shape .* counters or.*"
        r"; train.init_match: slice loads the part both hold$",
    ):
        check_user_code(
            validate_experiment({"space": space, "train": {"init": str(tmp_path / "wide.pt")}})
        )
    shallow = build_model({**arch, "n_stages": 1}, (1, 8, 8), 10)
    torch.save(shallow.state_dict(), tmp_path / "shallow.pt")
    notes: list[str] = []
    experiment = {"space": space, "train": {"init": str(tmp_path / "shallow.pt")}}
    check_user_code(validate_experiment(experiment), notes)
    assert notes[-1].startswith("train.init: 20% of space.arch's weights load from the file (")
    # A width the space also searches that takes none of the file's weight matrices: its
    # trials train from scratch, though labelled "from wide.pt". In either order: with 8
    # first (the first architecture takes none) it was refused, although 16 loads it all.
    for widths in ([16, 8], [8, 16]):
        notes = []
        varied = {**space, "arch": {**arch, "base_channels": widths}}
        experiment = {"space": varied, "train": {"init": str(tmp_path / "wide.pt")}}
        check_user_code(validate_experiment(experiment), notes)
        assert notes == [
            f"train.init: the models of space.arch.base_channels 8 take none of "
            f"{tmp_path}/wide.pt's weight matrices (their shapes differ): those trials train "
            "from scratch; train.init_match: slice loads the part both shapes hold"
        ]
        notes = []
        sliced = {**experiment, "train": {**experiment["train"], "init_match": "slice"}}
        check_user_code(validate_experiment(sliced), notes)
        assert notes == []
    # One width, another than the file's, with init_match: slice: the part both hold loads
    # into every weight (it was refused, as if matched exactly)
    notes = []
    one = {"space": space, "train": {"init": str(tmp_path / "wide.pt"), "init_match": "slice"}}
    check_user_code(validate_experiment(one), notes)
    assert notes == []


FUNCTIONAL = textwrap.dedent(
    """
    import torch
    from torch import nn
    import torch.nn.functional as F

    class Functional(nn.Module):
        def __init__(self, n_inputs, n_classes):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(n_classes, n_inputs) * 0.01)

        def forward(self, x):
            return F.linear(x.flatten(1), self.weight)

    def functional(input_shape, n_classes):
        return Functional(int(torch.tensor(input_shape).prod()), n_classes)

    def linear(input_shape, n_classes):
        n_inputs = int(torch.tensor(input_shape).prod())
        return nn.Sequential(nn.Flatten(), nn.Linear(n_inputs, n_classes))
    """
)


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        (
            {},
            "space.quant.bits: Functional has no layer QAT quantizes (Conv1d / Conv2d / Conv3d / "
            "Linear / Embedding / LSTM / GRU / RNN / MultiheadAttention modules of quant.layers "
            "'all'; a weight used through F.conv2d or F.linear is none of them), so every trial "
            "below 32 bits would fail: give space.quant.bits: [32]",
        ),
        (
            {"quant": {"bits": [32]}},
            "space.prune.method: Functional has no layer unstructured pruning zeroes (Conv1d / "
            "Conv2d / Conv3d / Linear modules outside prune.ignore), so every unstructured "
            "trial would fail: leave unstructured out of space.prune.method",
        ),
        ({"quant": {"bits": [32]}, "prune": {"method": ["none"]}}, None),
        # a list of builders: another may hold the layers, and its trials would work
        ({"arch": {"builder": ["{name}:functional", "{name}:linear"]}}, None),
    ],
)
def test_compression_the_student_cannot_take_is_refused_before_any_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, space: dict, expected: str | None
) -> None:
    """A model whose weights are used through F.linear failed every trial below 32 bits and
    every unstructured one, one after another, each with the same reason."""
    name = f"functional_{tmp_path.name}"
    (tmp_path / f"{name}.py").write_text(FUNCTIONAL)
    monkeypatch.chdir(tmp_path)
    arch = {"family": "custom", "builder": f"{name}:functional"}
    given = space.get("arch", {})
    if "builder" in given:
        arch["builder"] = [b.format(name=name) for b in given["builder"]]
    full = {**space, "arch": arch, "distill": {"enabled": [False]}}
    experiment = validate_experiment({"space": full})
    if expected is None:
        check_user_code(experiment, [])
        return
    with pytest.raises(ConfigError) as caught:
        check_user_code(experiment, [])
    assert str(caught.value) == expected


UNPRUNABLE = textwrap.dedent(
    """
    import torch
    from torch import nn
    import torch.nn.functional as F

    class Tied(nn.Module):
        def __init__(self, channels, n_classes):
            super().__init__()
            self.stem = nn.Conv2d(channels, 16, 3, padding=1)
            self.shared = nn.Conv2d(16, 16, 3, padding=1)
            self.head = nn.Linear(16, n_classes)
            self.register_buffer("scale", torch.full((1, 16, 1, 1), 0.5))  # 16 channels

        def forward(self, x):
            x = F.relu(self.stem(x))
            x = F.relu(self.shared(x)) * self.scale
            x = F.relu(self.shared(x)) + x  # the same convolution twice
            return self.head(x.mean((2, 3)))

    def tied(input_shape, n_classes):
        return Tied(input_shape[0], n_classes)

    def plain(input_shape, n_classes):
        return nn.Sequential(
            nn.Conv2d(input_shape[0], 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, n_classes),
        )
    """
)


def test_a_space_of_several_models_is_not_refused_for_its_first() -> None:
    """n_stages [1, 2] with the first stage kept whole: the one-stage models have no channel
    structured pruning may remove, the two-stage ones do; the space was refused for the
    first architecture ([2, 1] was not)."""
    prune = {"method": ["structured"], "ignore": ["stem*", "stages.0.*"]}
    fixed = {"family": "cnn", "blocks_per_stage": 1, "base_channels": 8, "kernel_size": 3}
    fixed["block"] = "plain"
    for stages in ([1, 2], [2, 1], 2):
        space = {"arch": {**fixed, "n_stages": stages}, "prune": prune}
        check_user_code(validate_experiment({"space": space}), [])
    one = {"arch": {**fixed, "n_stages": 1}, "prune": prune}
    with pytest.raises(ConfigError, match="finds no channel it may remove in CNN"):
        check_user_code(validate_experiment({"space": one}))


RUNS = (
    "after structured pruning Tied no longer runs in its own forward, between its layers (a "
    "coupling of layers torch-pruning does not follow): RuntimeError: The size of tensor a"
)
NO_CHANNEL = "structured pruning finds no channel it may remove in Tied"


@pytest.mark.parametrize(
    ("builder", "prune", "refused"),
    [
        ("tied", {"method": ["structured"], "ratio": {"low": 0.2, "high": 0.6}}, RUNS),
        ("tied", {"method": ["none", "structured"], "ratio": [0.0, 0.5]}, RUNS),
        ("tied", {"method": ["none", "unstructured"]}, None),
        # both convolutions kept whole: none is left to prune
        ("tied", {"method": ["structured"], "ignore": ["stem", "shared"]}, NO_CHANNEL),
        ("plain", {"method": ["structured"]}, None),
    ],
)
def test_structured_pruning_the_student_cannot_take_is_refused_before_any_trial(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    builder: str,
    prune: dict,
    refused: str | None,
) -> None:
    """A convolution called twice in one forward: torch-pruning removes its output channels
    for one call and its input channels for the other, and every structured trial failed with
    "no longer runs", one after another."""
    name = f"unprunable_{tmp_path.name}"
    (tmp_path / f"{name}.py").write_text(UNPRUNABLE)
    monkeypatch.chdir(tmp_path)
    space = {
        "arch": {"family": "custom", "builder": f"{name}:{builder}"},
        "prune": prune,
        "quant": {"bits": [8]},
        "distill": {"enabled": [False]},
    }
    experiment = validate_experiment({"data": {"name": "digits"}, "space": space})
    if not refused:
        check_user_code(experiment, [])
        return
    with pytest.raises(ConfigError) as caught:
        check_user_code(experiment, [])
    message = str(caught.value)
    assert message.startswith(f"space.prune.method: every structured trial would fail: {refused}")
    assert "\n" not in message


def test_a_model_torch_pruning_loops_on_is_refused_before_any_trial(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ReXNet's partial residuals: torch-pruning's analysis never ends, and the pre-flight
    (then every structured trial) hung without a word. Stopped at space.prune.
    analysis_timeout_s, which structured trials' configs carry when it is set."""
    space = {
        "arch": {"family": "custom", "builder": "tests.spaces.user_models:partial_residual"},
        "prune": {"method": ["none", "structured"], "analysis_timeout_s": 2},
        "quant": {"bits": [8]},
        "distill": {"enabled": [False]},
    }
    experiment = validate_experiment({"data": {"name": "digits"}, "space": space})
    # A process's first pruner pays torch's first-time work (4 s under CI's load): paid here,
    # so that the limit is spent in the analysis that loops
    from tests.spaces.user_models import partial_residual

    example = torch.zeros(2, 1, 8, 8)
    make_pruner(partial_residual((1, 8, 8), 10, blocks=2), PruneConfig("structured", 0.5), example)
    monkeypatch.setattr("nascomp.spaces.userfn.SLOW_CALL_S", 0.5)  # the wait is named
    with pytest.raises(ConfigError) as caught:
        check_user_code(experiment, [])
    assert re.search(  # among others a busy machine's slowness may bring (the forward's)
        r"^nascomp: still in the check that structured pruning runs on the model \(torch-pruning's "
        r"analysis; space\.prune\.analysis_timeout_s: 2 s\), called \d+ s ago \(Ctrl-C stops\)\n",
        capsys.readouterr().err,
        re.MULTILINE,
    )
    message = str(caught.value)
    assert message.startswith(
        "space.prune.method: every structured trial would fail: torch-pruning's analysis of "
        "Sequential did not end within prune.analysis_timeout_s (2 s), at the group of 4.conv.0 ("
    )
    assert message.endswith(
        ": add 4.conv.0 to prune.ignore, give it more time, or use unstructured pruning"
    )
    (timeout,) = [p for p in experiment.space.params() if p.name == "prune.analysis_timeout_s"]
    assert timeout.choices == (2.0,) and timeout.condition == ("prune.method", ("structured",))
    unset = validate_experiment({"space": {"prune": {"method": ["structured"]}}})
    assert "prune.analysis_timeout_s" not in {p.name for p in unset.space.params()}
    for bad in (0, -1, "soon", float("inf")):
        with pytest.raises(ConfigError, match=r"space\.prune\.analysis_timeout_s"):
            validate_experiment({"space": {"prune": {"analysis_timeout_s": bad}}})


def test_settings_that_no_part_of_the_search_reads_get_a_note() -> None:
    """The teacher's section with no trial distilling (a garbage teacher.checkpoint passed
    unsaid), the rungs without mo_asha; and a teacher at chance, which every student learned
    from unsaid."""
    from nascomp.search.driver import _unread_sections_notes, chance_note

    notes: list[str] = []
    overrides = ["space.distill.enabled=false", "teacher.epochs=3", "search.rungs.grace_period=2"]
    _unread_sections_notes(load_experiment(None, overrides), notes)
    assert notes[0].startswith("teacher: never read: no trial distils (space.distill.enabled")
    assert "epochs" in notes[0]
    assert notes[1] == "search.rungs: never read: search.scheduler is none (mo_asha reads it)"
    assert len(notes) == 2
    notes = []
    _unread_sections_notes(load_experiment(None, ["search.scheduler=mo_asha"]), notes)
    assert notes == []  # the quickstart distils: its teacher is read
    assert chance_note(0.0972, 10) is not None and chance_note(0.16, 10) is None
    # A lookup trains nothing: its train, data and measure settings (a helper's sweep)
    lookup = Path(__file__).resolve().parents[2] / "examples" / "nb201.yaml"
    notes = []
    _unread_sections_notes(load_experiment(lookup), notes)
    assert notes == []  # the example's own settings
    notes = []
    given = ["train.epochs=3", "measure.coding=entropy", "resources.cpus_per_trial=1"]
    _unread_sections_notes(load_experiment(lookup, given), notes)
    assert notes == [
        "train, measure: never read: trial nb201_lookup reads NAS-Bench-201's table, which "
        "holds each network's trained accuracies"
    ]
    # nor reuses a training or learns what one costs; a setting that turns one off is no news
    notes = []
    given = ["search.reuse_training=false", "search.cost_aware=true"]
    _unread_sections_notes(load_experiment(lookup, given), notes)
    assert notes == [
        "search.cost_aware: never read: trial nb201_lookup trains nothing (no trained student "
        "to reuse, no training time to learn costs from)"
    ]
    # and the reverse: a training search's nb201 section, a table never checked (a sweep)
    notes = []
    given = ["nb201.dataset=cifar100", "nb201.table=/nowhere.csv"]
    _unread_sections_notes(load_experiment(None, given), notes)
    assert notes == [
        "nb201: never read: trial is train (trial: nb201_lookup reads it), so its settings "
        "(dataset, table) are not checked or used"
    ]
    assert chance_note(0.9, 2) is None and chance_note(0.74, 2) is not None


class _Masked(nn.Module):
    """Logits with some classes masked at -inf, as a model may do; ``rows`` of its batch get
    ``value`` in every class."""

    def __init__(self, value: float | None = None, rows: int = 0) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.value, self.rows = value, rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        out = torch.cat([out[:, :2], torch.full_like(out[:, 2:], -torch.inf)], dim=1)
        if self.value is not None:
            out[: self.rows] = self.value
        return out


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (None, None),  # a class masked at -inf: softmax gives it 0, training goes on
        (float("nan"), "gives NaN outputs for 5 of the first 32 training inputs"),
        (float("inf"), "gives infinite outputs for 5 of the first 32"),
        (-float("inf"), "gives infinite outputs for 5 of the first 32"),  # every class
    ],
)
def test_outputs_that_are_not_finite_before_training_are_refused(
    value: float | None, said: str | None
) -> None:
    from types import SimpleNamespace

    from nascomp.search.preflight import _check_finite_outputs
    from nascomp.trainers.split import TensorSplit

    torch.manual_seed(0)
    split = TensorSplit(torch.randn(40, 4), torch.zeros(40, dtype=torch.long))
    data = SimpleNamespace(train=split)
    arch = {"family": "custom", "builder": "shop:masked"}
    model = _Masked(value, rows=5).train()
    if said is None:
        _check_finite_outputs("space.arch", arch, model, data)
    else:
        with pytest.raises(ConfigError, match=r"space\.arch: the model from builder shop:masked "):
            _check_finite_outputs("space.arch", arch, model, data)
        with pytest.raises(ConfigError, match=said):
            _check_finite_outputs("space.arch", arch, model, data)
    assert model.training  # put back as it was


class _NanWhenTraining(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        return out / 0.0 * 0.0 if self.training else out  # NaN in train mode alone


def test_weights_and_train_mode_outputs_that_are_not_finite_are_refused() -> None:
    """NaN in train mode alone passed (a helper's sweep), and so did a teacher checkpoint
    holding NaN, said as a forward to look into; the mode and batch norm's statistics are put
    back after the check."""
    from types import SimpleNamespace

    from nascomp.search.preflight import _check_finite_outputs
    from nascomp.trainers.split import TensorSplit

    torch.manual_seed(0)
    data = SimpleNamespace(train=TensorSplit(torch.randn(40, 4), torch.zeros(40, dtype=torch.long)))
    arch = {"family": "custom", "builder": "shop:nan"}
    model = _NanWhenTraining().eval()
    with pytest.raises(ConfigError, match=r"gives NaN outputs for 32 of the first 32 .*\(in train"):
        _check_finite_outputs("space.arch", arch, model, data)
    assert not model.training
    broken = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    with torch.no_grad():
        broken[0].weight[0, 0] = float("nan")
    with pytest.raises(ConfigError) as caught:
        _check_finite_outputs("teacher.arch", arch, broken, data, "teacher.pt")
    assert (
        str(caught.value)
        == "teacher.checkpoint teacher.pt holds NaN or infinite weights (0.weight)"
    )
    with pytest.raises(
        ConfigError, match=r"space\.arch: the model from builder shop:nan, as built"
    ):
        _check_finite_outputs("space.arch", arch, broken, data)
    sound = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).train()
    _check_finite_outputs("space.arch", arch, sound, data)
    assert sound.training and torch.equal(sound[1].running_mean, torch.zeros(3))
