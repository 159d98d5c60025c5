from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nascomp.compressors.quantization import (
    ActivationFakeQuant,
    QuantConfig,
    QuantConv2d,
    QuantizationError,
    QuantLinear,
    fake_quantize_activation,
    fake_quantize_weight,
    prepare_qat,
    quantized_bits,
)


def test_known_answer_three_bits() -> None:
    # qmax = 3, scale = 1/3: 0.5 -> round(1.5) = 2, -0.26 -> round(-0.78) = -1.
    weight = torch.tensor([[1.0, 0.5, -0.26, 0.0], [0.0, 0.0, 0.0, 0.0]])
    expected = torch.tensor([[1.0, 2.0 / 3.0, -1.0 / 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(fake_quantize_weight(weight, 3), expected, atol=1e-7)


def test_scale_is_per_output_channel() -> None:
    # Channel 1 is 100x larger; per-tensor scaling would flush channel 0 to zero.
    weight = torch.tensor([[0.01, -0.005], [1.0, 0.5]])
    quantized = fake_quantize_weight(weight, 2)
    assert torch.equal(quantized, torch.tensor([[0.01, 0.0], [1.0, 0.0]]))


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_levels_per_channel_and_zero_preserved(bits: int) -> None:
    torch.manual_seed(bits)
    weight = torch.rand(4, 3, 16, 16) * 2.0 - 1.0
    weight[:, 0] = 0.0  # pruned weights must stay exactly zero
    quantized = fake_quantize_weight(weight, bits)
    for channel in quantized:
        n_levels = channel.unique().numel()
        assert n_levels <= 2**bits - 1
        # 768 uniform samples fill every level of the small bit-widths.
        if bits <= 4:
            assert n_levels == 2**bits - 1
    assert torch.all(quantized[:, 0] == 0.0)
    # The largest magnitude of each channel is reproduced exactly (it defines the scale).
    absmax = weight.abs().amax(dim=(1, 2, 3))
    assert torch.allclose(quantized.abs().amax(dim=(1, 2, 3)), absmax, rtol=1e-6)


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_straight_through_gradient_is_identity(bits: int) -> None:
    weight = torch.randn(5, 7, requires_grad=True)
    upstream = torch.randn(5, 7)
    (fake_quantize_weight(weight, bits) * upstream).sum().backward()
    assert torch.equal(weight.grad, upstream)


def test_sixteen_and_thirty_two_bits() -> None:
    weight = torch.tensor([[1.0 + 2.0**-12, 0.1]])
    assert torch.equal(fake_quantize_weight(weight, 16), weight.half().float())
    assert fake_quantize_weight(weight, 16)[0, 0].item() == 1.0  # 2**-12 is below fp16 eps
    assert fake_quantize_weight(weight, 32) is weight


def test_bad_bits_rejected() -> None:
    with pytest.raises(ValueError, match="bits"):
        fake_quantize_weight(torch.ones(2, 2), 1)
    with pytest.raises(ValueError, match="bits"):
        QuantConfig(bits=9)
    with pytest.raises(ValueError, match="act_bits"):
        QuantConfig(bits=8, act_bits=16)
    with pytest.raises(ValueError, match="act_bits"):
        QuantConfig(bits=8, act_bits=1)


def test_prepare_qat_keeps_parameter_objects(residual_cnn: nn.Module) -> None:
    params_before = list(residual_cnn.parameters())
    optimizer = torch.optim.SGD(residual_cnn.parameters(), lr=0.1)
    model = prepare_qat(residual_cnn, QuantConfig(bits=4, act_bits=8))
    assert model is residual_cnn
    params_after = list(model.parameters())
    assert len(params_after) == len(params_before)
    assert all(a is b for a, b in zip(params_after, params_before, strict=True))
    assert isinstance(model.head, QuantLinear) and isinstance(model.stem[0], QuantConv2d)
    assert model.separable.depthwise.groups == 16
    # The optimizer created before the swap still trains the swapped layers.
    before = model.head.weight.detach().clone()
    model(torch.randn(4, 1, 8, 8)).square().mean().backward()
    optimizer.step()
    assert not torch.equal(model.head.weight, before)


def test_quantized_bits(residual_cnn: nn.Module) -> None:
    assert quantized_bits(residual_cnn) == 32
    assert prepare_qat(residual_cnn, QuantConfig(bits=32)) is residual_cnn
    assert quantized_bits(residual_cnn) == 32
    assert not any(isinstance(m, (QuantConv2d, QuantLinear)) for m in residual_cnn.modules())
    prepare_qat(residual_cnn, QuantConfig(bits=5))
    assert quantized_bits(residual_cnn) == 5
    with pytest.raises(ValueError, match="already prepared"):
        prepare_qat(residual_cnn, QuantConfig(bits=4))


def test_quant_linear_forward_known_answer() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(6, 3)
    model = prepare_qat(nn.Sequential(layer), QuantConfig(bits=4, act_bits=8))
    x = torch.tensor([[-1.0, 0.25, 0.5, 1.55, 0.0, -0.37], [0.12, 0.9, -0.5, 1.0, 0.33, 0.07]])
    model.train()
    out = model(x)
    # First batch sets the range to [-1, 1.55]: scale 2.55 / 255 = 0.01, zero point 100, so
    # x is already on the grid; the weight uses the 4-bit per-channel grid.
    expected = F.linear(x, fake_quantize_weight(layer.weight, 4), layer.bias)
    assert torch.allclose(out, expected, atol=1e-5)
    quantizer = model[0].input_quant
    assert quantizer.range_min.item() == pytest.approx(-1.0)
    assert quantizer.range_max.item() == pytest.approx(1.55)


def test_activation_observer_ema_in_train_frozen_in_eval() -> None:
    quantizer = ActivationFakeQuant(bits=8)
    quantizer.eval()
    x = torch.tensor([0.123, 0.5])
    assert torch.equal(quantizer(x), x)  # nothing observed yet: pass through
    quantizer.train()
    quantizer(torch.tensor([0.0, 2.55]))
    quantizer(torch.tensor([0.0, 3.55]))
    # EMA with momentum 0.01: 2.55 + 0.01 * (3.55 - 2.55) = 2.56.
    assert quantizer.range_max.item() == pytest.approx(2.56)
    quantizer.eval()
    out = quantizer(torch.tensor([1.234, 100.0, -5.0]))
    assert quantizer.range_max.item() == pytest.approx(2.56)  # frozen in eval
    # scale 2.56 / 255; 1.234 -> 123 levels; out-of-range values clamp to the range.
    scale = 2.56 / 255
    assert out.tolist() == pytest.approx([round(1.234 / scale) * scale, 2.56, 0.0], abs=1e-6)


def test_activation_fake_quant_known_answer() -> None:
    # scale 0.5, zero point 2, 2 bits (codes 0..3): x / 0.5 rounded half to even, plus 2.
    scale, zero_point = torch.tensor([0.5]), torch.tensor([2], dtype=torch.int32)
    x = torch.tensor([-1.0, -0.75, -0.25, 0.25, 0.5, 1.0, -2.0], requires_grad=True)
    out = fake_quantize_activation(x, scale, zero_point, 3)
    # codes: 0, round(-1.5) = -2 -> 0, round(-0.5) = -0 -> 2, round(0.5) = 0 -> 2, 3, 4 -> 3, -2
    assert out.tolist() == [-1.0, -1.0, 0.0, 0.0, 0.5, 0.5, -1.0]
    out.sum().backward()
    # The gradient passes where the code is in [0, 3] before clamping: not at 1.0 (4), -2.0 (-2).
    assert x.grad is not None and x.grad.tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_activation_fake_quant_is_torchs_bit_for_bit(bits: int) -> None:
    """The plain ops replace torch's (slow) CPU kernel: values and gradients must be the
    same to the bit, on codes' rounding boundaries too, or logged QAT trials would not
    reproduce."""
    generator = torch.Generator().manual_seed(bits)
    qmax = 2**bits - 1
    for _ in range(20):
        scale = torch.rand(1, generator=generator) * 0.1 + 1e-4
        zero_point = torch.randint(0, qmax + 1, (1,), generator=generator).to(torch.int32)
        steps = torch.randint(-qmax - 4, 2 * qmax + 4, (2000,), generator=generator).float()
        halfway = (steps + 0.5) * scale
        x = torch.cat(
            [
                torch.randn(2000, generator=generator) * scale * qmax,
                halfway,
                torch.nextafter(halfway, torch.full_like(halfway, 1e9)),
                torch.tensor([float("inf"), float("-inf"), 0.0]),
            ]
        ).requires_grad_()
        weights = torch.randn(x.shape, generator=generator)
        expected = torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, qmax)
        got = fake_quantize_activation(x, scale, zero_point, qmax)
        assert torch.equal(got, expected)
        grads = [torch.autograd.grad((y * weights).sum(), x)[0] for y in (got, expected)]
        assert torch.equal(grads[0], grads[1])
        with torch.no_grad():  # the plain-ops path, for tracing and evaluation
            assert torch.equal(fake_quantize_activation(x, scale, zero_point, qmax), expected)


def test_sixteen_bits_has_no_activation_quant() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    reference = nn.Linear(4, 3)
    reference.load_state_dict(model[0].state_dict())
    prepare_qat(model, QuantConfig(bits=16, act_bits=4))
    x = torch.randn(5, 4)
    with torch.no_grad():
        reference.weight.copy_(reference.weight.half().float())
        assert torch.equal(model(x), reference(x))
    assert isinstance(model[0].input_quant, nn.Identity)


@pytest.mark.parametrize("bits", [4, 8])
def test_trained_qat_model_exports_exactly(residual_cnn: nn.Module, bits: int) -> None:
    """MLflow logs models as torch.export programs and users want TorchScript: the QAT model's
    forward must hold no data-dependent branch, and both forms must predict bit-identically."""
    import warnings

    prepare_qat(residual_cnn, QuantConfig(bits=bits))
    inputs = torch.randn(4, residual_cnn.stem[0].in_channels, 8, 8)
    residual_cnn.train()
    residual_cnn(inputs)  # the activation observers see one batch
    residual_cnn.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = residual_cnn(inputs[:1])
        exported = torch.export.export(residual_cnn, (inputs[:1],)).module()
        traced = torch.jit.trace(residual_cnn, inputs[:1], check_trace=False)
        assert torch.equal(exported(inputs[:1]), expected)
        assert torch.equal(traced(inputs[:1]), expected)
        torch.jit.save(traced, io.BytesIO())  # a trace holding a Python op could not be saved


def test_a_model_with_no_layer_to_quantize_is_refused_not_labelled_quantized() -> None:
    """A model that keeps its weights as Parameters used through F.conv2d / F.linear ran
    at full precision under a "4 bit" label, at the 32-bit model's size."""
    from tests.compressors.test_pruning import _Functional

    with pytest.raises(QuantizationError, match=r"^quantization finds no layer .* _Functional"):
        prepare_qat(_Functional(), QuantConfig(bits=4))
    assert prepare_qat(_Functional(), QuantConfig(bits=32)) is not None  # nothing asked
