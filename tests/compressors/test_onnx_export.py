"""The ONNX file a trial ships: fp32 within float tolerance, pruned at its real shapes, int8
QDQ whose weights are the QAT weights' own codes; run in ONNX Runtime, checked by onnx."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from nascomp.compressors.onnx_export import (
    OnnxModule,
    check_model,
    export_onnx,
    onnx_form,
)
from nascomp.compressors.pruning import PruneConfig, make_pruner
from nascomp.compressors.quantization import QuantConfig, prepare_qat, quantize_weight_codes


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    ).eval()


@pytest.mark.parametrize("exporters", [("torchscript", "dynamo"), ("dynamo",)])
def test_fp32_file_computes_the_model_at_any_batch_size(
    tmp_path: Path, exporters: tuple[str, ...]
) -> None:
    """Both exporters: the torch.export-based one alone is what remains when torch drops the
    TorchScript-based one."""
    model = _cnn()
    path = tmp_path / "model.onnx"
    used = export_onnx(model, torch.randn(1, 3, 8, 8), path, exporters=exporters)
    assert used == exporters[0]
    check_model(path.read_bytes())
    shipped = OnnxModule(path.read_bytes())
    for batch in (1, 7):
        x = torch.randn(batch, 3, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(shipped(x), model(x), rtol=1e-4, atol=1e-5)


def test_a_structurally_pruned_model_ships_at_its_smaller_shapes(tmp_path: Path) -> None:
    model = _cnn()
    pruner = make_pruner(model, PruneConfig("structured", 0.5), torch.randn(2, 3, 8, 8))
    pruner.update(1.0)
    path = tmp_path / "model.onnx"
    export_onnx(model, torch.randn(1, 3, 8, 8), path)
    weights = {
        tuple(numpy_helper.to_array(t).shape) for t in onnx.load(str(path)).graph.initializer
    }
    assert (8, 3, 3, 3) in weights and (5, 8) in weights  # 16 -> 8 channels, BN folded in
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(OnnxModule(path.read_bytes())(x), model(x), rtol=1e-4, atol=1e-5)


def test_int8_weights_are_the_qat_weights_own_codes() -> None:
    """Per-channel symmetric int8 over [-127, 127] with max|w|/127 scales: ONNX Runtime's
    quantizer re-derives exactly the codes 8-bit QAT trained with (no BatchNorm to fold here, so
    the file's weights are the QAT layer's weights themselves)."""
    torch.manual_seed(0)
    model = prepare_qat(
        nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 4)),
        QuantConfig(bits=8, act_bits=8),
    )
    x = torch.randn(64, 3, 8, 8)
    model(x)  # observe activation ranges
    form = onnx_form(
        model.eval(), bits=8, act_bits=8, example_inputs=x[:1], calibration_batches=[x]
    )
    assert form.precision == "int8-qdq" and form.name == "onnxruntime int8-qdq"
    check_model(form.data)
    graph = onnx.load_model_from_string(form.data).graph
    int8 = {
        t.name: numpy_helper.to_array(t)
        for t in graph.initializer
        if t.data_type == onnx.TensorProto.INT8
    }
    conv_codes, _ = quantize_weight_codes(model[0].weight.detach(), 8)
    matches = [w for w in int8.values() if w.shape == tuple(conv_codes.shape)]
    assert len(matches) == 1
    np.testing.assert_array_equal(matches[0], conv_codes.numpy())
    agreement = (form.module(x).argmax(1) == model(x).argmax(1)).float().mean()
    assert agreement >= 0.95


def test_other_widths_ship_fp32_with_their_weights_folded() -> None:
    model = prepare_qat(_cnn().train(), QuantConfig(bits=4, act_bits=8))
    x = torch.randn(8, 3, 8, 8)
    model(x)
    model.eval()
    form = onnx_form(model, bits=4, act_bits=8, example_inputs=x[:1], calibration_batches=[x])
    assert form.name == "onnxruntime fp32-folded-4bit"
    graph = onnx.load_model_from_string(form.data).graph
    first = next(numpy_helper.to_array(t) for t in graph.initializer if t.dims[:2] == [16, 3])
    assert all(len(np.unique(row)) <= 2**4 for row in first.reshape(16, -1))
