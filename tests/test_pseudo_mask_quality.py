"""benchmarks/pseudo_mask_quality.py: the scoring of pseudo-masks against exact foregrounds."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import pseudo_mask_quality as pmq  # noqa: E402

# Two 2x3 images; 255 = ignore (scored as background).
TARGET = np.array([[[0, 0, 1], [0, 1, 1]], [[2, 2, 0], [0, 0, 0]]])
PRED = np.array([[[0, 1, 1], [0, 255, 1]], [[2, 0, 0], [0, 0, 2]]])


def test_confusion_counts_ignore_as_background() -> None:
    cm = pmq.confusion(PRED, TARGET, 3)
    assert cm.sum() == 12
    # rows = target, columns = prediction
    np.testing.assert_array_equal(cm, [[5, 1, 1], [1, 2, 0], [1, 0, 1]])


def test_score_masks_hand_computed() -> None:
    scores = pmq.score_masks(PRED, TARGET, 4)  # class 3 absent from both: left out of the mean
    assert scores["iou_0"] == pytest.approx(5 / 9)
    assert scores["iou_1"] == pytest.approx(2 / 4)
    assert scores["iou_2"] == pytest.approx(1 / 3)
    assert math.isnan(scores["iou_3"])
    assert scores["miou"] == pytest.approx((5 / 9 + 1 / 2 + 1 / 3) / 3)
    assert scores["fg_iou"] == pytest.approx(3 / 7)
    assert scores["ignored"] == pytest.approx(1 / 12)


def test_score_masks_perfect_and_empty_prediction() -> None:
    perfect = pmq.score_masks(TARGET, TARGET, 3)
    assert perfect["miou"] == 1.0 and perfect["fg_iou"] == 1.0 and perfect["ignored"] == 0.0
    background = pmq.score_masks(np.zeros_like(TARGET), TARGET, 3)
    # background IoU 7/12, both classes 0: mean over the three classes in the target
    assert background["miou"] == pytest.approx((7 / 12) / 3)
    assert background["fg_iou"] == 0.0


def test_named_scores_and_methods() -> None:
    named = pmq.named_scores({"miou": 0.123456, "iou_0": 0.5, "iou_1": 0.25})
    assert named == {"miou": 0.1235, "iou_background": 0.5, "iou_circle": 0.25}
    methods = pmq.mask_methods(16)
    assert list(methods) == [
        "attn2mask",
        "threshold",
        "self_refine",
        "attn2mask+crf",
        "threshold+crf",
        "self_refine+crf",
    ]
    assert [m.crf for m in methods.values()] == [False] * 3 + [True] * 3
    assert methods["self_refine+crf"].params == {"self_resolution": 16}


def test_model_step_from_card(tmp_path: Path) -> None:
    (tmp_path / "MODEL_CARD.md").write_text("3. Steps: 12,345 optimizer steps (99k images seen).")
    assert pmq.model_step(tmp_path) == "12345"
    assert pmq.model_step(tmp_path / "missing") == ""
