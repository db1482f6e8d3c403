"""Tiny random SD pipeline: structure, save -> from_pretrained round trip, speed on CPU."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline

from synthmask.diffusion.tiny import build_tiny_pipeline


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _attn2_resolutions(pipe: StableDiffusionPipeline) -> set[int]:
    """Latent side of every attn2 module, from a forward hook on a real UNet call."""
    seen: set[int] = set()
    hooks = []
    for name, module in pipe.unet.named_modules():
        if name.endswith("attn2"):
            hooks.append(
                module.register_forward_hook(
                    lambda m, args, out: seen.add(int(round(args[0].shape[1] ** 0.5)))
                )
            )
    side = pipe.unet.config.sample_size
    with torch.no_grad():
        pipe.unet(torch.zeros(1, 4, side, side), 1, torch.zeros(1, 77, 32))
    for h in hooks:
        h.remove()
    return seen


def test_structure_and_defaults() -> None:
    pipe = build_tiny_pipeline()
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.unet.config.sample_size == 32
    assert pipe.vae_scale_factor == 2  # image 64x64 <-> latent 32x32
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size == 32
    assert pipe.text_encoder.config.num_hidden_layers == 1
    assert len(pipe.tokenizer) == pipe.text_encoder.config.vocab_size == 49408
    assert pipe.safety_checker is None and pipe.feature_extractor is None
    assert _attn2_resolutions(pipe) == {32, 16}


def test_zero_text_layers_and_seeded_weights() -> None:
    a = build_tiny_pipeline(sample_size=16, text_layers=0, seed=3)
    b = build_tiny_pipeline(sample_size=16, text_layers=0, seed=3)
    assert a.text_encoder.config.num_hidden_layers == 0
    for (name, pa), pb in zip(
        a.unet.state_dict().items(), b.unet.state_dict().values(), strict=True
    ):
        assert torch.equal(pa, pb), name
    ids = a.tokenizer(["a dog"], padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        emb = a.text_encoder(ids.input_ids)[0]
    assert emb.shape == (1, 77, 32)


def test_bad_geometry_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at least two levels"):
        build_tiny_pipeline(unet_channels=(32,))
    with pytest.raises(ValueError, match="not divisible"):
        build_tiny_pipeline(sample_size=15)


def test_save_and_from_pretrained_give_identical_images(tmp_path: Path) -> None:
    built = build_tiny_pipeline(tmp_path / "pipe", sample_size=16)
    names = {p.name for p in (tmp_path / "pipe").iterdir()}
    assert {"model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler"} <= names
    assert list((tmp_path / "pipe" / "unet").glob("*.safetensors"))
    loaded = StableDiffusionPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.scheduler, DDIMScheduler)
    kw = {"num_inference_steps": 3, "output_type": "np", "guidance_scale": 7.5}
    img_a = built(["a dog"], generator=torch.Generator().manual_seed(0), **kw).images
    img_b = loaded(["a dog"], generator=torch.Generator().manual_seed(0), **kw).images
    assert img_a.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(img_a, img_b)


def test_default_size_samples_fast() -> None:
    pipe = build_tiny_pipeline()
    start = time.perf_counter()
    out = pipe(
        ["a dog", "a cat"],
        num_inference_steps=4,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    elapsed = time.perf_counter() - start
    assert out.images.shape == (2, 64, 64, 3)
    assert np.isfinite(out.images).all()
    # ~0.5-1 s on one idle core; generous bound for a shared CI machine.
    assert elapsed < 10.0
