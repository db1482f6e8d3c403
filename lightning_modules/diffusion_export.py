"""Checkpoint export of ``DiffusionTrainModule`` runs: a shippable ``StableDiffusionPipeline``
(EMA weights by default), the non-EMA resume state, and the VAE of a "vae"-stage run.

Command line (also reachable as ``python -m synthmask.lightning_modules.diffusion_train``):
``python -m synthmask.lightning_modules.diffusion_export export|resume-state|vae CKPT OUT_DIR``.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from synthmask.diffusion.tokenizer import build_clip_tokenizer
from synthmask.lightning_modules.diffusion_train import DiffusionTrainModule


def module_from_checkpoint(checkpoint: str | Path) -> DiffusionTrainModule:
    """The module of a training checkpoint with its weights, built without touching the
    directories it was trained from (VAE, init pipeline) and with sampling off."""
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    names = inspect.signature(DiffusionTrainModule.__init__).parameters
    hparams = {k: v for k, v in state["hyper_parameters"].items() if k in names}
    # The weights come from the state: no source directories, and vae_train_part (which only
    # decides what trains) must not ask for a trained VAE's directory.
    hparams.update(
        vae_dir=None,
        init_pipeline_dir=None,
        init_ema_dir=None,
        sample_every_n_steps=0,
        vae_train_part="all",
    )
    module = DiffusionTrainModule(**hparams)
    module.load_state_dict(state["state_dict"])
    return module


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
    if module.stage != "vae":
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
