"""Shared fixtures for the diffusion tests: one tiny pipeline saved once per session.

Import the functions (``tiny_pipe_fixture``, ``tiny_pipeline_dir_fixture``) into a test module;
tests request them by their fixture names ``tiny_pipe`` / ``tiny_pipeline_dir``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline

from synthmask.diffusion.tiny import build_tiny_pipeline


@pytest.fixture(scope="session", name="tiny_pipeline_dir")
def tiny_pipeline_dir_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SD pipeline saved with save_pretrained (latent 16, image 32: fast on one core)."""
    save_dir = tmp_path_factory.mktemp("tiny_sd") / "pipe"
    build_tiny_pipeline(save_dir, sample_size=16, text_layers=1)
    return save_dir


@pytest.fixture(scope="module", name="tiny_pipe")
def tiny_pipe_fixture(tiny_pipeline_dir: Path) -> StableDiffusionPipeline:
    """The tiny pipeline loaded once per test module (tests must restore its processors)."""
    torch.set_num_threads(1)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe
