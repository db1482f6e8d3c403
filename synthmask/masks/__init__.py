"""Attention heatmaps -> pseudo-masks (attn2mask, DiffuMask-, Dataset-Diffusion-style),
reliability maps and optional dense-CRF refinement. Pure torch."""

from synthmask.masks.attn2mask import Attn2Mask, attn2mask_from_heatmaps
from synthmask.masks.choices import (
    MASK_METHOD_CONFIGS,
    Attn2MaskConfig,
    MaskMethodConfig,
    SelfRefineMaskConfig,
    ThresholdMaskConfig,
)
from synthmask.masks.config import MASK_METHODS, MaskConfig, build_mask_method, pseudo_masks
from synthmask.masks.crf import DenseCRFParams, crf_refine, dense_crf_probs
from synthmask.masks.heatmaps import class_heatmaps
from synthmask.masks.reliability import reliability_margin, reliable_mask
from synthmask.masks.self_refine import SelfRefineMask, self_refine_from_maps
from synthmask.masks.threshold import ThresholdMask, otsu_thresholds, threshold_from_heatmaps
from synthmask.masks.types import IGNORE_INDEX, PseudoMask

__all__ = [
    "IGNORE_INDEX",
    "MASK_METHODS",
    "MASK_METHOD_CONFIGS",
    "Attn2MaskConfig",
    "MaskMethodConfig",
    "SelfRefineMaskConfig",
    "ThresholdMaskConfig",
    "Attn2Mask",
    "DenseCRFParams",
    "MaskConfig",
    "PseudoMask",
    "SelfRefineMask",
    "ThresholdMask",
    "attn2mask_from_heatmaps",
    "build_mask_method",
    "class_heatmaps",
    "crf_refine",
    "dense_crf_probs",
    "otsu_thresholds",
    "pseudo_masks",
    "reliability_margin",
    "reliable_mask",
    "self_refine_from_maps",
    "threshold_from_heatmaps",
]
