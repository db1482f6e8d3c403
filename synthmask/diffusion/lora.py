"""LoRA adapters on a diffusers UNet (and optionally the CLIP text encoder), saved in the diffusers format.

Recipe of diffusers' ``train_text_to_image_lora.py``: freeze every base weight, add a peft
``LoraConfig`` adapter on the attention projections with ``add_adapter``, keep the trainable LoRA
parameters in float32 (the frozen base may be float16/bfloat16), and save with
``get_peft_model_state_dict`` -> ``convert_state_dict_to_diffusers`` ->
``StableDiffusionPipeline.save_lora_weights``. The rank/alpha of each adapter is stored as
safetensors metadata, so a plain diffusers user gets the trained scale back with
``pipe.load_lora_weights(dir)`` even when ``alpha != rank``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

UNET_LORA_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_ENCODER_LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj")
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
_INIT_CHOICES = ("gaussian", "default")


@dataclass
class LoRASettings:
    """Shape of the LoRA adapters.

    Attributes:
        rank: LoRA rank r (the paper's range: 4-16).
        alpha: LoRA alpha; the update is scaled by alpha / rank. None = rank (scale 1).
        dropout: dropout on the LoRA branch input.
        unet_targets: UNet module names that get an adapter (diffusers attention projections).
        train_text_encoder: also add adapters to the CLIP text encoder.
        text_encoder_targets: text encoder module names that get an adapter.
        init: peft ``init_lora_weights`` ("gaussian" as in diffusers' examples; B starts at 0
            either way, so a fresh adapter leaves the model unchanged).
    """

    rank: int = 8
    alpha: float | None = None
    dropout: float = 0.0
    unet_targets: tuple[str, ...] = field(default_factory=lambda: UNET_LORA_TARGETS)
    train_text_encoder: bool = False
    text_encoder_targets: tuple[str, ...] = field(default_factory=lambda: TEXT_ENCODER_LORA_TARGETS)
    init: str = "gaussian"

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}; the paper uses 4-16.")
        if self.alpha is not None and self.alpha <= 0:
            raise ValueError(f"LoRA alpha must be > 0 (or None = rank), got {self.alpha}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}.")
        if self.init not in _INIT_CHOICES:
            raise ValueError(f"unknown LoRA init {self.init!r}; choose one of {_INIT_CHOICES}.")
        self.unet_targets = tuple(self.unet_targets)
        self.text_encoder_targets = tuple(self.text_encoder_targets)
        if not self.unet_targets:
            raise ValueError(
                "unet_targets is empty; give e.g. ['to_q', 'to_k', 'to_v', 'to_out.0']."
            )

    @property
    def effective_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)


def build_lora_config(settings: LoRASettings, targets: Sequence[str]):
    """peft ``LoraConfig`` for one model (UNet or text encoder)."""
    from peft import LoraConfig

    init: bool | str = True if settings.init == "default" else settings.init
    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.effective_alpha,
        lora_dropout=settings.dropout,
        init_lora_weights=init,
        target_modules=list(targets),
    )


def _check_targets_exist(model: nn.Module, targets: Sequence[str], what: str) -> None:
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise ValueError(
            f"LoRA target modules {missing} not found in the {what}; valid attention projection "
            f"names look like {sorted({n.rsplit('.', 1)[-1] for n in names if 'attn' in n})[:8]}. "
            "Fix LoRASettings.unet_targets / text_encoder_targets."
        )


def freeze(module: nn.Module) -> None:
    """Set ``requires_grad=False`` on every parameter of a module."""
    module.requires_grad_(False)


def cast_trainable_to_float32(module: nn.Module) -> None:
    """Keep trainable parameters in float32 while the frozen base may be half precision."""
    for param in module.parameters():
        if param.requires_grad:
            param.data = param.data.float()


def add_lora(
    unet: nn.Module,
    settings: LoRASettings,
    text_encoder: nn.Module | None = None,
    adapter_name: str = "default",
) -> list[nn.Parameter]:
    """Freeze the base weights and add LoRA adapters; returns the trainable LoRA parameters.

    The UNet always gets an adapter; the text encoder only when ``settings.train_text_encoder``
    (it is frozen either way when given). Trainable parameters are cast to float32.
    """
    freeze(unet)
    if text_encoder is not None:
        freeze(text_encoder)
    _check_targets_exist(unet, settings.unet_targets, "UNet")
    unet.add_adapter(build_lora_config(settings, settings.unet_targets), adapter_name=adapter_name)
    cast_trainable_to_float32(unet)
    params = [p for p in unet.parameters() if p.requires_grad]
    if settings.train_text_encoder:
        if text_encoder is None:
            raise ValueError(
                "train_text_encoder=True but no text encoder was given; pass the pipeline's "
                "text_encoder or set train_text_encoder=False."
            )
        _check_targets_exist(text_encoder, settings.text_encoder_targets, "text encoder")
        inject_text_encoder_lora(
            text_encoder, build_lora_config(settings, settings.text_encoder_targets), adapter_name
        )
        cast_trainable_to_float32(text_encoder)
        params += [p for p in text_encoder.parameters() if p.requires_grad]
    return params


def inject_text_encoder_lora(
    text_encoder: nn.Module, config, adapter_name: str = "default"
) -> None:
    """Add a LoRA adapter to a transformers text encoder with peft directly.

    transformers 5.x gates ``PreTrainedModel.add_adapter`` / ``load_adapter`` on peft >= 0.22
    (not released when this was written); peft's own ``inject_adapter_in_model`` does the same
    module surgery, and ``peft_config`` is recorded so ``get_peft_model_state_dict`` works.
    """
    from peft import inject_adapter_in_model

    config.base_model_name_or_path = None
    inject_adapter_in_model(config, text_encoder, adapter_name=adapter_name)
    peft_configs = dict(getattr(text_encoder, "peft_config", {}) or {})
    peft_configs[adapter_name] = config
    text_encoder.peft_config = peft_configs
    text_encoder._hf_peft_config_loaded = True
    # peft marks only LoRA weights trainable during injection; the base stays frozen.


def has_lora(module: nn.Module | None) -> bool:
    """Whether a model carries a peft LoRA adapter."""
    if module is None:
        return False
    return any("lora_" in name for name, _ in module.named_parameters())


def lora_state_dict_diffusers(
    module: nn.Module, adapter_name: str = "default"
) -> dict[str, torch.Tensor]:
    """The LoRA weights of one model in the diffusers key format (detached, float32, CPU)."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(module, adapter_name=adapter_name)
    state = convert_state_dict_to_diffusers(state)
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}


