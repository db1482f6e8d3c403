"""Pure parts of benchmarks/paper_table.py: the configs its rows run, resuming, the summary table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningDataModule

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import paper_table  # noqa: E402


@pytest.fixture(autouse=True)
def _no_adapter_training(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Configs of the adapted row name adapters; no test trains them."""
    monkeypatch.setattr(paper_table, "train_lora", lambda workdir: tmp_path / "lora")
    monkeypatch.setattr(paper_table, "train_decoder", lambda workdir: tmp_path / "vae")


def _data(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _find(config: dict, key: str):
    if key in config:
        return config[key]
    for value in config.values():
        if isinstance(value, dict) and (found := _find(value, key)) is not None:
            return found
    return None


def test_each_row_changes_only_its_setting(tmp_path: Path) -> None:
    main = _data(paper_table.MAIN_JOB)
    configs = {
        name: _data(
            paper_table.recipe_config(recipe, paper_table.TABLE_IMAGES.get(name, 0), tmp_path)
        )
        for name, recipe in paper_table.RECIPES.items()
    }
    base, aug, robust = configs["baseline"], configs["prompt_aug"], configs["robust"]
    assert _find(base["data"], "prompts") == {"templates": ["a {class}"]}
    assert _find(base["data"], "num_images") == 160
    assert _find(aug["data"], "num_images") == 1280  # 8x the baseline
    assert _find(aug["data"], "prompts")["synonyms"] is True
    for cfg in (base, aug, robust):
        assert _find(cfg["data"], "mask")["class_path"].endswith("Attn2MaskConfig")
        assert _find(cfg["data"], "cache_dir") == str(tmp_path / "cache")
        assert cfg["trainer"]["max_time"] is None
    assert base["model"]["init_args"]["reliability_mode"] == "none"
    assert robust["model"]["init_args"]["reliability_mode"] == "ignore"
    # Everything else is the main job's: the segmenter and the val scenes.
    assert base["model"]["init_args"]["net"] == main["model"]["init_args"]["net"]
    assert _find(base["data"], "val_data") == _find(main["data"], "val_data")
    # The best row is the main job itself (its own masks and prompts).
    assert _find(configs["best"]["data"], "mask") == _find(main["data"], "mask")


def test_row_configs_parse_as_data_modules(tmp_path: Path) -> None:
    """The generated data sections are valid for the data module's signature."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    for name in ("baseline", "prompt_aug"):
        config = paper_table.recipe_config(paper_table.RECIPES[name], 160, tmp_path)
        parser.parse_object({"data": _data(config)["data"]})


def test_unknown_setting_is_an_error(tmp_path: Path) -> None:
    assert paper_table.set_key({"a": {"b": 1}}, "b", 2)
    assert not paper_table.set_key({"a": {"b": 1}}, "c", 2)
    broken = paper_table.Recipe("x", "x", paper_table.REAL, prompts={"templates": ["a {class}"]})
    with pytest.raises(KeyError, match="shapes_real.yaml has no data setting"):
        paper_table.recipe_config(broken, 160, tmp_path)


def test_done_runs_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    csv_path = tmp_path / "table.csv"
    recipe = paper_table.RECIPES["baseline"]
    row = {"row": "baseline", "setting": recipe.setting, "num_images": "160", "seed": "0",
           "val_miou": "0.1", "git_sha": "abc"}  # fmt: skip
    paper_table.append_row(csv_path, row)
    monkeypatch.setattr(paper_table, "run_seed", lambda *a: pytest.fail("ran a recorded run"))
    paper_table.measure(recipe, 160, 0, csv_path, tmp_path, force=False)
    monkeypatch.setattr(paper_table, "run_seed", lambda *a: {"val_miou": 0.25, "wall_seconds": 1})
    paper_table.measure(recipe, 160, 1, csv_path, tmp_path, force=False)
    rows = paper_table.read_rows(csv_path)
    assert [(r["seed"], r["val_miou"]) for r in rows] == [("0", "0.1"), ("1", "0.2500")]


def test_summary_gives_means_and_gains() -> None:
    def rows(name: str, images: str, values: list[float]) -> list[dict[str, str]]:
        setting = paper_table.RECIPES[name].setting
        return [
            {
                "row": name,
                "setting": setting,
                "num_images": images,
                "seed": str(i),
                "val_miou": str(v),
            }
            for i, v in enumerate(values)
        ]

    table = rows("baseline", "160", [0.1, 0.2]) + rows("prompt_aug", "1280", [0.3, 0.5])
    table += rows("prompt_aug", "640", [0.9])  # a curve point, not a table row
    text = paper_table.summary(table)
    assert "| baseline |" in text and "0.150 +- 0.071" in text
    assert "0.400 +- 0.141 | +0.250 | 51.1 | +9.9 |" in text


def test_lora_rows_differ_only_in_the_generator(tmp_path: Path) -> None:
    """Both LoRA rows are the best recipe on target val; the adapted one adds the adapters."""
    adapters = {"lora": tmp_path / "lora", "decoder": tmp_path / "vae"}  # the autouse fixture's
    configs = {
        name: _data(paper_table.recipe_config(paper_table.RECIPES[name], 1280, tmp_path))
        for name in ("best", "lora_source_only", "lora_adapted")
    }
    source, adapted = configs["lora_source_only"], configs["lora_adapted"]
    for cfg in (source, adapted):
        val = _find(cfg["data"], "val_data")["init_args"]
        assert val["domain"] == "target" and "scene" not in val  # the target's own backgrounds
        assert cfg["model"] == configs["best"]["model"]
    assert _find(source["data"], "pipeline") == _find(configs["best"]["data"], "pipeline")
    pipeline = _find(adapted["data"], "pipeline")
    assert pipeline["lora_path"] == str(adapters["lora"])
    assert pipeline["vae_path"] == str(adapters["decoder"])
    # same prompts, synthesis seed, image count and masks: only the generator differs
    for key in ("prompts", "synthesis", "mask", "val_data"):
        assert _find(source["data"], key) == _find(adapted["data"], key)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    parser.parse_object({"data": adapted["data"]})
    # each adapter alone
    for name, lora, vae in (
        ("lora_unet_only", str(adapters["lora"]), None),
        ("lora_decoder_only", None, str(adapters["decoder"])),
    ):
        cfg = _data(paper_table.recipe_config(paper_table.RECIPES[name], 1280, tmp_path))
        one = _find(cfg["data"], "pipeline")
        assert (one.get("lora_path"), one.get("vae_path")) == (lora, vae)
        assert _find(cfg["data"], "val_data") == _find(source["data"], "val_data")
        assert paper_table.TABLE_IMAGES[name] == 1280


def test_lora_gain_is_against_source_only() -> None:
    rows = [
        {"row": name, "setting": paper_table.RECIPES[name].setting, "num_images": "1280",
         "seed": str(seed), "val_miou": str(value)}
        for name, values in (("lora_source_only", [0.3, 0.4]), ("lora_adapted", [0.5, 0.6]))
        for seed, value in enumerate(values)
    ]  # fmt: skip
    text = paper_table.summary(rows)
    assert "| lora_adapted |" in text and "0.550 +- 0.071 | +0.200 |" in text


def test_adapter_training_is_skipped_when_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import target_adapters

    calls: list[list[str]] = []
    monkeypatch.setattr(
        target_adapters, "_fit", lambda config, overrides, log: calls.append(overrides)
    )
    decoder = target_adapters.train_decoder(tmp_path)
    lora = target_adapters.train_lora(tmp_path)
    assert len(calls) == 2
    assert f"--model.init_args.export_dir={decoder}" in calls[0]
    assert (
        f"--trainer.callbacks.init_args.dirpath={tmp_path / 'adapters/decoder/checkpoints'}"
        in calls[0]
    )
    assert f"--model.init_args.output_dir={lora}" in calls[1]
    (decoder / "config.json").parent.mkdir(parents=True)
    (decoder / "config.json").write_text("{}")
    lora.mkdir(parents=True)
    (lora / target_adapters.LORA_WEIGHTS).write_bytes(b"x")
    assert target_adapters.train_decoder(tmp_path) == decoder
    assert target_adapters.train_lora(tmp_path) == lora
    assert len(calls) == 2  # nothing retrained


def test_target_real_bound_trains_and_validates_on_target(tmp_path: Path) -> None:
    real = _data(paper_table.REAL)
    cfg = _data(paper_table.recipe_config(paper_table.RECIPES["lora_real_bound"], 0, tmp_path))
    data = cfg["data"]["init_args"]
    assert data["domain"] == "target" and "scene" not in data
    assert {k: v for k, v in data.items() if k != "domain"} == {
        k: v for k, v in real["data"]["init_args"].items() if k not in ("domain", "scene")
    }
    assert cfg["model"] == real["model"]
