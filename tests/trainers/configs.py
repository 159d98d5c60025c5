"""Trial configs shared by the trainer tests."""

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
