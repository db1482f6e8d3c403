"""The tiny LDM's networks as a config names them: one builder per network, fresh or loaded.

The training modules (``lightning_modules/vae_train.py``, ``lightning_modules/ldm_train.py``)
take built networks; an experiment config builds them by ``class_path``::

    model:
      class_path: synthmask.lightning_modules.ldm_train.LDMTrainModule
      init_args:
        vae: {class_path: synthmask.ldm.nets.ShapesVAE, init_args: {pretrained: runs/vae}}
        unet: {class_path: synthmask.ldm.nets.ShapesUNet, init_args: {sample_size: 16}}

Each builder is a class only so that a config can name it where the module expects the diffusers
class (jsonargparse accepts a subclass there; a builder *function* fails inside jsonargparse when
the CLI links data arguments into the model). Calling it returns a plain diffusers / transformers
network, never an instance of the builder, so saved weights load in plain diffusers.

``from_config`` rebuilds any of them from the architecture a checkpoint records, with no
directory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from diffusers import AutoencoderKL, UNet2DConditionModel
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from synthmask.diffusion.pipeline import SHIPPED_MODEL_ALIAS
from synthmask.diffusion.shipped import shipped_ldm_path
from synthmask.ldm.recipe import build_shapes_text_encoder, build_shapes_unet, build_shapes_vae


def _pipeline_part(pretrained: str, subfolder: str, what: str) -> Path:
    """``pretrained`` itself when it is the part's folder, else its ``subfolder``;
    ``"synthmask:shapes-ldm"`` names the shipped pipeline."""
    path = shipped_ldm_path() if pretrained == SHIPPED_MODEL_ALIAS else Path(pretrained)
    if (path / "config.json").is_file():
        return path
    if (path / subfolder / "config.json").is_file():
        return path / subfolder
    raise FileNotFoundError(
        f"pretrained={pretrained} holds no {what} (no config.json there or in {subfolder}/); "
        "give a save_pretrained folder or a StableDiffusionPipeline directory, or train it first "
        "(synthmask fit --config experiments/shapes_vae_train.yaml for the VAE)."
    )


class ShapesVAE(AutoencoderKL):
    """Builds the shapes VAE (returns an ``AutoencoderKL``): fresh (``image_size``,
    ``block_out_channels``) or, with ``pretrained`` (a VAE folder or a pipeline directory with
    ``vae/``), the trained one in float32."""

    def __new__(
        cls,
        image_size: int = 32,
        block_out_channels: Sequence[int] = (32, 64),
        pretrained: str | None = None,
    ) -> AutoencoderKL:
        if pretrained is None:
            return build_shapes_vae(image_size, block_out_channels)
        folder = _pipeline_part(pretrained, "vae", "VAE")
        return AutoencoderKL.from_pretrained(str(folder)).float()


class ShapesUNet(UNet2DConditionModel):
    """Builds the shapes UNet (returns a ``UNet2DConditionModel``, see
    ``recipe.build_shapes_unet``); with ``pretrained`` (a pipeline directory) it starts from that
    pipeline's UNet weights (the architecture must match)."""

    def __new__(
        cls,
        sample_size: int = 16,
        block_out_channels: Sequence[int] = (32, 64, 128),
        cross_attention_levels: Sequence[bool] = (True, True, False),
        cross_attention_dim: int = 64,
        attention_heads: int = 2,
        pretrained: str | None = None,
    ) -> UNet2DConditionModel:
        unet = build_shapes_unet(
            sample_size=sample_size,
            block_out_channels=block_out_channels,
            cross_attention_levels=cross_attention_levels,
            cross_attention_dim=cross_attention_dim,
            attention_heads=attention_heads,
        )
        if pretrained is not None:
            folder = _pipeline_part(pretrained, "unet", "UNet")
            _load_float(unet, UNet2DConditionModel.from_pretrained(str(folder)), pretrained)
        return unet


class ShapesTextEncoder(CLIPTextModel):
    """Builds the shapes text encoder (returns a ``CLIPTextModel``; 0 layers = no cross-token
    mixing); with ``pretrained`` (a pipeline directory) it starts from that pipeline's weights."""

    def __new__(
        cls, hidden_size: int = 64, num_layers: int = 0, pretrained: str | None = None
    ) -> CLIPTextModel:
        text = build_shapes_text_encoder(hidden_size, num_layers)
        if pretrained is not None:
            folder = _pipeline_part(pretrained, "text_encoder", "text encoder")
            _load_float(text, CLIPTextModel.from_pretrained(str(folder)), pretrained)
        return text


def _load_float(target: nn.Module, source: nn.Module, pretrained: str) -> None:
    try:
        target.load_state_dict({k: v.float() for k, v in source.state_dict().items()})
    except RuntimeError as err:
        raise ValueError(
            f"the {type(target).__name__} in {pretrained} does not match the configured "
            f"architecture ({err}); configure the same sizes as the pretrained model."
        ) from err


def architecture(net: nn.Module) -> dict[str, Any]:
    """The config that rebuilds ``net`` with ``from_config`` (JSON-able, recorded in checkpoints)."""
    if isinstance(net, CLIPTextModel):
        return {"class": "CLIPTextModel", "config": net.config.to_dict()}
    return {"class": type(net).__name__, "config": dict(net.config)}


def from_config(record: Mapping[str, Any]) -> nn.Module:
    """Rebuild a network (random weights) from an ``architecture`` record."""
    kinds = {"AutoencoderKL": AutoencoderKL, "UNet2DConditionModel": UNet2DConditionModel}
    if record["class"] == "CLIPTextModel":
        return CLIPTextModel(CLIPTextConfig.from_dict(dict(record["config"])))
    if record["class"] not in kinds:
        raise KeyError(f"unknown network class {record['class']!r}; known: {sorted(kinds)}.")
    return kinds[record["class"]].from_config(dict(record["config"]))
