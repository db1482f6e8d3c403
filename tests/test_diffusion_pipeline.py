"""load_pipeline / pipeline_fingerprint: local dirs, schedulers, LoRA, offline hub ids, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from fixtures_diffusion import tiny_pipeline_dir_fixture  # noqa: F401  (fixture tiny_pipeline_dir)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from synthmask.diffusion.capture import CaptureConfig
from synthmask.diffusion.lora import LoRASettings, add_lora, save_lora_weights
from synthmask.diffusion.pipeline import PipelineConfig, load_pipeline, pipeline_fingerprint
from synthmask.diffusion.sampling import generate_with_attention, initial_latents
from synthmask.diffusion.tiny import build_tiny_pipeline, tiny_vae
from synthmask.diffusion.tokenizer import build_clip_tokenizer
from synthmask.prompt_types import Prompt


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _image(pipe: StableDiffusionPipeline) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        ["a dog"],
        latents=initial_latents([0], (4, 16, 16)),
        num_inference_steps=2,
        output_type="np",
    ).images


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("ddim", DDIMScheduler),
        ("pndm", PNDMScheduler),
        ("dpm++", DPMSolverMultistepScheduler),
        ("euler", EulerDiscreteScheduler),
    ],
)
def test_local_dir_and_scheduler(tiny_pipeline_dir: Path, name: str, cls: type) -> None:
    pipe = load_pipeline(PipelineConfig(model=str(tiny_pipeline_dir), scheduler=name))
    assert isinstance(pipe, StableDiffusionPipeline)
    assert type(pipe.scheduler) is cls
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"  # config carried over
    assert pipe.unet.dtype == torch.float32 and pipe.device.type == "cpu"
    if name == "dpm++":
        assert pipe.scheduler.config.algorithm_type == "dpmsolver++"


def test_dtype_and_registry_errors(tiny_pipeline_dir: Path) -> None:
    pipe = load_pipeline(PipelineConfig(model=str(tiny_pipeline_dir), dtype="bfloat16"))
    assert pipe.unet.dtype == torch.bfloat16
    with pytest.raises(KeyError, match=r"unknown scheduler 'ddpm'.*Did you mean"):
        load_pipeline(PipelineConfig(model=str(tiny_pipeline_dir), scheduler="ddpm"))
    with pytest.raises(KeyError, match=r"unknown dtype 'fp16'.*valid"):
        load_pipeline(PipelineConfig(model=str(tiny_pipeline_dir), dtype="fp16"))


def test_missing_and_non_pipeline_dirs(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pipeline(PipelineConfig(model=str(tmp_path / "nowhere")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no model_index.json"):
        load_pipeline(PipelineConfig(model=str(tmp_path / "empty")))
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a diffusers pipeline"):
        load_pipeline(PipelineConfig(model=str(tmp_path / "file.bin")))
    other = tmp_path / "other"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(ValueError, match="FluxPipeline pipeline; supported"):
        load_pipeline(PipelineConfig(model=str(other)))


def test_incomplete_dir_is_a_clear_error(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_pipeline_dir, broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises((ValueError, OSError), match="unet|incomplete"):
        load_pipeline(PipelineConfig(model=str(broken)))


def test_offline_hub_id_never_downloads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(FileNotFoundError, match=r"offline.*hf download no-such-org/no-such-model"):
        load_pipeline(PipelineConfig(model="no-such-org/no-such-model"))


def test_fingerprint(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    local = pipeline_fingerprint(PipelineConfig(model=str(tiny_pipeline_dir)))
    assert len(local) == 64 and local == pipeline_fingerprint(
        PipelineConfig(model=str(tiny_pipeline_dir), scheduler="euler", guidance_scale=3.0)
    )
    moved = tmp_path / "moved"
    shutil.copytree(tiny_pipeline_dir, moved)
    assert pipeline_fingerprint(PipelineConfig(model=str(moved))) == local
    build_tiny_pipeline(tmp_path / "seed1", sample_size=16, seed=1)
    assert pipeline_fingerprint(PipelineConfig(model=str(tmp_path / "seed1"))) != local
    hub = pipeline_fingerprint(PipelineConfig(model="org/model"))
    assert hub == pipeline_fingerprint(PipelineConfig(model="org/model", revision="main"))
    assert hub != pipeline_fingerprint(PipelineConfig(model="org/model", revision="abc123"))


def test_lora_fused_at_scale(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    add_lora(pipe.unet, LoRASettings(rank=4, init="default"))
    with torch.no_grad():
        for name, param in pipe.unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)  # a trained-looking (non-zero) update
    lora_file = save_lora_weights(tmp_path / "lora", pipe.unet)
    base_cfg = PipelineConfig(model=str(tiny_pipeline_dir))
    base = _image(load_pipeline(base_cfg))
    images = {}
    for scale in (0.0, 0.5):
        cfg = PipelineConfig(
            model=str(tiny_pipeline_dir), lora_path=str(lora_file), lora_scale=scale
        )
        loaded = load_pipeline(cfg)
        assert not any("lora" in n for n, _ in loaded.unet.named_parameters())  # fused
        images[scale] = _image(loaded)
    np.testing.assert_allclose(images[0.0], base, atol=1e-6)
    assert np.abs(images[0.5] - base).max() > 1e-3
    prints = {
        s: pipeline_fingerprint(
            PipelineConfig(
                model=str(tiny_pipeline_dir), lora_path=str(tmp_path / "lora"), lora_scale=s
            )
        )
        for s in (0.5, 1.0)
    }
    assert len({*prints.values(), pipeline_fingerprint(base_cfg)}) == 3
    with pytest.raises(FileNotFoundError, match="LoRA weights"):
        load_pipeline(PipelineConfig(model=str(tiny_pipeline_dir), lora_path=str(tmp_path / "x")))


def _save_tiny_sdxl(save_dir: Path) -> None:
    """Tiny SDXL (two text encoders, text_time conditioning) in the diffusers test recipe."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 * 8 time ids + 32 pooled text
        cross_attention_dim=64,  # 32 + 32 from the two text encoders
        norm_num_groups=8,
    )
    te_config = CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=1,
        vocab_size=49408, projection_dim=32, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407,
    )  # fmt: skip
    pipe = StableDiffusionXLPipeline(
        vae=tiny_vae(32),
        text_encoder=CLIPTextModel(te_config),
        text_encoder_2=CLIPTextModelWithProjection(te_config),
        tokenizer=build_clip_tokenizer(),
        tokenizer_2=build_clip_tokenizer(),
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
        ),
        add_watermarker=False,
    )
    pipe.save_pretrained(save_dir)


