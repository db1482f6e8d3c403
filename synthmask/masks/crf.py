"""Dense-CRF refinement of pseudo-masks, in torch (no compiled extension).

Mean-field inference of the fully connected CRF of Kraehenbuehl & Koltun (2011) with Potts
compatibility, the two kernels of pydensecrf and its symmetric kernel normalisation:
  k_bil(i, j) = exp(-|p_i - p_j|^2 / (2 alpha^2) - |I_i - I_j|^2 / (2 beta^2))  weight w1
  k_gau(i, j) = exp(-|p_i - p_j|^2 / (2 gamma^2))                               weight w2
  Q <- softmax(log P_unary + w1 * Kn_bil Q + w2 * Kn_gau Q),   Kn = D^-1/2 K D^-1/2
(replicated setting: w1 = 10, alpha = 80, beta = 13, w2 = 3, gamma = 3, 5 iterations; pixel
positions in pixels, colours in 0..255).

The kernels are exact (dense N x N), not the permutohedral-lattice approximation, so the
message passing runs on a working grid of at most `max_side` pixels per side (positions are
rescaled, so the kernels keep their size in image pixels); the final step combines the
full-resolution unary with the upsampled pairwise message, so labels keep pixel detail where
the unary has it. Images up to `max_side` are processed exactly. pydensecrf2 (PyPI, sdist
only: needs a C++ compiler and Cython) gives the same labels on the test toy; it is not a
dependency.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from synthmask.masks.types import IGNORE_INDEX, PseudoMask


@dataclass
class DenseCRFParams:
    """Dense-CRF settings (defaults: the replicated attn2mask setting).

    Attributes:
        bilateral_weight: w1.  bilateral_xy: alpha (pixels).  bilateral_rgb: beta (0..255).
        gaussian_weight: w2.  gaussian_xy: gamma (pixels).  iterations: mean-field steps.
        unary: "labels" (pydensecrf's unary_from_labels: p(label) = gt_prob, the rest shared,
            ignore pixels uniform) or "scores" (softmax(scores / temperature)).
        keep_ignore: pixels labelled 255 before the CRF stay 255.
        max_side: side of the working grid for the dense kernels.
    """

    bilateral_weight: float = 10.0
    bilateral_xy: float = 80.0
    bilateral_rgb: float = 13.0
    gaussian_weight: float = 3.0
    gaussian_xy: float = 3.0
    iterations: int = 5
    unary: str = "labels"
    gt_prob: float = 0.7
    temperature: float = 0.1
    keep_ignore: bool = True
    max_side: int = 64

    def __post_init__(self) -> None:
        if self.unary not in ("labels", "scores"):
            raise ValueError(f"unary={self.unary!r}: use 'labels' or 'scores'.")
        if not 0.0 < self.gt_prob < 1.0:
            raise ValueError(f"gt_prob must be in (0, 1), got {self.gt_prob}.")
        if self.iterations < 0 or self.max_side < 2:
            raise ValueError("iterations must be >= 0 and max_side >= 2.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _image_bchw(image: torch.Tensor) -> torch.Tensor:
    """uint8/float image, (B, H, W, 3) or (B, 3, H, W), values 0..255 -> float (B, 3, H, W)."""
    if image.dim() != 4:
        raise ValueError(f"image must be (B, H, W, 3) or (B, 3, H, W), got {tuple(image.shape)}.")
    channels_last = image.shape[-1] == 3 and (image.shape[1] != 3 or image.dtype == torch.uint8)
    if channels_last:
        image = image.permute(0, 3, 1, 2)
    if image.shape[1] != 3:
        raise ValueError(f"image must have 3 colour channels, got {tuple(image.shape)}.")
    return image.float()


def unary_probs_from_labels(
    label: torch.Tensor, valid: torch.Tensor, gt_prob: float
) -> torch.Tensor:
    """pydensecrf-style label unary: gt_prob on the label, the rest shared; 255 -> uniform.

    Shape:
        label (B, H, W), valid bool (B, C) -> probs (B, C, H, W) (0 on invalid channels)
    """
    num_classes = valid.shape[1]
    n_valid = valid.sum(1).clamp_min(1).float()[:, None, None, None]
    other = (1.0 - gt_prob) / (n_valid - 1).clamp_min(1)
    ignore = label == IGNORE_INDEX
    onehot = F.one_hot(label.masked_fill(ignore, 0), num_classes).permute(0, 3, 1, 2).float()
    probs = onehot * gt_prob + (1 - onehot) * other
    probs = torch.where(ignore[:, None], 1.0 / n_valid, probs)
    return probs * valid[:, :, None, None]


def _normalised_kernel(features: torch.Tensor) -> torch.Tensor:
    """exp(-|f_i - f_j|^2 / 2) with symmetric normalisation D^-1/2 K D^-1/2. (N, d) -> (N, N)."""
    kernel = torch.exp(-0.5 * torch.cdist(features, features).square())
    inv_sqrt = kernel.sum(1).rsqrt()
    return inv_sqrt[:, None] * kernel * inv_sqrt[None, :]


def _pairwise_operator(image: torch.Tensor, scale: float, p: DenseCRFParams) -> torch.Tensor:
    """w1 * Kn_bil + w2 * Kn_gau on the working grid. image (3, h, w) -> (N, N)."""
    _, height, width = image.shape
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=image.device),
        torch.arange(width, dtype=torch.float32, device=image.device),
        indexing="ij",
    )
    positions = torch.stack([xs.flatten(), ys.flatten()], dim=1) * scale  # in image pixels
    colours = image.flatten(1).t()
    bilateral = torch.cat([positions / p.bilateral_xy, colours / p.bilateral_rgb], dim=1)
    operator = p.bilateral_weight * _normalised_kernel(bilateral)
    operator += p.gaussian_weight * _normalised_kernel(positions / p.gaussian_xy)
    return operator


def dense_crf_probs(
    image: torch.Tensor, unary_probs: torch.Tensor, valid: torch.Tensor, params: DenseCRFParams
) -> torch.Tensor:
    """Mean-field marginals Q of the dense CRF.

    Shape:
        image (B, H, W, 3) or (B, 3, H, W) 0..255, unary_probs (B, C, H, W), valid bool (B, C)
        -> Q (B, C, H, W), 0 on invalid channels
    """
    rgb = _image_bchw(image).to(unary_probs.device)
    batch, num_classes, height, width = unary_probs.shape
    if rgb.shape[0] != batch or rgb.shape[-2:] != (height, width):
        raise ValueError(
            f"image {tuple(rgb.shape)} and masks {tuple(unary_probs.shape)} differ in batch or size."
        )
    scale = max(1.0, max(height, width) / params.max_side)
    grid = (max(1, round(height / scale)), max(1, round(width / scale)))
    neg_inf = torch.tensor(float("-inf"), device=unary_probs.device)
    log_unary = torch.where(valid[:, :, None, None], unary_probs.clamp_min(1e-8).log(), neg_inf)
    out = torch.empty_like(unary_probs)
    for b in range(batch):
        small_rgb = F.interpolate(rgb[b : b + 1], size=grid, mode="area")[0]
        small_log = F.interpolate(log_unary[b : b + 1].clamp_min(-30), size=grid, mode="area")[0]
        small_log = torch.where(valid[b, :, None, None], small_log, neg_inf).flatten(1).t()
        operator = _pairwise_operator(small_rgb, scale, params)
        q = torch.softmax(small_log, dim=1)
        message = torch.zeros_like(q)
        for _ in range(params.iterations):
            message = operator @ q
            q = torch.softmax(small_log + message, dim=1)
        message = message.t().reshape(1, num_classes, *grid)
        if grid != (height, width):
            message = F.interpolate(
                message, size=(height, width), mode="bilinear", align_corners=False
            )
        out[b] = torch.softmax(log_unary[b] + message[0], dim=0)
    return out


def crf_refine(
    pseudo: PseudoMask, image: torch.Tensor, params: DenseCRFParams | None = None
) -> PseudoMask:
    """Refine a pseudo-mask with the dense CRF; scores become the CRF marginals Q.

    The channels with finite scores (background + named classes) are the CRF's labels.

    Shape:
        pseudo (B, H, W) / (B, C, H, W), image (B, H, W, 3) or (B, 3, H, W) -> PseudoMask
    """
    params = params or DenseCRFParams()
    valid = torch.isfinite(pseudo.scores).flatten(2).any(2)
    if params.unary == "labels":
        probs = unary_probs_from_labels(pseudo.label, valid, params.gt_prob)
    else:
        probs = torch.softmax(pseudo.scores / params.temperature, dim=1)
    q = dense_crf_probs(image, probs, valid, params)
    scores = q.masked_fill(~valid[:, :, None, None], float("-inf"))
    label = scores.argmax(dim=1)
    if params.keep_ignore:
        label = torch.where(pseudo.label == IGNORE_INDEX, pseudo.label, label)
    return PseudoMask(label=label, scores=scores)
