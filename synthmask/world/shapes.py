"""Shape classes of the shapes world: analytic inside-tests, extents and caption synonyms.

Every shape lives in *unit coordinates* (u right, v down): its nominal radius is 1 (a circle of
radius 1), so objects of the same nominal size look comparably big. `extent` is the radius of the
smallest origin-centred disk that holds the shape; the renderer uses it for bounding boxes and
for keeping objects inside the image.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

InsideFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ShapeSpec:
    """One object class.

    Attributes:
        name: canonical class name (also the canonical caption word).
        inside: `(u, v) -> bool array`, True where the unit-coordinate point is in the shape.
        extent: circumradius of the shape in unit coordinates.
        synonyms: caption words for the class; the first one is `name`.
    """

    name: str
    inside: InsideFn
    extent: float
    synonyms: tuple[str, ...]


def radial_polygon_inside(
    u: np.ndarray, v: np.ndarray, radii: np.ndarray, phase: float
) -> np.ndarray:
    """Inside-test of a polygon that is star-shaped about the origin.

    Vertex k sits at angle `phase + k * 2*pi/n` and distance `radii[k]` (counter-clockwise in the
    (u, v) frame). A point is inside when it lies on the inner side of the edge of its angular
    sector, which is exact for convex polygons and for stars alike.

    Shape:
        u, v: any broadcastable shape -> bool array of the broadcast shape.
    """
    n = len(radii)
    step = 2.0 * math.pi / n
    angles = phase + step * np.arange(n + 1)
    r = np.append(radii, radii[0])
    vx, vy = r * np.cos(angles), r * np.sin(angles)
    sector = np.floor((np.arctan2(v, u) - phase) / step).astype(np.int64) % n
    ax, ay = vx[sector], vy[sector]
    ex, ey = vx[sector + 1] - ax, vy[sector + 1] - ay
    return ex * (v - ay) - ey * (u - ax) >= 0.0


def _regular(n: int, radius: float, phase: float) -> InsideFn:
    radii = np.full(n, radius)
    return lambda u, v: radial_polygon_inside(u, v, radii, phase)


def _star(points: int, outer: float, inner: float) -> InsideFn:
    radii = np.tile([outer, inner], points)
    # First vertex points up (v is down, so "up" is angle -pi/2).
    return lambda u, v: radial_polygon_inside(u, v, radii, -math.pi / 2)


def _circle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v <= 1.0


RING_INNER_RADIUS = 0.55


def _ring(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    d2 = u * u + v * v
    return (d2 <= 1.0) & (d2 >= RING_INNER_RADIUS**2)


CROSS_HALF_WIDTH = 0.36


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    w = CROSS_HALF_WIDTH
    return ((au <= w) & (av <= 1.0)) | ((av <= w) & (au <= 1.0))


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Classic implicit heart (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0 with y up, scaled to radius ~1.
    x = u * 1.15
    y = -v * 1.15 + 0.15
    q = x * x + y * y - 1.0
    return q * q * q - x * x * y * y * y <= 0.0


def _moon(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    cut_u = u - 0.5
    return (u * u + v * v <= 1.0) & (cut_u * cut_u + v * v > 0.8**2)


SHAPES: dict[str, ShapeSpec] = {
    spec.name: spec
    for spec in (
        ShapeSpec("circle", _circle, 1.0, ("circle", "disk", "disc", "dot")),
        ShapeSpec(
            "square",
            _regular(4, 0.85 * math.sqrt(2), math.pi / 4),
            1.21,
            ("square", "box", "block", "tile"),
        ),
        ShapeSpec(
            "triangle", _regular(3, 1.3, -math.pi / 2), 1.31, ("triangle", "wedge", "pyramid")
        ),
        ShapeSpec("star", _star(5, 1.2, 0.55), 1.21, ("star", "pentagram", "five-pointed star")),
        ShapeSpec(
            "cross",
            _cross,
            math.hypot(1.0, CROSS_HALF_WIDTH) + 0.01,
            ("cross", "plus sign", "plus"),
        ),
        ShapeSpec("ring", _ring, 1.0, ("ring", "annulus", "donut", "hoop")),
        ShapeSpec("hexagon", _regular(6, 1.05, 0.0), 1.06, ("hexagon", "honeycomb cell")),
        ShapeSpec("heart", _heart, 1.15, ("heart", "love heart")),
        ShapeSpec("moon", _moon, 1.0, ("moon", "crescent", "crescent moon")),
    )
}

# Six classes told apart by silhouette even at 32 px; extra shapes are opt-in.
DEFAULT_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")


def get_shape(name: str) -> ShapeSpec:
    """Look a shape up by name; KeyError lists valid names and close matches."""
    if name in SHAPES:
        return SHAPES[name]
    close = difflib.get_close_matches(name, SHAPES, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise KeyError(f"unknown shape {name!r}{hint}; valid shapes: {', '.join(SHAPES)}")


def class_names(shapes: tuple[str, ...] = DEFAULT_SHAPES) -> list[str]:
    """Class list of a world with these shapes: background is id 0, shape i is id i + 1."""
    for name in shapes:
        get_shape(name)
    return ["background", *shapes]
