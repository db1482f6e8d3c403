"""benchmarks/beco_confidence.py: the foreground shares of BECO's online prediction, on nets
whose averaged probabilities are known."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import beco_confidence  # noqa: E402


class FixedLogits(nn.Module):
    """Returns the same (C, H, W) logits for every image; raises if called in train mode (the
    online prediction is taken in eval mode)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert not self.training
        return self.logits.expand(images.shape[0], *self.logits.shape)


def _logits_for(probabilities: list[list[float]]) -> torch.Tensor:
    """(C, 1, W) logits whose softmax over C is ``probabilities`` (W pixels, C classes each)."""
    return torch.tensor(probabilities).log().T.unsqueeze(1)


def test_shares_of_label_and_confident_pixels() -> None:
    # 4 pixels, 2 classes: background at 0.99, foreground at 0.8, foreground at 0.6, ignored
    probs = [[0.99, 0.01], [0.2, 0.8], [0.4, 0.6], [0.01, 0.99]]
    nets = (FixedLogits(_logits_for(probs)), FixedLogits(_logits_for(probs)))
    nets[0].train(), nets[1].eval()  # each mode is restored after the prediction
    batch = {"image": torch.zeros(2, 3, 1, 4), "mask": torch.tensor([[[0, 1, 0, 255]]] * 2)}
    stats = beco_confidence.confidence_stats(nets, [batch], thresholds=(0.5, 0.7, 0.95))
    assert nets[0].training and not nets[1].training
    assert stats["images"] == 2
    assert stats["mask_foreground"] == pytest.approx(1 / 3)  # the ignored pixel is left out
    assert stats["label_foreground"] == pytest.approx(2 / 3)
    confident, foreground = stats["by_threshold"][0.5]
    assert (confident, foreground) == (pytest.approx(1.0), pytest.approx(2 / 3))
    assert stats["by_threshold"][0.7] == (pytest.approx(2 / 3), pytest.approx(1 / 2))
    assert stats["by_threshold"][0.95] == (pytest.approx(1 / 3), pytest.approx(0.0))


def test_no_confident_pixel_is_nan_not_zero() -> None:
    nets = (FixedLogits(_logits_for([[0.5, 0.5]])),) * 2
    batch = {"image": torch.zeros(1, 3, 1, 1), "mask": torch.zeros(1, 1, 1, dtype=torch.long)}
    confident, foreground = beco_confidence.confidence_stats(nets, [batch], (0.9,))["by_threshold"][
        0.9
    ]
    assert confident == 0.0 and math.isnan(foreground)


def test_no_run_of_the_row_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="paper_table.py --rows robust_beco_no_online"):
        beco_confidence.main(["--workdir", str(tmp_path), "--csv", str(tmp_path / "x.csv")])