def test_sdxl_dir_loads_xl_pipeline_and_captures(tmp_path: Path) -> None:
    _save_tiny_sdxl(tmp_path / "sdxl")
    pipe = load_pipeline(PipelineConfig(model=str(tmp_path / "sdxl"), scheduler="ddim"))
    assert type(pipe) is StableDiffusionXLPipeline and type(pipe.scheduler) is DDIMScheduler
    prompt = Prompt.from_text_and_words("a photo of a dog", [("dog", 1)])
    out = generate_with_attention(pipe, [prompt], [0], CaptureConfig(), 2, 5.0)
    assert out.images.shape == (1, 32, 32, 3)
    # cross-attention only in the second level (latent 16 -> 8) and the mid block
    assert list(out.cross_attention) == [8]
    torch.testing.assert_close(
        out.cross_attention[8].sum(1), torch.ones(1, 8, 8), atol=1e-5, rtol=0
    )


def test_shipped_alias_resolves_to_package_asset(monkeypatch: pytest.MonkeyPatch) -> None:
    from synthmask import ldm
    from synthmask.diffusion.pipeline import SHIPPED_MODEL_ALIAS, resolve_local_dir

    monkeypatch.chdir("/")  # the alias must not depend on the working directory
    if not (ldm.SHIPPED_LDM_DIR / "model_index.json").is_file():
        with pytest.raises(FileNotFoundError, match="shipped shapes-world LDM is missing"):
            resolve_local_dir(SHIPPED_MODEL_ALIAS)
    else:
        assert resolve_local_dir(SHIPPED_MODEL_ALIAS) == ldm.SHIPPED_LDM_DIR
