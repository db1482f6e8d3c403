"""Attention capture: processors that record softmax(QK^T/sqrt(d)) while sampling, streamed.

How it works:
- ``install_capture(unet, store, latent_hw)`` swaps a ``CaptureAttnProcessor`` onto the
  chosen ``attn2`` (cross-attention) and optionally ``attn1`` (self-attention) modules at the
  chosen resolutions with ``unet.set_attn_processor(dict)``; every other module gets the
  default fused ``AttnProcessor2_0``. ``restore_processors`` puts the previous ones back.
- The capture processor computes its output with fused SDPA exactly like
  ``AttnProcessor2_0`` (so images are unchanged) and, only on capture steps, also the
  probabilities with ``attn.get_attention_scores`` for the conditional half of the CFG batch
  ``[uncond, cond]``, averaged over heads.
- ``AttentionStore`` keeps, per resolution, a float32 running sum and a count (a streaming
  mean over layers and steps): memory does not depend on the number of steps.
- The store learns the current step from the pipeline's ``callback_on_step_end``
  (``store.step_callback``): during the UNet call of loop iteration ``i``, ``store.step == i``.

Resolution keys: a layer's map is ``h x w`` latent cells with ``h = ceil(H / f)``,
``w = ceil(W / f)`` for latent size ``H x W`` and the layer's downsampling factor ``f``; its key
is ``min(h, w)``, so SD 1.x at any aspect ratio has keys 64, 32, 16, 8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

CROSS = "cross"
SELF = "self"
# Heads per chunk keep the (chunk, N, T) probability tensor below this many elements.
_MAX_PROB_ELEMENTS = 2**26


@dataclass
class CaptureConfig:
    """What to record.

    Attributes:
        step_window: fractions (start, end) of the sampling loop; step ``i`` of ``N`` is
            captured iff ``floor(start*N) <= i <= max(floor(start*N), ceil(end*N) - 1)``.
            (0, 1) = all steps; (0.5, 0.5) = the single middle step (index 50 of 100).
        cross_resolutions: latent side lengths whose ``attn2`` maps are recorded
            (None = all; SD 1.x has 64, 32, 16, 8).
        self_attention: also record ``attn1`` (self-attention) maps.
        self_resolutions: resolutions for self-attention (None = all; large: N^2 floats).
    """

    step_window: tuple[float, float] = (0.0, 1.0)
    cross_resolutions: tuple[int, ...] | None = None
    self_attention: bool = False
    self_resolutions: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        start, end = (float(v) for v in self.step_window)
        if not 0.0 <= start <= end <= 1.0:
            raise ValueError(
                f"step_window={self.step_window} is invalid; give (start, end) fractions with "
                "0 <= start <= end <= 1, e.g. (0.0, 1.0) for all steps or (0.5, 0.5) for one."
            )
        self.step_window = (start, end)
        if self.cross_resolutions is not None:
            self.cross_resolutions = tuple(int(r) for r in self.cross_resolutions)
        if self.self_resolutions is not None:
            self.self_resolutions = tuple(int(r) for r in self.self_resolutions)

    def capture_steps(self, num_steps: int) -> range:
        """Indices of the captured loop iterations out of ``num_steps``."""
        if num_steps < 1:
            raise ValueError(f"num_steps={num_steps}; sampling needs at least one step.")
        first = min(math.floor(self.step_window[0] * num_steps), num_steps - 1)
        last = min(max(first, math.ceil(self.step_window[1] * num_steps) - 1), num_steps - 1)
        return range(first, last + 1)

    def to_json(self) -> dict[str, Any]:
        return {
            "step_window": list(self.step_window),
            "cross_resolutions": None
            if self.cross_resolutions is None
            else list(self.cross_resolutions),
            "self_attention": self.self_attention,
            "self_resolutions": None
            if self.self_resolutions is None
            else list(self.self_resolutions),
        }


class AttentionStore:
    """Streaming per-resolution means of captured attention maps.

    ``sums[(kind, res)]`` is a float32 tensor: cross ``(B, T, h, w)``, self ``(B, h*w, h*w)``;
    ``counts[(kind, res)]`` the number of (layer, step) maps added. Memory is independent of
    the number of steps.
    """

    def __init__(self, capture: CaptureConfig, num_steps: int, batch_size: int) -> None:
        self.capture = capture
        self.num_steps = num_steps
        self.batch_size = batch_size
        self.active_steps = set(capture.capture_steps(num_steps))
        self.step = 0
        self.sums: dict[tuple[str, int], torch.Tensor] = {}
        self.counts: dict[tuple[str, int], int] = {}

    @property
    def capturing(self) -> bool:
        return self.step in self.active_steps

    def step_callback(
        self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """``callback_on_step_end`` for diffusers pipelines: loop iteration ``step`` is done."""
        self.step = step + 1
        return callback_kwargs

    def add(self, kind: str, res: int, maps: torch.Tensor) -> None:
        """Add one layer's head-averaged maps (already in their final layout) to the mean."""
        key = (kind, res)
        maps = maps.detach().float()
        if key in self.sums:
            self.sums[key] += maps
            self.counts[key] += 1
        else:
            self.sums[key] = maps.clone()
            self.counts[key] = 1

    def mean(self, kind: str) -> dict[int, torch.Tensor]:
        """Per-resolution means of ``kind`` (``"cross"`` or ``"self"``), float32 on CPU."""
        return {
            res: (total / self.counts[(k, res)]).cpu()
            for (k, res), total in sorted(self.sums.items(), key=lambda kv: kv[0][1], reverse=True)
            if k == kind
        }

    def num_tensors(self) -> int:
        return len(self.sums)


