"""Background family of the shapes world; each background has caption words.

A background mixes two muted colours with a pattern `t(x, y)` in [0, 1]:
`image = (1 - t) * c1 + t * c2`. Patterns are smooth at pixel scale (soft edges), so they need no
supersampling. Lengths are fractions of the image side, so 32 px and 64 px scenes look alike.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

PatternFn = Callable[[np.random.Generator, int], np.ndarray]


@dataclass(frozen=True)
class BackgroundSpec:
    """A background pattern.

    Attributes:
        name: registry name (used in configs).
        words: caption adjectives ("on a {word} background"); the first is canonical.
        pattern: `(rng, size) -> float32 (size, size)` mixing weight in [0, 1].
    """

    name: str
    words: tuple[str, ...]
    pattern: PatternFn


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size
    return centres[None, :], centres[:, None]  # x (1, S), y (S, 1), in [0, 1]


def _soft_square_wave(phase: np.ndarray, sharpness: float = 3.0) -> np.ndarray:
    return 0.5 + 0.5 * np.clip(sharpness * np.sin(2.0 * math.pi * phase), -1.0, 1.0)


def _plain(rng: np.random.Generator, size: int) -> np.ndarray:
    return np.zeros((size, size), dtype=np.float32)


def _stripes(vertical: bool) -> PatternFn:
    def pattern(rng: np.random.Generator, size: int) -> np.ndarray:
        x, y = _grid(size)
        period = rng.uniform(0.12, 0.25)
        coord = x if vertical else y
        t = _soft_square_wave(coord / period + rng.uniform())
        return np.broadcast_to(t, (size, size)).astype(np.float32)

    return pattern


def _checker(rng: np.random.Generator, size: int) -> np.ndarray:
    x, y = _grid(size)
    period = rng.uniform(0.2, 0.4)
    sx = np.sin(2.0 * math.pi * (x / period + rng.uniform()))
    sy = np.sin(2.0 * math.pi * (y / period + rng.uniform()))
    return (0.5 + 0.5 * np.clip(4.0 * sx * sy, -1.0, 1.0)).astype(np.float32)


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    x, y = _grid(size)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    d = (x - 0.5) * math.cos(angle) + (y - 0.5) * math.sin(angle)
    return np.clip(d / math.sqrt(0.5) + 0.5, 0.0, 1.0).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    coarse = rng.random((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC))


def _noise(rng: np.random.Generator, size: int) -> np.ndarray:
    t = _smooth_noise(rng, size, cells=5) + rng.normal(0.0, 0.08, (size, size))
    return np.clip(t, 0.0, 1.0).astype(np.float32)


def _dots(rng: np.random.Generator, size: int) -> np.ndarray:
    x, y = _grid(size)
    period = rng.uniform(0.14, 0.22)
    radius = period * rng.uniform(0.2, 0.3)
    fx = (x / period + rng.uniform()) % 1.0 - 0.5
    fy = (y / period + rng.uniform()) % 1.0 - 0.5
    dist = np.sqrt(fx * fx + fy * fy) * period  # in image fractions
    return np.clip((radius - dist) * size + 0.5, 0.0, 1.0).astype(np.float32)


def _lines(rng: np.random.Generator, size: int) -> np.ndarray:
    x, y = _grid(size)
    period = rng.uniform(0.15, 0.25)
    dx = np.abs((x / period + rng.uniform()) % 1.0 - 0.5) * period * size  # px from cell centre
    dy = np.abs((y / period + rng.uniform()) % 1.0 - 0.5) * period * size
    half_cell = 0.5 * period * size
    near_line = np.maximum(dx, dy) - (half_cell - 0.75)  # > 0 within 0.75 px of a line
    return np.clip(near_line + 0.5, 0.0, 1.0).astype(np.float32)


def _waves(rng: np.random.Generator, size: int) -> np.ndarray:
    x, y = _grid(size)
    period = rng.uniform(0.15, 0.25)
    wobble = rng.uniform(0.04, 0.08) * np.sin(2.0 * math.pi * (x / rng.uniform(0.3, 0.5)))
    return _soft_square_wave((y + wobble) / period + rng.uniform()).astype(np.float32)


def _radial(rng: np.random.Generator, size: int) -> np.ndarray:
    x, y = _grid(size)
    cx, cy = rng.uniform(0.2, 0.8, size=2)
    d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    return np.clip(d / 0.75, 0.0, 1.0).astype(np.float32)


BACKGROUNDS: dict[str, BackgroundSpec] = {
    spec.name: spec
    for spec in (
        BackgroundSpec("plain", ("plain", "blank", "uniform"), _plain),
        BackgroundSpec("stripes_v", ("striped", "stripy"), _stripes(vertical=True)),
        BackgroundSpec("stripes_h", ("striped", "stripy"), _stripes(vertical=False)),
        BackgroundSpec("checker", ("checkered", "checkerboard"), _checker),
        BackgroundSpec("gradient", ("gradient", "shaded"), _gradient),
        BackgroundSpec("noise", ("noisy", "mottled"), _noise),
        BackgroundSpec("dots", ("dotted", "polka-dot"), _dots),
        BackgroundSpec("grid", ("grid", "tiled"), _lines),
        BackgroundSpec("waves", ("wavy", "rippled"), _waves),
        BackgroundSpec("radial", ("glowing", "radial"), _radial),
    )
}

SOURCE_BACKGROUNDS: tuple[str, ...] = (
    "plain",
    "stripes_v",
    "stripes_h",
    "checker",
    "gradient",
    "noise",
)
TARGET_BACKGROUNDS: tuple[str, ...] = ("dots", "grid", "waves", "radial")


def get_background(name: str) -> BackgroundSpec:
    """Look a background up by name; KeyError lists valid names and close matches."""
    if name in BACKGROUNDS:
        return BACKGROUNDS[name]
    close = difflib.get_close_matches(name, BACKGROUNDS, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise KeyError(
        f"unknown background {name!r}{hint}; valid backgrounds: {', '.join(BACKGROUNDS)}"
    )


def render_background(
    name: str, rng: np.random.Generator, size: int, color_a: np.ndarray, color_b: np.ndarray
) -> np.ndarray:
    """Render background `name` mixing two colours.

    Shape:
        color_a, color_b (3,) -> float32 (size, size, 3) in 0..255
    """
    t = get_background(name).pattern(rng, size)[..., None]
    return ((1.0 - t) * color_a + t * color_b).astype(np.float32)
