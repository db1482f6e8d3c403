"""Strong photometric augmentation of normalised image batches (BECO: colour jitter p 0.8,
greyscale p 0.2, Gaussian blur p 0.5), in torch, on the image only (masks are untouched)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class StrongAugmentConfig:
    """Probabilities and ranges of the strong augmentation (BECO's values by default).

    Attributes:
        jitter_p: chance of colour jitter (brightness, contrast, saturation, hue).
        brightness, contrast, saturation: factors drawn from [1 - v, 1 + v].
        hue: shift drawn from [-hue, hue] (max 0.5).
        grey_p: chance of greyscale conversion.
        blur_p: chance of Gaussian blur with sigma from ``blur_sigma``.
        blur_sigma: (low, high) of the blur's standard deviation, in pixels.
    """

    jitter_p: float = 0.8
    brightness: float = 0.5
    contrast: float = 0.5
    saturation: float = 0.5
    hue: float = 0.25
    grey_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _augment_one(
    pixels: torch.Tensor, config: StrongAugmentConfig, generator: torch.Generator | None
) -> torch.Tensor:
    if torch.rand((), generator=generator).item() < config.jitter_p:
        pixels = TF.adjust_brightness(
            pixels, _uniform(1 - config.brightness, 1 + config.brightness, generator)
        )
        pixels = TF.adjust_contrast(
            pixels, _uniform(1 - config.contrast, 1 + config.contrast, generator)
        )
        pixels = TF.adjust_saturation(
            pixels, _uniform(1 - config.saturation, 1 + config.saturation, generator)
        )
        pixels = TF.adjust_hue(pixels, _uniform(-config.hue, config.hue, generator))
    if torch.rand((), generator=generator).item() < config.grey_p:
        pixels = TF.rgb_to_grayscale(pixels, num_output_channels=3)
    if torch.rand((), generator=generator).item() < config.blur_p:
        sigma = _uniform(*config.blur_sigma, generator)
        kernel = 2 * max(1, round(3 * sigma)) + 1
        pixels = TF.gaussian_blur(pixels, [kernel, kernel], [sigma, sigma])
    return pixels


def strong_photometric_augment(
    images: torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    config: StrongAugmentConfig | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Colour jitter / greyscale / blur drawn independently per sample (CPU ``generator``).

    Images are de-normalised with ``mean``/``std``, augmented in [0, 1], clamped and normalised
    again; the result has the input's dtype. No gradient flows (it is data augmentation).

    Shape:
        images (B, 3, H, W) float, normalised -> (B, 3, H, W)
    """
    config = config or StrongAugmentConfig()
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    with torch.no_grad():
        pixels = (images.float() * std_t + mean_t).clamp(0.0, 1.0)
        out = torch.stack([_augment_one(p, config, generator) for p in pixels])
        return ((out.clamp(0.0, 1.0) - mean_t) / std_t).to(images.dtype)
