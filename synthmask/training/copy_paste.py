"""BECO copy-paste: foreground classes of one image pasted onto its partner in the other half."""

from __future__ import annotations

import math

import torch

IGNORE_INDEX = 255
# Per-pixel maps that travel with the pixels they describe (image is handled separately).
PIXEL_MAP_KEYS = ("mask", "reliability", "margin")


def paste_region(
    label: torch.Tensor,
    generator: torch.Generator | None = None,
    background: int = 0,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """A random half (rounded up) of the non-background classes present in ``label``.

    Shape:
        label (H, W) int64 -> bool (H, W); all False when no foreground class is present.
    """
    classes = torch.unique(label)
    classes = classes[(classes != background) & (classes != ignore_index)]
    if classes.numel() == 0:
        return torch.zeros_like(label, dtype=torch.bool)
    keep = math.ceil(classes.numel() / 2)
    order = torch.randperm(classes.numel(), generator=generator)[:keep]
    return torch.isin(label, classes[order.to(classes.device)])


def copy_paste_halves(
    batch: dict[str, torch.Tensor],
    p: float = 0.5,
    generator: torch.Generator | None = None,
    background: int = 0,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Pair sample ``i`` with ``i + B // 2`` and paste both ways, each way with probability ``p``.

    For a paste from source ``s`` to target ``t`` the region is ``paste_region(mask[s])``; inside
    it the target's image and every per-pixel map in ``PIXEL_MAP_KEYS`` present in the batch
    (``"mask"``, ``"reliability"``, ``"margin"``) take the source's values, so they stay aligned.
    Both directions read the original (un-pasted) samples. With an odd batch the last sample is
    left alone. Draws use ``generator`` (CPU), so equal seeds give equal pastes.

    Returns:
        (new batch dict with the same keys; non-pixel entries are passed through),
        paste mask bool (B, H, W): where each sample received pasted pixels.

    Shape:
        batch["image"] (B, 3, H, W), batch["mask"] (B, H, W) int64, optional
        batch["reliability"] / batch["margin"] (B, H, W) -> same shapes, paste (B, H, W) bool
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"copy-paste probability p={p} must be in [0, 1]")
    image, label = batch["image"], batch["mask"]
    size = image.shape[0]
    half = size // 2
    keys = ["image", *(k for k in PIXEL_MAP_KEYS if batch.get(k) is not None)]
    out = {k: batch[k].clone() for k in keys}
    pasted = torch.zeros_like(label, dtype=torch.bool)
    pairs = [(i, i + half) for i in range(half)] + [(i + half, i) for i in range(half)]
    for source, target in pairs:
        if torch.rand((), generator=generator).item() >= p:
            continue
        region = paste_region(label[source], generator, background).to(label.device)
        if not region.any():
            continue
        for key in keys:
            out[key][target] = torch.where(region, batch[key][source], out[key][target])
        pasted[target] |= region
    return {**batch, **out}, pasted
