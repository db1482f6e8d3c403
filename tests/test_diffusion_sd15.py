"""Slow: attention capture and token mapping on the real Stable Diffusion 1.5 architecture.

Random weights from ../shared/realdata/sd15-config (no checkpoint): the real 860M-parameter UNet
(about 4 GB of RAM in fp32) and text encoder, with a tiny VAE (same 8x factor) to keep decoding
cheap. One DDIM step at 512x512 with classifier-free guidance (about a minute of CPU time).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from synthmask.diffusion import sampling
from synthmask.diffusion.capture import AttentionStore, CaptureConfig
from synthmask.diffusion.tiny import tiny_vae
from synthmask.diffusion.tokens import class_token_positions
from synthmask.prompt_types import Prompt

pytestmark = pytest.mark.slow

PROMPT = Prompt.from_text_and_words(
    "a photograph of a dog next to a pottedplant", [("dog", 12), ("pottedplant", 16)]
)


@pytest.fixture(scope="module", name="sd15_pipe")
def sd15_pipe_fixture(realdata_dir: Path) -> StableDiffusionPipeline:
    config_dir = realdata_dir / "sd15-config"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(config_dir / "unet")
        )
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(config_dir / "text_encoder"))
        vae = tiny_vae(512, block_out_channels=(8, 8, 8, 8))
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(config_dir / "tokenizer"),
        unet=unet,
        scheduler=DDIMScheduler.from_config(DDIMScheduler.load_config(config_dir / "scheduler")),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_sd15_tokenizer_maps_class_words(sd15_pipe: StableDiffusionPipeline) -> None:
    # <bos> a photograph of a dog next to a pot ted plant
    assert class_token_positions(sd15_pipe.tokenizer, PROMPT) == [(12, [5]), (16, [9, 10, 11])]


def test_sd15_capture_at_64_32_16_8(
    sd15_pipe: StableDiffusionPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    stores: list[AttentionStore] = []

    class SpyStore(AttentionStore):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            stores.append(self)

    monkeypatch.setattr(sampling, "AttentionStore", SpyStore)
    out = sampling.generate_with_attention(
        sd15_pipe, [PROMPT], [3], CaptureConfig(), 1, 7.5, height=512, width=512
    )
    assert out.images.shape == (1, 512, 512, 3) and out.images.dtype == torch.uint8
    # SD 1.5: 2 down + 3 up transformer blocks at 64, 32 and 16; the mid block at 8.
    counts = stores[0].counts
    assert counts == {("cross", 64): 5, ("cross", 32): 5, ("cross", 16): 5, ("cross", 8): 1}
    assert list(out.cross_attention) == [64, 32, 16, 8]
    for res, maps in out.cross_attention.items():
        assert maps.shape == (1, 77, res, res)
        torch.testing.assert_close(maps.sum(1), torch.ones(1, res, res), atol=1e-4, rtol=0)
    assert all(
        type(p).__name__ == "AttnProcessor2_0" for p in sd15_pipe.unet.attn_processors.values()
    )
