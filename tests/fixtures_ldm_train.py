"""Tiny-LDM training configs in the experiment test: the denoiser stage trains on a VAE built in
tmp (its config names stage 1's output under runs/, which a fresh checkout does not have)."""

from __future__ import annotations

from pathlib import Path

from synthmask.ldm.nets import ShapesVAE


def _ldm_train(tmp_path: Path) -> list[str]:
    vae_dir = tmp_path / "stage1_vae"
    ShapesVAE(32, (32, 64)).save_pretrained(str(vae_dir))
    return [f"--model.init_args.vae.init_args.pretrained={vae_dir}"]


EXPERIMENT_OVERRIDES = {"shapes_ldm_train": _ldm_train}
