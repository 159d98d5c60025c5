"""How a dataset's inputs are normalised: one definition for every reader, and what an export
writes down so that a deployment team feeds the shipped model what it was trained on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class Normalise:
    """``x -> (x / scale - mean) / std`` per channel (a sample's first dimension), in float32,
    on one sample (``sample_dim`` dimensions, e.g. 3 for (C, H, W)) or a batch of them: one
    definition, so in-memory and streamed inputs are the same bits. A plain object (not a
    closure), so DataLoader workers can receive it however they start."""

    mean: Tensor
    std: Tensor
    scale: float
    sample_dim: int = 3
    # Integer ids (token, category or item indices: an integer dtype other than uint8): given
    # to the model as they are, as int64, since an ``nn.Embedding`` looks them up.
    ids: bool = False

    def __call__(self, x: Tensor) -> Tensor:
        if self.ids:
            return x.to(torch.int64, copy=True)
        rest = (1,) * (self.sample_dim - 1)
        shape = (-1, *rest) if x.dim() == self.sample_dim else (1, -1, *rest)
        scaled = x.to(torch.float32, copy=True).div_(self.scale)
        return scaled.sub_(self.mean.view(shape)).div_(self.std.view(shape))

    def describe(self) -> dict[str, Any]:
        """The recipe as plain data (an export's ``preprocess.json``)."""
        if self.ids:
            return {"input_dtype": "int64", "ids": True}
        return {
            "input_dtype": "float32",
            "scale": self.scale,
            "mean": [float(v) for v in self.mean.flatten()],
            "std": [float(v) for v in self.std.flatten()],
            "channel_axis": 1,
        }


# Below this a channel or feature is constant on the split its statistics come from.
_CONSTANT_STD = 1e-6


def population_std(variance: Tensor) -> Tensor:
    """The std of each channel from its ``variance``, 1 where the channel is constant, as
    scikit-learn's StandardScaler does: dividing by a clamped std of 1e-6 left a feature
    that is constant in training 0 there, but turned any other value it takes on new inputs
    into a millionfold one (logits of 136,000 from an exported 4-bit model, seen)."""
    std = variance.clamp_min(0.0).sqrt()
    return torch.where(std < _CONSTANT_STD, torch.ones_like(std), std)
