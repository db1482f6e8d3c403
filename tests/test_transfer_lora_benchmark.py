"""Pure helpers of the LoRA domain-transfer benchmark (benchmarks/transfer_lora.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from domain_stats import domain_statistics, target_shift_fraction  # noqa: E402
from transfer_lora import report  # noqa: E402


def test_domain_statistics_plain_grey_image() -> None:
    images = np.full((2, 8, 8, 3), 51, dtype=np.uint8)  # 51 / 255 = 0.2, grey: no chroma
    stats = domain_statistics(images, ring=2)
    assert stats["brightness"] == pytest.approx(0.2)
    assert stats["chroma"] == pytest.approx(0.0)
    assert stats["border_std"] == pytest.approx(0.0)
    assert stats["laplacian"] == pytest.approx(0.0)


def test_domain_statistics_hand_computed_values() -> None:
    image = np.zeros((1, 5, 5, 3), dtype=np.uint8)
    image[0, 2, 2] = (255, 0, 0)  # one pure red pixel in the centre (luma 0.299, chroma 1)
    image[0, 0, 0] = (255, 255, 255)  # one white border pixel (luma 1)
    stats = domain_statistics(image, ring=1)
    assert stats["brightness"] == pytest.approx((0.299 + 1.0) / 25)
    assert stats["chroma"] == pytest.approx(1 / 25)
    # ring of 16 pixels, one at 1 and 15 at 0: std = sqrt(1/16 - 1/256)
    assert stats["border_std"] == pytest.approx(np.sqrt(1 / 16 - 1 / 256))
    # inner 3x3 Laplacian: centre 4 * 0.299, its 4 neighbours -0.299 each, corners 0 (the white
    # pixel (0, 0) is only a diagonal neighbour of the inner pixel (1, 1))
    assert stats["laplacian"] == pytest.approx((4 * 0.299 + 4 * 0.299) / 9)


def test_domain_statistics_rejects_float_images() -> None:
    with pytest.raises(ValueError, match="uint8"):
        domain_statistics(np.zeros((1, 8, 8, 3), dtype=np.float32))


def test_target_shift_fraction() -> None:
    source = {"brightness": 0.5, "chroma": 0.2, "border_std": 0.0, "laplacian": 0.04}
    target = {"brightness": 0.5, "chroma": 0.1, "border_std": 0.1, "laplacian": 0.12}
    stats = {"brightness": 0.6, "chroma": 0.15, "border_std": 0.025, "laplacian": 0.2}
    shift = target_shift_fraction(stats, source, target)
    assert np.isnan(shift["brightness"])  # no source-target gap to move along
    tiny_gap = {**target, "brightness": 0.505}  # below min_gap 0.01: not a domain statistic
    assert np.isnan(target_shift_fraction(stats, source, tiny_gap)["brightness"])
    assert shift["chroma"] == pytest.approx(0.5)
    assert shift["border_std"] == pytest.approx(0.25)
    assert shift["laplacian"] == pytest.approx(2.0)


def test_report_mean_std_and_paired_difference(tmp_path: Path) -> None:
    rows = [
        {"variant": "source_only", "seed": 0, "miou": 0.30},
        {"variant": "source_only", "seed": 1, "miou": 0.40},
        {"variant": "lora", "seed": 0, "miou": 0.40},
        {"variant": "lora", "seed": 1, "miou": 0.45},
        {"variant": "real_target", "seed": 0, "miou": 0.80},
    ]
    out = tmp_path / "runs.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = report(out)
    # source: mean 0.35, sample std sqrt(0.005) = 0.0707; lora: 0.425 +- 0.0354
    assert "| source_only | 2 | 0: 0.300, 1: 0.400 | 0.350 +- 0.071 |" in text
    assert "| lora | 2 | 0: 0.400, 1: 0.450 | 0.425 +- 0.035 |" in text
    assert "| real_target | 1 | 0: 0.800 | 0.800 +- 0.000 |" in text
    # paired differences 0.10 and 0.05: mean 0.075, std 0.0354
    assert "(paired by seed, n=2): +0.075 +- 0.035 mIoU; LoRA better in 2/2 seeds" in text


def test_finish_wandb_run_ends_only_a_live_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    from transfer_lora import finish_wandb_run

    calls = []
    fake = types.SimpleNamespace(run=None, finish=lambda: calls.append("finish"))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    finish_wandb_run()
    assert calls == []  # no live run: nothing to end
    fake.run = object()
    finish_wandb_run()
    assert calls == ["finish"]
