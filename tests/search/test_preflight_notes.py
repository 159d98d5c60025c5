"""Weights that nascomp does not quantize (a recurrent layer's, attention's input projection, a
bare parameter) stay float32 at every bit-width a trial draws: a student made mostly of them
gets a one-line note before the search starts, with exact counts, and nothing else changes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from nascomp.compressors.size import float_weights
from nascomp.search.experiment import validate_experiment
from nascomp.search.preflight import check_user_code, float_weights_note

MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Rows(nn.Module):
        def __init__(self, width, n_classes, hidden):
            super().__init__()
            self.rnn = nn.GRU(width, hidden, batch_first=True)
            self.head = nn.Linear(hidden, n_classes)

        def forward(self, x):  # (N, 1, H, W): the rows of an image as time steps
            out, _ = self.rnn(x[:, 0])
            return self.head(out[:, -1])

    def gru(input_shape, n_classes, hidden=8):
        return Rows(input_shape[-1], n_classes, hidden)

    def conv(input_shape, n_classes):
        return nn.Sequential(nn.Conv2d(input_shape[0], 4, 3), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(4, n_classes))
    """
)


class _Tokens(nn.Module):
    def __init__(self, position: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.position = nn.Parameter(torch.zeros(position, 8))
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 2)


def test_the_weights_outside_quantized_layers_are_counted_by_name() -> None:
    model = _Tokens(position=4)
    # attention's output projection is a Linear (quantized); its input projection is not
    assert float_weights(model) == {"position": 32, "attn.in_proj_weight": 3 * 8 * 8}
    assert float_weights(nn.Sequential(nn.Conv1d(2, 3, 3), nn.BatchNorm1d(3))) == {}
    total = sum(p.numel() for p in model.parameters())
    assert total == 80 + 32 + (192 + 24 + 64 + 8) + 18
    note = float_weights_note(model)
    assert note == (
        f"space.arch: 224 of {total} parameters (54%) are weights outside the layers nascomp "
        "quantizes (Conv1d / Conv2d / Conv3d / Linear / Embedding): attn (MultiheadAttention) "
        "192; position (_Tokens) 32; they stay float32 at every bit-width, unstructured pruning "
        "leaves them whole, and they count at 32 bits in size_bytes"
    )


def test_a_small_share_gets_no_note() -> None:
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 2))
    model.register_parameter("offset", nn.Parameter(torch.zeros(8, 8)))  # 64 of 4,354: 1.5%
    assert float_weights(model) == {"offset": 64}
    assert float_weights_note(model) is None


@pytest.mark.parametrize(("builder", "noted"), [("gru", True), ("conv", False)])
def test_the_search_notes_a_student_made_mostly_of_float_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, builder: str, noted: bool
) -> None:
    name = f"rows_{tmp_path.name}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    arch = {"family": "custom", "builder": f"{name}:{builder}"}
    space = {"arch": arch, "distill": {"enabled": [False]}}
    notes: list[str] = []
    checked = check_user_code(validate_experiment({"space": space}), notes)
    assert checked.space.arch.family == "custom"
    # digits are 8x8: a GRU over 8 rows of 8 pixels with 8 units holds 3 * 8 * (8 + 8) weights
    expected = [
        "space.arch: 384 of 522 parameters (74%) are weights outside the layers nascomp "
        "quantizes (Conv1d / Conv2d / Conv3d / Linear / Embedding): rnn (GRU) 384; they stay "
        "float32 at every bit-width, unstructured pruning leaves them whole, and they count at "
        "32 bits in size_bytes"
    ]
    assert notes == (expected if noted else [])
