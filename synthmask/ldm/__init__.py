"""The shapes world's tiny text-to-image LDM: its recipe, training losses, sample logging and
the shipped weights.

It sits beside ``synthmask.world`` (which only renders scenes) and above ``synthmask.diffusion``
(whose capture and sampling it uses for its sample grids). The shipped weights' location is
defined in ``synthmask.diffusion.shipped`` (the pipeline loader resolves its alias there, and
``synthmask.diffusion`` must not import this package back) and re-exported here::

    from diffusers import StableDiffusionPipeline
    from synthmask.ldm import shipped_ldm_path
    pipe = StableDiffusionPipeline.from_pretrained(shipped_ldm_path())
"""

from synthmask.diffusion.shipped import SHIPPED_LDM_DIR, ldm_training_step, shipped_ldm_path

__all__ = ["SHIPPED_LDM_DIR", "ldm_training_step", "shipped_ldm_path"]