def _adapter_metadata(module: nn.Module, adapter_name: str) -> dict:
    config = module.peft_config[adapter_name].to_dict()
    config["base_model_name_or_path"] = None
    return config


def save_lora_weights(
    save_dir: str | Path,
    unet: nn.Module,
    text_encoder: nn.Module | None = None,
    adapter_name: str = "default",
    is_main_process: bool = True,
) -> Path:
    """Write the adapters as ``<save_dir>/pytorch_lora_weights.safetensors`` (diffusers format).

    Loadable with ``StableDiffusionPipeline.load_lora_weights(save_dir)``. The text encoder's
    adapter is saved only if it has one. Returns the weights file path.
    """
    from diffusers import StableDiffusionPipeline

    if not has_lora(unet):
        raise ValueError("the UNet has no LoRA adapter to save; call add_lora(unet, ...) first.")
    save_dir = Path(save_dir)
    te_layers = te_meta = None
    if has_lora(text_encoder):
        te_layers = lora_state_dict_diffusers(text_encoder, adapter_name)
        # transformers 5 flattened CLIPTextModel; the classic key layer (text_model.*) loads in
        # both old and new diffusers (new ones strip the prefix when the model has none).
        te_layers = {
            k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in te_layers.items()
        }
        te_meta = _adapter_metadata(text_encoder, adapter_name)
    StableDiffusionPipeline.save_lora_weights(
        save_directory=str(save_dir),
        unet_lora_layers=lora_state_dict_diffusers(unet, adapter_name),
        text_encoder_lora_layers=te_layers,
        is_main_process=is_main_process,
        weight_name=LORA_WEIGHT_NAME,
        safe_serialization=True,
        unet_lora_adapter_metadata=_adapter_metadata(unet, adapter_name),
        text_encoder_lora_adapter_metadata=te_meta,
    )
    return save_dir / LORA_WEIGHT_NAME


