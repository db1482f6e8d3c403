"""Cross-attention -> per-class heatmaps: the one heatmap code path of every mask method.

Steps (METHOD.md, "Baseline pseudo-mask extraction"):
1. per resolution, the columns of each class word's tokens are reduced to one map
   (`token_reduce`: "sum" or "mean" of the sub-tokens of a multi-token word);
2. several mentions of the same class in one prompt are combined (`mention_reduce`:
   "max" keeps the strongest mention per pixel, the default; "sum" adds them);
3. each resolution is upsampled to the output size (bicubic by default, clamped >= 0
   because bicubic overshoots), then the resolutions are averaged (optionally weighted);
4. each class map of each image is min-max normalised to [0, 1]. A flat map (max == min)
   carries no localisation and becomes all zeros.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

TokenPositions = list[list[tuple[int, list[int]]]]
"""Per sample: (class_id, token indices) for every class mention (see diffusion/tokens.py)."""

TOKEN_REDUCTIONS = ("sum", "mean")
MENTION_REDUCTIONS = ("max", "sum")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; use one of {list(choices)}.")


def select_resolutions(
    available: Sequence[int], resolutions: Sequence[int] | None, what: str = "cross_attention"
) -> tuple[int, ...]:
    """The requested resolutions (all available ones when None), checked to exist."""
    if resolutions is None:
        if not available:
            raise ValueError(f"{what} is empty; capture at least one resolution.")
        return tuple(sorted(available))
    missing = [r for r in resolutions if r not in available]
    if missing:
        raise KeyError(
            f"resolutions {missing} were not captured in {what}; available: {sorted(available)}. "
            "Capture them (CaptureConfig) or choose among the available ones."
        )
    if not resolutions:
        raise ValueError("resolutions is empty; give at least one resolution or None for all.")
    return tuple(resolutions)


def _check_token_positions(
    token_positions: TokenPositions, batch: int, num_classes: int, num_tokens: int
) -> None:
    if len(token_positions) != batch:
        raise ValueError(
            f"token_positions has {len(token_positions)} entries but the attention batch has "
            f"{batch}; give one list of (class_id, token indices) per sample."
        )
    for b, mentions in enumerate(token_positions):
        if not mentions:
            raise ValueError(
                f"sample {b} has no class word (empty token_positions); every prompt must name "
                "at least one class of the vocabulary."
            )
        for class_id, tokens in mentions:
            if not 1 <= class_id < num_classes:
                raise ValueError(
                    f"sample {b}: class_id {class_id} is outside the foreground ids 1..{num_classes - 1}"
                    " (0 is the background slot); check num_classes and the vocabulary."
                )
            if not tokens or min(tokens) < 0 or max(tokens) >= num_tokens:
                raise ValueError(
                    f"sample {b}: token indices {list(tokens)} of class {class_id} are empty or "
                    f"outside the {num_tokens} text tokens (prompt truncated?)."
                )


def class_maps_at_resolution(
    attention: torch.Tensor,
    token_positions: TokenPositions,
    num_classes: int,
    token_reduce: str = "sum",
    mention_reduce: str = "max",
) -> torch.Tensor:
    """Per-class maps at the attention's own resolution (no upsampling, no normalisation).

    Shape:
        attention (B, T, h, w) -> (B, C, h, w); channel 0 and absent classes stay 0.
    """
    _check_choice("token_reduce", token_reduce, TOKEN_REDUCTIONS)
    _check_choice("mention_reduce", mention_reduce, MENTION_REDUCTIONS)
    batch, _, height, width = attention.shape
    maps = attention.new_zeros(batch, num_classes, height, width, dtype=torch.float32)
    seen = torch.zeros(batch, num_classes, dtype=torch.bool)
    for b, mentions in enumerate(token_positions):
        for class_id, tokens in mentions:
            columns = attention[b, list(tokens)].float()
            mention = columns.sum(0) if token_reduce == "sum" else columns.mean(0)
            if not seen[b, class_id]:
                maps[b, class_id] = mention
                seen[b, class_id] = True
            elif mention_reduce == "max":
                maps[b, class_id] = torch.maximum(maps[b, class_id], mention)
            else:
                maps[b, class_id] = maps[b, class_id] + mention
    return maps


def minmax_per_class(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Min-max normalise every (image, class) map to [0, 1]; flat maps become 0.

    Shape:
        (B, C, H, W) -> (B, C, H, W)
    """
    flat = maps.flatten(2)
    low = flat.min(dim=2, keepdim=True).values
    high = flat.max(dim=2, keepdim=True).values
    span = high - low
    normed = torch.where(span > eps, (flat - low) / span.clamp_min(eps), torch.zeros_like(flat))
    return normed.view_as(maps)


