"""Render shapes-world scenes: anti-aliased image, exact class mask, caption.

Objects are rasterized on a supersampled grid (`s x s` samples per pixel, `s` odd). The image
pixel is the coverage-weighted mix of the background and the objects seen by its samples; the
mask pixel is the object under the pixel's *centre* sample (the middle of the `s x s` grid), so a
mask pixel is exactly the analytic shape evaluated at the pixel centre. Later objects are drawn
on top, so occluded samples belong to the top object.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from synthmask.prompt_types import Prompt
from synthmask.world.backgrounds import render_background
from synthmask.world.captions import build_caption
from synthmask.world.config import SceneConfig
from synthmask.world.domains import Domain, apply_domain_effects, get_domain
from synthmask.world.layout import SceneObject, propose_layout, sample_appearance
from synthmask.world.palette import MIN_CONTRAST, desaturate, muted_colors
from synthmask.world.shapes import get_shape

LAYOUT_TRIES = 20


@dataclass(frozen=True)
class Scene:
    """A rendered scene.

    Attributes:
        image: uint8 (H, W, 3).
        mask: uint8 (H, W) class ids (0 background, 1..K shapes).
        instances: uint8 (H, W); 0 background, k = objects[k - 1].
        objects: drawn bottom to top.
        prompt: caption with a ClassWord per class mention.
        background: background name; domain: domain name; seed: the scene seed.
    """

    image: np.ndarray
    mask: np.ndarray
    instances: np.ndarray
    objects: tuple[SceneObject, ...]
    prompt: Prompt
    background: str
    domain: str
    seed: int


def sample_centres(size: int, supersample: int, lo: int = 0, hi: int | None = None) -> np.ndarray:
    """Continuous coordinates of the supersamples of pixels lo..hi-1 along one axis.

    Shape:
        -> float32 ((hi - lo) * supersample,)
    """
    hi = size if hi is None else hi
    n = (hi - lo) * supersample
    return (lo + (np.arange(n, dtype=np.float32) + 0.5) / supersample).astype(np.float32)


PixelBox = tuple[int, int, int, int]  # y0, y1, x0, x1 in pixels (end exclusive)


def object_box(obj: SceneObject, image_size: int) -> PixelBox:
    """Pixels that the object's circumscribed disk can touch, clipped to the image."""
    ext = get_shape(obj.shape).extent * obj.radius
    cx, cy = obj.center
    x0, x1 = max(0, int(np.floor(cx - ext))), min(image_size, int(np.ceil(cx + ext)))
    y0, y1 = max(0, int(np.floor(cy - ext))), min(image_size, int(np.ceil(cy + ext)))
    return y0, max(y0, y1), x0, max(x0, x1)


