"""Synthesis in processes vs threads: the main job's synthesis (shipped shapes LDM, 10 DDIM steps,
guidance 5, self-attention capture at 16, self_refine masks, batch 32) into a fresh cache, once
in one process with all of torch's threads and once in ``--processes`` one-thread processes
(`synthesis.processes: N` of `SyntheticSegDataModule`), side by side in one run.

Usage: python benchmarks/synthesis_processes.py [--images 256] [--rounds 2] [--processes 2]
    [--steps 10]

Each round runs both settings, in alternating order, each on its own fresh cache of the same
plan; the figure to quote is the ratio of images/s (wall clock) within a round: both settings
see the same machine load. Spawn/fork and pipeline loading are counted (they are part of what a
user waits for).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from synthmask.datamodules.settings import AugmentConfig, SynthesisConfig
from synthmask.datamodules.synthetic import SyntheticSegDataModule
from synthmask.diffusion.capture import CaptureConfig
from synthmask.diffusion.pipeline import PipelineConfig
from synthmask.masks import MaskConfig
from synthmask.prompts.scene_config import ScenePromptConfig


def main_job_datamodule(
    cache_dir: Path, images: int, processes: int, steps: int = 10
) -> SyntheticSegDataModule:
    """The synthesis settings of experiments/shapes_synth.yaml."""
    return SyntheticSegDataModule(
        pipeline=PipelineConfig(
            model="synthmask:shapes-ldm", num_inference_steps=steps, guidance_scale=5.0
        ),
        vocabulary="shapes",
        prompts=ScenePromptConfig(scenes="shapes", min_subjects=1, max_subjects=2),
        capture=CaptureConfig(self_attention=True, self_resolutions=(16,)),
        mask=MaskConfig(method="self_refine", params={"self_resolution": 16}),
        synthesis=SynthesisConfig(
            num_images=images,
            batch_size=32,
            processes=processes,
            cache_dir=str(cache_dir),
            progress=False,
        ),
        augment=AugmentConfig(crop_size=32),
    )


def timed(images: int, processes: int, steps: int) -> float:
    """Images/s (wall, pipeline loading included) of one synthesis into a fresh cache."""
    root = Path(tempfile.mkdtemp(prefix="synthmask-bench-"))
    try:
        dm = main_job_datamodule(root / "cache", images, processes, steps)
        start = time.perf_counter()
        report = dm.synthesize(log_to_wandb=False)
        seconds = time.perf_counter() - start
        assert report.generated == images, report
        return images / seconds
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps (the main job: 10)")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"torch threads {threads}, load average {os.getloadavg()[0]:.2f}, {args.images} images, "
        f"{args.steps} DDIM steps"
    )
    print("round | 1 process x threads img/s | processes x 1 thread img/s | ratio")
    for r in range(args.rounds):
        order = [1, args.processes] if r % 2 == 0 else [args.processes, 1]
        rate = {n: timed(args.images, n, args.steps) for n in order}
        print(
            f"{r} | 1 x {threads}: {rate[1]:.2f} | {args.processes} x 1: "
            f"{rate[args.processes]:.2f} | {rate[args.processes] / rate[1]:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