def resolve_lora_weights(path: str | Path) -> Path:
    """The safetensors file of a LoRA given its directory or file; clear error if absent."""
    path = Path(path)
    if path.is_dir():
        candidates = sorted(path.glob("*.safetensors"))
        preferred = path / LORA_WEIGHT_NAME
        if preferred.is_file():
            return preferred
        if len(candidates) == 1:
            return candidates[0]
        raise FileNotFoundError(
            f"LoRA directory {path} holds {len(candidates)} .safetensors files and no "
            f"{LORA_WEIGHT_NAME}; give the weights file itself as lora_path."
        )
    if path.is_file():
        return path
    raise FileNotFoundError(
        f"LoRA weights {path} not found; train them first (synthmask fit --config "
        "experiments/*_lora.yaml writes <output_dir>/pytorch_lora_weights.safetensors) or fix lora_path."
    )


def set_lora_scale(module: nn.Module, scale: float, adapter_name: str | None = None) -> int:
    """Set the LoRA scale of every adapter layer (scaling = scale * alpha / rank); returns #layers.

    Persistent (unlike ``cross_attention_kwargs={"scale": s}``, which lasts one call), so
    code that calls the UNet directly (attention capture) sees it too. Scale 0 = base model.
    """
    from peft.tuners.lora import LoraLayer

    count = 0
    for layer in module.modules():
        if isinstance(layer, LoraLayer):
            for name in [adapter_name] if adapter_name else list(layer.scaling):
                layer.set_scale(name, scale)
            count += 1
    return count


def _transformers_peft_usable() -> bool:
    try:
        from transformers.integrations.peft import MIN_PEFT_VERSION
        from transformers.utils.peft_utils import check_peft_version

        check_peft_version(min_version=MIN_PEFT_VERSION)
    except (ImportError, ValueError):
        return False
    return True


def _load_text_encoder_lora(pipe, state: dict, metadata: dict | None, adapter_name: str) -> None:
    """Text encoder part of ``load_lora_weights`` that also works with transformers 5 + peft 0.21."""
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft
    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict

    prefix = "text_encoder."
    te_state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    if not te_state:
        return
    te_state = convert_state_dict_to_peft(convert_state_dict_to_diffusers(te_state))
    if not hasattr(pipe.text_encoder, "text_model"):
        te_state = {k.removeprefix("text_model."): v for k, v in te_state.items()}
    te_meta = {
        k.removeprefix(prefix): v for k, v in (metadata or {}).items() if k.startswith(prefix)
    }
    if te_meta:
        config = LoraConfig(**te_meta)
    else:  # no metadata: rank from the weights, alpha = rank (diffusers' convention)
        rank = next(v.shape[0] for k, v in te_state.items() if "lora_A" in k)
        targets = sorted({k.split(".lora_")[0].rsplit(".", 1)[-1] for k in te_state})
        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets)
    inject_text_encoder_lora(pipe.text_encoder, config, adapter_name)
    result = set_peft_model_state_dict(pipe.text_encoder, te_state, adapter_name=adapter_name)
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if missing:
        raise ValueError(
            f"text encoder LoRA is missing {len(missing)} weights, e.g. {missing[:2]}."
        )
    pipe.text_encoder.to(device=pipe.text_encoder.device, dtype=pipe.text_encoder.dtype)
    cast_trainable_to_float32(pipe.text_encoder)  # keep LoRA weights as saved
    freeze(pipe.text_encoder)