def rasterize(
    objects: list[SceneObject] | tuple[SceneObject, ...], image_size: int, supersample: int
) -> tuple[np.ndarray, list[int]]:
    """Instance label map on the supersampled grid, and each object's unoccluded pixel count.

    Shape:
        -> labels uint8 (H * s, W * s) with 0 = background and k = objects[k - 1];
           counts: pixel centres inside each object's own shape, ignoring occlusion.
    """
    if len(objects) > 254:
        raise ValueError(f"{len(objects)} objects do not fit a uint8 instance map; use <= 254.")
    s = supersample
    labels = np.zeros((image_size * s, image_size * s), dtype=np.uint8)
    counts = []
    for k, obj in enumerate(objects, start=1):
        spec = get_shape(obj.shape)
        cx, cy = obj.center
        y0, y1, x0, x1 = object_box(obj, image_size)
        if x0 >= x1 or y0 >= y1:
            counts.append(0)
            continue
        dx = (sample_centres(image_size, s, x0, x1) - cx)[None, :]
        dy = (sample_centres(image_size, s, y0, y1) - cy)[:, None]
        cos, sin = np.cos(obj.rotation), np.sin(obj.rotation)
        # Rotate the sample points by -rotation into the shape's own frame (y is down).
        u = (cos * dx - sin * dy) / obj.radius
        v = (sin * dx + cos * dy) / obj.radius
        inside = spec.inside(u, v)
        labels[y0 * s : y1 * s, x0 * s : x1 * s][inside] = k
        counts.append(int(inside[s // 2 :: s, s // 2 :: s].sum()))
    return labels, counts


def composite(
    background: np.ndarray,
    objects: list[SceneObject] | tuple[SceneObject, ...],
    colors: np.ndarray,
    labels: np.ndarray,
    supersample: int,
) -> np.ndarray:
    """Mix background and object colours by each object's coverage of every pixel.

    Coverage of object k = fraction of the pixel's samples labelled k (occlusion resolved), so
    coverages are disjoint and the mix is exact for flat colours.

    Shape:
        background float32 (H, W, 3), colors (N, 3), labels uint8 (H * s, W * s) -> float32 (H, W, 3)
    """
    s = supersample
    size = background.shape[0]
    image = background.copy()
    for k, obj in enumerate(objects, start=1):
        y0, y1, x0, x1 = object_box(obj, size)
        region = labels[y0 * s : y1 * s, x0 * s : x1 * s] == k
        hits = region.reshape(y1 - y0, s, x1 - x0, s).sum(axis=(1, 3), dtype=np.uint16)
        coverage = hits.astype(np.float32) * (1.0 / (s * s))
        bg = background[y0:y1, x0:x1]
        image[y0:y1, x0:x1] += coverage[..., None] * (colors[k - 1].astype(np.float32) - bg)
    return image


def centre_samples(labels: np.ndarray, supersample: int) -> np.ndarray:
    """The label under each pixel's centre sample.

    Shape:
        labels (H * s, W * s) -> (H, W)
    """
    c = supersample // 2
    return np.ascontiguousarray(labels[c::supersample, c::supersample])


def _background_colors(
    rng: np.random.Generator, domain: Domain, object_rgbs: np.ndarray, tries: int = 30
) -> tuple[np.ndarray, np.ndarray]:
    """Two muted colours far from every object colour (the first of `tries` candidates that is)."""
    first = muted_colors(rng, domain.background_value, tries)
    offset = rng.choice([-1.0, 1.0], size=(tries, 1)) * rng.uniform(35.0, 60.0, size=(tries, 1))
    second = np.clip(first + offset, 0.0, 255.0).astype(np.float32)
    gaps = np.minimum(
        np.linalg.norm(first[:, None] - object_rgbs[None], axis=-1).min(axis=1),
        np.linalg.norm(second[:, None] - object_rgbs[None], axis=-1).min(axis=1),
    )
    ok = np.flatnonzero(gaps >= MIN_CONTRAST)
    pick = int(ok[0]) if len(ok) else int(np.argmax(gaps))
    return first[pick], second[pick]


def _layout(rng: np.random.Generator, config: SceneConfig) -> tuple[list[SceneObject], np.ndarray]:
    """Objects with visible pixel counts, and the supersampled label map, for a valid layout."""
    n = int(rng.integers(config.min_objects, config.max_objects + 1))
    while True:
        appearance = sample_appearance(rng, config, n)
        for _ in range(LAYOUT_TRIES):
            objects = propose_layout(rng, config, appearance)
            if objects is None:
                break
            labels, counts = rasterize(objects, config.image_size, config.supersample)
            visible = np.bincount(
                centre_samples(labels, config.supersample).ravel(), minlength=n + 1
            )[1:]
            need = [max(1, int(np.ceil(config.min_visible_fraction * c))) for c in counts]
            if all(int(v) >= m for v, m in zip(visible, need, strict=True)):
                objects = [
                    replace(o, visible_pixels=int(v)) for o, v in zip(objects, visible, strict=True)
                ]
                return objects, labels
        if n == 1:
            raise ValueError(
                "could not place a single object; SceneConfig.size_range may be too small for "
                f"image_size={config.image_size} (an object must cover at least one pixel centre)."
            )
        n -= 1  # crowded: fewer objects rather than an endless search


def render_scene(
    seed: int, config: SceneConfig | None = None, domain: str | Domain = "source"
) -> Scene:
    """Render the scene of `seed`: same seed and config -> identical image, mask and caption.

    Layout, appearance and wording use separate random streams, so a seed gives the same objects
    and caption skeleton in every domain; only the looks (background, lighting, blur) change.
    """
    config = config or SceneConfig()
    dom = get_domain(domain)
    layout_seq, style_seq, caption_seq = np.random.SeedSequence(int(seed)).spawn(3)
    layout_rng = np.random.default_rng(layout_seq)
    style_rng = np.random.default_rng(style_seq)
    caption_rng = np.random.default_rng(caption_seq)

    objects, labels = _layout(layout_rng, config)
    colors = desaturate(np.array([o.rgb for o in objects], dtype=np.float32), dom.saturation)
    backgrounds = config.backgrounds or dom.backgrounds
    bg_name = backgrounds[int(style_rng.integers(len(backgrounds)))]
    color_a, color_b = _background_colors(style_rng, dom, colors)
    size = config.image_size
    background = render_background(bg_name, style_rng, size, color_a, color_b)
    background = desaturate(background, dom.saturation)
    image = composite(background, objects, colors, labels, config.supersample)
    image = apply_domain_effects(image, dom, style_rng)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    instances = centre_samples(labels, config.supersample)
    lut = np.array([0, *(o.class_id for o in objects)], dtype=np.uint8)
    prompt = build_caption(objects, bg_name, config.captions, caption_rng)
    return Scene(
        image=image,
        mask=lut[instances],
        instances=instances,
        objects=tuple(objects),
        prompt=prompt,
        background=bg_name,
        domain=dom.name,
        seed=int(seed),
    )
