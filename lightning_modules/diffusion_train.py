"""Command line of the tiny LDM's checkpoint export, under its former module name.

The training modules are ``vae_train.VAETrainModule`` (stage 1, the autoencoder) and
``ldm_train.LDMTrainModule`` (stage 2, denoiser + text encoder); the export code is in
``diffusion_export.py``. This name stays for the documented commands::

    python -m synthmask.lightning_modules.diffusion_train export|resume-state|vae CKPT OUT_DIR
"""

from __future__ import annotations

import sys

from synthmask.lightning_modules.diffusion_export import (
    export_pipeline,
    export_resume_state,
    export_vae_weights,
    main,
    module_from_checkpoint,
)

__all__ = [
    "export_pipeline",
    "export_resume_state",
    "export_vae_weights",
    "main",
    "module_from_checkpoint",
]

if __name__ == "__main__":
    main(sys.argv[1:])
