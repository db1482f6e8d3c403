"""Mask methods as self-contained config choices (one class per method, picked by class_path).

In a LightningCLI config the data module's ``mask`` is one of these classes::

    mask:
      class_path: synthmask.masks.SelfRefineMaskConfig   # or Attn2MaskConfig, ThresholdMaskConfig
      init_args:
        tau: 4
        reliability_fraction: 0.5

and one override switches the method (``--data.init_args.mask=ThresholdMaskConfig``): the new
class keeps the shared settings (reliability, heatmap reduction, CRF) and its own defaults, and
drops the old method's parameters. A method declares what it needs captured
(``needs_self_attention``, ``self_resolution``); :meth:`MaskMethodConfig.resolve` turns that and
the user's ``CaptureConfig`` into concrete capture settings for the loaded UNet at the sampling
size, and into the resolved ``MaskConfig`` the engine runs (and the cache keys record).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from synthmask.masks.config import MaskConfig

if TYPE_CHECKING:  # no diffusers import for users of the masks alone
    from synthmask.diffusion.capture import CaptureConfig
    from synthmask.diffusion.resolutions import AttentionGeometry

CROSS, SELF = "cross", "self"  # the attention kinds of synthmask.diffusion.capture


class MaskMethodConfig:
    """Settings every mask method shares (base class; pick a subclass in configs).

    Args:
        resolutions: cross-attention sides to average (None = all captured).
        resolution_weights: one weight per side (None = equal).
        token_reduce: "sum" | "mean" over a word's sub-tokens.
        mention_reduce: "max" | "sum" over several mentions of a class.
        interpolation: upsampling of heatmaps ("bicubic").
        reliability_fraction: per-class top fraction of margins that is reliable.
        reliability_threshold: fixed margin threshold instead of the per-class rule.
        crf: refine with the dense CRF; crf_params: DenseCRFParams fields.
    """

    method: ClassVar[str] = ""
    needs_self_attention: ClassVar[bool] = False

    def __init__(
        self,
        resolutions: list[int] | None = None,
        resolution_weights: list[float] | None = None,
        token_reduce: str = "sum",
        mention_reduce: str = "max",
        interpolation: str = "bicubic",
        reliability_fraction: float = 0.5,
        reliability_threshold: float | None = None,
        crf: bool = False,
        crf_params: dict[str, Any] | None = None,
    ) -> None:
        if not self.method:
            raise TypeError(
                "MaskMethodConfig is the base class; pick a method: Attn2MaskConfig, "
                "ThresholdMaskConfig or SelfRefineMaskConfig (synthmask.masks)."
            )
        self.shared: dict[str, Any] = {
            "resolutions": None if resolutions is None else tuple(int(r) for r in resolutions),
            "resolution_weights": None
            if resolution_weights is None
            else tuple(float(w) for w in resolution_weights),
            "token_reduce": token_reduce,
            "mention_reduce": mention_reduce,
            "interpolation": interpolation,
            "reliability_fraction": float(reliability_fraction),
            "reliability_threshold": reliability_threshold,
            "crf": bool(crf),
            "crf_params": dict(crf_params or {}),
        }
        self.mask_config()  # validates every value now, with the method's own messages

    def params(self) -> dict[str, Any]:
        """The method's own parameters (keyword arguments of its mask method)."""
        raise NotImplementedError

    def mask_config(self, **param_overrides: Any) -> MaskConfig:
        """The engine's MaskConfig for these settings."""
        return MaskConfig(self.method, {**self.params(), **param_overrides}, **self.shared)

    def resolve(
        self, capture: CaptureConfig, geometry: AttentionGeometry
    ) -> tuple[CaptureConfig, MaskConfig]:
        """Concrete (capture, mask) settings for a UNet with ``geometry``.

        Raises ValueError naming the image size when a requested side does not exist.
        """
        geometry.check(CROSS, capture.cross_resolutions, "capture.cross_resolutions")
        geometry.check(CROSS, self.shared["resolutions"], "mask.resolutions")
        captured = capture.cross_resolutions
        if captured is not None and self.shared["resolutions"] is not None:
            missing = sorted(set(self.shared["resolutions"]) - set(captured))
            if missing:
                raise ValueError(
                    f"mask.resolutions {list(self.shared['resolutions'])} are not all captured "
                    f"(capture.cross_resolutions={list(captured)}): add {missing} there or leave "
                    "capture.cross_resolutions unset (all sides)."
                )
        if capture.self_attention:
            geometry.check(SELF, capture.self_resolutions, "capture.self_resolutions")
        return capture, self.mask_config()

    def __repr__(self) -> str:
        shared = {k: v for k, v in self.shared.items() if v not in (None, {}, False)}
        return f"{type(self).__name__}({self.params() | shared})"

    @staticmethod
    def from_mask_config(config: MaskConfig) -> MaskMethodConfig:
        """The choice class equal to an engine MaskConfig (for Python callers)."""
        cls = MASK_METHOD_CONFIGS[config.method]
        shared = {
            "resolutions": config.resolutions,
            "resolution_weights": config.resolution_weights,
            "token_reduce": config.token_reduce,
            "mention_reduce": config.mention_reduce,
            "interpolation": config.interpolation,
            "reliability_fraction": config.reliability_fraction,
            "reliability_threshold": config.reliability_threshold,
            "crf": config.crf,
            "crf_params": config.crf_params,
        }
        return cls(**config.params, **shared)


