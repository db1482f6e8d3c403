"""Which attention resolutions a pipeline has at a given image size, read from its configs.

Mask methods declare what they need captured (self-attention, a resolution or "auto"); the
engine resolves that against the resolutions the loaded UNet actually has at the sampling size
(SD 1.x/2.x at 512 px: 64, 32, 16, 8; SDXL at 1024 px: 64, 32). The UNet is built from its
``config.json`` on the meta device (no weights, no memory), and its layers are mapped with the
same ``attention_layers`` that installs capture, so the two cannot disagree.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import UNet2DConditionModel

from synthmask.diffusion.capture import CROSS, SELF, attention_layers, layer_map_size
from synthmask.diffusion.pipeline import PipelineConfig, _hub_error, _offline, resolve_local_dir

AUTO_SELF_RESOLUTION_MAX = 32
"""`self_resolution: null` picks the largest self-attention side not above this (Dataset
Diffusion's 32 on SD at 512 px; an (N, N) map of side 32 is 1M floats per image, side 64 is 16M)."""


@dataclass(frozen=True)
class AttentionGeometry:
    """Attention map sides (``min(h, w)`` of each layer's map) of a UNet at one image size.

    Attributes:
        model: the pipeline's model string (for messages).
        image_hw: sampled image size (H, W) in pixels.
        latent_hw: latent size (h, w) = image size / VAE factor.
        cross: cross-attention sides, largest first.
        self_: self-attention sides, largest first.
    """

    model: str
    image_hw: tuple[int, int]
    latent_hw: tuple[int, int]
    cross: tuple[int, ...]
    self_: tuple[int, ...]

    def describe(self) -> str:
        (h, w), (lh, lw) = self.image_hw, self.latent_hw
        return f"image size {h}x{w} (latent {lh}x{lw})"

    def available(self, kind: str) -> tuple[int, ...]:
        return self.cross if kind == CROSS else self.self_

    def check(self, kind: str, wanted: tuple[int, ...] | None, setting: str) -> None:
        """Raise a ValueError naming the image size when ``wanted`` sides do not exist."""
        missing = sorted(set(wanted or ()) - set(self.available(kind)))
        if missing:
            raise ValueError(
                f"{setting}={list(wanted or ())}: {kind}-attention side(s) {missing} do not exist "
                f"at {self.describe()} of {self.model!r}; its {kind}-attention maps have sides "
                f"{list(self.available(kind))}. The image size decides them: set {setting} to "
                "some of those, leave it unset (automatic), or change pipeline.height/width."
            )

    def auto_self_resolution(self) -> int:
        """The largest self-attention side <= AUTO_SELF_RESOLUTION_MAX (else the smallest)."""
        if not self.self_:
            raise ValueError(f"{self.model!r} has no self-attention layers at {self.describe()}.")
        small = [r for r in self.self_ if r <= AUTO_SELF_RESOLUTION_MAX]
        return max(small) if small else min(self.self_)


def _read_config(cfg: PipelineConfig, subfolder: str) -> dict[str, Any]:
    local_dir = resolve_local_dir(cfg.model)
    if local_dir is not None:
        path = local_dir / subfolder / "config.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: {local_dir} is not a complete diffusers pipeline "
                f"(it needs {subfolder}/config.json)."
            )
        return json.loads(path.read_text(encoding="utf-8"))
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(
            cfg.model,
            f"{subfolder}/config.json",
            revision=cfg.revision,
            local_files_only=_offline(),
        )
    except Exception as err:  # hub/cache errors vary across huggingface_hub versions
        raise _hub_error(cfg, err) from err
    return json.loads(open(path, encoding="utf-8").read())


@functools.lru_cache(maxsize=16)
def _sides_by_factor(unet_config_json: str) -> tuple[tuple[str, int], ...]:
    """(kind, downsampling factor) of every attention layer of a UNet config (meta device)."""
    config = json.loads(unet_config_json)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    return tuple(sorted(set(attention_layers(unet).values())))


def geometry_from_configs(
    unet_config: dict[str, Any],
    vae_config: dict[str, Any],
    height: int | None,
    width: int | None,
    model: str = "",
) -> AttentionGeometry:
    """Attention sides of a UNet at ``height x width`` pixels (None = the model's default)."""
    vae_factor = 2 ** (len(vae_config.get("block_out_channels", [0])) - 1)
    default = int(unet_config.get("sample_size") or 64) * vae_factor
    image_hw = (int(height or default), int(width or default))
    latent_hw = (image_hw[0] // vae_factor, image_hw[1] // vae_factor)
    if min(latent_hw) < 1:
        raise ValueError(
            f"image size {image_hw[0]}x{image_hw[1]} is smaller than the VAE factor {vae_factor} "
            f"of {model!r}; use a height/width of at least {vae_factor} (a multiple of it)."
        )
    sides: dict[str, set[int]] = {CROSS: set(), SELF: set()}
    for kind, factor in _sides_by_factor(json.dumps(unet_config, sort_keys=True)):
        sides[kind].add(min(layer_map_size(factor, latent_hw)))
    return AttentionGeometry(
        model=model,
        image_hw=image_hw,
        latent_hw=latent_hw,
        cross=tuple(sorted(sides[CROSS], reverse=True)),
        self_=tuple(sorted(sides[SELF], reverse=True)),
    )


def attention_geometry(cfg: PipelineConfig) -> AttentionGeometry:
    """Attention sides of ``cfg``'s UNet at ``cfg.height x cfg.width`` (configs only)."""
    return geometry_from_configs(
        _read_config(cfg, "unet"), _read_config(cfg, "vae"), cfg.height, cfg.width, cfg.model
    )
