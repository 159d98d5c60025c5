"""Small models shared by the compressors tests."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn


class ResidualBlock(nn.Module):
    """conv-bn-relu-conv-bn plus an identity add, then relu."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


class DepthwiseSeparable(nn.Module):
    """Depthwise 3x3 (groups = channels) then pointwise 1x1, each with BN and ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False
        )
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.depthwise(x)))
        return self.relu(self.bn2(self.pointwise(x)))


class ResidualCNN(nn.Module):
    """Stem, two residual blocks, a depthwise-separable block, a linear head."""

    def __init__(self, in_channels: int = 1, width: int = 16, n_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.blocks = nn.Sequential(ResidualBlock(width), ResidualBlock(width))
        self.separable = DepthwiseSeparable(width, 2 * width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(2 * width, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.separable(self.blocks(self.stem(x)))
        return self.head(self.flatten(self.pool(x)))


def plain_cnn() -> nn.Sequential:
    """conv(3->8) bn relu conv(8->16) bn relu pool flatten linear(16->10); 1,610 params."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


@pytest.fixture
def residual_cnn() -> ResidualCNN:
    torch.manual_seed(0)
    return ResidualCNN()


@pytest.fixture
def plain_model() -> nn.Sequential:
    torch.manual_seed(0)
    return plain_cnn()


@pytest.fixture(scope="session")
def make_residual_cnn() -> type[ResidualCNN]:
    """The class itself, for tests that build several models (test modules cannot import
    conftest)."""
    return ResidualCNN


def two_layer_model() -> nn.Sequential:
    """A conv (72 weights, 4 output channels) and a linear layer (12 weights, 3 outputs) whose
    weights have magnitudes in [0.6, 1]: none rounds to code 0, even at 2 bits."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3),  # weight 72 elements, 4 output channels
        nn.BatchNorm2d(4),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),  # weight 12 elements, 3 output channels
    )
    with torch.no_grad():
        # Magnitudes in [0.6, 1]: no weight rounds to code 0 even at 2 bits.
        for layer in (model[0], model[4]):
            magnitude = 0.6 + 0.4 * torch.rand_like(layer.weight)
            layer.weight.copy_(magnitude * torch.sign(torch.randn_like(layer.weight)))
    return model