class Attn2MaskConfig(MaskMethodConfig):
    """attn2mask: background = 1 - max_c heat_c - beta, argmax (replicated setting beta 0.2).

    Args:
        beta: background offset.
        ignore_margin: pixels whose best score leads by less become 255 (None = no ignore).
        **shared: the MaskMethodConfig settings.
    """

    method = "attn2mask"

    def __init__(
        self, beta: float = 0.2, ignore_margin: float | None = None, **shared: Any
    ) -> None:
        self.beta = beta
        self.ignore_margin = ignore_margin
        super().__init__(**shared)

    def params(self) -> dict[str, Any]:
        return {"beta": self.beta, "ignore_margin": self.ignore_margin}


class ThresholdMaskConfig(MaskMethodConfig):
    """DiffuMask-style per-class threshold on the heatmaps ("otsu" per image by default).

    Args:
        threshold: a float for every class, "otsu", or {class_id: threshold}.
        default_threshold: for classes a dict does not name.
        ignore_margin: as in Attn2MaskConfig.
        **shared: the MaskMethodConfig settings.
    """

    method = "threshold"

    def __init__(
        self,
        threshold: float | str | dict[int, float] = "otsu",
        default_threshold: float = 0.5,
        ignore_margin: float | None = None,
        **shared: Any,
    ) -> None:
        self.threshold = threshold
        self.default_threshold = default_threshold
        self.ignore_margin = ignore_margin
        super().__init__(**shared)

    def params(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "default_threshold": self.default_threshold,
            "ignore_margin": self.ignore_margin,
        }


class SelfRefineMaskConfig(MaskMethodConfig):
    """Dataset Diffusion: S^tau @ cross-attention, foreground threshold, ignore band.

    Needs self-attention: the engine captures it (no capture settings to write) at
    ``self_resolution``; None picks the UNet's largest self-attention side up to 32 at the
    sampling size (32 for SD 1.x/2.x at 512 px, 16 for the shipped shapes LDM).

    Args:
        tau: power of the self-attention matrix.
        self_resolution: self-attention side to refine at (None = automatic, see above).
        fg_threshold: a pixel is its best class when that class's refined value reaches this.
        ignore_low: values in [ignore_low, fg_threshold) become 255 (None = no ignore band).
        **shared: the MaskMethodConfig settings.
    """

    method = "self_refine"
    needs_self_attention = True

    def __init__(
        self,
        tau: int = 4,
        self_resolution: int | None = None,
        fg_threshold: float = 0.6,
        ignore_low: float | None = 0.5,
        **shared: Any,
    ) -> None:
        if tau < 0:
            raise ValueError(f"tau={tau}; the self-attention power must be >= 0 (4 in the paper).")
        self.tau = tau
        self.self_resolution = self_resolution
        self.fg_threshold = fg_threshold
        self.ignore_low = ignore_low
        super().__init__(**shared)

    def params(self) -> dict[str, Any]:
        return {
            "tau": self.tau,
            "self_resolution": self.self_resolution,
            "fg_threshold": self.fg_threshold,
            "ignore_low": self.ignore_low,
        }

    def resolve(
        self, capture: CaptureConfig, geometry: AttentionGeometry
    ) -> tuple[CaptureConfig, MaskConfig]:
        side = self.self_resolution
        if side is None:
            side = geometry.auto_self_resolution()
        geometry.check(SELF, (side,), "mask.self_resolution")
        wanted = capture.self_resolutions if capture.self_attention else None
        sides = tuple(sorted(set(wanted or ()) | {side}, reverse=True))
        capture = replace(capture, self_attention=True, self_resolutions=sides)
        capture, _ = super().resolve(capture, geometry)
        return capture, self.mask_config(self_resolution=side)


MASK_METHOD_CONFIGS: dict[str, type[MaskMethodConfig]] = {
    "attn2mask": Attn2MaskConfig,
    "threshold": ThresholdMaskConfig,
    "self_refine": SelfRefineMaskConfig,
}
