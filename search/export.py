"""Write a reproduced model to a folder: state dict, TorchScript, the trial's config."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn


def export_model(
    model: nn.Module, example: torch.Tensor, config: dict[str, Any], out_dir: Path
) -> dict[str, Path]:
    """Export ``model`` (in eval mode) next to its flat trial config; return the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    files = {
        "state_dict": out_dir / "state_dict.pt",
        "torchscript": out_dir / "model.torchscript.pt",
        "config": out_dir / "trial_config.json",
    }
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, files["state_dict"])
    with warnings.catch_warnings(), torch.no_grad():
        # TorchScript is deprecated in favour of torch.export, but it is still what most mobile
        # and C++ runtimes load; the trace is checked against eager outputs by the tests.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example, check_trace=False)
    traced.save(str(files["torchscript"]))
    files["config"].write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
    return files
