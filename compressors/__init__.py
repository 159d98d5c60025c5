"""Compression of plain ``nn.Module`` models: distillation, pruning, quantization, measures.

Nothing here knows about search: each function takes a model and a small config.
``compressors.deploy.to_int8_deployable`` is not re-exported: it imports torch.ao's FX
quantization, which only the final deployable step needs.
"""

from __future__ import annotations

from nascomp.compressors.distillation import distillation_loss
from nascomp.compressors.export import load_compressed, save_compressed
from nascomp.compressors.measure import (
    count_macs,
    count_nonzero_params,
    count_params,
    measure_latency_ms,
)
from nascomp.compressors.pruning import IMPORTANCES, PRUNE_METHODS, PruneConfig, Pruner, make_pruner
from nascomp.compressors.quantization import (
    VALID_BITS,
    QuantConfig,
    fake_quantize_weight,
    prepare_qat,
    quantized_bits,
)
from nascomp.compressors.size import model_size_bytes

__all__ = [
    "IMPORTANCES",
    "PRUNE_METHODS",
    "VALID_BITS",
    "PruneConfig",
    "Pruner",
    "QuantConfig",
    "count_macs",
    "count_nonzero_params",
    "count_params",
    "distillation_loss",
    "fake_quantize_weight",
    "load_compressed",
    "make_pruner",
    "measure_latency_ms",
    "model_size_bytes",
    "prepare_qat",
    "quantized_bits",
    "save_compressed",
]
