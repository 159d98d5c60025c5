"""Trial configs shared by the trainer tests."""


def fast(epochs: int) -> list[str]:
    """Experiment overrides for short run_trial tests: ``epochs`` training epochs, one of
    pruning and one of QAT, a quick latency measurement, no distillation."""
    return [
        f"train.epochs={epochs}",
        "train.prune_epochs=1",
        "train.qat_epochs=1",
        "measure.n_warmup=1",
        "measure.n_repeat=2",
        "measure.latency_batch_size=8",
        "space.distill.enabled=false",
    ]


# A two-stage residual CNN, uncompressed: the small student most run_trial tests start from.
SMALL_CNN = {
    "arch.family": "cnn",
    "arch.n_stages": 2,
    "arch.blocks_per_stage": 1,
    "arch.base_channels": 8,
    "arch.block": "residual",
    "prune.method": "none",
    "quant.bits": 32,
    "quant.act_bits": 8,
}