def resize_maps(maps: torch.Tensor, size: tuple[int, int], interpolation: str) -> torch.Tensor:
    """Resize (B, C, h, w) maps to `size`; bicubic overshoot is clamped to >= 0."""
    _check_choice("interpolation", interpolation, INTERPOLATIONS)
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    kwargs = {} if interpolation == "nearest" else {"align_corners": False}
    resized = F.interpolate(maps, size=tuple(size), mode=interpolation, **kwargs)
    return resized.clamp_min(0.0)


def class_heatmaps(
    cross_attention: dict[int, torch.Tensor],
    token_positions: TokenPositions,
    num_classes: int,
    size: tuple[int, int],
    resolutions: tuple[int, ...] | None = None,
    token_reduce: str = "sum",
    interpolation: str = "bicubic",
    mention_reduce: str = "max",
    resolution_weights: tuple[float, ...] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class heatmaps in [0, 1] from captured cross-attention.

    Args:
        cross_attention: resolution -> float (B, T, res, res) attention probabilities.
        token_positions: per sample, (class_id, token indices) of every class mention.
        num_classes: C, background slot 0 included.
        size: output (H, W), normally the image size.
        resolutions: resolutions to average (None = all captured).
        token_reduce: "sum" | "mean" over the sub-tokens of one word.
        interpolation: "bicubic" | "bilinear" | "nearest" upsampling of each resolution.
        mention_reduce: "max" | "sum" over several mentions of the same class.
        resolution_weights: one weight per entry of `resolutions` (default: equal weights),
            normalised to sum 1; DiffuMask's (16+32+64)/3 is resolutions=(16, 32, 64).

    Returns:
        heat float32 (B, C, H, W) in [0, 1] (channel 0 and absent classes are 0) and
        present bool (B, C): the classes each prompt names.

    Shape:
        cross_attention[r] (B, T, r, r) -> heat (B, C, H, W), present (B, C)
    """
    chosen = select_resolutions(list(cross_attention), resolutions)
    if resolution_weights is None:
        weights = [1.0 / len(chosen)] * len(chosen)
    else:
        if len(resolution_weights) != len(chosen) or sum(resolution_weights) <= 0:
            raise ValueError(
                f"resolution_weights {resolution_weights} must give one non-negative weight per "
                f"resolution {chosen} with a positive sum."
            )
        total = float(sum(resolution_weights))
        weights = [float(w) / total for w in resolution_weights]
    first = cross_attention[chosen[0]]
    batch, num_tokens = first.shape[:2]
    _check_token_positions(token_positions, batch, num_classes, num_tokens)

    heat = torch.zeros(batch, num_classes, *size, dtype=torch.float32, device=first.device)
    for res, weight in zip(chosen, weights, strict=True):
        attention = cross_attention[res]
        if attention.shape[:2] != (batch, num_tokens):
            raise ValueError(
                f"cross_attention[{res}] has shape {tuple(attention.shape)}, expected "
                f"({batch}, {num_tokens}, h, w) like the other resolutions."
            )
        maps = class_maps_at_resolution(
            attention, token_positions, num_classes, token_reduce, mention_reduce
        )
        heat += weight * resize_maps(maps, size, interpolation)

    present = torch.zeros(batch, num_classes, dtype=torch.bool, device=first.device)
    for b, mentions in enumerate(token_positions):
        for class_id, _ in mentions:
            present[b, class_id] = True
    heat = minmax_per_class(heat) * present[:, :, None, None]
    return heat, present
