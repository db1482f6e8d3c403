"""The shape classifier shipped for the fidelity benchmarks (benchmarks/assets/shape_classifier)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import shape_classifier  # noqa: E402


def test_shipped_classifier_names_real_scenes() -> None:
    weights = shape_classifier.DEFAULT_DIR / shape_classifier.WEIGHTS
    assert weights.is_file() and weights.stat().st_size < 1_000_000  # small enough to ship
    info = json.loads((shape_classifier.DEFAULT_DIR / "classifier.json").read_text())
    assert info["augmentation"] == shape_classifier.DEFAULT_AUGMENT
    assert info["steps"] == shape_classifier.DEFAULT_STEPS
    assert info["real_val_accuracy"] > 0.99 and info["vae_roundtrip_accuracy"] > 0.98
    model = shape_classifier.load_classifier(train_if_missing=False)
    config = shape_classifier.single_object_config()
    x, y = shape_classifier.render_batch(range(10**8, 10**8 + 120), config)  # held-out seeds
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    assert accuracy > 0.97
