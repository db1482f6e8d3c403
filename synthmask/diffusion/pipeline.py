"""Load Stable Diffusion pipelines (hub id or local dir) by config, never downloading offline."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)
from diffusers.utils import deprecation_utils as _deprecation_utils

from synthmask.diffusion.fingerprint import FileHashIndex, tree_sha256
from synthmask.diffusion.vae_swap import replace_vae, vae_folder

SCHEDULERS: dict[str, tuple[type, dict[str, Any]]] = {
    "ddim": (DDIMScheduler, {}),
    "pndm": (PNDMScheduler, {"skip_prk_steps": True}),
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "euler": (EulerDiscreteScheduler, {}),
}
PIPELINE_CLASSES: dict[str, type] = {
    "StableDiffusionPipeline": StableDiffusionPipeline,
    "StableDiffusionXLPipeline": StableDiffusionXLPipeline,
}
# diffusers >= 0.36 renamed from_pretrained's `torch_dtype` to `dtype`.
_DTYPE_KWARG = "dtype" if hasattr(_deprecation_utils, "_resolve_dtype") else "torch_dtype"
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


@dataclass
class PipelineConfig:
    """Which diffusion model to load and how to sample from it.

    Attributes:
        model: hub id ("stable-diffusion-v1-5/stable-diffusion-v1-5") or a local directory
            holding ``model_index.json`` (a ``save_pretrained`` output).
        revision: hub revision (branch, tag or commit); pin a commit for reproducible caches.
        dtype: "float32" (CPU), "float16" / "bfloat16" (GPU).
        device: torch device string.
        scheduler: one of ``SCHEDULERS`` (ddim, pndm, dpm++, euler).
        num_inference_steps, guidance_scale, height, width: sampling settings (used by the
            callers of ``generate_with_attention``; None size = the model's default).
        lora_path: LoRA weights (file or dir from ``save_lora_weights``), fused at load.
        lora_scale: strength of the fused LoRA.
        vae_path: an autoencoder that replaces the model's own (a ``save_pretrained`` VAE
            folder, or a pipeline directory with ``vae/``), e.g. a decoder adapted to a new
            domain with the encoder kept (experiments/shapes_target_decoder.yaml). Its latent
            shape and scaling factor must match the model's.
        safety_checker: keep the model's NSFW safety checker (it blacks out flagged images,
            which then poison the pseudo-masks); off by default like the peers' pipelines.
    """

    model: str
    revision: str | None = None
    dtype: str = "float32"
    device: str = "cpu"
    scheduler: str = "ddim"
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    height: int | None = None
    width: int | None = None
    lora_path: str | None = None
    lora_scale: float = 1.0
    vae_path: str | None = None
    safety_checker: bool = False

    def __post_init__(self) -> None:
        if not str(self.model).strip():
            raise ValueError(
                "pipeline.model is empty; give a hub id, a local pipeline directory or "
                f"{SHIPPED_MODEL_ALIAS!r}."
            )
        if self.guidance_scale < 0:
            raise ValueError(
                f"guidance_scale={self.guidance_scale}; it must be >= 0 (1 or less samples "
                "without classifier-free guidance, Stable Diffusion's default is 7.5)."
            )
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps={self.num_inference_steps}; use at least 1.")
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None and value < 8:
                raise ValueError(f"{name}={value}; give an image size in pixels (or null).")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _lookup(registry: dict[str, Any], name: str, what: str) -> Any:
    if name not in registry:
        close = difflib.get_close_matches(name, list(registry), n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise KeyError(f"unknown {what} {name!r}; valid: {sorted(registry)}.{hint}")
    return registry[name]


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _looks_like_path(model: str) -> bool:
    return (
        model.startswith(("/", ".", "~"))
        or os.path.isabs(model)
        or model.count("/") > 1
        or "\\" in model
    )


SHIPPED_MODEL_ALIAS = "synthmask:shapes-ldm"


def resolve_local_dir(model: str) -> Path | None:
    """The local pipeline directory named by ``model``, or None for a hub id.

    ``"synthmask:shapes-ldm"`` names the tiny shapes-world LDM shipped inside the package, so
    configs work from any working directory and from a non-editable install.

    Raises FileNotFoundError for a missing path and ValueError for a directory that is not
    a diffusers pipeline (no ``model_index.json``).
    """
    if model == SHIPPED_MODEL_ALIAS:
        from synthmask.diffusion.shipped import shipped_ldm_path

        return shipped_ldm_path()
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "model_index.json").is_file():
            raise ValueError(
                f"{path} is not a diffusers pipeline directory (no model_index.json); point "
                "`model` at the folder written by `save_pretrained` (it holds model_index.json, "
                "unet/, vae/, text_encoder/, tokenizer/, scheduler/) or give a hub id."
            )
        return path
    if _looks_like_path(model):
        raise FileNotFoundError(
            f"model directory {path} does not exist; give the path of a saved pipeline "
            "(the folder with model_index.json) or a hub id such as "
            "'stable-diffusion-v1-5/stable-diffusion-v1-5'."
        )
    return None


def _pipeline_class(model_index: dict[str, Any], model: str) -> type:
    name = model_index.get("_class_name", "")
    if name not in PIPELINE_CLASSES:
        raise ValueError(
            f"{model} is a {name or 'unknown'} pipeline; supported: {sorted(PIPELINE_CLASSES)} "
            "(Stable Diffusion 1.x/2.x and SDXL)."
        )
    return PIPELINE_CLASSES[name]


def _hub_error(cfg: PipelineConfig, err: Exception) -> FileNotFoundError:
    mode = "offline (HF_HUB_OFFLINE is set)" if _offline() else "from the hub"
    return FileNotFoundError(
        f"could not load {cfg.model!r} (revision {cfg.revision or 'main'}) {mode}: {err}. "
        "Download it once with `huggingface-cli download "
        f"{cfg.model}` (or `hf download {cfg.model}`) on a machine with network access, "
        "or set `model` to a local directory holding model_index.json."
    )


def load_pipeline(cfg: PipelineConfig) -> DiffusionPipeline:
    """Load the pipeline described by ``cfg`` (dtype, device, scheduler, optional fused LoRA).

    A hub id is read from the local Hugging Face cache only when ``HF_HUB_OFFLINE`` is set;
    a failure becomes a FileNotFoundError that says how to get the model.
    """
    dtype = _lookup(DTYPES, cfg.dtype, "dtype")
    scheduler_cls, scheduler_kwargs = _lookup(SCHEDULERS, cfg.scheduler, "scheduler")
    local_dir = resolve_local_dir(cfg.model)
    load_kwargs: dict[str, Any] = {_DTYPE_KWARG: dtype}
    if local_dir is not None:
        source: str = str(local_dir)
        model_index = json.loads((local_dir / "model_index.json").read_text(encoding="utf-8"))
    else:
        source = cfg.model
        load_kwargs["revision"] = cfg.revision
        if _offline():
            load_kwargs["local_files_only"] = True
        try:
            model_index = DiffusionPipeline.load_config(
                source, revision=cfg.revision, local_files_only=_offline()
            )
        except Exception as err:  # hub/cache errors vary across huggingface_hub versions
            raise _hub_error(cfg, err) from err
    pipeline_cls = _pipeline_class(model_index, cfg.model)
    if not cfg.safety_checker and "safety_checker" in model_index:
        load_kwargs.update(safety_checker=None, requires_safety_checker=False)
    try:
        pipe = pipeline_cls.from_pretrained(source, **load_kwargs)
    except OSError as err:
        if local_dir is not None:
            raise ValueError(f"{local_dir} is an incomplete pipeline directory: {err}") from err
        raise _hub_error(cfg, err) from err
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config, **scheduler_kwargs)
    if cfg.lora_path is not None:
        _fuse_lora(pipe, cfg)
    if cfg.vae_path is not None:
        replace_vae(pipe, cfg.vae_path, dtype)
    pipe.to(cfg.device)
    return pipe


def _fuse_lora(pipe: DiffusionPipeline, cfg: PipelineConfig) -> None:
    """Load the LoRA at ``cfg.lora_scale``, merge it into the base weights, drop the adapters.

    Fused weights cost nothing per step and leave plain ``Linear`` layers for capture.
    """
    from synthmask.diffusion.lora import LoRAMismatchError, load_lora, resolve_lora_weights

    path = Path(cfg.lora_path).expanduser()
    weights = resolve_lora_weights(path)  # clear error when absent
    try:
        load_lora(pipe, path, scale=cfg.lora_scale)
    except LoRAMismatchError:
        raise  # names the file, the count and the first layers already
    except Exception as err:  # safetensors' SafetensorError derives from Exception only
        raise ValueError(
            f"could not load the LoRA weights {weights} ({type(err).__name__}: {err}); the file "
            "is corrupt or not a LoRA for this model. Give the file or folder written by "
            "`save_lora_weights` (the LoRA fine-tune's output), or fix `lora_path`."
        ) from err
    pipe.fuse_lora(lora_scale=1.0)  # the scale is already set on the adapter layers
    pipe.unload_lora_weights()  # keeps the fused weights, removes the adapter modules


def _tree_digest(root: Path, index: FileHashIndex | None = None) -> str:
    """Full-content digest of a file or directory (see synthmask/diffusion/fingerprint.py)."""
    return tree_sha256(root, index)


def pipeline_fingerprint(cfg: PipelineConfig) -> str:
    """Stable sha256 hex of what determines the weights: model + revision (hub) or the sha256
    of every byte of the local files (each read once; see fingerprint.py), plus the LoRA
    files' hash and scale. Sampling settings are not included (they go in cache keys).
    """
    local_dir = resolve_local_dir(cfg.model)
    index = FileHashIndex()
    try:
        if local_dir is None:
            model_part: dict[str, Any] = {"hub": cfg.model, "revision": cfg.revision or "main"}
        else:
            model_part = {"local": _tree_digest(local_dir.resolve(), index)}
        lora_part: dict[str, Any] | None = None
        if cfg.lora_path is not None:
            lora = Path(cfg.lora_path).expanduser()
            if not lora.exists():
                raise FileNotFoundError(f"LoRA weights {lora} do not exist; fix `lora_path`.")
            lora_part = {
                "digest": _tree_digest(lora.resolve(), index),
                "scale": float(cfg.lora_scale),
            }
        parts: dict[str, Any] = {"model": model_part, "lora": lora_part}
        if cfg.vae_path is not None:  # only when set, so the keys without it keep their form
            parts["vae"] = _tree_digest(vae_folder(cfg.vae_path).resolve(), index)
    finally:
        index.save()
    payload = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()
