"""Label-free image statistics that tell the shapes world's source look from its target look.

The target domain (synthmask/world/domains.py) has textured backgrounds, a washed-out palette,
a coloured directional light, blur and sensor noise; the source (as the shipped LDM saw it) has
plain backgrounds and saturated colours. Four numbers per image set, all on 0..1 pixel values:

- ``brightness``: mean luminance (0.299 R + 0.587 G + 0.114 B).
- ``chroma``: mean per-pixel (max - min) over RGB (saturation; the target palette is washed out).
- ``border_std``: std of the luminance on the outer ``ring`` pixels of each image, averaged over
  images (background texture + lighting ramp; ~0 for a plain background).
- ``laplacian``: mean |4-neighbour Laplacian| of the luminance (fine detail: noise and texture
  raise it, blur and flat areas lower it).

Used by benchmarks/transfer_lora.py ``--stats`` on cached generations and rendered real scenes.
"""

from __future__ import annotations

import numpy as np

STAT_NAMES = ("brightness", "chroma", "border_std", "laplacian")
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def domain_statistics(images: np.ndarray, ring: int = 3) -> dict[str, float]:
    """Mean statistics of a set of images (see the module docstring).

    Shape:
        images: uint8 (N, H, W, 3) with H, W > 2 * ring -> dict of floats (one per STAT_NAMES)
    """
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"domain_statistics needs uint8 (N, H, W, 3) images, got {images.dtype} "
            f"{images.shape}; stack the RGB uint8 arrays with np.stack."
        )
    if min(images.shape[1:3]) <= 2 * ring:
        raise ValueError(f"images {images.shape[1:3]} are too small for a {ring}-pixel ring.")
    pixels = images.astype(np.float64) / 255.0
    luma = pixels @ LUMA  # (N, H, W)
    chroma = pixels.max(axis=-1) - pixels.min(axis=-1)
    inner = np.zeros(luma.shape[1:], dtype=bool)
    inner[ring:-ring, ring:-ring] = True
    border_std = luma[:, ~inner].std(axis=1)
    laplacian = (
        4 * luma[:, 1:-1, 1:-1]
        - luma[:, :-2, 1:-1]
        - luma[:, 2:, 1:-1]
        - luma[:, 1:-1, :-2]
        - luma[:, 1:-1, 2:]
    )
    return {
        "brightness": float(luma.mean()),
        "chroma": float(chroma.mean()),
        "border_std": float(border_std.mean()),
        "laplacian": float(np.abs(laplacian).mean()),
    }


def target_shift_fraction(
    stats: dict[str, float],
    source: dict[str, float],
    target: dict[str, float],
    min_gap: float = 0.01,
) -> dict[str, float]:
    """Per statistic, how far ``stats`` moved from ``source`` towards ``target``:
    0 = at the source value, 1 = at the target value (can leave [0, 1]); NaN where the
    source-target gap is below ``min_gap`` (the statistic does not tell the domains apart)."""
    out = {}
    for name in STAT_NAMES:
        gap = target[name] - source[name]
        out[name] = (stats[name] - source[name]) / gap if abs(gap) >= min_gap else float("nan")
    return out


def stats_table(rows: dict[str, dict[str, float]]) -> str:
    """Markdown table of image-set statistics (one row per set, in the dict's order)."""
    lines = [
        "| images | n | " + " | ".join(STAT_NAMES) + " |",
        "|---|---|" + "---|" * len(STAT_NAMES),
    ]
    for name, stats in rows.items():
        cells = " | ".join(f"{stats[s]:.3f}" for s in STAT_NAMES)
        lines.append(f"| {name} | {int(stats.get('n', 0))} | {cells} |")
    return "\n".join(lines)
