"""Attention capture on the tiny pipeline: parity, probabilities, streaming means, selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from fixtures_diffusion import (
    tiny_pipe_fixture,  # noqa: F401  (pytest fixtures by name: tiny_pipe, tiny_pipeline_dir)
    tiny_pipeline_dir_fixture,  # noqa: F401
)

from synthmask.diffusion.capture import (
    AttentionStore,
    CaptureAttnProcessor,
    CaptureConfig,
    attention_layers,
    install_capture,
    restore_processors,
)
from synthmask.diffusion.sampling import generate_with_attention, initial_latents
from synthmask.prompt_types import Prompt

DOG = Prompt.from_text_and_words("a photo of a dog", [("dog", 1)])
CAT = Prompt.from_text_and_words("a cat on a sofa", [("cat", 2)])
STEPS = 4


class RecordingStore(AttentionStore):
    """Also keeps every added map (test only) to check the streaming mean."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.log: list[tuple[int, str, int, torch.Tensor]] = []

    def add(self, kind: str, res: int, maps: torch.Tensor) -> None:
        self.log.append((self.step, kind, res, maps.detach().float().clone()))
        super().add(kind, res, maps)


def _run_with_store(pipe, store: AttentionStore, prompts, seeds, latent_hw=(16, 16), **kw):
    previous = install_capture(pipe.unet, store, latent_hw)
    try:
        return pipe(
            prompt=[p.text for p in prompts],
            latents=initial_latents(seeds, (4, *latent_hw)),
            num_inference_steps=STEPS,
            output_type="np",
            callback_on_step_end=store.step_callback,
            **kw,
        ).images
    finally:
        restore_processors(pipe.unet, previous)


def test_capture_steps_windows() -> None:
    assert list(CaptureConfig(step_window=(0.5, 0.5)).capture_steps(100)) == [50]
    assert list(CaptureConfig().capture_steps(100)) == list(range(100))
    assert list(CaptureConfig(step_window=(0.25, 0.75)).capture_steps(100)) == list(range(25, 75))
    assert list(CaptureConfig(step_window=(1.0, 1.0)).capture_steps(10)) == [9]
    assert list(CaptureConfig(step_window=(0.5, 0.5)).capture_steps(1)) == [0]
    with pytest.raises(ValueError, match="step_window"):
        CaptureConfig(step_window=(0.8, 0.2))


def test_layers_and_factors(tiny_pipe: StableDiffusionPipeline) -> None:
    layers = attention_layers(tiny_pipe.unet)
    # 2 down (1 layer each), mid (1), 2 up (2 layers each): 7 transformer blocks x (attn1, attn2)
    assert len(layers) == 14
    assert layers["down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor"] == ("cross", 1)
    assert layers["mid_block.attentions.0.transformer_blocks.0.attn2.processor"] == ("cross", 2)
    assert layers["up_blocks.0.attentions.1.transformer_blocks.0.attn1.processor"] == ("self", 2)
    assert layers["up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor"] == ("cross", 1)


def test_images_identical_with_and_without_capture(tiny_pipe: StableDiffusionPipeline) -> None:
    kw = {"num_inference_steps": STEPS, "guidance_scale": 7.5, "output_type": "np"}
    plain = tiny_pipe(
        prompt=[DOG.text, CAT.text], latents=initial_latents([3, 4], (4, 16, 16)), **kw
    ).images
    store = AttentionStore(CaptureConfig(self_attention=True), STEPS, batch_size=2)
    captured = _run_with_store(tiny_pipe, store, [DOG, CAT], [3, 4], guidance_scale=7.5)
    np.testing.assert_allclose(captured, plain, atol=1e-5, rtol=0)
    assert store.counts[("cross", 16)] == 3 * STEPS  # down0, up1 x2 layers at 16
    assert store.counts[("cross", 8)] == 4 * STEPS  # down1, mid, up0 x2 at 8
    out = generate_with_attention(tiny_pipe, [DOG, CAT], [3, 4], CaptureConfig(), STEPS, 7.5)
    expected = torch.from_numpy((plain * 255).round().astype(np.uint8))
    assert out.images.dtype == torch.uint8 and out.images.shape == (2, 32, 32, 3)
    assert (out.images.int() - expected.int()).abs().max() <= 1


def test_cross_rows_sum_to_one_and_self_shapes(tiny_pipe: StableDiffusionPipeline) -> None:
    capture = CaptureConfig(self_attention=True, self_resolutions=(8,))
    out = generate_with_attention(tiny_pipe, [DOG, CAT], [0, 1], capture, STEPS, 7.5)
    assert set(out.cross_attention) == {16, 8}
    for res, maps in out.cross_attention.items():
        assert maps.shape == (2, 77, res, res) and maps.dtype == torch.float32
        torch.testing.assert_close(maps.sum(dim=1), torch.ones(2, res, res), atol=1e-5, rtol=0)
        assert (maps >= 0).all()
    assert set(out.self_attention) == {8}
    self8 = out.self_attention[8]
    assert self8.shape == (2, 64, 64)
    torch.testing.assert_close(self8.sum(dim=-1), torch.ones(2, 64), atol=1e-5, rtol=0)


def test_streaming_mean_equals_mean_of_recorded_maps(tiny_pipe: StableDiffusionPipeline) -> None:
    store = RecordingStore(CaptureConfig(self_attention=True), STEPS, batch_size=2)
    _run_with_store(tiny_pipe, store, [DOG, CAT], [5, 6], guidance_scale=7.5)
    assert {entry[0] for entry in store.log} == set(range(STEPS))
    for kind in ("cross", "self"):
        means = store.mean(kind)
        for res, mean in means.items():
            maps = [m for _, k, r, m in store.log if k == kind and r == res]
            torch.testing.assert_close(mean, torch.stack(maps).mean(0), atol=1e-6, rtol=1e-5)


