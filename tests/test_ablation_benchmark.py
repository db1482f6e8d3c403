"""Pure helpers of the robust-training ablation benchmark (benchmarks/ablation_robust_ldm.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from ablation_robust_ldm import pseudo_mask_quality, records_to_tensors  # noqa: E402

from synthmask.cache import SampleRecord  # noqa: E402


def _record(fill: int, label: int) -> SampleRecord:
    image = np.full((2, 2, 3), fill, dtype=np.uint8)
    mask = np.array([[0, label], [255, label]], dtype=np.uint8)
    reliability = np.array([[True, False], [False, True]])
    margin = np.array([[0.5, 0.25], [0.0, 1.0]], dtype=np.float16)
    return SampleRecord(image, mask, reliability, margin)


def test_records_to_tensors_values() -> None:
    data = records_to_tensors([_record(0, 3), _record(255, 6)])
    assert data["image"].shape == (2, 3, 2, 2) and data["image"].dtype == torch.float32
    # (0 - mean) / std and (1 - mean) / std for the red channel: mean 0.485, std 0.229
    assert data["image"][0, 0, 0, 0].item() == pytest.approx(-0.485 / 0.229, abs=1e-5)
    assert data["image"][1, 0, 1, 1].item() == pytest.approx(0.515 / 0.229, abs=1e-5)
    assert data["mask"].dtype == torch.int64
    assert data["mask"][1].tolist() == [[0, 6], [255, 6]]
    assert data["reliability"][0].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert data["margin"][0].tolist() == [[0.5, 0.25], [0.0, 1.0]]


def test_records_to_tensors_empty_is_an_error() -> None:
    with pytest.raises(ValueError, match="synthesize"):
        records_to_tensors([])


def test_pseudo_mask_quality_hand_computed() -> None:
    # one 2x2 image: pseudo fg = {(0,1), (1,1)}, generated fg = {(0,1), (1,0)}; (1,0) ignored
    mask = torch.tensor([[[0, 2], [255, 2]]])
    reliability = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    foreground = torch.tensor([[[False, True], [True, False]]])
    q = pseudo_mask_quality(mask, reliability, foreground)
    # valid pixels (0,0) (0,1) (1,1); wrong: (1,1) only
    assert q["wrong_fg_bg_pixels"] == pytest.approx(1 / 3)
    assert q["wrong_in_reliable"] == pytest.approx(0.0)  # reliable valid: (0,0), (0,1)
    assert q["wrong_in_unreliable"] == pytest.approx(1.0)  # unreliable valid: (1,1)
    assert q["reliable_fraction"] == pytest.approx(2 / 3)
    assert q["pseudo_fg_fraction"] == pytest.approx(2 / 3)
    assert q["generated_fg_fraction"] == pytest.approx(0.5)
    # IoU: intersection {(0,1)}, union {(0,1), (1,0), (1,1)} (ignore excluded from pseudo fg only)
    assert q["fg_iou_mean"] == pytest.approx(1 / 3)
