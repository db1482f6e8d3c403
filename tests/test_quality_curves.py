"""benchmarks/quality_curves.py: which main-job rows become which ratio series, at which hours."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import quality_curves  # noqa: E402


def job_row(step: str, ratio: str, **extra: str) -> dict[str, str]:
    row = {"model_step": step, "prompts": "grammar colour-1.0", "images": "1280", "loss": "ignore"}
    return {**row, "augment": "hflip", "ddim_steps": "10", "ratio": ratio, **extra}


def test_ratio_points_group_rows_and_add_decoder_hours() -> None:
    hours = {100: 1.0, 200: 2.0}
    rows = [
        job_row("100", "0.5"),
        job_row("200", "0.6", decoder_ft_steps="0", decoder_ft_cpu_hours="0"),
        job_row("200", "0.7", decoder_ft_steps="4000", decoder_ft_cpu_hours="0.7"),
        job_row("200", "0.1", notes="a one-off variant"),
        job_row("300", "0.9"),  # no fidelity row for this step: no CPU hours, left out
    ]
    series = quality_curves.ratio_points(rows, hours)
    plain = "grammar, 1280 img, ignore, 10 DDIM steps"
    assert series[plain] == [(1.0, 0.5), (2.0, 0.6)]
    ((x, y),) = series[plain + ", VAE decoder fine-tuned"]
    assert (x, y) == (pytest.approx(2.7), 0.7)
    assert len(series) == 2