def test_single_step_window_matches_that_step(tiny_pipe: StableDiffusionPipeline) -> None:
    full = RecordingStore(CaptureConfig(), STEPS, batch_size=1)
    _run_with_store(tiny_pipe, full, [DOG], [7], guidance_scale=7.5)
    single = RecordingStore(CaptureConfig(step_window=(0.5, 0.5)), STEPS, batch_size=1)
    _run_with_store(tiny_pipe, single, [DOG], [7], guidance_scale=7.5)
    assert {entry[0] for entry in single.log} == {2}  # floor(0.5 * 4)
    assert single.counts[("cross", 16)] == 3 and single.counts[("cross", 8)] == 4
    step2 = [m for step, k, r, m in full.log if step == 2 and r == 16]
    torch.testing.assert_close(single.mean("cross")[16], torch.stack(step2).mean(0))


def test_resolution_selection_and_default_processors(tiny_pipe: StableDiffusionPipeline) -> None:
    store = AttentionStore(CaptureConfig(cross_resolutions=(8,)), STEPS, batch_size=1)
    previous = install_capture(tiny_pipe.unet, store, (16, 16))
    layers = attention_layers(tiny_pipe.unet)
    for name, proc in tiny_pipe.unet.attn_processors.items():
        kind, factor = layers[name]
        if kind == "cross" and factor == 2:
            assert isinstance(proc, CaptureAttnProcessor) and proc.res == 8
        else:
            assert type(proc) is AttnProcessor2_0, name
    restore_processors(tiny_pipe.unet, previous)
    assert all(type(p) is AttnProcessor2_0 for p in tiny_pipe.unet.attn_processors.values())
    out = generate_with_attention(
        tiny_pipe, [DOG], [0], CaptureConfig(cross_resolutions=(8,)), STEPS, 7.5
    )
    assert set(out.cross_attention) == {8} and out.self_attention == {}
    assert all(type(p) is AttnProcessor2_0 for p in tiny_pipe.unet.attn_processors.values())
    with pytest.raises(ValueError, match=r"resolutions \[64\].*available: \[16, 8\]"):
        generate_with_attention(
            tiny_pipe, [DOG], [0], CaptureConfig(cross_resolutions=(64,)), STEPS, 7.5
        )


def test_stored_tensors_do_not_grow_with_steps(tiny_pipe: StableDiffusionPipeline) -> None:
    sizes = []
    for steps in (2, 6):
        store = AttentionStore(CaptureConfig(self_attention=True), steps, batch_size=1)
        previous = install_capture(tiny_pipe.unet, store, (16, 16))
        tiny_pipe(
            prompt=[DOG.text],
            latents=initial_latents([0], (4, 16, 16)),
            num_inference_steps=steps,
            callback_on_step_end=store.step_callback,
            output_type="np",
        )
        restore_processors(tiny_pipe.unet, previous)
        assert store.counts[("cross", 8)] == 4 * steps
        sizes.append((store.num_tensors(), sum(t.numel() for t in store.sums.values())))
    assert sizes[0] == sizes[1] == (4, 77 * (256 + 64) + 256**2 + 64**2)


def test_deterministic_and_independent_of_batch_order(tiny_pipe: StableDiffusionPipeline) -> None:
    capture = CaptureConfig()
    both = generate_with_attention(tiny_pipe, [DOG, CAT], [11, 12], capture, STEPS, 7.5)
    swapped = generate_with_attention(tiny_pipe, [CAT, DOG], [12, 11], capture, STEPS, 7.5)
    alone = generate_with_attention(tiny_pipe, [CAT], [12], capture, STEPS, 7.5)
    again = generate_with_attention(tiny_pipe, [DOG, CAT], [11, 12], capture, STEPS, 7.5)
    assert torch.equal(both.images, again.images)
    for other, row in ((swapped, 0), (alone, 0)):
        assert (other.images[row].int() - both.images[1].int()).abs().max() <= 1
        torch.testing.assert_close(
            other.cross_attention[16][row], both.cross_attention[16][1], atol=1e-5, rtol=1e-4
        )
    assert not torch.equal(both.images[0], both.images[1])


def test_non_square_and_no_guidance(tiny_pipe: StableDiffusionPipeline) -> None:
    out = generate_with_attention(
        tiny_pipe, [DOG], [0], CaptureConfig(), STEPS, guidance_scale=1.0, height=32, width=48
    )
    assert out.images.shape == (1, 32, 48, 3)
    assert out.cross_attention[16].shape == (1, 77, 16, 24)
    assert out.cross_attention[8].shape == (1, 77, 8, 12)
    torch.testing.assert_close(
        out.cross_attention[8].sum(1), torch.ones(1, 8, 12), atol=1e-5, rtol=0
    )


def test_bad_inputs_are_clear_errors(tiny_pipe: StableDiffusionPipeline) -> None:
    with pytest.raises(ValueError, match="one seed per prompt"):
        generate_with_attention(tiny_pipe, [DOG, CAT], [0], CaptureConfig(), STEPS, 7.5)
    with pytest.raises(ValueError, match="multiples of the VAE factor"):
        generate_with_attention(tiny_pipe, [DOG], [0], CaptureConfig(), STEPS, 7.5, height=33)
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        mid_block_type=None,
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=32,
    )
    store = AttentionStore(CaptureConfig(), 2, batch_size=1)
    with pytest.raises(ValueError, match="no cross-attention"):
        install_capture(unet, store, (8, 8))
