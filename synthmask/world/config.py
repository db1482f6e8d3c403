"""Configuration of shapes-world scenes and their captions."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from synthmask.world.backgrounds import get_background
from synthmask.world.palette import get_color
from synthmask.world.shapes import DEFAULT_SHAPES, get_shape


@dataclass(frozen=True)
class CaptionConfig:
    """How captions are worded; every probability is drawn per scene (or per object).

    Attributes:
        synonym_prob: chance a class word is replaced by a random synonym ("disk" for circle);
            0 always uses the canonical class name.
        color_prob: chance an object's colour is named.
        size_prob: chance an object's size ("small"/"large") is named.
        position_prob: chance an object's position ("at the top left") is named.
        background_prob: chance the background is named ("on a striped background").
        prefix_prob: chance of a lead-in such as "a picture of".
        shuffle_order: mention objects in random order (else bottom-to-top drawing order).
    """

    synonym_prob: float = 0.0
    color_prob: float = 1.0
    size_prob: float = 0.5
    position_prob: float = 0.5
    background_prob: float = 0.5
    prefix_prob: float = 0.0
    shuffle_order: bool = True

    def __post_init__(self) -> None:
        for name in (
            "synonym_prob",
            "color_prob",
            "size_prob",
            "position_prob",
            "background_prob",
            "prefix_prob",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"CaptionConfig.{name}={value} is not a probability; use 0..1.")


@dataclass(frozen=True)
class SceneConfig:
    """What a shapes-world scene contains.

    Attributes:
        image_size: side length in pixels (square images), e.g. 64 or 32.
        min_objects, max_objects: objects per scene, drawn uniformly in this range.
        size_range: nominal object diameter as a fraction of the image side (low, high); sizes
            below the midpoint are captioned "small", above it "large".
        allow_occlusion: objects may overlap (later objects on top); otherwise they are placed
            apart (a crowded scene then gets fewer objects).
        min_visible_fraction: with occlusion, every object keeps at least this fraction of its
            own pixels visible (layouts that violate it are redrawn).
        distinct_classes: objects of one scene have different classes.
        rotate: random rotation of every object (else upright).
        shapes: class list (ids 1..K in this order; 0 is background).
        colors: palette names to draw object colours from; None = the whole palette.
        backgrounds: background names; None = the domain's own family.
        supersample: odd anti-aliasing factor; the mask is the centre sample of each pixel.
        color_jitter: uniform RGB jitter (0..255 scale) around the named colour.
        captions: caption wording.
    """

    image_size: int = 64
    min_objects: int = 1
    max_objects: int = 2
    size_range: tuple[float, float] = (0.3, 0.6)
    allow_occlusion: bool = True
    min_visible_fraction: float = 0.5
    distinct_classes: bool = True
    rotate: bool = True
    shapes: tuple[str, ...] = DEFAULT_SHAPES
    colors: tuple[str, ...] | None = None
    backgrounds: tuple[str, ...] | None = None
    supersample: int = 3
    color_jitter: float = 12.0
    captions: CaptionConfig = field(default_factory=CaptionConfig)

    def __post_init__(self) -> None:
        # Lists from YAML/JSON become tuples so the config stays hashable.
        for name in ("size_range", "shapes", "colors", "backgrounds"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        if self.image_size < 8:
            raise ValueError(f"SceneConfig.image_size={self.image_size} is too small; use >= 8.")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"SceneConfig objects range ({self.min_objects}, {self.max_objects}) is invalid; "
                "need 1 <= min_objects <= max_objects."
            )
        if self.distinct_classes and self.max_objects > len(self.shapes):
            raise ValueError(
                f"SceneConfig.max_objects={self.max_objects} exceeds the {len(self.shapes)} shapes "
                "with distinct_classes=True; lower max_objects or set distinct_classes=False."
            )
        low, high = self.size_range
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(
                f"SceneConfig.size_range={self.size_range} must satisfy 0 < low <= high <= 1."
            )
        if self.supersample < 1 or self.supersample % 2 == 0:
            raise ValueError(
                f"SceneConfig.supersample={self.supersample} must be odd (the mask is the centre "
                "sample of each pixel); use 1, 3 or 5."
            )
        if not 0.0 <= self.min_visible_fraction <= 1.0:
            raise ValueError(
                f"SceneConfig.min_visible_fraction={self.min_visible_fraction} must be in 0..1."
            )
        if not self.shapes:
            raise ValueError("SceneConfig.shapes is empty; give at least one shape name.")
        if len(set(self.shapes)) != len(self.shapes):
            raise ValueError(f"SceneConfig.shapes={self.shapes} has duplicates; list each once.")
        for name in self.shapes:
            get_shape(name)
        for name in self.colors or ():
            get_color(name)
        for name in self.backgrounds or ():
            get_background(name)
        if self.colors is not None and not self.colors:
            raise ValueError("SceneConfig.colors is empty; give colour names or None for all.")
        if self.backgrounds is not None and not self.backgrounds:
            raise ValueError(
                "SceneConfig.backgrounds is empty; give names or None for the domain's."
            )

    def with_overrides(self, **fields: object) -> SceneConfig:
        """A copy with the given fields replaced; fields given as None keep this config's value."""
        given = {k: v for k, v in fields.items() if v is not None}
        unknown = sorted(set(given) - set(self.__dataclass_fields__))
        if unknown:
            raise KeyError(
                f"unknown SceneConfig field(s) {unknown}; valid: {sorted(self.__dataclass_fields__)}"
            )
        return replace(self, **given)

    @property
    def size_midpoint(self) -> float:
        """Sizes below this are "small", at or above it "large"."""
        return 0.5 * (self.size_range[0] + self.size_range[1])
