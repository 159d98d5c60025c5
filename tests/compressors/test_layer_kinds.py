"""Every layer kind nascomp compresses besides Conv2d and Linear. Convolutions of every rank,
Conv1d (text, audio, signals) and Conv3d (video, volumes), are fake-quantized per channel,
frozen to plain layers, coded in the compressed artifact at their width (its size is the
file's), pruned by torch-pruning, and rebuilt from a skeleton after structured pruning.
Embedding tables are quantized per row (an id's vector) and coded the same way, and run as
float tables of those rows in the int8 forms; so are the weight matrices of recurrent layers
(LSTM, GRU, RNN: a row per gate unit) and attention's input projection. A quantized transformer
is evaluated as quantized: torch's fused attention kernels, which read the weights directly,
are kept out of a prepared model's forward pass."""

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
from nascomp.compressors.layers import LEGACY, layer_kinds
from nascomp.compressors.measure import count_macs
from nascomp.compressors.onnx_export import FORM_INT8_QDQ, onnx_form
from nascomp.compressors.pruning import PruneConfig, make_pruner
from nascomp.compressors.quantization import (
    QuantConfig,
    QuantConv1d,
    QuantConv3d,
    QuantEmbedding,
    QuantGRU,
    QuantLinear,
    QuantLSTM,
    QuantMultiheadAttention,
    QuantRNN,
    fake_quantize_weight,
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


def _assert_int8_forms_agree(model: nn.Module, inputs: torch.Tensor) -> None:
    """An 8-bit QAT model's deployable forms (torch.ao int8, ONNX int8 QDQ) are the int8 ones,
    and predict as the model does on ``inputs`` (calibrated on them)."""
    batches = list(inputs.split(32))
    deployed, form = deployable_form(
        model, bits=8, act_bits=8, example_inputs=inputs[:1], calibration_batches=batches
    )
    assert form == FORM_INT8
    shipped = onnx_form(
        model, bits=8, act_bits=8, example_inputs=inputs[:1], calibration_batches=batches
    )
    assert shipped.precision == FORM_INT8_QDQ
    with torch.no_grad():
        expected = model(inputs).argmax(1)
        for runnable in (deployed, shipped.module):
            agreement = (runnable(inputs).argmax(1) == expected).float().mean()
            assert float(agreement) > 0.9


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
    _assert_int8_forms_agree(model, ids)


class Sequences(nn.Module):
    """A classifier of (6, 20) signals read as 20 time steps of 6 features by a recurrent layer
    (every setting that changes a recurrent layer's weights: layers, directions, projection)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind == "lstm":
            self.rnn: nn.RNNBase = nn.LSTM(
                6, 12, num_layers=2, batch_first=True, bidirectional=True, proj_size=5
            )
            width = 10
        elif kind == "plain_lstm":  # torch's ONNX exporters do not take projections
            self.rnn = nn.LSTM(6, 12, batch_first=True)
            width = 12
        elif kind == "gru":
            self.rnn = nn.GRU(6, 12, batch_first=True)
            width = 12
        else:
            self.rnn = nn.RNN(6, 12, nonlinearity="relu", batch_first=True, bias=False)
            width = 12
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x.transpose(1, 2))
        return self.head(out.mean(1))  # every step: each direction's every weight has a gradient


_QUANT_RECURRENT = {"lstm": QuantLSTM, "plain_lstm": QuantLSTM, "gru": QuantGRU, "rnn": QuantRNN}


def _signals(n: int = 64) -> torch.Tensor:
    return torch.randn(n, 6, 20, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_recurrent_weights_are_quantized_per_row_and_trained_through(kind: str) -> None:
    torch.manual_seed(0)
    float_model = Sequences(kind)
    model = prepare_qat(copy.deepcopy(float_model), QuantConfig(bits=4, act_bits=8))
    assert type(model.rnn) is _QUANT_RECURRENT[kind]
    assert weight_bits_by_layer(model) == {"rnn": 4, "head": 4}
    # the Parameters moved in unchanged (an optimizer built before keeps working)
    before = dict(float_model.rnn.named_parameters())
    assert [name for name, _ in model.rnn.named_parameters()] == list(before)
    x = _signals()
    model.train()
    model(x).square().mean().backward()
    for name, parameter in model.rnn.named_parameters():
        assert parameter.grad is not None and bool(parameter.grad.abs().sum() > 0), name
    # known answer: the forward pass is the float layer's on its weights quantized per row
    # (at most 15 levels in each row at 4 bits); biases stay float
    reference = copy.deepcopy(float_model.rnn)
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            if name.startswith("weight_"):
                parameter.copy_(fake_quantize_weight(parameter, 4))
                assert max(len(torch.unique(row)) for row in parameter) <= 15
        model.eval()
        assert torch.equal(model.rnn(x.transpose(1, 2))[0], reference(x.transpose(1, 2))[0])
        frozen = freeze_fake_quant(copy.deepcopy(model))
        assert type(frozen.rnn) is type(float_model.rnn)
        assert torch.equal(frozen.rnn(x.transpose(1, 2))[0], reference(x.transpose(1, 2))[0])
    costs = measure_sensitivity(Sequences(kind), [2, 8, 32], [(x, torch.zeros(64).long())])
    assert costs["rnn"][32] == 0.0 and costs["rnn"][2] > costs["rnn"][8] >= 0.0
    # trials logged before quantized only Conv2d and Linear, and so do their exports' skeletons
    legacy = QuantConfig(bits=4, layers=LEGACY)
    assert weight_bits_by_layer(prepare_qat(Sequences(kind), legacy)) == {"head": 4}
    with layer_kinds(LEGACY):
        assert list(quantizable_layers(Sequences(kind))) == ["head"]


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_the_artifact_codes_recurrent_weights(tmp_path: Path, kind: str) -> None:
    torch.manual_seed(0)
    fp32_bytes = save_compressed(Sequences(kind).eval(), tmp_path / "fp32")
    x = _signals()
    model = round_to_storage(_observed(prepare_qat(Sequences(kind), QuantConfig(bits=4)), x))
    n_bytes = save_compressed(model, tmp_path / "int4")
    assert n_bytes == (tmp_path / "int4").stat().st_size == model_size_bytes(model)
    # most of the model is recurrent weights (a 4-byte scale per row is the rest)
    assert n_bytes < fp32_bytes / 2
    restored = load_compressed(tmp_path / "int4", Sequences(kind))
    assert type(restored.rnn) is _QUANT_RECURRENT[kind]
    with torch.no_grad():
        assert torch.equal(restored.eval()(x), model(x))


@pytest.mark.parametrize("kind", ["plain_lstm", "gru"])
def test_int8_forms_run_a_recurrent_layer_as_its_quantized_weights(kind: str) -> None:
    torch.manual_seed(0)
    x = _signals(128)
    model = _observed(prepare_qat(Sequences(kind), QuantConfig(bits=8, act_bits=8)), x)
    _assert_int8_forms_agree(model, x)


class Encoder(nn.Module):
    """A transformer classifier of 10 tokens of 16 features (torch's encoder layer: the
    attention and feed-forward kernels it fuses in eval mode)."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(x).mean(1))


def _every_weight_quantized(model: nn.Module, bits: int) -> nn.Module:
    """The known answer: a float copy whose every quantized weight holds its quantized value."""
    reference = copy.deepcopy(model)
    prepared = weight_bits_by_layer(prepare_qat(copy.deepcopy(model), QuantConfig(bits=bits)))
    with torch.no_grad():
        for name, module in reference.named_modules():
            if name in prepared:
                for attr in ("weight", "in_proj_weight"):
                    tensor = getattr(module, attr, None)
                    if isinstance(tensor, torch.Tensor):
                        tensor.copy_(fake_quantize_weight(tensor, bits))
    return reference


def test_a_quantized_transformer_is_evaluated_quantized() -> None:
    torch.manual_seed(0)
    model = Encoder().eval()
    x = torch.randn(8, 10, 16, generator=torch.Generator().manual_seed(1))
    prepared = prepare_qat(copy.deepcopy(model), QuantConfig(bits=4, act_bits=32)).eval()
    attention = prepared.enc.layers[0].self_attn
    assert type(attention) is QuantMultiheadAttention and type(attention.out_proj) is QuantLinear
    assert weight_bits_by_layer(prepared) == {
        "enc.layers.0.self_attn": 4,
        "enc.layers.0.self_attn.out_proj": 4,
        "enc.layers.0.linear1": 4,
        "enc.layers.0.linear2": 4,
        "head": 4,
    }
    reference = _every_weight_quantized(model, 4).eval()
    assert torch.backends.mha.get_fastpath_enabled()
    with torch.no_grad():  # where torch would take its fused kernels on the float weights
        expected = reference(x)
        assert not torch.allclose(model(x), expected, atol=1e-3)
        assert torch.allclose(prepared(x), expected, atol=1e-5)
        frozen = freeze_fake_quant(copy.deepcopy(prepared)).eval()
        assert type(frozen.enc.layers[0].self_attn) is nn.MultiheadAttention
        assert torch.allclose(frozen(x), expected, atol=1e-5)
    assert torch.backends.mha.get_fastpath_enabled()  # the caller's setting is restored
    hooks = [len(m._forward_pre_hooks) + len(m._forward_hooks) for m in frozen.modules()]
    assert sum(hooks) == 0  # a frozen model holds plain weights: the fused kernels may run
    prepared.train()
    prepared(x).square().mean().backward()
    assert bool(attention.in_proj_weight.grad.abs().sum() > 0)
    assert bool(attention.out_proj.weight.grad.abs().sum() > 0)
    # a trial logged before (Conv2d and Linear alone) reproduces as it was evaluated then
    legacy = prepare_qat(copy.deepcopy(model), QuantConfig(bits=4, layers=LEGACY)).eval()
    assert type(legacy.enc.layers[0].self_attn) is nn.MultiheadAttention
    assert sum(len(m._forward_pre_hooks) for m in legacy.modules()) == 0


def test_the_artifact_codes_attention_projections(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 10, 16)
    fp32_bytes = save_compressed(Encoder().eval(), tmp_path / "fp32")
    model = round_to_storage(_observed(prepare_qat(Encoder(), QuantConfig(bits=4)), x))
    n_bytes = save_compressed(model, tmp_path / "int4")
    assert n_bytes == (tmp_path / "int4").stat().st_size == model_size_bytes(model)
    assert n_bytes < fp32_bytes / 3
    restored = load_compressed(tmp_path / "int4", Encoder())
    with torch.no_grad():
        assert torch.equal(restored.eval()(x), model(x))
