from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from nascomp.compressors.layers import layer_kinds
from nascomp.compressors.measure import (
    count_macs,
    count_nonzero_params,
    count_params,
    measure_latency_ms,
)
from nascomp.compressors.quantization import QuantConfig, prepare_qat


def _known_model() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),  # 8x8 out: 4 * 64 * (1 * 9) = 2304 MACs
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4),  # 4x4 out: 4 * 16 * (1 * 9) = 576
        nn.Conv2d(4, 8, 1),  # 8 * 16 * 4 = 512
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),  # 10 * 8 = 80
    )


def test_count_params_and_nonzero() -> None:
    model = _known_model()
    # conv 36+4, bn 4+4, depthwise 36+4, pointwise 32+8, linear 80+10.
    assert count_params(model) == 40 + 8 + 40 + 40 + 90 == 218
    with torch.no_grad():
        model[0].weight[0].zero_()  # 9 zeros
        model[7].bias.zero_()  # 10 zeros
        model[1].bias.zero_()  # BN bias starts at zero: 4 zeros
    assert count_nonzero_params(model) == 218 - 9 - 10 - 4


def test_macs_of_known_model() -> None:
    assert count_macs(_known_model(), (1, 8, 8)) == 2304 + 576 + 512 + 80 == 3472


def test_macs_dense_count_and_after_qat() -> None:
    model = _known_model()
    with torch.no_grad():
        model[0].weight.zero_()  # zeros are still multiplied in a dense kernel
    prepare_qat(model, QuantConfig(bits=4))
    assert count_macs(model, (1, 8, 8)) == 3472


class _Sequence(nn.Module):
    """Rows of a (10, 3) input through a Linear, a recurrent layer and a head."""

    def __init__(self, cell: type[nn.RNNBase], **options: object) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 16)
        self.rnn = cell(16, 24, batch_first=True, **options)
        out = 24 * (2 if options.get("bidirectional") else 1)
        self.head = nn.Linear(out, 5)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(self.proj(x))
        return self.head(out[:, -1])


@pytest.mark.parametrize(
    ("cell", "options", "per_step"),
    [
        (nn.LSTM, {}, 4 * 24 * (16 + 24)),  # 4 gates of 24 units over input and state
        (nn.GRU, {}, 3 * 24 * (16 + 24)),
        (nn.RNN, {}, 24 * (16 + 24)),
        # two layers, both ways: the second layer's input is both directions' states
        (nn.GRU, {"num_layers": 2, "bidirectional": True}, 2 * 3 * 24 * 40 + 2 * 3 * 24 * 72),
    ],
)
def test_macs_count_the_recurrent_gates_at_every_step(
    cell: type[nn.RNNBase], options: dict, per_step: int
) -> None:
    """Before, only the Linear layers were counted: an LSTM cost nothing."""
    model = _Sequence(cell, **options)
    linear = 10 * 3 * 16 + model.head.in_features * 5
    assert count_macs(model, (10, 3)) == linear + 10 * per_step


