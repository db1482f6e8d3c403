"""benchmarks/paper_table.py: the row configs it runs (through the real CLI), per-seed synthesis
and adapters, resuming from its CSV, the summary's paired gains and the all-background row."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import main_job  # noqa: E402
import paper_table  # noqa: E402
import target_adapters  # noqa: E402

from synthmask.cli import main as cli_main  # noqa: E402


def _resolved(row: paper_table.Row, seed: int) -> dict:
    """The row's config as `synthmask fit` resolves it for ``seed`` (``--print_config``)."""
    # as main_job.run_one runs it: the base config, the seed, then the row's overrides
    overrides = paper_table.run_overrides(row, seed)
    args = ["fit", *row.config_args()[:2], f"--seed_everything={seed}", *overrides]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        cli_main([*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(out.getvalue())


def _find(config: object, key: str) -> object:
    return paper_table._find(config, key)


@pytest.fixture(scope="module")
def resolved() -> dict[str, dict]:
    """Every row resolved at seed 2 (the adapted row's adapters need not exist to parse)."""
    return {name: _resolved(row, 2) for name, row in paper_table.ROWS.items()}


def test_trickiest_rows_resolve() -> None:
    """The default suite resolves the rows that switch classes or add paths (all rows: slow)."""
    beco = _resolved(paper_table.ROWS["robust_beco"], 1)
    assert beco["model"]["class_path"].endswith("CoTrainingModule")
    assert _find(beco["data"], "mask")["class_path"].endswith("Attn2MaskConfig")
    assert _find(beco["data"], "synthesis")["seed"] == 1 and beco["seed_everything"] == 1
    assert beco["trainer"]["max_steps"] == 960
    adapted = _resolved(paper_table.ROWS["lora_adapted"], 1)
    assert _find(adapted["data"], "pipeline")["lora_path"] == "adapters/seed-1/lora/weights"
    assert _find(adapted["data"], "val_data")["init_args"]["domain"] == "target"


def test_every_row_file_exists_and_is_documented() -> None:
    for row in paper_table.ROWS.values():
        for path in row.configs:
            text = (paper_table.REPO / path).read_text()
            assert text.startswith("#"), path
        own = (paper_table.REPO / row.configs[-1]).read_text()
        assert "synthmask fit" in own and "--config" in own  # the command to rerun it


@pytest.mark.slow
def test_rows_run_the_same_steps_and_change_only_their_setting(resolved: dict) -> None:
    for name, config in resolved.items():
        trainer = config["trainer"]
        assert trainer["max_steps"] == 960 and trainer["max_epochs"] == -1, name
        assert trainer.get("max_time") is None, name
        assert trainer["logger"]["init_args"]["group"] == f"paper-table-{name}"
        assert trainer["logger"]["init_args"]["name"] == f"{name} seed=2"
        assert config["seed_everything"] == 2
    base, syn = resolved["baseline"], resolved["baseline_synonyms"]
    prompts = _find(base["data"], "prompts")
    prompts = prompts.get("init_args", prompts)
    assert prompts["max_subjects"] == 1 and prompts["synonyms"] is False
    colours = prompts["class_colors"]
    assert len(colours) == 6 and len(set(colours.values())) == 6  # one fixed colour per class
    syn_prompts = _find(syn["data"], "prompts")
    assert syn_prompts.get("init_args", syn_prompts)["synonyms"] is True
    for name in ("baseline", "baseline_synonyms", "prompt_aug_same_count"):
        assert _find(resolved[name]["data"], "num_images") == 160
    for name in ("prompt_aug", "robust", "robust_beco", "best", "lora_source_only", "lora_adapted"):
        assert _find(resolved[name]["data"], "num_images") == 1280
    for name in ("baseline", "prompt_aug_same_count", "prompt_aug", "robust", "robust_beco"):
        assert _find(resolved[name]["data"], "mask")["class_path"].endswith("Attn2MaskConfig")
    # augmented prompts: the same recipe at 160 and at 1280 images
    assert _find(resolved["prompt_aug_same_count"]["data"], "prompts") == _find(
        resolved["prompt_aug"]["data"], "prompts"
    )
    models = {n: resolved[n]["model"] for n in ("prompt_aug", "robust", "robust_beco")}
    assert models["prompt_aug"]["init_args"]["reliability_mode"] == "none"
    assert models["robust"]["init_args"]["reliability_mode"] == "ignore"
    assert models["robust_beco"]["class_path"].endswith("CoTrainingModule")
    assert models["robust_beco"]["init_args"]["net"] == models["robust"]["init_args"]["net"]
    assert _find(resolved["best"]["data"], "mask")["class_path"].endswith("SelfRefineMaskConfig")
    # the BECO diagnostics differ from robust_beco only in when the online labels start
    beco = resolved["robust_beco"]
    for name, warmup in (
        ("robust_beco", 2),
        ("robust_beco_late", 8),
        ("robust_beco_no_online", 12),
    ):
        config = resolved[name]
        assert config["model"]["init_args"]["warmup_epochs"] == warmup, name
        other = {**config["model"]["init_args"], "warmup_epochs": 2}
        assert other == beco["model"]["init_args"] and config["data"] == beco["data"], name
    assert "robust_beco_late" not in paper_table.DEFAULT_ROWS
    best_beco = resolved["best_beco"]
    assert best_beco["model"]["init_args"] == {**beco["model"]["init_args"]}
    assert best_beco["data"] == resolved["best"]["data"]


@pytest.mark.slow
def test_seed_sets_the_synthesis_seed_too(resolved: dict) -> None:
    for name, row in paper_table.ROWS.items():
        if row.synthetic:
            assert _find(resolved[name]["data"], "synthesis")["seed"] == 2, name
    other = _resolved(paper_table.ROWS["baseline"], 0)
    assert _find(other["data"], "synthesis")["seed"] == 0


@pytest.mark.slow
def test_lora_rows_differ_only_in_the_generator(resolved: dict) -> None:
    source, adapted = resolved["lora_source_only"], resolved["lora_adapted"]
    for config in (source, adapted):
        val = _find(config["data"], "val_data")["init_args"]
        assert val["domain"] == "target" and val["scene"] is None
    pipeline = _find(adapted["data"], "pipeline")
    assert pipeline["lora_path"] == "adapters/seed-2/lora/weights"  # per-seed adapters
    assert pipeline["vae_path"] == "adapters/seed-2/decoder/export"
    assert _find(source["data"], "pipeline")["lora_path"] is None
    for key in ("prompts", "synthesis", "mask", "val_data"):
        assert _find(source["data"], key) == _find(adapted["data"], key)
    assert source["model"] == adapted["model"] == resolved["best"]["model"]


def test_adapters_are_trained_per_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(target_adapters, "_fit", lambda config, args, log: calls.append(args))
    decoder = target_adapters.train_decoder(tmp_path, seed=1)
    lora = target_adapters.train_lora(tmp_path, seed=1)
    assert decoder == tmp_path / "adapters/seed-1/decoder/export"
    assert lora == tmp_path / "adapters/seed-1/lora/weights"
    assert all("--seed_everything=1" in args for args in calls) and len(calls) == 2
    (decoder / "config.json").parent.mkdir(parents=True)
    (decoder / "config.json").write_text("{}")
    lora.mkdir(parents=True)
    (lora / target_adapters.LORA_WEIGHTS).write_bytes(b"x")
    target_adapters.train_decoder(tmp_path, seed=1)
    target_adapters.train_lora(tmp_path, seed=1)
    assert len(calls) == 2  # nothing retrained
    target_adapters.train_lora(tmp_path, seed=2)
    assert len(calls) == 3  # another seed, its own adapter
    # the table's overrides point at the same folders, relative to the work directory
    overrides = paper_table.run_overrides(paper_table.ROWS["lora_adapted"], 1)
    assert f"--data.init_args.pipeline.lora_path={lora.relative_to(tmp_path)}" in overrides
    assert f"--data.init_args.pipeline.vae_path={decoder.relative_to(tmp_path)}" in overrides


def _fake_result(test_miou: float) -> dict:
    config = {
        "fit": {"config": ["/abs/x.yaml"], "data": {"synthesis": {"num_images": 160, "seed": 1}}}
    }
    return {"val_miou": 0.5, "test_miou": test_miou, "train_steps": 960, "config": config,
            "wall_seconds": 1.0}  # fmt: skip


def test_measure_writes_row_config_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv_path, configs = tmp_path / "table.csv", tmp_path / "configs"
    row = paper_table.ROWS["baseline"]
    seen: list[tuple] = []

    def fake_run_seed(config, seed, overrides, workdir, test):
        seen.append((config, seed, test))
        return _fake_result(0.25)

    monkeypatch.setattr(paper_table, "run_seed", fake_run_seed)
    monkeypatch.setattr(paper_table, "git_sha", lambda: "abc")
    paper_table.measure(row, 1, csv_path, tmp_path, configs_dir=configs)
    paper_table.measure(row, 1, csv_path, tmp_path, configs_dir=configs)  # recorded: skipped
    assert len(seen) == 1 and seen[0][2] is True  # scored on the test split
    [record] = paper_table.read_rows(csv_path)
    assert record["split"] == "test" and record["test_miou"] == "0.2500"
    assert record["synthesis_seed"] == "1" and record["num_images"] == "160"
    text = (configs / "baseline-seed1.yaml").read_text()
    assert "/abs/x.yaml" not in text  # no machine paths in the committed config
    import hashlib

    assert record["config_sha256"] == hashlib.sha256(text.encode()).hexdigest()[:16]


def test_curve_point_of_a_table_run_is_copied_not_retrained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table_csv, configs = (
        tmp_path / "results" / "table.csv",
        tmp_path / "results" / "paper_table_configs",
    )
    curve_csv = tmp_path / "results" / "curves.csv"
    row, seen = paper_table.ROWS["baseline"], []

    def fake_run_seed(config, seed, overrides, workdir, test):
        seen.append(overrides)
        return _fake_result(0.25 if len(seen) == 1 else 0.3)

    monkeypatch.setattr(paper_table, "run_seed", fake_run_seed)
    monkeypatch.setattr(paper_table, "git_sha", lambda: "abc")
    paper_table.measure(row, 1, table_csv, tmp_path, configs_dir=configs)  # the table's run
    for images in (160, 640):
        paper_table.measure(row, 1, curve_csv, tmp_path, num_images=images,
                            configs_dir=configs / "curves", table_csv=table_csv)  # fmt: skip
    assert len(seen) == 2 and "--data.init_args.synthesis.num_images=640" in seen[1]
    copied, trained = paper_table.read_rows(curve_csv)
    assert copied == paper_table.read_rows(table_csv)[0]
    assert (configs / "curves" / "baseline-160-seed1.yaml").read_text() == (
        configs / "baseline-seed1.yaml"
    ).read_text()
    assert trained["test_miou"] == "0.3000"


def test_summary_pairs_gains_over_shared_seeds() -> None:
    def rows(name: str, values: dict[int, float]) -> list[dict[str, str]]:
        return [{"row": name, "seed": str(s), "test_miou": str(v), "num_images": "160"}
                for s, v in values.items()]  # fmt: skip

    table = rows("baseline", {0: 0.2, 1: 0.3, 2: 0.4}) + rows("baseline_synonyms", {0: 0.3, 1: 0.3})
    text = paper_table.summary(table, {"source": 0.117})
    assert "| all_background (source) | predict background everywhere | - | - | 0.117 |" in text
    assert "| baseline | " in text and "| 3 | 0.300 +- 0.100 | 41.2 |" in text
    # only seeds 0 and 1 are shared: diffs +0.1 and 0.0
    assert "| synonyms alone | baseline_synonyms - baseline | 2 | +0.050 +- 0.071 | 1/2 |" in text


def test_curve_summary_by_image_count_and_recipe() -> None:
    points = [("baseline", 160, 0, 0.2), ("baseline", 160, 1, 0.4), ("baseline", 640, 0, 0.25),
              ("prompt_aug", 640, 0, 0.5)]  # fmt: skip
    rows = [{"row": r, "num_images": str(n), "seed": str(s), "test_miou": str(v)}
            for r, n, s, v in points]  # fmt: skip
    lines = paper_table.curve_summary(rows).splitlines()
    assert lines[0] == "| images | fixed template (baseline) | augmented prompts (prompt_aug) |"
    assert lines[2:] == [
        "| 160 | 0.300 (2 seeds) | - |",
        "| 640 | 0.250 (1 seed) | 0.500 (1 seed) |",
    ]


def test_all_background_score_is_background_iou_over_classes() -> None:
    value = paper_table.all_background_miou("source")
    # background is most of each scene: its IoU (= its pixel share) over the 7 classes
    assert 0.09 < value < 1 / 7


def test_dirty_mark_ignores_benchmark_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "t.csv").write_text("a\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "init")
    monkeypatch.setattr(main_job, "REPO", tmp_path)
    (tmp_path / "benchmarks" / "results" / "t.csv").write_text("a\nb\n")
    assert not main_job.git_sha().endswith("-dirty")
    (tmp_path / "code.py").write_text("x = 2\n")
    assert main_job.git_sha().endswith("-dirty")
