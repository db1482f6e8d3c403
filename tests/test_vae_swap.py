"""pipeline.vae_path: a replacement autoencoder (e.g. a domain-adapted decoder) loaded into the
pipeline, changing the decoded images and the cache fingerprint, with clear errors."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL
from fixtures_diffusion import tiny_pipeline_dir_fixture  # noqa: F401  (fixture tiny_pipeline_dir)

from synthmask.diffusion.pipeline import (
    PipelineConfig,
    _tree_digest,
    load_pipeline,
    pipeline_fingerprint,
)


def _adapted_vae(tiny_pipeline_dir: Path, out: Path, **config_changes: object) -> Path:
    """The pipeline's VAE with its decoder's last conv shifted (the encoder kept)."""
    vae = AutoencoderKL.from_pretrained(tiny_pipeline_dir / "vae")
    with torch.no_grad():
        vae.decoder.conv_out.bias += 0.5
    if config_changes:
        vae.register_to_config(**config_changes)
    vae.save_pretrained(out)
    return out


def test_vae_path_replaces_the_decoder(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    adapted = _adapted_vae(tiny_pipeline_dir, tmp_path / "export")
    base = load_pipeline(PipelineConfig(model=str(tiny_pipeline_dir)))
    swapped = load_pipeline(PipelineConfig(model=str(tiny_pipeline_dir), vae_path=str(adapted)))
    shift = swapped.vae.decoder.conv_out.bias - base.vae.decoder.conv_out.bias
    assert torch.allclose(shift, torch.full_like(shift, 0.5))
    for name, weight in base.vae.encoder.state_dict().items():  # the encoder is the adapted one's
        assert torch.equal(weight, swapped.vae.encoder.state_dict()[name])
    latents = torch.zeros(1, base.vae.config.latent_channels, 8, 8)
    with torch.no_grad():
        delta = swapped.vae.decode(latents).sample - base.vae.decode(latents).sample
    assert torch.allclose(delta, torch.full_like(delta, 0.5), atol=1e-5)
    # a pipeline folder with vae/ works too
    as_pipeline = tmp_path / "pipe"
    (as_pipeline / "vae").parent.mkdir()
    shutil.copytree(adapted, as_pipeline / "vae")
    again = load_pipeline(PipelineConfig(model=str(tiny_pipeline_dir), vae_path=str(as_pipeline)))
    assert torch.equal(again.vae.decoder.conv_out.bias, swapped.vae.decoder.conv_out.bias)


def test_fingerprint_covers_the_vae_and_keeps_old_keys(
    tiny_pipeline_dir: Path, tmp_path: Path
) -> None:
    plain_cfg = PipelineConfig(model=str(tiny_pipeline_dir))
    plain = pipeline_fingerprint(plain_cfg)
    # without vae_path the payload is what it was before the option existed
    payload = {"lora": None, "model": {"local": _tree_digest(tiny_pipeline_dir.resolve())}}
    assert plain == hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    first = _adapted_vae(tiny_pipeline_dir, tmp_path / "a")
    second = _adapted_vae(tiny_pipeline_dir, tmp_path / "b")
    with torch.no_grad():  # a different decoder
        vae = AutoencoderKL.from_pretrained(second)
        vae.decoder.conv_out.bias += 0.1
        vae.save_pretrained(second)
    prints = {
        pipeline_fingerprint(PipelineConfig(model=str(tiny_pipeline_dir), vae_path=str(p)))
        for p in (first, second)
    }
    assert len(prints | {plain}) == 3


def test_vae_path_errors(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"holds no autoencoder.*vae_path"):
        load_pipeline(PipelineConfig(model=str(tiny_pipeline_dir), vae_path=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="holds no autoencoder"):
        pipeline_fingerprint(PipelineConfig(model=str(tiny_pipeline_dir), vae_path=str(tmp_path)))
    other = _adapted_vae(tiny_pipeline_dir, tmp_path / "other", scaling_factor=0.5)
    with pytest.raises(ValueError, match=r"scaling factor.*train_part: decoder"):
        load_pipeline(PipelineConfig(model=str(tiny_pipeline_dir), vae_path=str(other)))
