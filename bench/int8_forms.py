"""Which tensors the int8 file rounds: every one ONNX Runtime has a kernel for, or the weight
layers' inputs alone (as QAT does), on models trained with 8-bit QAT on the digits.

For each model it prints the top-1 agreement of each int8 file with the QAT model on held-out
digits, their ONNX Runtime latency at batch 1 on one thread (median of interleaved runs), and
which of the two ``onnx_form`` ships (``compressors.onnx_export._faithful_int8``: the all-op
file unless it agrees on under 98% of the calibration inputs). docs/benchmarks.md, "Which
tensors the int8 file rounds", has the figures of the user sweep's models.

    python bench/int8_forms.py [--epochs 2] [--repeats 200]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import at_least, load_average, machine
from sklearn.datasets import load_digits
from torch import Tensor, nn

from nascomp.compressors.onnx_export import (
    OnnxModule,
    _float_model,
    export_onnx,
    onnx_form,
    qat_input_ranges,
    quantize_int8,
)
from nascomp.compressors.quantization import QuantConfig, prepare_qat
from nascomp.spaces.models import build_model


class GatedBlock(nn.Module):
    """Grouped 1x1 and depthwise convolutions between GroupNorms, a squeeze-excitation gate and
    a residual sum: tensors QAT never rounds, which an all-int8 file rounds."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.expand = nn.Conv2d(c, 2 * c, 1, groups=2, bias=False)
        self.norm1 = nn.GroupNorm(4, 2 * c)
        self.depthwise = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c, bias=False)
        self.norm2 = nn.GroupNorm(4, 2 * c)
        self.squeeze = nn.Conv2d(2 * c, 8, 1)
        self.excite = nn.Conv2d(8, 2 * c, 1)
        self.project = nn.Conv2d(2 * c, c, 1, bias=False)
        self.norm3 = nn.BatchNorm2d(c)

    def forward(self, x: Tensor) -> Tensor:
        y = F.hardswish(self.norm1(self.expand(x)))
        y = F.gelu(self.norm2(self.depthwise(y)))
        gate = torch.sigmoid(self.excite(F.silu(self.squeeze(F.adaptive_avg_pool2d(y, 1)))))
        return x + self.norm3(self.project(y * gate))


def gated_cnn() -> nn.Module:
    """A small SE/GroupNorm CNN for the digits' 1x8x8 inputs."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.SiLU(),
        GatedBlock(16), GatedBlock(16),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(16), nn.Linear(16, 10),
    )  # fmt: skip


def digits() -> tuple[Tensor, Tensor]:
    x, y = load_digits(return_X_y=True)
    return torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16, torch.tensor(y)


def trained_qat(net: nn.Module, x: Tensor, y: Tensor, epochs: int = 2) -> nn.Module:
    """``net`` prepared for 8-bit QAT and trained on the first 1,400 digits, in eval mode."""
    model = prepare_qat(net, QuantConfig(bits=8, act_bits=8))
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(epochs):
        for i in range(0, 1400, 64):
            loss = F.cross_entropy(model(x[i : i + 64]), y[i : i + 64])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def int8_files(model: nn.Module, x: Tensor, batches: list[Tensor]) -> dict[str, bytes]:
    """The all-op and the weight-inputs int8 files of ``model``."""
    files = {}
    with tempfile.TemporaryDirectory() as folder:
        float_path = Path(folder) / "model.onnx"
        export_onnx(model, x[:1], float_path)
        ranges = qat_input_ranges(model, _float_model(model), x[:1])
        for name, only in (("all ops", False), ("weight inputs", True)):
            path = Path(folder) / f"{only}.onnx"
            quantize_int8(float_path, batches, path, layer_ranges=ranges, weight_inputs_only=only)
            files[name] = path.read_bytes()
    return files


def _median_ms(modules: dict[str, OnnxModule], x: Tensor, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in modules}
    for _ in range(repeats):  # interleaved: drift on a shared machine hits both alike
        for name, module in modules.items():
            started = time.perf_counter()
            module(x)
            times[name].append(time.perf_counter() - started)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--epochs",
        type=at_least(1),
        default=2,
        help="8-bit QAT epochs of each model on the first 1,400 digits (default %(default)s)",
    )
    parser.add_argument(
        "--repeats",
        type=at_least(1),
        default=200,
        help="interleaved batch-1 runs of each file timed for its median latency "
        "(default %(default)s)",
    )
    args = parser.parse_args()
    print(f"{machine()}; load average {load_average()}")
    x, y = digits()
    batches, held_out = list(x[:1024].split(64)), x[1400:]
    models = {
        "SE/GroupNorm CNN": gated_cnn,
        "torchvision mobilenet_v3_small": lambda: build_model(
            {"family": "torchvision", "model": "mobilenet_v3_small"}, (1, 8, 8), 10
        ),
        "torchvision resnet18": lambda: build_model(
            {"family": "torchvision", "model": "resnet18"}, (1, 8, 8), 10
        ),
    }
    print(f"{'model':<32}{'file':<16}{'agreement':>10}{'ms':>9}  ships")
    for title, make in models.items():
        torch.manual_seed(0)
        model = trained_qat(make(), x, y, args.epochs)
        with torch.no_grad():
            expected = model(held_out).argmax(dim=1)
        modules = {name: OnnxModule(data) for name, data in int8_files(model, x, batches).items()}
        latency = _median_ms(modules, held_out[:1], args.repeats)
        shipped = onnx_form(
            model, bits=8, act_bits=8, example_inputs=x[:1], calibration_batches=batches
        )
        for name, module in modules.items():
            agreement = float((module(held_out).argmax(dim=1) == expected).float().mean())
            ships = "yes" if module.model_bytes == shipped.data else ""
            print(f"{title:<32}{name:<16}{agreement:>10.3f}{latency[name]:>9.3f}  {ships}")
        ratio = latency["weight inputs"] / latency["all ops"]
        print(f"{'':<32}weight inputs / all ops latency: {ratio:.2f}")


if __name__ == "__main__":
    main()
