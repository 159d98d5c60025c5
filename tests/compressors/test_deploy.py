from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import Tensor, nn
from torch.ao.nn import quantized as nnq

from nascomp.compressors.deploy import to_int8_deployable
from nascomp.compressors.quantization import QuantConfig, QuantConv2d, prepare_qat


@dataclass
class Digits:
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor


@dataclass
class Trained:
    float_model: nn.Module
    qat_model: nn.Module
    data: Digits


def _digits() -> Digits:
    features, labels = load_digits(return_X_y=True)
    x = torch.tensor(features, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.tensor(labels)
    # The last 360 images (other writers than the first 1437) are the test set.
    return Digits(x[:1437], y[:1437], x[1437:], y[1437:])


def _train(model: nn.Module, data: Digits, n_epochs: int, optimizer: torch.optim.Optimizer) -> None:
    model.train()
    for _ in range(n_epochs):
        order = torch.randperm(len(data.train_x))
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            optimizer.zero_grad()
            F.cross_entropy(model(data.train_x[batch]), data.train_y[batch]).backward()
            optimizer.step()


@pytest.fixture(scope="module")
def trained(make_residual_cnn: type[nn.Module]) -> Iterator[Trained]:
    # One thread: on a busy 2-core machine two OpenMP threads made this training 8x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield _trained(make_residual_cnn)
    torch.set_num_threads(threads)


def _trained(make_residual_cnn: type[nn.Module]) -> Trained:
    torch.manual_seed(0)
    data = _digits()
    model = make_residual_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    _train(model, data, 6, optimizer)
    float_model = copy.deepcopy(model).eval()
    # Same optimizer after prepare_qat: the Parameters are the same objects.
    prepare_qat(model, QuantConfig(bits=8, act_bits=8))
    _train(model, data, 2, optimizer)
    return Trained(float_model, model.eval(), data)


def _predict(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1)


def _calibration(data: Digits) -> list[tuple[Tensor, Tensor]]:
    return [(data.train_x[i : i + 128], data.train_y[i : i + 128]) for i in range(0, 512, 128)]


def test_int8_agrees_with_fake_quantized_model(trained: Trained) -> None:
    data = trained.data
    int8_model = to_int8_deployable(trained.qat_model, data.train_x[:1], _calibration(data))
    qat_predictions = _predict(trained.qat_model, data.test_x)
    int8_predictions = _predict(int8_model, data.test_x)
    assert (qat_predictions == data.test_y).float().mean() > 0.9  # a real classifier
    assert (int8_predictions == qat_predictions).float().mean() >= 0.99
    # Real int8 kernels: quantized conv/linear modules, no float conv left.
    module_types = {type(m) for m in int8_model.modules()}
    assert nnq.Linear in module_types
    assert any(issubclass(t, nnq.Conv2d) for t in module_types)
    assert not any(t in (nn.Conv2d, nn.Linear, QuantConv2d) for t in module_types)


def test_source_model_untouched(trained: Trained) -> None:
    state = {k: v.clone() for k, v in trained.qat_model.state_dict().items()}
    to_int8_deployable(trained.qat_model, trained.data.train_x[:1], [trained.data.train_x[:64]])
    assert isinstance(trained.qat_model.stem[0], QuantConv2d)
    after = trained.qat_model.state_dict()
    assert all(torch.equal(value, after[key]) for key, value in state.items())


def test_float_model_converts(trained: Trained) -> None:
    data = trained.data
    int8_model = to_int8_deployable(trained.float_model, data.train_x[:1], _calibration(data))
    agreement = _predict(int8_model, data.test_x) == _predict(trained.float_model, data.test_x)
    assert agreement.float().mean() >= 0.98


def test_needs_calibration_data(trained: Trained) -> None:
    with pytest.raises(ValueError, match="calibration_batches"):
        to_int8_deployable(trained.float_model, trained.data.train_x[:1], [])


def test_a_model_fx_cannot_trace_gets_onnx_runtimes_int8_form() -> None:
    """A user's model with data-dependent control flow: torch.ao's FX cannot trace it, so the
    int8 form comes from ONNX Runtime, and the form's name says so."""
    from nascomp.compressors.deploy import deployable_form

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(4, 3)

        def forward(self, x: Tensor) -> Tensor:
            y = self.conv(x).mean(dim=(2, 3))
            if y.sum() > -1e9:  # FX cannot trace a branch on a tensor's value
                y = y * 2
            return self.fc(y)

    model = prepare_qat(Branchy(), QuantConfig(bits=8, act_bits=8))
    example = torch.randn(4, 1, 8, 8)
    model(example)  # observe activation ranges once
    deployed, form = deployable_form(
        model, bits=8, act_bits=8, example_inputs=example, calibration_batches=[example]
    )
    assert form == "onnxruntime int8-qdq"
    assert deployed(example).shape == (4, 3)


def test_the_int8_form_survives_without_torch_ao() -> None:
    """With torch.ao's quantization gone (as PyTorch plans), an 8-bit trial's deployable form
    is still int8: ONNX Runtime's. Run where importing it fails, as it would then."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import sys
        sys.modules["torch.ao.quantization.quantize_fx"] = None  # import now raises
        import torch
        from torch import nn
        from nascomp.compressors.deploy import deployable_form, torch_ao_available
        from nascomp.compressors.quantization import QuantConfig, prepare_qat
        assert not torch_ao_available()
        torch.manual_seed(0)
        model = prepare_qat(
            nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(288, 4)),
            QuantConfig(bits=8, act_bits=8),
        )
        x = torch.randn(256, 1, 8, 8)  # 16 inputs made one near-tie flip worth 6% agreement
        model(x)
        deployed, form = deployable_form(
            model, bits=8, act_bits=8, example_inputs=x[:1], calibration_batches=[x]
        )
        agree = (deployed(x).argmax(1) == model.eval()(x).argmax(1)).float().mean().item()
        print(form, agree)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    form, agreement = result.stdout.split()[-3:-1], float(result.stdout.split()[-1])
    assert " ".join(form) == "onnxruntime int8-qdq"
    assert agreement >= 0.95


def test_converting_keeps_no_model_alive() -> None:
    """torch.ao's conversion memoised every model it saw (an unbounded functools.cache keyed by
    module: 612 MB over 30 conversions of a 4.2 M-parameter model) and torch.fx kept each
    generated module's source: a worker converting a model every trial grew with the search."""
    import gc
    import linecache

    from torch.ao.quantization.fx import utils as fx_utils
    from torch.fx import GraphModule, graph_module

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    inputs = torch.randn(4, 1, 8, 8)
    gc.collect()
    # what earlier tests of this process still hold (a fixture's model) is theirs
    earlier = {id(o) for o in gc.get_objects() if isinstance(o, GraphModule)}
    deployed = to_int8_deployable(model.eval(), inputs[:1], [inputs])  # imports, first caches
    sources, lines = len(graph_module._loader.eval_cache), len(linecache.cache)
    for _ in range(5):
        deployed = to_int8_deployable(model, inputs[:1], [inputs])
    assert deployed(inputs).shape == (4, 3)  # the form still runs
    memo = getattr(fx_utils, "assert_and_get_unique_device", None)
    assert getattr(memo, "cache_info", None) is None or memo.cache_info().currsize == 0
    assert len(graph_module._loader.eval_cache) == sources and len(linecache.cache) <= lines
    gc.collect()
    alive = [o for o in gc.get_objects() if isinstance(o, GraphModule) and id(o) not in earlier]
    assert alive == [deployed]  # the form in use alone: no earlier model, no prepared one
