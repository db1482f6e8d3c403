"""Mask configuration, method registry and the single pseudo-mask entry point."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

import torch

from synthmask.masks.attn2mask import Attn2Mask
from synthmask.masks.crf import DenseCRFParams, crf_refine
from synthmask.masks.heatmaps import (
    INTERPOLATIONS,
    MENTION_REDUCTIONS,
    TOKEN_REDUCTIONS,
    TokenPositions,
)
from synthmask.masks.reliability import reliability_margin, reliable_mask
from synthmask.masks.self_refine import SelfRefineMask
from synthmask.masks.threshold import ThresholdMask
from synthmask.masks.types import IGNORE_INDEX, PseudoMask

MASK_METHODS: dict[str, type] = {
    "attn2mask": Attn2Mask,
    "threshold": ThresholdMask,
    "self_refine": SelfRefineMask,
}


def _unknown(kind: str, name: str, valid: list[str]) -> KeyError:
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" Did you mean {close}?" if close else ""
    return KeyError(f"unknown {kind} {name!r}; valid names: {sorted(valid)}.{hint}")


def build_mask_method(name: str, **params: Any) -> Any:
    """Instantiate a registered mask method with its parameters.

    Every method is a callable `(cross_attention, self_attention, token_positions,
    num_classes, size, **heatmap_kwargs) -> PseudoMask` with a `params()` dict and a
    `needs_self_attention` flag.
    """
    if name not in MASK_METHODS:
        raise _unknown("mask method", name, list(MASK_METHODS))
    cls = MASK_METHODS[name]
    try:
        return cls(**params)
    except TypeError as err:
        valid = sorted(cls.__dataclass_fields__)
        raise ValueError(
            f"bad parameters {params} for mask method {name!r}: {err}; valid parameters: {valid}."
        ) from err


@dataclass
class MaskConfig:
    """How captured attention becomes a pseudo-mask, reliability included.

    Attributes:
        method: a key of MASK_METHODS ("attn2mask", "threshold", "self_refine").
        params: keyword arguments of that method (e.g. {"beta": 0.2}).
        resolutions: cross-attention resolutions to average (None = all captured).
        resolution_weights: one weight per resolution (None = equal).
        token_reduce: "sum" | "mean" over a word's sub-tokens.
        mention_reduce: "max" | "sum" over several mentions of a class.
        interpolation: upsampling of heatmaps ("bicubic" default).
        reliability_fraction: per-class top fraction of margins that is reliable.
        reliability_threshold: fixed margin threshold instead of the per-class rule.
        crf: refine with the dense CRF (needs the images); crf_params: DenseCRFParams fields.
    """

    method: str = "attn2mask"
    params: dict[str, Any] = field(default_factory=dict)
    resolutions: tuple[int, ...] | None = None
    resolution_weights: tuple[float, ...] | None = None
    token_reduce: str = "sum"
    mention_reduce: str = "max"
    interpolation: str = "bicubic"
    reliability_fraction: float = 0.5
    reliability_threshold: float | None = None
    crf: bool = False
    crf_params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.resolutions is not None:
            self.resolutions = tuple(int(r) for r in self.resolutions)
        if self.resolution_weights is not None:
            self.resolution_weights = tuple(float(w) for w in self.resolution_weights)
        for name, value, choices in (
            ("token_reduce", self.token_reduce, TOKEN_REDUCTIONS),
            ("mention_reduce", self.mention_reduce, MENTION_REDUCTIONS),
            ("interpolation", self.interpolation, INTERPOLATIONS),
        ):
            if value not in choices:
                raise ValueError(f"MaskConfig.{name}={value!r}; use one of {list(choices)}.")
        if not 0.0 <= self.reliability_fraction <= 1.0:
            raise ValueError(
                f"reliability_fraction must be in [0, 1], got {self.reliability_fraction}."
            )
        self.build_method()  # fail early on unknown names / parameters
        self.crf_options()

    def build_method(self) -> Any:
        return build_mask_method(self.method, **self.params)

    def crf_options(self) -> DenseCRFParams:
        try:
            return DenseCRFParams(**self.crf_params)
        except TypeError as err:
            raise ValueError(
                f"bad crf_params {self.crf_params}: {err}; valid: "
                f"{sorted(DenseCRFParams.__dataclass_fields__)}."
            ) from err

    def heatmap_kwargs(self) -> dict[str, Any]:
        return {
            "resolutions": self.resolutions,
            "token_reduce": self.token_reduce,
            "interpolation": self.interpolation,
            "mention_reduce": self.mention_reduce,
            "resolution_weights": self.resolution_weights,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with every default resolved (method and CRF parameters included)."""
        return {
            "method": self.method,
            "params": self.build_method().params(),
            "resolutions": list(self.resolutions) if self.resolutions is not None else None,
            "resolution_weights": (
                list(self.resolution_weights) if self.resolution_weights is not None else None
            ),
            "token_reduce": self.token_reduce,
            "mention_reduce": self.mention_reduce,
            "interpolation": self.interpolation,
            "reliability_fraction": self.reliability_fraction,
            "reliability_threshold": self.reliability_threshold,
            "crf": self.crf,
            "crf_params": self.crf_options().to_dict() if self.crf else None,
        }

    def to_json(self) -> str:
        """Canonical JSON text (sorted keys, no spaces, defaults resolved) for cache keys:
        two configs that extract the same masks give the same text."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | dict[str, Any]) -> MaskConfig:
        d = json.loads(text) if isinstance(text, str) else dict(text)
        d["params"] = d.get("params") or {}
        d["crf_params"] = d.get("crf_params") or {}
        return cls(**d)


def _compact_classes(
    token_positions: TokenPositions, num_classes: int
) -> tuple[TokenPositions, list[int]]:
    """Renumber the classes named in the batch to 1..P (sorted, so argmax ties keep order)."""
    used = sorted({class_id for mentions in token_positions for class_id, _ in mentions})
    bad = [c for c in used if not 1 <= c < num_classes]
    if bad:
        raise ValueError(
            f"class ids {bad} are outside the foreground ids 1..{num_classes - 1} (0 is the "
            "background slot); check num_classes and the vocabulary."
        )
    index = {class_id: k for k, class_id in enumerate(used, start=1)}
    compact = [[(index[c], list(tokens)) for c, tokens in mentions] for mentions in token_positions]
    return compact, [0, *used]


def pseudo_masks(
    cross_attention: dict[int, torch.Tensor],
    self_attention: dict[int, torch.Tensor] | None,
    token_positions: TokenPositions,
    num_classes: int,
    size: tuple[int, int],
    config: MaskConfig | None = None,
    image: torch.Tensor | None = None,
    compact_scores: bool = False,
) -> tuple[PseudoMask, torch.Tensor, torch.Tensor]:
    """Captured attention -> (pseudo-mask, margin, reliable).

    The work runs on the classes the batch names only (background + P classes), so a large
    vocabulary (ImageNet-S, 920 classes) costs what a small one does; results are identical
    to running on all C classes.

    Args:
        cross_attention: resolution -> (B, T, r, r) attention probabilities.
        self_attention: resolution -> (B, r*r, r*r) (only "self_refine" needs it).
        token_positions: per sample, (class_id, token indices) of every class mention.
        num_classes: C including background 0.
        size: (H, W) of the output masks (the image size).
        config: MaskConfig (default: attn2mask, beta 0.2, top-50% reliability).
        image: (B, H, W, 3) uint8 images, required when config.crf is True.
        compact_scores: return scores (B, 1 + P, H, W) with `PseudoMask.class_ids` naming
            the channels, instead of dense (B, C, H, W) scores (-inf for absent classes).

    Returns:
        PseudoMask (label int64 (B, H, W) with 255 ignore, scores), margin float32 (B, H, W),
        reliable bool (B, H, W).
    """
    config = config or MaskConfig()
    method = config.build_method()
    compact_positions, class_ids = _compact_classes(token_positions, num_classes)
    if hasattr(method, "for_classes"):  # class-specific parameters follow the renumbering
        method = method.for_classes(class_ids)
    pseudo = method(
        cross_attention,
        self_attention,
        compact_positions,
        len(class_ids),
        tuple(size),
        **config.heatmap_kwargs(),
    )
    if config.crf:
        if image is None:
            raise ValueError("MaskConfig.crf=True needs the images: pass image=(B, H, W, 3) uint8.")
        pseudo = crf_refine(pseudo, image, config.crf_options())
    margin = reliability_margin(pseudo.scores)
    reliable = reliable_mask(
        margin, pseudo.label, config.reliability_fraction, config.reliability_threshold
    )
    ids = torch.tensor(class_ids, dtype=torch.long, device=pseudo.label.device)
    ignore = pseudo.label == IGNORE_INDEX
    label = torch.where(ignore, pseudo.label, ids[pseudo.label.masked_fill(ignore, 0)])
    if compact_scores:
        return PseudoMask(label, pseudo.scores, class_ids=ids), margin, reliable
    scores = pseudo.scores.new_full(
        (pseudo.scores.shape[0], num_classes, *pseudo.scores.shape[2:]), float("-inf")
    )
    scores[:, ids] = pseudo.scores
    return PseudoMask(label, scores), margin, reliable
