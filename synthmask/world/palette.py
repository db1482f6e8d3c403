"""Named object colours (so captions can say "red") and muted background colours."""

from __future__ import annotations

import difflib

import numpy as np

# Saturated object colours; backgrounds are muted, so an object stands out by luminance or chroma.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 85, 220),
    "yellow": (240, 210, 40),
    "orange": (245, 135, 30),
    "purple": (140, 60, 185),
    "cyan": (40, 200, 215),
    "pink": (240, 115, 175),
    "white": (245, 245, 245),
}

# Minimum RGB distance (0..255 scale) between an object colour and every background colour.
MIN_CONTRAST = 90.0


def get_color(name: str) -> tuple[int, int, int]:
    """RGB of a named colour; KeyError lists valid names."""
    if name in PALETTE:
        return PALETTE[name]
    close = difflib.get_close_matches(name, PALETTE, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise KeyError(f"unknown colour {name!r}{hint}; valid colours: {', '.join(PALETTE)}")


def muted_colors(rng: np.random.Generator, value_range: tuple[float, float], n: int) -> np.ndarray:
    """`n` low-saturation colours: greys of value in `value_range` (0..1) with a small tint.

    Shape:
        -> float32 (n, 3) in 0..255
    """
    value = rng.uniform(*value_range, size=(n, 1)) * 255.0
    tint = rng.uniform(-18.0, 18.0, size=(n, 3))
    return np.clip(value + tint, 0.0, 255.0).astype(np.float32)


def desaturate(rgb: np.ndarray, saturation: float) -> np.ndarray:
    """Blend a colour towards its grey (luma) level; `saturation` 1 keeps it, 0 makes it grey.

    Shape:
        rgb (..., 3) -> same shape
    """
    if saturation == 1.0:
        return rgb
    luma = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return luma[..., None] + saturation * (rgb - luma[..., None])
