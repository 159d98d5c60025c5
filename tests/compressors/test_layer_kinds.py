"""Every layer kind nascomp compresses besides Conv2d and Linear. Convolutions of every rank,
Conv1d (text, audio, signals) and Conv3d (video, volumes), are fake-quantized per channel,
frozen to plain layers, coded in the compressed artifact at their width (its size is the
file's), pruned by torch-pruning, and rebuilt from a skeleton after structured pruning.
Embedding tables are quantized per row (an id's vector) and coded the same way, and run as
float tables of those rows in the int8 forms."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from nascomp.compressors.allocation import measure_sensitivity, quantizable_layers
from nascomp.compressors.deploy import FORM_INT8, deployable_form
from nascomp.compressors.export import (
    layer_shapes,
    load_compressed,
    reshape_layers,
    round_to_storage,
    save_compressed,
)
from nascomp.compressors.measure import count_macs
from nascomp.compressors.onnx_export import FORM_INT8_QDQ, onnx_form
from nascomp.compressors.pruning import PruneConfig, make_pruner
from nascomp.compressors.quantization import (
    QuantConfig,
    QuantConv1d,
    QuantConv3d,
    QuantEmbedding,
    freeze_fake_quant,
    prepare_qat,
    weight_bits_by_layer,
)
from nascomp.compressors.size import model_size_bytes


class Signals(nn.Module):
    """A 1-d convolutional classifier of (4, 32) signals."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(4, width, 5, padding=2)
        self.bn1 = nn.BatchNorm1d(width)
        self.conv2 = nn.Conv1d(width, width, 3, padding=1)
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return self.head(torch.relu(self.conv2(h)).mean(-1))


class Volumes(nn.Module):
    """A 3-d convolutional classifier of (2, 6, 6, 6) volumes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(2, 8, 3, padding=1)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3, 4)))


def _observed(model: nn.Module, inputs: torch.Tensor) -> nn.Module:
    model.train()
    model(inputs)  # the activation observers see one batch
    return model.eval()


@pytest.mark.parametrize(("make", "shape"), [(Signals, (4, 32)), (Volumes, (2, 6, 6, 6))])
def test_qat_quantizes_convolutions_of_any_rank_per_channel(make: type, shape: tuple) -> None:
    torch.manual_seed(0)
    model = prepare_qat(make(), QuantConfig(bits=4, act_bits=8))
    convs = [m for m in model.modules() if isinstance(m, QuantConv1d | QuantConv3d)]
    assert convs and set(weight_bits_by_layer(model).values()) == {4}
    for conv in convs:
        codes = conv.quantized_weight().detach().reshape(conv.weight.shape[0], -1)
        for channel in codes:  # symmetric 4 bits: at most 15 levels per output channel
            assert len(torch.unique(channel)) <= 15
    inputs = torch.randn(8, *shape)
    model = _observed(model, inputs)
    with torch.no_grad():
        expected = model(inputs)
        frozen = freeze_fake_quant(copy.deepcopy(model))
        plain = [type(m) for m in frozen.modules() if isinstance(m, nn.modules.conv._ConvNd)]
        assert plain and all(kind in (nn.Conv1d, nn.Conv3d) for kind in plain)
        # each frozen layer holds its QAT twin's quantized weight
        frozen_layers = dict(frozen.named_modules())
        for name, conv in model.named_modules():
            if isinstance(conv, QuantConv1d | QuantConv3d):
                assert torch.equal(frozen_layers[name].weight, conv.quantized_weight())
    assert expected.shape == (8, 3)


@pytest.mark.parametrize(("make", "shape"), [(Signals, (4, 32)), (Volumes, (2, 6, 6, 6))])
def test_the_artifact_codes_every_rank_at_its_width(
    make: type, shape: tuple, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    dense = make().eval()
    fp32_bytes = save_compressed(dense, tmp_path / "fp32")
    model = round_to_storage(
        _observed(prepare_qat(make(), QuantConfig(bits=4)), torch.randn(8, *shape))
    )
    path = tmp_path / "int4"
    n_bytes = save_compressed(model, path)
    assert n_bytes == path.stat().st_size == model_size_bytes(model)
    # the convolutions' weights are most of the model: 4 bits is well under a third of fp32
    assert n_bytes < fp32_bytes / 3
    restored = load_compressed(path, prepare_qat(make(), QuantConfig(bits=4))).eval()
    inputs = torch.randn(5, *shape)
    with torch.no_grad():
        assert torch.equal(restored(inputs), model(inputs))


def test_structured_pruning_narrows_conv1d_and_the_skeleton_rebuilds_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Signals(width=16)
    example = torch.randn(2, 4, 32)
    macs_before = count_macs(model, (4, 32))
    make_pruner(model, PruneConfig(method="structured", ratio=0.5), example).update(1.0)
    assert model.conv1.out_channels < 16 and model.bn1.num_features == model.conv1.out_channels
    assert model.conv2.in_channels == model.conv1.out_channels
    assert count_macs(model, (4, 32)) < macs_before
    model.eval()
    save_compressed(model, tmp_path / "pruned")
    skeleton = reshape_layers(Signals(width=16), layer_shapes(model))
    restored = load_compressed(tmp_path / "pruned", skeleton).eval()
    with torch.no_grad():
        assert torch.equal(restored(example), model(example))


def test_an_int8_conv1d_model_ships_as_int8_onnx() -> None:
    torch.manual_seed(0)
    inputs = torch.randn(64, 4, 32)
    model = _observed(prepare_qat(Signals(), QuantConfig(bits=8, act_bits=8)), inputs)
    form = onnx_form(
        model,
        bits=8,
        act_bits=8,
        example_inputs=inputs[:1],
        calibration_batches=list(inputs.split(16)),
    )
    assert form.precision == FORM_INT8_QDQ
    with torch.no_grad():
        agreement = (form.module(inputs).argmax(1) == model(inputs).argmax(1)).float().mean()
    assert float(agreement) > 0.9


class Tokens(nn.Module):
    """A classifier of 12 token ids from a vocabulary of 50: an embedding table (id 0 pads),
    a 1-d convolution over the sequence, a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16, padding_idx=0)
        self.conv = nn.Conv1d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(self.embed(x).transpose(1, 2)))
        return self.head(h.amax(-1))


