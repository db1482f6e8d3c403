"""CLI-test overrides for the synthetic experiment configs (read by test_cli_experiments.py).

Each config runs with the tiny random SD pipeline (32 px, 2 steps, fp32 on CPU), 4 synthetic
images in a tmp cache, and a tiny real-layout validation set. `synthetic_data_overrides` is the
shared part, usable for any config whose data is a SyntheticSegDataModule.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from fixtures_datasets import make_imagenet_s, make_voc

_TINY_PIPELINE: list[Path] = []


def make_synthetic_dm(
    pipe_dir: Path,
    cache_dir: Path,
    synthesis: dict | None = None,
    loader: dict | None = None,
    augment: dict | None = None,
    **overrides,
):
    """A SyntheticSegDataModule on the tiny pipeline: 6 cat/dog images, 2 steps, batches of 3.

    `synthesis`, `loader` and `augment` are field overrides of those blocks (e.g.
    `synthesis={"num_images": 8}`); other keyword arguments replace constructor arguments.
    """
    from synthmask.datamodules.settings import AugmentConfig, LoaderConfig, SynthesisConfig
    from synthmask.datamodules.synthetic import SyntheticSegDataModule
    from synthmask.diffusion.pipeline import PipelineConfig
    from synthmask.synthesis_plan import PromptConfig

    synthesis_args = {"num_images": 6, "batch_size": 3, "cache_dir": str(cache_dir)}
    kwargs = dict(
        pipeline=PipelineConfig(model=str(pipe_dir), num_inference_steps=2),
        prompts=PromptConfig(classes=["cat", "dog"]),
        synthesis=SynthesisConfig(**{**synthesis_args, "progress": False, **(synthesis or {})}),
        loader=LoaderConfig(**{"batch_size": 3, **(loader or {})}),
        augment=AugmentConfig(
            **{"crop_size": 32, "scale_range": (1.0, 1.0), "hflip_prob": 0.0, **(augment or {})}
        ),
    )
    kwargs.update(overrides)
    return SyntheticSegDataModule(**kwargs)


def tiny_pipeline_dir() -> Path:
    """One tiny SD pipeline per test process (built on first use, removed at exit)."""
    if not _TINY_PIPELINE:
        from synthmask.diffusion.tiny import build_tiny_pipeline

        root = Path(tempfile.mkdtemp(prefix="synthmask-tiny-sd-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        build_tiny_pipeline(root / "pipe", sample_size=16, text_layers=1)
        _TINY_PIPELINE.append(root / "pipe")
    return _TINY_PIPELINE[0]


def synthetic_data_overrides(tmp_path: Path) -> list[str]:
    """Tiny pipeline, 4 images, tmp cache; real val data loaded without workers or padding."""
    data, pipe, val = "--data.init_args", "--data.init_args.pipeline", "--data.init_args.val_data"
    return [
        f"{pipe}.model={tiny_pipeline_dir()}",
        f"{pipe}.dtype=float32",
        f"{pipe}.device=cpu",
        f"{pipe}.num_inference_steps=2",
        f"{pipe}.height=32",  # the tiny pipeline's native size (no `null`: jsonargparse reads
        f"{pipe}.width=32",  # it as the string "None" inside nested dataclass init args)
        f"{data}.synthesis.num_images=4",
        f"{data}.synthesis.batch_size=2",
        f"{data}.synthesis.cache_dir={tmp_path / 'synth_cache'}",
        f"{data}.synthesis.progress=false",
        f"{val}.init_args.loader.num_workers=0",
        f"{val}.init_args.val_batch_size=2",
        f"{val}.init_args.loader.pin_memory=false",
        f"{val}.init_args.val_pad_to=32",  # fixture images are larger: a no-op
    ]


def _voc(tmp_path: Path) -> list[str]:
    return synthetic_data_overrides(tmp_path) + [
        f"--data.init_args.val_data.init_args.root={make_voc(tmp_path / 'voc')}",
    ]


def _imagenet_s(tmp_path: Path) -> list[str]:
    root = make_imagenet_s(tmp_path / "imagenet-s", subset=919)
    return synthetic_data_overrides(tmp_path) + [
        f"--data.init_args.categories={root / 'ImageNetS_categories_im919.txt'}",
        f"--data.init_args.val_data.init_args.root={root}",
        "--data.init_args.val_data.init_args.val_resize=48",  # fixture images are 40x48
        "--data.init_args.capture.cross_resolutions=[16]",  # the tiny UNet has 16 and 8 only
    ]


EXPERIMENT_OVERRIDES = {
    "voc_synth": _voc,
    "voc_synth_promptaug": _voc,
    "imagenet_s_synth_pretrain": _imagenet_s,
}
