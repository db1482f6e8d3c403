"""Checkpoint export of the tiny LDM's training runs (``VAETrainModule``, ``LDMTrainModule``): a
shippable ``StableDiffusionPipeline`` (EMA weights by default), the non-EMA resume state, and the
VAE of a VAE-stage run.

Command line (also reachable as ``python -m synthmask.lightning_modules.diffusion_train``):
``python -m synthmask.lightning_modules.diffusion_export export|resume-state|vae CKPT OUT_DIR``.

A checkpoint records its networks' architecture, so the export rebuilds them from the checkpoint
alone. Checkpoints of the former single-class ``DiffusionTrainModule`` (its ``stage`` and size
arguments in the hyperparameters) load too.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from diffusers import StableDiffusionPipeline

from synthmask.diffusion.tokenizer import build_clip_tokenizer
from synthmask.ldm.nets import architecture, from_config
from synthmask.ldm.recipe import build_shapes_text_encoder, build_shapes_unet, build_shapes_vae
from synthmask.lightning_modules.diffusion_common import NETWORKS_KEY
from synthmask.lightning_modules.ldm_train import LDMTrainModule
from synthmask.lightning_modules.vae_train import VAETrainModule


def module_from_checkpoint(checkpoint: str | Path) -> VAETrainModule | LDMTrainModule:
    """The module of a training checkpoint with its weights, built from the architecture the
    checkpoint records (no VAE or pipeline directory is read) and with sampling off."""
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    networks = state.get(NETWORKS_KEY) or _former_module_networks(
        state.get("hyper_parameters", {}), checkpoint
    )
    built = {name: from_config(record) for name, record in networks.items() if name != "stage"}
    if networks["stage"] == "vae":
        module: VAETrainModule | LDMTrainModule = VAETrainModule(**built)
    else:
        module = LDMTrainModule(**built, sample_every_n_steps=0)
    module.load_state_dict(state["state_dict"])
    return module


def _former_module_networks(hparams: dict[str, Any], checkpoint: str | Path) -> dict[str, Any]:
    """Architecture records of a ``DiffusionTrainModule`` checkpoint (its defaults included)."""
    if hparams.get("stage") not in ("vae", "ldm"):
        raise ValueError(
            f"{checkpoint} records no tiny-LDM networks; give a checkpoint of VAETrainModule or "
            "LDMTrainModule (experiments/shapes_vae_train.yaml, experiments/shapes_ldm_train.yaml)."
        )
    image_size = hparams.get("image_size", 32)
    vae_channels = tuple(hparams.get("vae_channels", (32, 64)))
    networks = {
        "stage": hparams["stage"],
        "vae": architecture(build_shapes_vae(image_size, vae_channels)),
    }
    if hparams["stage"] == "ldm":
        hidden = hparams.get("text_hidden_size", 64)
        unet = build_shapes_unet(
            sample_size=image_size // 2 ** (len(vae_channels) - 1),
            block_out_channels=tuple(hparams.get("unet_channels", (32, 64, 128))),
            cross_attention_levels=tuple(
                hparams.get("cross_attention_levels", (True, True, False))
            ),
            cross_attention_dim=hidden,
            attention_heads=hparams.get("attention_heads", 2),
        )
        text = build_shapes_text_encoder(hidden, hparams.get("text_layers", 0))
        networks.update(unet=architecture(unet), text_encoder=architecture(text))
    return networks


def export_pipeline(
    checkpoint: str | Path, out_dir: str | Path, use_ema: bool = True, fp16: bool = True
) -> StableDiffusionPipeline:
    """Write a ``StableDiffusionPipeline`` dir (safetensors) from an "ldm" training checkpoint."""
    module = module_from_checkpoint(checkpoint)
    pipe = module.pipeline(use_ema=use_ema)
    if fp16:
        pipe.to(torch.float16)
    out_dir = Path(out_dir)
    pipe.save_pretrained(str(out_dir), safe_serialization=True)
    build_clip_tokenizer(out_dir / "tokenizer")
    return pipe


def export_resume_state(checkpoint: str | Path, out_dir: str | Path) -> None:
    """Save the *non-EMA* UNet + text encoder (fp16 safetensors) of a checkpoint, so a later run
    continues training with ``init_pipeline_dir=out_dir`` (EMA from the shipped pipeline)."""
    module = module_from_checkpoint(checkpoint)
    out_dir = Path(out_dir)
    module.unet.half().save_pretrained(str(out_dir / "unet"), safe_serialization=True)
    module.text_encoder.half().save_pretrained(
        str(out_dir / "text_encoder"), safe_serialization=True
    )


def export_vae_weights(checkpoint: str | Path, out_dir: str | Path, fp16: bool = True) -> None:
    """Save the VAE of a "vae"-stage checkpoint (e.g. a decoder fine-tune) as a ``vae/`` folder
    that replaces a pipeline's, with the scaling factor the run kept (fp16 safetensors)."""
    module = module_from_checkpoint(checkpoint)
    if not isinstance(module, VAETrainModule):
        raise ValueError(
            f"{checkpoint} is a {module.stage!r}-stage checkpoint; `vae` exports the autoencoder "
            "of a 'vae'-stage run (its pipeline's VAE comes out with `export`)."
        )
    vae = module.vae
    vae.register_to_config(scaling_factor=float(module.latent_scale))
    if fp16:
        vae = vae.half()
    vae.save_pretrained(str(out_dir), safe_serialization=True)


USAGE = (
    "usage: python -m synthmask.lightning_modules.diffusion_train export CKPT OUT_DIR "
    "[--no-ema] [--fp32]\n"
    "       python -m synthmask.lightning_modules.diffusion_train resume-state CKPT OUT_DIR\n"
    "       python -m synthmask.lightning_modules.diffusion_train vae CKPT OUT_DIR [--fp32]"
)


def main(argv: list[str]) -> None:
    """The export / resume-state command line (see USAGE)."""
    if len(argv) < 3 or argv[0] not in ("export", "resume-state", "vae"):
        raise SystemExit(USAGE)
    if argv[0] == "vae":
        export_vae_weights(argv[1], argv[2], fp16="--fp32" not in argv)
        print(f"saved the VAE of {argv[1]} to {argv[2]}")
        return
    if argv[0] == "resume-state":
        export_resume_state(argv[1], argv[2])
        print(f"saved the non-EMA UNet + text encoder of {argv[1]} to {argv[2]}")
        return
    export_pipeline(argv[1], argv[2], use_ema="--no-ema" not in argv, fp16="--fp32" not in argv)
    print(f"exported {argv[1]} -> {argv[2]} (EMA={'--no-ema' not in argv})")


if __name__ == "__main__":
    main(sys.argv[1:])
