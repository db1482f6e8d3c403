"""Mask methods as config classes: one override switches method, each method brings its own
defaults, capture needs are resolved against the UNet's attention sides at the image size."""

from __future__ import annotations

import pytest
from jsonargparse import ArgumentParser

from synthmask.diffusion.capture import CaptureConfig
from synthmask.diffusion.resolutions import geometry_from_configs
from synthmask.masks import (
    Attn2MaskConfig,
    MaskConfig,
    MaskMethodConfig,
    SelfRefineMaskConfig,
    ThresholdMaskConfig,
)

SD15_UNET = {
    "sample_size": 64,
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "layers_per_block": 2,
}
SDXL_UNET = {
    "sample_size": 128,
    "block_out_channels": [320, 640, 1280],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "cross_attention_dim": 2048,
    "attention_head_dim": [5, 10, 20],
    "transformer_layers_per_block": [1, 2, 10],
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "layers_per_block": 2,
}
VAE = {"block_out_channels": [128, 256, 512, 512]}  # factor 8


class _Holder:
    def __init__(self, mask: MaskMethodConfig | None = None) -> None:
        self.mask = mask


def _parse(args: list[str]) -> MaskMethodConfig:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(_Holder, "data")
    config = parser.parse_args(
        [
            '--data.mask={"class_path": "synthmask.masks.Attn2MaskConfig", '
            '"init_args": {"beta": 0.3, "reliability_fraction": 0.7}}',
            *args,
        ]
    )
    return parser.instantiate(config).data.mask


def test_one_override_switches_method_keeping_shared_settings() -> None:
    mask = _parse(["--data.mask=ThresholdMaskConfig"])  # the YAML's beta is dropped
    assert type(mask) is ThresholdMaskConfig
    assert mask.params() == {"threshold": "otsu", "default_threshold": 0.5, "ignore_margin": None}
    assert mask.shared["reliability_fraction"] == 0.7
    refine = _parse(["--data.mask=SelfRefineMaskConfig", "--data.mask.tau=2"])
    assert refine.params()["tau"] == 2 and refine.params()["self_resolution"] is None
    assert _parse([]).params()["beta"] == 0.3


def test_methods_validate_their_values_at_construction() -> None:
    with pytest.raises(ValueError, match="ignore_low=0.9 must be <= fg_threshold=0.6"):
        SelfRefineMaskConfig(ignore_low=0.9)
    with pytest.raises(ValueError, match="reliability_fraction must be in"):
        Attn2MaskConfig(reliability_fraction=2.0)
    with pytest.raises(ValueError, match="threshold='median'"):
        ThresholdMaskConfig(threshold="median")
    with pytest.raises(TypeError, match="pick a method"):
        MaskMethodConfig()


@pytest.mark.parametrize(
    ("unet", "size", "sides", "auto"),
    [
        (SD15_UNET, 512, (64, 32, 16, 8), 32),
        (SD15_UNET, 256, (32, 16, 8, 4), 32),
        (SDXL_UNET, 1024, (64, 32), 32),
        (SDXL_UNET, 512, (32, 16), 32),
        (SDXL_UNET, 256, (16, 8), 16),
    ],
)
def test_self_refine_captures_the_side_the_unet_has(unet, size, sides, auto) -> None:
    geometry = geometry_from_configs(unet, VAE, size, size, "m")
    assert geometry.self_ == sides and geometry.cross == sides
    capture, mask = SelfRefineMaskConfig().resolve(CaptureConfig(step_window=(0.5, 0.5)), geometry)
    assert capture.self_attention and capture.self_resolutions == (auto,)
    assert capture.step_window == (0.5, 0.5)
    assert mask.method == "self_refine" and mask.params["self_resolution"] == auto
    capture, mask = Attn2MaskConfig().resolve(CaptureConfig(), geometry)
    assert not capture.self_attention and mask.params["beta"] == 0.2


def test_missing_side_error_names_the_image_size() -> None:
    geometry = geometry_from_configs(SDXL_UNET, VAE, 512, 512, "sdxl")
    with pytest.raises(
        ValueError, match=r"\[64\] do not exist at image size 512x512 \(latent 64x64\)"
    ):
        SelfRefineMaskConfig(self_resolution=64).resolve(CaptureConfig(), geometry)
    with pytest.raises(ValueError, match="capture.cross_resolutions"):
        Attn2MaskConfig().resolve(CaptureConfig(cross_resolutions=(8,)), geometry)
    with pytest.raises(ValueError, match="are not all captured"):
        Attn2MaskConfig(resolutions=[16]).resolve(CaptureConfig(cross_resolutions=(32,)), geometry)


def test_resolved_settings_equal_the_explicit_ones_so_cache_keys_stay() -> None:
    """The shapes main job once wrote self_resolution 16 and capture [16] by hand."""
    shapes_unet = {
        "sample_size": 16,
        "block_out_channels": [32, 64, 128],
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "cross_attention_dim": 64,
        "attention_head_dim": 2,
        "norm_num_groups": 16,
    }
    geometry = geometry_from_configs(shapes_unet, {"block_out_channels": [32, 64]}, None, None)
    capture, mask = SelfRefineMaskConfig(reliability_fraction=0.5).resolve(
        CaptureConfig(), geometry
    )
    explicit_capture = CaptureConfig(self_attention=True, self_resolutions=(16,))
    explicit_mask = MaskConfig("self_refine", {"self_resolution": 16}, reliability_fraction=0.5)
    assert capture.to_json() == explicit_capture.to_json()
    assert mask.to_json() == explicit_mask.to_json()
    assert (
        MaskMethodConfig.from_mask_config(explicit_mask).mask_config(self_resolution=16).to_json()
        == explicit_mask.to_json()
    )
