"""Image domains of the shapes world: the clean *source* domain and a shifted *target* domain.

Both have the same classes and the same layouts for the same seed; the target changes how a
scene looks (backgrounds, washed-out palette, coloured directional lighting, blur, sensor
noise), never where objects are, so masks stay exact.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from synthmask.world.backgrounds import SOURCE_BACKGROUNDS, TARGET_BACKGROUNDS


@dataclass(frozen=True)
class Domain:
    """Appearance of one domain.

    Attributes:
        name: registry name.
        backgrounds: background family used unless the SceneConfig overrides it.
        background_value: range of background grey levels (0..1).
        saturation: object and background colours are blended this far from grey (1 = as named).
        color_cast: per-channel gains drawn from 1 +- color_cast (a tinted light).
        light_gradient: peak-to-peak amplitude of a directional brightness ramp.
        blur_sigma: Gaussian blur sigma range, in pixels of a 64 px image (scaled with size).
        noise_std: additive Gaussian pixel noise (0..255 scale).
    """

    name: str
    backgrounds: tuple[str, ...]
    background_value: tuple[float, float] = (0.15, 0.85)
    saturation: float = 1.0
    color_cast: float = 0.0
    light_gradient: float = 0.0
    blur_sigma: tuple[float, float] = (0.0, 0.0)
    noise_std: float = 0.0

    @property
    def has_effects(self) -> bool:
        return bool(
            self.color_cast or self.light_gradient or max(self.blur_sigma) > 0 or self.noise_std
        )


DOMAINS: dict[str, Domain] = {
    "source": Domain("source", SOURCE_BACKGROUNDS),
    "target": Domain(
        "target",
        TARGET_BACKGROUNDS,
        background_value=(0.25, 0.7),
        saturation=0.6,
        color_cast=0.15,
        light_gradient=0.4,
        blur_sigma=(0.6, 1.2),
        noise_std=6.0,
    ),
}


def get_domain(name: str | Domain) -> Domain:
    """Look a domain up by name (a Domain passes through); KeyError lists valid names."""
    if isinstance(name, Domain):
        return name
    if name in DOMAINS:
        return DOMAINS[name]
    close = difflib.get_close_matches(name, DOMAINS, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise KeyError(f"unknown domain {name!r}{hint}; valid domains: {', '.join(DOMAINS)}")


def apply_domain_effects(image: np.ndarray, domain: Domain, rng: np.random.Generator) -> np.ndarray:
    """Lighting, blur and noise of `domain` applied to a rendered image.

    Shape:
        image float32 (H, W, 3) in 0..255 -> float32 (H, W, 3), not yet clipped
    """
    if not domain.has_effects:
        return image
    size = image.shape[0]
    gains = 1.0 + rng.uniform(-domain.color_cast, domain.color_cast, size=3)
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    angle = rng.uniform(0.0, 2.0 * math.pi)
    ramp = centres[None, :] * math.cos(angle) + centres[:, None] * math.sin(angle)
    light = 1.0 + domain.light_gradient * ramp / math.sqrt(0.5)
    out = image * light[..., None] * gains.astype(np.float32)
    sigma = rng.uniform(*domain.blur_sigma) * size / 64.0
    if sigma > 0:
        out = gaussian_filter(out, sigma=(sigma, sigma, 0.0), mode="nearest")
    if domain.noise_std > 0:
        out += domain.noise_std * rng.standard_normal(out.shape, dtype=np.float32)
    return out.astype(np.float32)
