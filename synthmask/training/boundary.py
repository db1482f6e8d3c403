"""Boundary band of a binary region (BECO): B = dilate(mask) - erode(mask), 3x3, one iteration."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dilate(mask: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """Binary dilation with a square kernel; pixels outside the image count as background.

    Shape:
        mask (B, H, W) bool or {0, 1} -> bool (B, H, W)
    """
    x = mask.float().unsqueeze(1)
    # max_pool2d pads with -inf, so the border never adds foreground (OpenCV's default too).
    out = F.max_pool2d(x, kernel_size, stride=1, padding=kernel_size // 2)
    return out.squeeze(1) > 0.5


def erode(mask: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """Binary erosion with a square kernel; pixels outside the image count as foreground
    (OpenCV's default), so a region touching the border is not eroded from it.

    Shape:
        mask (B, H, W) bool or {0, 1} -> bool (B, H, W)
    """
    x = mask.float().unsqueeze(1)
    out = -F.max_pool2d(-x, kernel_size, stride=1, padding=kernel_size // 2)
    return out.squeeze(1) > 0.5


def boundary_band(mask: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """BECO's boundary band: pixels within one kernel step of the region's edge, on both sides.

    ``B = dilate(mask) - erode(mask)`` (3x3 kernel, one iteration by default).

    Shape:
        mask (B, H, W) bool or {0, 1} -> float32 (B, H, W) in {0, 1}
    """
    if mask.dim() != 3:
        raise ValueError(f"boundary_band expects a (B, H, W) mask, got {tuple(mask.shape)}")
    return (dilate(mask, kernel_size) & ~erode(mask, kernel_size)).float()