def _ids(n: int = 64) -> torch.Tensor:
    return torch.randint(0, 50, (n, 12), generator=torch.Generator().manual_seed(0))


def test_embedding_tables_are_quantized_per_row() -> None:
    torch.manual_seed(0)
    model = prepare_qat(Tokens(), QuantConfig(bits=4, act_bits=8))
    assert isinstance(model.embed, QuantEmbedding) and model.embed.padding_idx == 0
    assert weight_bits_by_layer(model) == {"embed": 4, "conv": 4, "head": 4}
    assert isinstance(model.embed.input_quant, nn.Identity)  # ids are not activations
    table = model.embed.quantized_weight().detach()
    for row in table:  # symmetric 4 bits, per row: at most 15 levels in each id's vector
        assert len(torch.unique(row)) <= 15
    ids = _ids()
    model = _observed(model, ids)
    with torch.no_grad():
        frozen = freeze_fake_quant(copy.deepcopy(model))
        assert type(frozen.embed) is nn.Embedding and frozen.embed.padding_idx == 0
        assert torch.equal(frozen.embed.weight, table)
    assert "embed" in quantizable_layers(Tokens())
    costs = measure_sensitivity(Tokens(), [2, 8, 32], [(ids, torch.zeros(64, dtype=torch.long))])
    assert costs["embed"][32] == 0.0 and costs["embed"][2] > costs["embed"][8] >= 0.0


def test_the_artifact_codes_embedding_tables(tmp_path: Path) -> None:
    torch.manual_seed(0)
    fp32_bytes = save_compressed(Tokens().eval(), tmp_path / "fp32")
    ids = _ids()
    model = round_to_storage(_observed(prepare_qat(Tokens(), QuantConfig(bits=4)), ids))
    n_bytes = save_compressed(model, tmp_path / "int4")
    assert n_bytes == (tmp_path / "int4").stat().st_size == model_size_bytes(model)
    assert n_bytes < fp32_bytes / 3  # the table is most of the model
    restored = load_compressed(tmp_path / "int4", prepare_qat(Tokens(), QuantConfig(bits=4)))
    with torch.no_grad():
        assert torch.equal(restored.eval()(ids), model(ids))


def test_int8_forms_run_the_table_as_its_quantized_rows() -> None:
    torch.manual_seed(0)
    ids = _ids(128)
    model = _observed(prepare_qat(Tokens(), QuantConfig(bits=8, act_bits=8)), ids)
    batches = list(ids.split(32))
    deployed, form = deployable_form(
        model, bits=8, act_bits=8, example_inputs=ids[:1], calibration_batches=batches
    )
    assert form == FORM_INT8
    shipped = onnx_form(
        model, bits=8, act_bits=8, example_inputs=ids[:1], calibration_batches=batches
    )
    assert shipped.precision == FORM_INT8_QDQ
    with torch.no_grad():
        expected = model(ids).argmax(1)
        for runnable in (deployed, shipped.module):
            agreement = (runnable(ids).argmax(1) == expected).float().mean()
            assert float(agreement) > 0.9
