"""benchmarks/capture_vs_daam.py on the tiny pipeline, without daam (no project dependency)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import capture_vs_daam  # noqa: E402

TINY = ["--tiny", "--steps", "2", "--batch", "2", "--batch-steps", "2", "--repeats", "1"]


def test_tiny_run_without_daam_writes_rows_with_ratios(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(capture_vs_daam, "DAAM_VENV", tmp_path / "no-daam-venv")
    out = tmp_path / "rows.csv"
    rows = capture_vs_daam.main([*TINY, "--in-process", "--out", str(out)])
    assert "DAAM arm skipped" in capsys.readouterr().out
    with out.open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == capture_vs_daam.COLUMNS
        written = list(reader)
    assert written == [{k: str(v) for k, v in row.items()} for row in rows]
    runs = {(r["method"], int(r["steps"]), int(r["batch"])) for r in written}
    assert runs == {("plain", 2, 1), ("capture", 2, 1), ("plain", 2, 2), ("capture", 2, 2)}
    for row in written:
        assert float(row["wall_s"]) > 0 and float(row["cpu_s"]) > 0
        assert float(row["wall_ratio"]) > 0 and float(row["cpu_ratio"]) > 0
        assert float(row["cpu_per_image_ratio_vs_batch1_plain"]) > 0
        assert row["peak_mb"] == ""  # in-process runs report no peak
        assert row["git_sha"] and row["model"] == "tiny" and row["repeats"] == "1"
        if row["method"] == "plain":
            assert float(row["wall_ratio"]) == 1.0 and float(row["cpu_ratio"]) == 1.0
        wall_per_image = float(row["wall_s"]) / int(row["batch"])
        assert float(row["wall_per_image_s"]) == pytest.approx(wall_per_image, abs=1e-3)


def test_skip_message_names_setup_daam(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(capture_vs_daam, "DAAM_VENV", tmp_path / "no-daam-venv")
    monkeypatch.setattr(capture_vs_daam, "measure", lambda args, methods: {})
    monkeypatch.setattr(capture_vs_daam, "append_rows", lambda rows, out: None)
    capture_vs_daam.main([*TINY, "--in-process"])
    printed = capsys.readouterr().out
    assert "DAAM arm skipped" in printed and "--setup-daam" in printed


def test_child_process_reports_peak_memory(tmp_path: Path) -> None:
    args = capture_vs_daam.parse_args([*TINY, "--out", str(tmp_path / "x.csv")])
    got = capture_vs_daam.measure_child(args, "capture", 1, 1)
    assert got["wall_s"] > 0 and got["cpu_s"] > 0
    assert 100 < got["peak_mb"] < 8000  # torch + the tiny pipeline, in MB


def test_csv_with_other_columns_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "old.csv"
    out.write_text("date,method\n")
    with pytest.raises(ValueError, match="move it aside"):
        capture_vs_daam.append_rows([], out)


def test_methods_must_include_plain() -> None:
    with pytest.raises(SystemExit):
        capture_vs_daam.parse_args(["--methods", "capture", "daam"])


def test_sd15_architecture_matches_the_release_configs(realdata_dir: Path) -> None:
    with torch.device("meta"):  # shapes only: no 4 GB of weights
        built = capture_vs_daam.sd15_pipeline()
        released = capture_vs_daam.sd15_pipeline(realdata_dir / "sd15-config")
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(built, name).state_dict(), getattr(released, name).state_dict()
        assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert sum(p.numel() for p in built.unet.parameters()) == 859_520_964
    assert built.vae_scale_factor == 8 and built.unet.config.sample_size == 64
