"""The cache reliability benchmark (benchmarks/cache_reliability.py) on one trial per fault:
zero samples lost or duplicated, and CSV rows written by the script (batch invariance on 6
keys)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cache_reliability  # noqa: E402


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_one_trial_per_fault_loses_and_duplicates_nothing(tmp_path, monkeypatch) -> None:
    argv = ["cache_reliability.py", "--trials", "1", "--real", "0", "--samples", "16",
            "--verify-samples", "4", "--batch-keys", "6", "--out", str(tmp_path)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    cache_reliability.main()
    with open(tmp_path / "cache_reliability.csv") as f:
        rows = list(csv.DictReader(f))
    assert {row["fault"] for row in rows} >= {"concurrent+kill", "manifest-bitflip", "disk-full"}
    for row in rows:
        assert (row["lost"], row["duplicated"]) == ("0", "0"), row
    with open(tmp_path / "cache_verify_cost.csv") as f:
        cost = list(csv.DictReader(f))
    assert [int(row["image_px"]) for row in cost] == [32, 128, 512]
    assert all(float(row["mb_per_s"]) > 0 for row in cost)
    with open(tmp_path / "cache_batch_invariance.csv") as f:
        (invariance,) = list(csv.DictReader(f))
    assert invariance["keys"] == "6" and invariance["threads"] == "1" and invariance["cpu"]
    assert 0 <= int(invariance["keys_same_margins"]) <= 6
    assert float(invariance["max_margin_gap"]) <= 1 / 256  # the bound the tests hold
