"""benchmarks/segmenter_breakdown.py: localization vs. naming figures from a confusion matrix."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import segmenter_breakdown  # noqa: E402


def test_breakdown_hand_computed() -> None:
    cm = np.array([[8, 1, 1], [1, 3, 1], [0, 2, 3]])  # rows = target, columns = prediction
    out = segmenter_breakdown.breakdown(cm)
    assert out["per_class"] == [round(8 / 11, 3), round(3 / 8, 3), round(3 / 7, 3)]
    assert out["miou"] == pytest.approx((8 / 11 + 3 / 8 + 3 / 7) / 3)
    assert out["fg_iou"] == pytest.approx(9 / 12)  # object->object pixels / all but bg->bg
    assert out["fg_class_acc"] == pytest.approx(6 / 9)
