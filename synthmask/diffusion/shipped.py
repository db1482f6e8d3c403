"""Where the tiny shapes-world LDM shipped inside the package lives (a StableDiffusionPipeline
directory), and what its model card states.

It sits in ``synthmask.diffusion`` because the pipeline loader resolves the shipped model's alias
(``"synthmask:shapes-ldm"``) here; the LDM's own package ``synthmask.ldm`` (recipe, training
losses, samples) builds on ``synthmask.diffusion`` and re-exports these names.

    from diffusers import StableDiffusionPipeline
    from synthmask.ldm import shipped_ldm_path
    pipe = StableDiffusionPipeline.from_pretrained(shipped_ldm_path())

It loads through the same ``from_pretrained`` path as Stable Diffusion (and as
``synthmask.diffusion.pipeline.load_pipeline`` with ``model=str(shipped_ldm_path())``).
See ``MODEL_CARD.md`` in that directory for its recipe, cost and measured quality.
"""

from __future__ import annotations

import re
from pathlib import Path

SHIPPED_LDM_DIR = Path(__file__).resolve().parents[1] / "assets" / "shapes_ldm"


def shipped_ldm_path(must_exist: bool = True) -> Path:
    """Directory of the shipped shapes-world LDM (``model_index.json``, unet/, vae/, ...).

    Raises:
        FileNotFoundError: when ``must_exist`` and the weights are not installed (a source
            checkout without them): rebuild them with the command in the model card.
    """
    if must_exist and not (SHIPPED_LDM_DIR / "model_index.json").is_file():
        raise FileNotFoundError(
            f"the shipped shapes-world LDM is missing at {SHIPPED_LDM_DIR}; reinstall synthmask "
            "(the weights are package data) or rebuild them with experiments/shapes_vae_train.yaml "
            "and experiments/shapes_ldm_train.yaml (see synthmask/assets/shapes_ldm/MODEL_CARD.md)."
        )
    return SHIPPED_LDM_DIR


def ldm_training_step(pipeline_dir: str | Path | None = None) -> int | None:
    """Training step of an exported shapes LDM, as its ``MODEL_CARD.md`` states it
    ("16,501 optimizer steps"); the shipped model's by default; None without a card or statement.
    """
    card = Path(pipeline_dir or SHIPPED_LDM_DIR) / "MODEL_CARD.md"
    if not card.is_file():
        return None
    found = re.search(r"(\d[\d,]*) optimizer steps", card.read_text())
    return int(found.group(1).replace(",", "")) if found else None
