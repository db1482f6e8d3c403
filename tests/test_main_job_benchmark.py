"""Pure parts of benchmarks/main_job.py: seed lists, the row a resolved config gives, CSV append."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import main_job  # noqa: E402


def test_parse_seeds_ranges_and_lists() -> None:
    assert main_job.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert main_job.parse_seeds("0,2,5-6") == [0, 2, 5, 6]
    with pytest.raises(ValueError, match="0-4"):
        main_job.parse_seeds("a-b")


def test_describe_run_reads_the_main_job_config() -> None:
    config = {"fit": yaml.safe_load(main_job.CONFIG.read_text())}
    row = main_job.describe_run(config)
    assert row == {
        "prompts": "grammar colour-1.0",
        "guidance": "5.0",
        "images": "1280",
        "objects": "1-2",
        "masks": "self_refine",
        "loss": "ignore",
        "augment": "hflip+rot90+strong",
        "ddim_steps": "10",
    }


def test_describe_run_of_the_real_mask_config() -> None:
    real = main_job.CONFIG.with_name("shapes_real.yaml")
    row = main_job.describe_run({"fit": yaml.safe_load(real.read_text())})
    assert row["masks"] == "exact (real)" and row["images"] == "" and row["guidance"] == ""


def test_card_figures_of_the_shipped_ldm() -> None:
    figures = main_job.card_figures()
    assert int(figures["model_step"]) > 40000
    assert int(figures["decoder_ft_steps"]) > 0 and float(figures["decoder_ft_cpu_hours"]) > 0


def test_append_rows_migrates_an_old_header(tmp_path: Path) -> None:
    path = tmp_path / "main_job.csv"
    path.write_text("date,val_miou\n2026-01-01,0.5\n")
    result = {"val_miou": 0.6, "train_steps": 960, "config": {}, "wall_seconds": 1.0}
    result["cpu_seconds"] = 2.0
    result["config"] = {"fit": yaml.safe_load(main_job.CONFIG.read_text())}
    row = main_job.make_row(result, 3, 0.75, "", "2 CPUs", "abc123")
    main_job.append_rows(path, [row])
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == main_job.COLUMNS
    assert rows[0]["val_miou"] == "0.5" and rows[0]["git_sha"] == ""
    assert rows[1]["ratio"] == "0.800" and rows[1]["seed"] == "3"
    assert rows[1]["git_sha"] == "abc123" and rows[1]["train_steps"] == "960"