def test_macs_count_attention_and_its_products_fast_path_or_not() -> None:
    """The encoder layer's fused eval kernel calls none of its submodules: counted as the
    plain operators (query, key, value and output projections, scores, weighted values)."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True)
    tokens, width = 6, 16
    attention = 4 * tokens * width * width + 2 * tokens * tokens * width
    feed_forward = 2 * tokens * width * 32
    assert count_macs(layer, (tokens, width)) == attention + feed_forward
    assert torch.backends.mha.get_fastpath_enabled()
    with layer_kinds("conv2d_linear"):  # a trial logged before these layers counted
        assert count_macs(layer, (tokens, width)) == feed_forward


class _HandWritten(nn.Module):
    """Single-head attention as blocks are often written: Linear projections, then the
    products as tensor operations (``fused``: through ``F.scaled_dot_product_attention`` with
    two heads, as timm's ``Attention`` does)."""

    def __init__(self, width: int, fused: bool) -> None:
        super().__init__()
        self.qkv, self.proj, self.fused = (
            nn.Linear(width, 3 * width),
            nn.Linear(width, width),
            fused,
        )

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if self.fused:
            heads = [t.unflatten(-1, (2, -1)).transpose(1, 2) for t in (q, k, v)]
            out = nn.functional.scaled_dot_product_attention(*heads).transpose(1, 2).flatten(2)
        else:
            out = (q @ k.transpose(-2, -1) / 4).softmax(-1) @ v
        return self.proj(out)


@pytest.mark.parametrize("fused", [False, True])
def test_macs_count_the_products_of_hand_written_attention(fused: bool) -> None:
    """Scores (each query against each key) and the values' weighted sum: tokens^2 * width
    each, whatever the heads; before, only the projections were counted."""
    tokens, width = 5, 8
    projections = tokens * width * 3 * width + tokens * width * width
    products = 2 * tokens * tokens * width
    assert count_macs(_HandWritten(width, fused), (tokens, width)) == projections + products
    with layer_kinds("conv2d_linear"):  # a trial logged before products counted
        assert count_macs(_HandWritten(width, fused), (tokens, width)) == projections


class _Einsum(nn.Module):
    """A model whose only products are one ``torch.einsum`` of its input with a buffer."""

    def __init__(self, equation: str, *others: Tensor) -> None:
        super().__init__()
        self.equation = equation
        self.others = others

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum(self.equation, x[0], *self.others)


@pytest.mark.parametrize(
    ("equation", "shape", "others", "macs"),
    [
        ("ij,jk->ik", (2, 3), [(3, 4)], 2 * 3 * 4),
        ("ij, jk", (2, 3), [(3, 4)], 2 * 3 * 4),  # implicit output, a space
        ("bhnd,bhmd->bhnm", (2, 3, 5, 4), [(2, 3, 7, 4)], 2 * 3 * 5 * 7 * 4),  # q kT
        ("...ij,...jk->...ik", (6, 2, 3), [(3, 4)], 6 * 2 * 3 * 4),  # broadcast batch
        # left to right: ij,jk -> ik (j summed, 24), then ik,kl -> il (k summed, 40)
        ("ij,jk,kl->il", (2, 3), [(3, 4), (4, 5)], 24 + 40),
        ("ij,ij->ij", (2, 3), [(2, 3)], 0),  # elementwise: no sum, as a * b
        ("i,j->ij", (2,), [(3,)], 0),  # outer product
        ("ii->i", (3, 3), [], 0),  # a diagonal: one operand, no products
        ("ij->", (2, 3), [], 0),
    ],
)
def test_macs_count_einsums_products(
    equation: str, shape: tuple[int, ...], others: list[tuple[int, ...]], macs: int
) -> None:
    model = _Einsum(equation, *(torch.ones(size) for size in others))
    assert count_macs(model, shape) == macs
    with layer_kinds("conv2d_linear"):  # a trial logged before products counted
        assert count_macs(model, shape) == 0


def test_macs_of_einsum_attention_equal_matmul_attentions() -> None:
    """The same scores written as an einsum and as ``q @ k.transpose(-2, -1)``."""
    keys = torch.ones(2, 7, 4)

    class Matmul(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x[0] @ keys.transpose(-2, -1)

    einsum = _Einsum("hnd,hmd->hnm", keys)
    assert count_macs(einsum, (2, 5, 4)) == count_macs(Matmul(), (2, 5, 4)) == 2 * 5 * 7 * 4


def test_macs_count_a_timm_vits_attention_products() -> None:
    """timm's ViT: every block's scores and weighted values on top of its Linear layers."""
    timm = pytest.importorskip("timm")
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, num_classes=10
    )
    tokens, width, depth = 16 + 1, model.embed_dim, len(model.blocks)
    with layer_kinds("conv2d_linear"):
        projections = count_macs(model, (3, 32, 32))
    assert count_macs(model, (3, 32, 32)) == projections + depth * 2 * tokens * tokens * width


def test_macs_leave_model_state_alone() -> None:
    model = _known_model().train()
    running_mean = model[1].running_mean.clone()
    count_macs(model, (1, 8, 8))
    assert model.training
    assert torch.equal(model[1].running_mean, running_mean)
    with pytest.raises(ValueError, match="input_shape"):
        count_macs(model, (0, 8, 8))


class _Sleep(nn.Module):
    """Forward takes at least 3 ms: the known floor of its latency."""

    def forward(self, x: Tensor) -> Tensor:
        time.sleep(0.003)
        return x


def test_latency_has_known_floor_and_restores_mode() -> None:
    model = _Sleep().train()
    latency = measure_latency_ms(model, (4,), n_warmup=1, n_repeat=5)
    assert 3.0 <= latency < 100.0
    assert model.training
    model.eval()
    measure_latency_ms(model, (4,), n_warmup=0, n_repeat=1)
    assert not model.training


def test_latency_runs_in_eval_under_inference_mode() -> None:
    seen: list[tuple[bool, bool]] = []

    class Probe(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            seen.append((self.training, torch.is_inference_mode_enabled()))
            return x

    measure_latency_ms(Probe().train(), (2, 3), batch_size=4, n_warmup=2, n_repeat=3)
    assert seen == [(False, True)] * 5
    with pytest.raises(ValueError, match="batch_size"):
        measure_latency_ms(Probe(), (2,), batch_size=0)


def test_a_model_with_a_runner_is_timed_through_it() -> None:
    """An ONNX Runtime session's module is timed as a deployment calls it: ``session.run`` on
    a NumPy feed made once, not through the tensor conversions of its ``forward``."""

    class Session(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.runs, self.forwards = 0, 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.forwards += 1
            return x

        def runner(self, x: torch.Tensor):
            def run() -> None:
                self.runs += 1

            return run

    model = Session()
    measure_latency_ms(model, (3,), n_warmup=2, n_repeat=5)
    assert (model.runs, model.forwards) == (7, 0)


def test_an_onnx_modules_runner_runs_its_session(tmp_path: Path) -> None:
    from nascomp.compressors.onnx_export import OnnxModule, export_onnx

    net = nn.Sequential(nn.Linear(4, 3)).eval()
    example = torch.randn(2, 4)
    export_onnx(net, example, tmp_path / "net.onnx")
    module = OnnxModule((tmp_path / "net.onnx").read_bytes())
    (logits,) = module.runner(example)()
    np.testing.assert_allclose(logits, module(example).numpy())
    np.testing.assert_allclose(logits, net(example).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_nonzero_params_count_a_quantized_layers_weights_at_their_width() -> None:
    """size_bytes stores the weights that stay non-zero at their width; rounding to 4 bits
    takes the small ones to zero, and nonzero_params counted them before it (11% of a model)."""
    from nascomp.compressors.quantization import QuantConfig, prepare_qat

    model = nn.Sequential(nn.Linear(4, 2, bias=False), nn.GRU(2, 3))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.01, -1.0, 0.5], [0.02, 1.0, 0.0, -0.5]]))
        for name, param in model[1].named_parameters():
            param.fill_(1.0)
            if name == "weight_ih_l0":
                param[0, 0] = 0.001  # rounds to zero at 4 bits, per row's scale
    assert count_nonzero_params(model) == 7 + 63  # the Linear's 0.0, the GRU's 63
    with layer_kinds("all"):
        prepare_qat(model, QuantConfig(bits=4))
    # 0.01 and 0.02 round to zero at 4 bits (each row's scale is 1/7), the GRU's 0.001 too
    assert count_nonzero_params(model) == 5 + 62


def test_nonzero_params_count_attentions_input_projection_at_its_width() -> None:
    """Attention keeps its input projection in ``in_proj_weight`` (no ``weight``): every
    trial of a model holding one failed below 32 bits on this count."""
    from nascomp.compressors.quantization import QuantConfig, prepare_qat

    attention = nn.MultiheadAttention(4, 1, bias=False)
    with torch.no_grad():
        attention.in_proj_weight.fill_(1.0)
        attention.in_proj_weight[0, 0] = 0.01  # rounds to zero at 4 bits, per row's scale
        attention.out_proj.weight.fill_(1.0)
        attention.out_proj.weight[1, 2] = 0.02
    model = nn.Sequential(attention)
    assert count_nonzero_params(model) == 48 + 16
    prepare_qat(model, QuantConfig(bits=4))
    assert count_nonzero_params(model) == 47 + 15
