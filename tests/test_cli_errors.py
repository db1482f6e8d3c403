"""User errors reach the console as one short message naming the thing and the fix (exit 1, no
traceback); ``--debug`` / ``SYNTHMASK_DEBUG=1`` keeps the traceback. Run in-process through
``console_main`` (what the console script calls)."""

from __future__ import annotations

import os
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
        (
            ["--data.init_args.synthesis.num_images=abc"],
            "bad value for data.synthesis.num_images: expected an int, got 'abc'",
        ),
        (
            ["--data.init_args.mask=foo"],
            "'foo' is not a class it takes; give a subclass of synthmask.masks.choices."
            "MaskMethodConfig: one of Attn2MaskConfig, ThresholdMaskConfig, SelfRefineMaskConfig",
        ),
        (
            ["--data.init_args.pipeline.height=big"],
            "bad value for data.pipeline.height: expected an int, got 'big'",
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


def test_short_parser_error_keeps_type_and_value_of_a_nested_option() -> None:
    message = (
        'Parser key "data":\n  Does not validate against any of the Union subtypes\n'
        "  Errors:\n    - Problem with given class_path 'M':\n"
        '        Parser key "synthesis":\n          Errors:\n'
        "            - Problem with given class_path 'S':\n"
        '                Parser key "num_images":\n'
        "                  Expected a <class 'int'>. Got value: abc\n"
        "            - Expected a <class 'NoneType'>\n    - Expected a <class 'NoneType'>\n"
        "  Given value: NestedArg(key='synthesis.num_images', val='abc')"
    )
    assert short_parser_error(message) == (
        "bad value for data.synthesis.num_images: expected an int, got 'abc'."
    )


def test_cuda_device_without_cuda_fails_before_anything_loads(
    tmp_path, monkeypatch, capsys
) -> None:
    """voc_synth.yaml samples on `cuda`; on a machine without CUDA the device is refused before
    the pipeline loads (the loader would fail the test if it were called)."""
    import torch

    import synthmask.diffusion.pipeline as pipeline_module

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(pipeline_module, "load_pipeline", _must_not_load)
    args = [a for a in _base(tmp_path) if "pipeline.device" not in a and "pipeline.dtype" not in a]
    code, err = run_console(["synthesize", *args], monkeypatch, capsys)
    message = err[err.index("synthmask: error:") :]
    assert code == 1 and len(message.splitlines()) <= 3, err
    assert "--data.init_args.pipeline.device=cuda but this machine has no CUDA GPU" in message
    fix = "--data.init_args.pipeline.device=cpu --data.init_args.pipeline.dtype=float32"
    assert fix in message and "Traceback" not in err


def test_gpu_accelerator_without_cuda_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    """`--trainer.accelerator=gpu` on a machine without CUDA: one line naming the option and the
    fix, before the pipeline loads (it had been Lightning's traceback)."""
    import torch

    import synthmask.diffusion.pipeline as pipeline_module

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(pipeline_module, "load_pipeline", _must_not_load)
    code, err = run_console(
        ["fit", *_base(tmp_path), "--trainer.accelerator=gpu"], monkeypatch, capsys
    )
    message = err[err.index("synthmask: error:") :]
    assert code == 1 and len(message.splitlines()) <= 3 and "Traceback" not in err, err
    assert "--trainer.accelerator=gpu but this machine has no CUDA GPU" in message
    assert "pass --trainer.accelerator=cpu" in message


def _must_not_load(*args, **kwargs):
    raise AssertionError("the pipeline was loaded before the device was checked")


def test_interrupt_prints_what_was_saved_and_exits_130(tmp_path, monkeypatch, capsys) -> None:
    from synthmask.datamodules.synthetic import SyntheticSegDataModule

    def interrupted_synthesis(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(SyntheticSegDataModule, "synthesize", interrupted_synthesis)
    code, err = run_console(["synthesize", *_base(tmp_path)], monkeypatch, capsys)
    assert code == 130 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("synthmask:")]
    assert line == (
        f"synthmask: interrupted (Ctrl-C): the samples finished so far are in the cache "
        f"{tmp_path / 'cache'}; rerun the same command to resume (finished samples are not "
        "drawn again)."
    )


@pytest.mark.slow
def test_ctrl_c_in_the_console_script_is_one_line_and_keeps_the_samples(tmp_path) -> None:
    """A real SIGINT to the console script while it draws samples: exit 130, one line naming
    the cache, no traceback; the cache keeps the finished samples for the rerun (a fresh
    process: ~30 s, mostly imports)."""
    import signal
    import subprocess
    import time

    from synthmask.cache import SampleCache

    console = Path(sys.executable).with_name("synthmask")
    args = [*_base(tmp_path), "--data.init_args.synthesis.num_images=400",
            "--data.init_args.synthesis.shard_size=1",
            "--data.init_args.synthesis.batch_size=1"]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    env.pop("SYNTHMASK_DEBUG", None)
    process = subprocess.Popen(
        [str(console), "synthesize", *args], cwd=tmp_path, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    shards = tmp_path / "cache" / "shards"
    deadline = time.monotonic() + 300
    while not list(shards.glob("*.safetensors")) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    lines = [line for line in err.split("\n") if line.strip() and "%|" not in line]  # no bars
    assert "Traceback" not in err and len(lines) <= 3, err
    (line,) = [line for line in err.splitlines() if line.startswith("synthmask:")]
    assert line.startswith("synthmask: interrupted (Ctrl-C): the samples finished so far are in")
    assert str(tmp_path / "cache") in line and "rerun the same command to resume" in line
    finished = len(SampleCache(tmp_path / "cache", create=False))
    assert 1 <= finished < 400


def test_lora_for_another_model_prints_a_count_and_the_first_keys(
    tmp_path, monkeypatch, capsys
) -> None:
    from synthmask.diffusion.lora import LoRASettings, add_lora, save_lora_weights
    from synthmask.diffusion.tiny import build_tiny_pipeline

    other = build_tiny_pipeline(sample_size=16, text_layers=1, text_hidden_size=48)
    add_lora(other.unet, LoRASettings(rank=2))
    lora = save_lora_weights(tmp_path / "other_lora", other.unet)
    extra = [f"--data.init_args.pipeline.lora_path={lora.parent}"]
    code, err = run_console(["synthesize", *_base(tmp_path), *extra], monkeypatch, capsys)
    message = err[err.index("synthmask: error:") :]
    assert code == 1 and len(message.splitlines()) <= 2, err
    # attn2's to_k and to_v read the text embedding: 48 wide there, 32 here; 2 of 4 matrices
    # per attn2 block (lora.down of to_k, to_v) in each of the UNet's cross-attention blocks.
    assert f"of the 112 LoRA weights in {lora} do not fit this model's layers" in message
    assert message.count(str(lora)) == 1 and "could not load" not in message  # said once
    assert "attn2.to_k.lora.down.weight (shape [2, 48], the layer takes 32 inputs)" in message
    assert message.count("lora.down.weight") == 3  # the first three, not all of them
    assert "size mismatch" not in err and "RuntimeWarning" not in err and "Traceback" not in err


def test_non_utf8_categories_file_is_named(tmp_path, monkeypatch, capsys) -> None:
    categories = tmp_path / "categories.txt"
    categories.write_bytes(b"\xff\xfen01443537\n")  # UTF-16 byte order mark
    extra = ["--data.init_args.vocabulary=imagenet_s50",
             f"--data.init_args.categories={categories}"]  # fmt: skip
    code, err = run_console(["synthesize", *_base(tmp_path), *extra], monkeypatch, capsys)
    message = err[err.index("synthmask: error:") :]
    assert code == 1 and len(message.splitlines()) <= 2, err
    assert f"{categories} is not UTF-8 text (byte 0xff at position 0" in message
    assert "save it as UTF-8" in message and "Traceback" not in err


def test_yaml_tab_error_names_the_config_file(tmp_path, monkeypatch, capsys) -> None:
    config = tmp_path / "exp.yaml"
    config.write_text("seed_everything: 0\ndata:\n\tclass_path: x\n")
    code, err = run_console(["fit", "--config", str(config)], monkeypatch, capsys)
    message = err[err.index("synthmask: error:") :]
    assert code == 1 and len(message.splitlines()) <= 2, err
    assert f"config file {config} is not valid YAML: line 3, column 1" in message
    assert "a tab: YAML indents with spaces only" in message and "<unicode string>" not in err


def test_interrupted_fit_names_the_checkpoint_to_resume_from(tmp_path, monkeypatch, capsys) -> None:
    """Ctrl-C in the second epoch of a fit: Lightning shuts down (and exits 1); the console
    says which checkpoint the first epoch left and how to resume from it, and exits 130."""
    import signal

    from fixtures_segmentation import TINY_NET_ARGS

    from synthmask.lightning_modules.segmentation import SegmentationModule

    real_step, calls = SegmentationModule.training_step, []

    def step_then_interrupt(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(SegmentationModule, "training_step", step_then_interrupt)
    monkeypatch.chdir(tmp_path)
    args = [
        "fit", "--config", str(REPO / "experiments" / "folder_example.yaml"),
        f"--data.init_args.root={make_folder_dataset(tmp_path / 'folder')}", *TINY_NET_ARGS,
        "--data.init_args.loader.batch_size=2", "--data.init_args.augment.crop_size=32",
        "--trainer.max_epochs=3", "--trainer.limit_train_batches=1",
        "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
    ]  # fmt: skip
    sigint = signal.getsignal(signal.SIGINT)
    try:
        code, err = run_console(args, monkeypatch, capsys)
    finally:
        signal.signal(signal.SIGINT, sigint)  # Lightning ignores SIGINT after a Ctrl-C
    assert code == 130 and "Traceback" not in err, err
    (line,) = [line for line in err.splitlines() if line.startswith("synthmask:")]
    assert line.startswith("synthmask: interrupted (Ctrl-C): the last checkpoint is "), line
    checkpoint = Path(line.split("--ckpt_path=", 1)[1])
    assert checkpoint.suffix == ".ckpt" and checkpoint.is_file() and len(calls) == 2
