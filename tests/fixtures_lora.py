"""CLI-test overrides for the LoRA synthesis configs (read by test_cli_experiments.py).

cityscapes_synth / shapes_target_synth run with the tiny random SD pipeline (see
fixtures_synthetic), a tiny LoRA made for it (rank 2, random non-zero weights, diffusers format)
and tiny validation data. The LoRA *training* configs (cityscapes_lora, shapes_target_lora) need
no hook: the generic overrides point their model at the tiny pipeline.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from fixtures_datasets import make_cityscapes
from fixtures_synthetic import synthetic_data_overrides, tiny_pipeline_dir

_TINY_LORA: list[Path] = []
VAL = "--data.init_args.val_data.init_args"


def tiny_lora_dir() -> Path:
    """A rank-2 LoRA for the tiny pipeline, saved like a trained one (built once per process)."""
    if not _TINY_LORA:
        import torch
        from diffusers import StableDiffusionPipeline

        from synthmask.diffusion.lora import LoRASettings, add_lora, save_lora_weights

        root = Path(tempfile.mkdtemp(prefix="synthmask-tiny-lora-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir())
        params = add_lora(pipe.unet, LoRASettings(rank=2))
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            for param in params:
                param.add_(0.05 * torch.randn_like(param))
        save_lora_weights(root / "lora", pipe.unet)
        _TINY_LORA.append(root / "lora")
    return _TINY_LORA[0]


def _cityscapes_synth(tmp_path: Path) -> list[str]:
    return synthetic_data_overrides(tmp_path) + [
        f"--data.init_args.pipeline.lora_path={tiny_lora_dir()}",
        f"{VAL}.root={make_cityscapes(tmp_path / 'cityscapes')}",
    ]


def _shapes_target_synth(tmp_path: Path) -> list[str]:
    # ShapesWorldDataModule renders its val data: no root, padding or loader block to override.
    generic = [
        arg
        for arg in synthetic_data_overrides(tmp_path)
        if not arg.startswith((f"{VAL}.val_pad_to", f"{VAL}.loader."))
    ]
    return generic + [
        f"{VAL}.num_workers=0",
        f"--data.init_args.pipeline.lora_path={tiny_lora_dir()}",
        "--data.init_args.pipeline.guidance_scale=3.0",
        f"{VAL}.n_val=4",
        f"{VAL}.n_test=4",
    ]


EXPERIMENT_OVERRIDES = {
    "cityscapes_synth": _cityscapes_synth,
    "shapes_target_synth": _shapes_target_synth,
}