class CaptureAttnProcessor(AttnProcessor2_0):
    """``AttnProcessor2_0`` that also records head-averaged probabilities on capture steps.

    Args:
        store: where maps go; tells whether the current step is captured.
        kind: ``"cross"`` (attn2, maps ``(B, T, h, w)``) or ``"self"`` (attn1, ``(B, N, N)``).
        res: resolution key of this layer; ``(h, w)``: its latent map size.
    """

    def __init__(self, store: AttentionStore, kind: str, res: int, hw: tuple[int, int]) -> None:
        super().__init__()
        self.store = store
        self.kind = kind
        self.res = res
        self.hw = hw

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        # Mirrors AttnProcessor2_0.__call__ (diffusers 0.30-0.42) op for op, so outputs match.
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(
                attention_mask, sequence_length, batch_size
            )
            attention_mask = attention_mask.view(
                batch_size, attn.heads, -1, attention_mask.shape[-1]
            )
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if self.store.capturing:
            self._record(attn, query, key, attention_mask)

        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(
                batch_size, channel, height, width
            )
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        hidden_states = hidden_states / attn.rescale_output_factor
        return hidden_states

    @torch.no_grad()
    def _record(
        self,
        attn: Attention,
        query: torch.Tensor,
        key: torch.Tensor,
        attention_mask: torch.Tensor | None,
    ) -> None:
        """Head-averaged probabilities of the conditional half.

        Shape:
            query: (B', heads, N, d), key: (B', heads, T, d) with B' = B (no CFG) or 2B
            ([uncond, cond]); recorded: cross (B, T, h, w), self (B, N, N).
        """
        n_images = self.store.batch_size
        total, heads, n_query, head_dim = query.shape
        if total not in (n_images, 2 * n_images):
            raise ValueError(
                f"attention batch {total} is neither {n_images} images nor 2x (CFG); the "
                "AttentionStore batch_size must equal the number of images in the call."
            )
        h, w = self.hw
        if n_query != h * w:
            raise ValueError(
                f"layer with {n_query} query tokens does not match its expected {h}x{w} map; "
                "install capture with the latent size of this sampling call."
            )
        cond = slice(total - n_images, total)
        q, k = query[cond], key[cond]
        n_keys = k.shape[2]
        mask = None if attention_mask is None else attention_mask[cond]
        chunk = max(1, _MAX_PROB_ELEMENTS // max(1, n_images * n_query * n_keys))
        summed = None
        for h0 in range(0, heads, chunk):
            h1 = min(heads, h0 + chunk)
            q3 = q[:, h0:h1].reshape(-1, n_query, head_dim)
            k3 = k[:, h0:h1].reshape(-1, n_keys, head_dim)
            m3 = None
            if mask is not None:
                m3 = mask[:, h0:h1].expand(-1, -1, n_query, -1).reshape(-1, n_query, n_keys)
            probs = attn.get_attention_scores(q3, k3, m3)  # (B*hc, N, T)
            part = probs.float().view(n_images, h1 - h0, n_query, n_keys).sum(dim=1)
            summed = part if summed is None else summed + part
        mean = summed / heads  # (B, N, T)
        if self.kind == CROSS:
            mean = mean.transpose(1, 2).reshape(n_images, n_keys, h, w)
        self.store.add(self.kind, self.res, mean)


def attention_layers(unet: torch.nn.Module) -> dict[str, tuple[str, int]]:
    """Map each ``attn1``/``attn2`` processor name to (kind, downsampling factor).

    The factor of ``down_blocks.i`` is 2 to the number of downsamplers before it, the mid block
    sits below all of them, and every upsampler halves the factor again (the
    ``UNet2DConditionModel`` layout of SD 1.x/2.x/XL).
    """
    factors: dict[str, int] = {}
    factor = 1
    for i, block in enumerate(getattr(unet, "down_blocks", [])):
        factors[f"down_blocks.{i}."] = factor
        if getattr(block, "downsamplers", None) is not None:
            factor *= 2
    factors["mid_block."] = factor
    for i, block in enumerate(getattr(unet, "up_blocks", [])):
        factors[f"up_blocks.{i}."] = factor
        if getattr(block, "upsamplers", None) is not None:
            factor = max(1, factor // 2)
    layers: dict[str, tuple[str, int]] = {}
    for name in unet.attn_processors:
        parts = name.split(".")
        if len(parts) < 2 or parts[-2] not in ("attn1", "attn2"):
            continue
        prefix = next((p for p in factors if name.startswith(p)), None)
        if prefix is None:
            raise ValueError(
                f"attention layer {name!r} is outside the down/mid/up blocks of a "
                "UNet2DConditionModel; attention capture supports SD 1.x/2.x/XL UNets only."
            )
        layers[name] = (CROSS if parts[-2] == "attn2" else SELF, factors[prefix])
    return layers


def layer_map_size(factor: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """Map size (h, w) of a layer with downsampling ``factor`` (stride-2 convs round up)."""
    return math.ceil(latent_hw[0] / factor), math.ceil(latent_hw[1] / factor)


def install_capture(
    unet: torch.nn.Module, store: AttentionStore, latent_hw: tuple[int, int]
) -> dict[str, Any]:
    """Swap capture processors onto the chosen layers; return the previous processors.

    Layers not chosen keep their current processor (the fused ``AttnProcessor2_0`` by
    default). Undo with ``restore_processors(unet, previous)``.
    """
    capture = store.capture
    layers = attention_layers(unet)
    if not any(kind == CROSS for kind, _ in layers.values()):
        raise ValueError(
            f"{type(unet).__name__} has no cross-attention (attn2) layers, so there is no "
            "text-to-image attention to capture; use a text-conditioned UNet with "
            "CrossAttn*Block2D blocks (e.g. Stable Diffusion's)."
        )
    wanted = {CROSS: capture.cross_resolutions, SELF: capture.self_resolutions}
    kinds = {CROSS, SELF} if capture.self_attention else {CROSS}
    available: dict[str, set[int]] = {CROSS: set(), SELF: set()}
    previous = dict(unet.attn_processors)
    processors = dict(previous)
    for name, (kind, factor) in layers.items():
        hw = layer_map_size(factor, latent_hw)
        res = min(hw)
        available[kind].add(res)
        if kind in kinds and (wanted[kind] is None or res in wanted[kind]):
            processors[name] = CaptureAttnProcessor(store, kind, res, hw)
    for kind in kinds:
        missing = set(wanted[kind] or ()) - available[kind]
        if missing:
            raise ValueError(
                f"{kind}-attention resolutions {sorted(missing)} do not exist for latent size "
                f"{latent_hw}; available: {sorted(available[kind], reverse=True)}."
            )
    unet.set_attn_processor(processors)
    return previous


def restore_processors(unet: torch.nn.Module, previous: dict[str, Any]) -> None:
    """Put back the processors returned by ``install_capture``."""
    unet.set_attn_processor(dict(previous))