def load_lora(pipe, path: str | Path, scale: float = 1.0, adapter_name: str = "default") -> None:
    """Load diffusers-format LoRA weights into a Stable Diffusion pipeline and set their scale.

    Same as ``pipe.load_lora_weights(path, adapter_name=...)`` followed by a persistent scale,
    except that a text encoder LoRA also loads where transformers' own peft integration refuses
    the installed peft version.
    """
    weights = resolve_lora_weights(path)
    check_lora_fits(pipe, weights)
    if _transformers_peft_usable() or not any(
        k.startswith("text_encoder.") for k in _safetensors_keys(weights)
    ):
        pipe.load_lora_weights(
            str(weights.parent), weight_name=weights.name, adapter_name=adapter_name
        )
    else:
        state, network_alphas, metadata = pipe.lora_state_dict(
            str(weights.parent), weight_name=weights.name, return_lora_metadata=True
        )
        pipe.load_lora_into_unet(
            state, network_alphas, unet=pipe.unet, adapter_name=adapter_name,
            metadata=metadata, _pipeline=pipe,
        )  # fmt: skip
        _load_text_encoder_lora(pipe, state, metadata, adapter_name)
    set_lora_scale(pipe.unet, scale, adapter_name)
    if has_lora(pipe.text_encoder):
        set_lora_scale(pipe.text_encoder, scale, adapter_name)


def _safetensors_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return list(handle.keys())


# diffusers ("lora.down") and peft ("lora_A") names of the two LoRA matrices: down (rank, in),
# up (out, rank); text encoder keys may carry "lora_linear_layer".
_LORA_MATRIX = re.compile(
    r"^(?P<module>.+?)\.(?:lora_linear_layer\.|lora\.)?(?P<kind>down|up|lora_A|lora_B)"
    r"(?:\.[\w-]+)?\.weight$"
)
_SHOWN_MISMATCHES = 3


class LoRAMismatchError(ValueError):
    """A LoRA file whose layers are not this model's (raised before anything is loaded)."""


def check_lora_fits(pipe, weights: Path) -> None:
    """Raise LoRAMismatchError if the LoRA file's layers are not in the pipeline's UNet / text encoder
    or take other input / output sizes (a LoRA trained for another model), naming how many do
    not fit and the first few, before diffusers prints a line per layer. Keys of formats not
    recognised here are left to diffusers."""
    from safetensors import safe_open

    layers: dict[str, dict[str, nn.Module]] = {
        prefix: dict(model.named_modules())
        for prefix, model in (("unet.", getattr(pipe, "unet", None)),
                              ("text_encoder.", getattr(pipe, "text_encoder", None)))
        if model is not None
    }  # fmt: skip
    checked = 0
    problems: list[str] = []
    with safe_open(str(weights), framework="pt") as handle:
        for key in handle.keys():
            prefix = next((p for p in layers if key.startswith(p)), None)
            match = _LORA_MATRIX.match(key.removeprefix(prefix)) if prefix else None
            if match is None:
                continue
            checked += 1
            shape = list(handle.get_slice(key).get_shape())
            problem = _lora_key_problem(layers[prefix], match["module"], match["kind"], shape)
            if problem:
                problems.append(f"{key} {problem}")
    if problems:
        raise LoRAMismatchError(
            f"{len(problems)} of the {checked} LoRA weights in {weights} do not fit this "
            f"model's layers (first {min(len(problems), _SHOWN_MISMATCHES)}: "
            f"{'; '.join(problems[:_SHOWN_MISMATCHES])}): the LoRA was trained for another "
            "model; use one trained on this model"
        )


def _lora_key_problem(
    layers: dict[str, nn.Module], module_name: str, kind: str, shape: list[int]
) -> str:
    """Why a LoRA matrix of ``shape`` does not fit the layer ``module_name`` ('' if it fits)."""
    layer = layers.get(module_name) or layers.get(module_name.removeprefix("text_model."))
    if layer is None:
        return "(no such layer)"
    in_size = getattr(layer, "in_features", getattr(layer, "in_channels", None))
    out_size = getattr(layer, "out_features", getattr(layer, "out_channels", None))
    if kind in ("down", "lora_A") and in_size is not None and len(shape) > 1:
        if shape[1] != in_size:
            return f"(shape {shape}, the layer takes {in_size} inputs)"
    if kind in ("up", "lora_B") and out_size is not None and shape:
        if shape[0] != out_size:
            return f"(shape {shape}, the layer gives {out_size} outputs)"
    return ""
