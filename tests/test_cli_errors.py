"""User errors reach the console as one short message naming the thing and the fix (exit 1, no
traceback); ``--debug`` / ``SYNTHMASK_DEBUG=1`` keeps the traceback. Run in-process through
``console_main`` (what the console script calls)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures_datasets import make_folder_dataset
from fixtures_synthetic import tiny_pipeline_dir
from PIL import Image, UnidentifiedImageError

from synthmask.cli import console_main
from synthmask.cli_errors import short_parser_error, user_message
from synthmask.datamodules.dataset import read_index_mask, read_rgb_image
from synthmask.datamodules.folder import FolderSegDataModule

REPO = Path(__file__).resolve().parents[1]


def _base(tmp_path: Path) -> list[str]:
    pipe = "--data.init_args.pipeline"
    return [
        "--config", str(REPO / "experiments" / "voc_synth.yaml"),
        f"{pipe}.model={tiny_pipeline_dir()}", f"{pipe}.device=cpu", f"{pipe}.dtype=float32",
        f"{pipe}.num_inference_steps=2", f"{pipe}.height=32", f"{pipe}.width=32",
        "--data.init_args.synthesis.num_images=2",
        f"--data.init_args.synthesis.cache_dir={tmp_path / 'cache'}",
        "--data.init_args.synthesis.progress=false",
    ]  # fmt: skip


def run_console(argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["synthmask", *argv])
    monkeypatch.delenv("SYNTHMASK_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        console_main()
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--data.init_args.pipeline.guidance_scale=-1"], "guidance_scale=-1.0; it must be >= 0"),
        (["--data.init_args.synthesis.cache_dir="], "cache_dir is empty"),
        (
            [
                "--data.init_args.mask=SelfRefineMaskConfig",
                "--data.init_args.mask.self_resolution=32",
            ],
            "do not exist at image size 32x32 (latent 16x16)",
        ),
        (["--data.init_args.nonsense=3"], "Option 'nonsense' is not accepted"),
        (
            ["--data.init_args.mask=Bogus"],
            "give a subclass of synthmask.masks.choices.MaskMethodConfig",
        ),
    ],
)
def test_synthesize_user_errors_fit_on_one_screen(
    extra, expected, tmp_path, monkeypatch, capsys
) -> None:
    code, err = run_console(["synthesize", *_base(tmp_path), *extra], monkeypatch, capsys)
    assert code == 1
    assert expected in err and "Traceback" not in err and "Given value" not in err
    message = err[err.index("synthmask: error:") :]
    assert len(message.splitlines()) <= 3, err


def test_debug_flag_keeps_the_traceback(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(
        sys, "argv", ["synthmask", "synthesize", *_base(tmp_path), "--trainer.devices=2", "--debug"]
    )
    with pytest.raises(ValueError, match="torchrun"):
        console_main()


def test_corrupt_lora_file_is_named(tmp_path, monkeypatch, capsys) -> None:
    lora = tmp_path / "lora.safetensors"
    lora.write_bytes(np.random.default_rng(0).bytes(4096))
    extra = [f"--data.init_args.pipeline.lora_path={lora}"]
    code, err = run_console(["synthesize", *_base(tmp_path), *extra], monkeypatch, capsys)
    assert code == 1 and f"could not load the LoRA weights {lora}" in err
    assert "Traceback" not in err


def test_corrupt_checkpoint_is_named(tmp_path, monkeypatch, capsys) -> None:
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(np.random.default_rng(0).bytes(4096))
    code, err = run_console(["fit", *_base(tmp_path), f"--ckpt_path={ckpt}"], monkeypatch, capsys)
    assert code == 1 and f"--ckpt_path {ckpt} is not a PyTorch Lightning checkpoint" in err
    assert "Traceback" not in err and "pop from empty list" not in err


def test_corrupt_image_and_mask_files_are_named(tmp_path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    for reader, what in ((read_rgb_image, "image"), (read_index_mask, "mask")):
        with pytest.raises(OSError, match=f"cannot read the {what} file {bad}") as info:
            reader(bad)
        assert "corrupt" in user_message(info.value)
    pil_error = UnidentifiedImageError(f"cannot identify image file '{bad}'")
    assert str(bad) in user_message(pil_error) and "corrupt" in user_message(pil_error)


def test_duplicate_class_names_are_rejected(tmp_path) -> None:
    root = make_folder_dataset(tmp_path / "folder")
    names = (root / "classes.txt").read_text().splitlines()
    (root / "classes.txt").write_text("\n".join([*names, names[1]]) + "\n")
    with pytest.raises(ValueError, match=f"names class '{names[1]}' twice"):
        FolderSegDataModule(root=str(root))
    Image.new("L", (4, 4)).save(tmp_path / "ok.png")  # a readable mask still reads
    assert read_index_mask(tmp_path / "ok.png").shape == (4, 4)


def test_short_parser_error_keeps_the_project_message() -> None:
    message = (
        'Parser key "data":\n  Does not validate against any of the Union subtypes\n'
        "  Subtypes: [<class 'LightningDataModule'>, <class 'NoneType'>]\n  Errors:\n"
        "    - guidance_scale=-1.0; it must be >= 0.\n    - Expected a <class 'NoneType'>\n"
        "  Given value type: <class 'Namespace'>\n  Given value: Namespace(a=1, b=2)"
    )
    assert short_parser_error(message) == "guidance_scale=-1.0; it must be >= 0."
