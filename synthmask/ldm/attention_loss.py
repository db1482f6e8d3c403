"""Optional class-word localization loss for training the tiny LDM (off by default).

For every class word of a caption and every ``attn2`` layer, the word's attention over the
image positions (its tokens' probabilities, summed) is read as a spatial distribution; the loss
is the fraction of that mass *outside* the object's exact training mask (pooled to the layer's
resolution). It asks only that the word look at its object more than elsewhere; it does not
ask object pixels to spend their attention on the word, so they can still read the colour and
other words. (A first try with FastComposer's mean-outside minus mean-inside probabilities made
object pixels attend almost only to the class word and the model lost the colours.)
Real Stable Diffusion localizes because of its scale; a few CPU hours of a 3M-parameter UNet do
not get there alone. The term touches training only: the saved model is a plain
``StableDiffusionPipeline`` with default processors.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention


class RecordingCrossAttnProcessor:
    """Cross-attention with explicit probabilities, appended to ``store`` (grad kept).

    Same math as diffusers' ``AttnProcessor`` for the 3-D inputs of transformer blocks.
    """

    def __init__(self, store: list[torch.Tensor]) -> None:
        self.store = store

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if hidden_states.ndim != 3 or encoder_hidden_states is None:
            raise ValueError("RecordingCrossAttnProcessor serves attn2 (cross-attention) only.")
        batch = hidden_states.shape[0]
        mask = attn.prepare_attention_mask(attention_mask, encoder_hidden_states.shape[1], batch)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probs = attn.get_attention_scores(query, key, mask)  # (B*heads, N, T)
        self.store.append(probs.view(batch, attn.heads, *probs.shape[1:]).mean(1))
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def install_recording(unet: torch.nn.Module) -> list[torch.Tensor]:
    """Swap every ``attn2`` processor of ``unet`` for a recording one; returns the shared store."""
    store: list[torch.Tensor] = []
    processors = dict(unet.attn_processors)
    for name in processors:
        if name.endswith("attn2.processor"):
            processors[name] = RecordingCrossAttnProcessor(store)
    unet.set_attn_processor(processors)
    return store


def localization_loss(
    maps: list[torch.Tensor],
    token_positions: list[list[tuple[int, list[int]]] | None],
    masks: torch.Tensor,
) -> torch.Tensor:
    """Mean over layers and class words of the fraction of the word's attention mass that
    falls outside its object (0 = all inside, 1 = all outside).

    Args:
        maps: per attn2 layer, probabilities (B, N, T) with N = r*r.
        token_positions: per sample, (class_id, token indices) of its class words; None skips
            the sample (e.g. a dropped caption).
        masks: int64 (B, H, W) class ids of the training images.

    Shape:
        -> scalar (0 when no word has an object at any layer's resolution)
    """
    terms = []
    for probs in maps:
        side = math.isqrt(probs.shape[1])
        for b, words in enumerate(token_positions):
            if not words:
                continue
            for class_id, tokens in words:
                inside = (masks[b] == class_id).float()[None, None]
                inside = F.adaptive_avg_pool2d(inside, side).flatten()
                area = inside.sum()
                if area < 0.5 or area > inside.numel() - 0.5:
                    continue
                word = probs[b, :, tokens].sum(-1)
                terms.append(1.0 - (word * inside).sum() / word.sum().clamp_min(1e-8))
    if not terms:
        return masks.new_zeros((), dtype=torch.float32)
    return torch.stack(terms).mean()
