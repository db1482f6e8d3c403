"""Object layouts of shapes-world scenes: classes, colours, sizes, rotations, positions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from synthmask.world.config import SceneConfig
from synthmask.world.palette import PALETTE
from synthmask.world.shapes import get_shape

# Object centres left of this fraction of the width are "left", right of 1 - it "right".
POSITION_MARGIN = 0.4
# With occlusion on, a proposal is rejected outright when two centres are closer than this
# fraction of the sum of the radii (the exact visible-pixel check follows after rasterizing).
MIN_CENTRE_DISTANCE = 0.5


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene (drawn in list order: later objects are on top).

    Attributes:
        shape: shape/class name.
        class_id: label id (1..K; 0 is background).
        center: (x, y) in pixels, continuous coordinates (pixel i covers [i, i + 1)).
        radius: nominal radius in pixels (the shape's unit radius).
        rotation: radians, counter-clockwise on screen.
        color_name: palette name of the colour.
        rgb: the colour actually drawn in the source domain (named colour + jitter), 0..255.
        size_name: "small" or "large".
        position_name: "top left", "left", "center", ... (from the centre).
        visible_pixels: pixels of the final mask that belong to this object.
    """

    shape: str
    class_id: int
    center: tuple[float, float]
    radius: float
    rotation: float
    color_name: str
    rgb: tuple[float, float, float]
    size_name: str = ""
    position_name: str = ""
    visible_pixels: int = 0

    @property
    def extent(self) -> float:
        """Circumradius in pixels."""
        return get_shape(self.shape).extent * self.radius


def position_name(center: tuple[float, float], image_size: int) -> str:
    """Name of the image region holding `center`: "top left", "top", ..., "center"."""
    fx, fy = center[0] / image_size, center[1] / image_size
    horizontal = "left" if fx < POSITION_MARGIN else "right" if fx > 1 - POSITION_MARGIN else ""
    vertical = "top" if fy < POSITION_MARGIN else "bottom" if fy > 1 - POSITION_MARGIN else ""
    return " ".join(p for p in (vertical, horizontal) if p) or "center"


def sample_appearance(rng: np.random.Generator, config: SceneConfig, n_objects: int) -> list[dict]:
    """Classes, colours, sizes and rotations of `n_objects` objects (no positions yet)."""
    n_shapes = len(config.shapes)
    class_idx = rng.choice(n_shapes, size=n_objects, replace=not config.distinct_classes)
    colors = config.colors or tuple(PALETTE)
    color_idx = rng.choice(len(colors), size=n_objects, replace=n_objects > len(colors))
    sizes = rng.uniform(*config.size_range, size=n_objects)
    rotations = (
        rng.uniform(0.0, 2.0 * math.pi, size=n_objects) if config.rotate else np.zeros(n_objects)
    )
    jitter = rng.uniform(-config.color_jitter, config.color_jitter, size=(n_objects, 3))
    out = []
    for i in range(n_objects):
        name = colors[int(color_idx[i])]
        rgb = np.clip(np.asarray(PALETTE[name], dtype=np.float64) + jitter[i], 0.0, 255.0)
        out.append(
            {
                "shape": config.shapes[int(class_idx[i])],
                "class_id": int(class_idx[i]) + 1,
                "radius": 0.5 * float(sizes[i]) * config.image_size,
                "rotation": float(rotations[i]),
                "color_name": name,
                "rgb": tuple(float(c) for c in rgb),
                "size_name": "small" if sizes[i] < config.size_midpoint else "large",
            }
        )
    return out


def _centres_ok(objects: list[SceneObject], allow_occlusion: bool) -> bool:
    for i, a in enumerate(objects):
        for b in objects[:i]:
            dist = math.hypot(a.center[0] - b.center[0], a.center[1] - b.center[1])
            if allow_occlusion:
                if dist < MIN_CENTRE_DISTANCE * (a.radius + b.radius):
                    return False
            elif dist < a.extent + b.extent + 1.0:
                return False
    return True


def propose_layout(
    rng: np.random.Generator, config: SceneConfig, appearance: list[dict], tries: int = 50
) -> list[SceneObject] | None:
    """Place objects inside the image; None when `tries` proposals all collide.

    Each object's circumscribed disk stays inside the image. Without occlusion, circumscribed
    disks do not touch; with occlusion, centres keep a minimum distance.
    """
    size = config.image_size
    for _ in range(tries):
        objects = []
        for app in appearance:
            extent = get_shape(app["shape"]).extent * app["radius"]
            low, high = extent, size - extent
            if low >= high:
                center = (size / 2.0, size / 2.0)
            else:
                xy = rng.uniform(low, high, size=2)
                center = (float(xy[0]), float(xy[1]))
            objects.append(
                SceneObject(center=center, position_name=position_name(center, size), **app)
            )
        if _centres_ok(objects, config.allow_occlusion):
            return objects
    return None
