"""Batched augmentation: exact crops and flips against a per-image reference, seeded draws."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nascomp.trainers.augment import AugmentConfig, augment_batch, random_crop, random_flip


def batch(n: int = 16, channels: int = 3, size: int = 8) -> torch.Tensor:
    # Distinct values everywhere, so a crop at the wrong offset cannot match by accident.
    return (
        torch.arange(n * channels * size * size, dtype=torch.float32).view(n, channels, size, size)
        + 1.0
    )


def test_crop_equals_per_image_slicing_at_the_drawn_offsets() -> None:
    x, padding = batch(), 2
    out = random_crop(x, padding, torch.Generator().manual_seed(3))
    # The same draws the function made: the first 2 * N integers of an identically seeded one.
    offsets = torch.randint(
        0, 2 * padding + 1, (2, x.shape[0]), generator=torch.Generator().manual_seed(3)
    )
    padded = F.pad(x, (padding,) * 4)
    for i in range(x.shape[0]):
        top, left = offsets[0, i].item(), offsets[1, i].item()
        expected = padded[i, :, top : top + x.shape[2], left : left + x.shape[3]]
        assert torch.equal(out[i], expected)
    assert out.shape == x.shape
    # Offsets really vary: with 16 images and 25 positions, not all crops are the centre one.
    assert not torch.equal(out, x)


def test_flip_mirrors_exactly_the_drawn_images() -> None:
    x = batch(n=64)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = torch.rand(64, generator=torch.Generator().manual_seed(0)) < 0.5
    for i in range(64):
        assert torch.equal(out[i], x[i].flip(2) if flipped[i] else x[i])
    assert 0 < int(flipped.sum()) < 64


def test_no_padding_and_no_flip_is_the_identity() -> None:
    x = batch()
    out = augment_batch(x, AugmentConfig(padding=0, flip=False), torch.Generator().manual_seed(0))
    assert torch.equal(out, x)


def test_same_seed_same_batch_and_the_generator_advances() -> None:
    x, config = batch(), AugmentConfig(padding=4, flip=True)
    first = augment_batch(x, config, torch.Generator().manual_seed(7))
    again = augment_batch(x, config, torch.Generator().manual_seed(7))
    assert torch.equal(first, again)
    generator = torch.Generator().manual_seed(7)
    augment_batch(x, config, generator)
    assert not torch.equal(augment_batch(x, config, generator), first)


def test_padding_keeps_pixels_and_fills_with_zero() -> None:
    # A crop moves the image by at most `padding` pixels; what comes in from outside is 0.
    x = torch.ones(32, 1, 6, 6)
    out = random_crop(x, 2, torch.Generator().manual_seed(1))
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert (out.sum(dim=(1, 2, 3)) >= 4 * 4).all()  # at least a 4x4 block of the image remains


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_gives_the_cpu_result() -> None:
    x, config = batch(), AugmentConfig(padding=4, flip=True)
    on_cpu = augment_batch(x, config, torch.Generator().manual_seed(5))
    on_gpu = augment_batch(x.cuda(), config, torch.Generator().manual_seed(5))
    assert on_gpu.is_cuda and torch.equal(on_gpu.cpu(), on_cpu)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="padding"):
        AugmentConfig(padding=-1)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        augment_batch(torch.zeros(3, 8, 8), AugmentConfig(), torch.Generator())
