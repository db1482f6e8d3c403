"""Shapes world: determinism, exact masks, occlusion, captions, domain shift, data modules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synthmask.prompt_types import Prompt
from synthmask.world import (
    SHAPES,
    CaptionConfig,
    SceneConfig,
    SceneObject,
    ShapesWorld,
    rasterize,
    render_scene,
    scene_seed,
)
from synthmask.world.render import centre_samples, composite
from synthmask.world.shapes import radial_polygon_inside

SIZE = 64


def _obj(shape: str, center, radius, rotation=0.0, class_id=1) -> SceneObject:
    return SceneObject(shape, class_id, center, radius, rotation, "red", (215.0, 40.0, 40.0))


def _pixel_centres(size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    c = np.arange(size) + 0.5
    return c[None, :], c[:, None]  # x (1, S), y (S, 1)


def _analytic_inside(obj: SceneObject, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Inside-test at points (x, y) in float64 (the renderer works in float32)."""
    dx, dy = x - obj.center[0], y - obj.center[1]
    # With y down, undoing a counter-clockwise on-screen rotation by t: u = c dx - s dy, v = s dx + c dy.
    c, s = math.cos(obj.rotation), math.sin(obj.rotation)
    u, v = (c * dx - s * dy) / obj.radius, (s * dx + c * dy) / obj.radius
    return SHAPES[obj.shape].inside(u, v)


def _ray_cast_inside(px: np.ndarray, py: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
    """Even-odd rule point-in-polygon, the textbook way (reference for the sector test)."""
    inside = np.zeros(px.shape, dtype=bool)
    n = len(vx)
    for i in range(n):
        j = (i - 1) % n
        crosses = (vy[i] > py) != (vy[j] > py)
        x_at = (vx[j] - vx[i]) * (py - vy[i]) / (vy[j] - vy[i] + 1e-300) + vx[i]
        inside ^= crosses & (px < x_at)
    return inside


# ---- determinism -------------------------------------------------------------------------------
def test_same_seed_same_scene_and_different_seeds_differ() -> None:
    a, b, c = render_scene(7), render_scene(7), render_scene(8)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert a.prompt == b.prompt and a.objects == b.objects
    assert not np.array_equal(a.image, c.image)
    assert a.image.dtype == np.uint8 and a.image.shape == (SIZE, SIZE, 3)
    assert a.mask.dtype == np.uint8 and a.mask.shape == (SIZE, SIZE)


def test_split_seeds_are_fixed_and_disjoint() -> None:
    seeds = {s: [scene_seed(0, s, i) for i in range(500)] for s in ("train", "val", "test")}
    assert seeds["train"][:3] == [scene_seed(0, "train", i) for i in range(3)]
    all_seeds = seeds["train"] + seeds["val"] + seeds["test"]
    assert len(set(all_seeds)) == 1500
    assert scene_seed(1, "train", 0) != scene_seed(0, "train", 0)
    world = ShapesWorld(4, split="val", base_seed=3)
    assert np.array_equal(world[2].image, render_scene(scene_seed(3, "val", 2)).image)


def test_domains_share_layout_for_a_seed() -> None:
    src, tgt = render_scene(11, domain="source"), render_scene(11, domain="target")
    assert np.array_equal(src.mask, tgt.mask)
    assert [o.shape for o in src.objects] == [o.shape for o in tgt.objects]
    assert not np.array_equal(src.image, tgt.image)


# ---- exact masks and anti-aliasing --------------------------------------------------------------
def test_circle_mask_is_the_analytic_disk_at_pixel_centres() -> None:
    circle = _obj("circle", (31.3, 30.7), 12.4)
    labels, counts = rasterize([circle], SIZE, 3)
    x, y = _pixel_centres()
    expected = (x - 31.3) ** 2 + (y - 30.7) ** 2 <= 12.4**2
    assert np.array_equal(centre_samples(labels, 3) == 1, expected)
    assert counts == [int(expected.sum())]
    # The disk's area is pi r^2 = 483.1 px; the pixel count matches within the boundary's pixels.
    assert abs(expected.sum() - math.pi * 12.4**2) < 2 * math.pi * 12.4 * 0.5


def test_rotated_square_mask_and_antialiased_colours() -> None:
    square = _obj("square", (20.2, 40.9), 10.0, rotation=0.3)
    labels, _ = rasterize([square], SIZE, 5)
    x, y = _pixel_centres()
    c, s = math.cos(0.3), math.sin(0.3)
    dx, dy = x - 20.2, y - 40.9
    # Undo a counter-clockwise on-screen rotation (y points down): u = c dx - s dy, v = s dx + c dy.
    u, v = c * dx - s * dy, s * dx + c * dy
    expected = (np.abs(u) <= 8.5) & (np.abs(v) <= 8.5)  # half side 0.85 * radius
    assert np.array_equal(centre_samples(labels, 5) == 1, expected)

    background = np.full((SIZE, SIZE, 3), 100.0, dtype=np.float32)
    color = np.array([[215.0, 40.0, 40.0]], dtype=np.float32)
    image = composite(background, [square], color, labels, 5)
    coverage = (labels == 1).reshape(SIZE, 5, SIZE, 5).mean(axis=(1, 3))
    full, empty, edge = coverage == 1.0, coverage == 0.0, (coverage > 0) & (coverage < 1)
    assert np.array_equal(image[full], np.broadcast_to(color, (int(full.sum()), 3)))
    assert np.all(image[empty] == 100.0)
    # Edge pixels are the coverage-weighted mix: red channel = 100 + coverage * 115.
    np.testing.assert_allclose(image[edge][:, 0], 100.0 + coverage[edge] * 115.0, rtol=1e-5)
    assert edge.sum() > 20  # the boundary really is anti-aliased


def test_rotation_is_counter_clockwise_on_screen() -> None:
    # An upright triangle's apex points up (small y); turned a quarter counter-clockwise on
    # screen it points left (small x).
    for rotation, axis, apex_side in (
        (0.0, 0, "low"),
        (math.pi / 2, 1, "low"),
        (-math.pi / 2, 1, "high"),
    ):
        labels, _ = rasterize([_obj("triangle", (32.0, 32.0), 16.0, rotation)], SIZE, 1)
        rows_or_cols = np.flatnonzero((labels == 1).any(axis=1 - axis))
        far_low, far_high = 32.0 - rows_or_cols.min(), rows_or_cols.max() + 1 - 32.0
        assert (far_low > far_high + 5) == (apex_side == "low"), rotation


@pytest.mark.parametrize("points,outer,inner", [(5, 1.2, 0.55), (3, 1.3, 1.3), (6, 1.05, 1.05)])
def test_radial_polygon_test_matches_ray_casting(points: int, outer: float, inner: float) -> None:
    radii = np.tile([outer, inner], points) if inner != outer else np.full(points, outer)
    phase = -math.pi / 2
    angles = phase + 2 * math.pi * np.arange(len(radii)) / len(radii)
    vx, vy = radii * np.cos(angles), radii * np.sin(angles)
    g = np.linspace(-1.5, 1.5, 301)
    px, py = np.meshgrid(g + 1e-4, g + 2e-4)  # off the vertices' exact coordinates
    assert np.array_equal(
        radial_polygon_inside(px, py, radii, phase), _ray_cast_inside(px, py, vx, vy)
    )


def test_rendered_single_objects_match_their_analytic_shapes() -> None:
    config = SceneConfig(min_objects=1, max_objects=1, shapes=tuple(SHAPES))
    x, y = _pixel_centres()
    for seed in range(40):
        scene = render_scene(seed, config)
        (obj,) = scene.objects
        expected = _analytic_inside(obj, x, y)
        assert np.array_equal(scene.mask == obj.class_id, expected), (seed, obj.shape)
        assert np.array_equal(scene.mask > 0, expected)
        assert obj.visible_pixels == int(expected.sum())
        # Interior pixels (3x3 neighbourhood inside) show the object's own colour exactly.
        interior = expected.copy()
        for sy in (-1, 1):
            for sx in (-1, 1):
                interior &= np.roll(np.roll(expected, sy, 0), sx, 1)
        rgb = np.rint(np.array(obj.rgb))
        assert np.abs(scene.image[interior].astype(float) - rgb).max() <= 1.0


def test_occlusion_top_object_wins() -> None:
    bottom = _obj("square", (30.0, 30.0), 12.0, class_id=2)
    top = _obj("circle", (38.0, 34.0), 9.0, class_id=1)
    labels, counts = rasterize([bottom, top], SIZE, 3)
    instances = centre_samples(labels, 3)
    x, y = _pixel_centres()
    in_bottom, in_top = _analytic_inside(bottom, x, y), _analytic_inside(top, x, y)
    assert (in_bottom & in_top).sum() > 50  # they overlap
    assert np.all(instances[in_top] == 2)
    assert np.array_equal(instances == 1, in_bottom & ~in_top)
    assert counts == [int(in_bottom.sum()), int(in_top.sum())]


def test_occluded_scenes_keep_every_object_visible_and_separate_scenes_do_not_touch() -> None:
    occluding = SceneConfig(min_objects=3, max_objects=3, min_visible_fraction=0.6)
    x, y = _pixel_centres()
    for seed in range(30):
        scene = render_scene(seed, occluding)
        for k, obj in enumerate(scene.objects, start=1):
            own = _analytic_inside(obj, x, y)
            assert np.array_equal(
                scene.instances == k,
                own
                & ~np.any(
                    [_analytic_inside(o, x, y) for o in scene.objects[k:]] or [np.zeros_like(own)],
                    axis=0,
                ),
            )
            assert obj.visible_pixels >= 0.6 * own.sum()
    apart = SceneConfig(min_objects=2, max_objects=2, size_range=(0.2, 0.35), allow_occlusion=False)
    for seed in range(30):
        shapes = [_analytic_inside(o, x, y) for o in render_scene(seed, apart).objects]
        assert not np.any(np.sum(shapes, axis=0) > 1)


# ---- captions ------------------------------------------------------------------------------------
def test_caption_class_words_map_to_classes_in_the_mask() -> None:
    captions = CaptionConfig(synonym_prob=0.5, size_prob=0.5, position_prob=0.5, prefix_prob=0.3)
    config = SceneConfig(max_objects=3, captions=captions)
    synonyms_seen = set()
    for domain in ("source", "target"):
        for seed in range(150):
            scene = render_scene(seed, config, domain)
            prompt = scene.prompt
            assert isinstance(prompt, Prompt)
            assert len(prompt.class_words) == len(scene.objects)
            present = set(np.unique(scene.mask)) - {0}
            assert {cw.class_id for cw in prompt.class_words} == present
            for cw in prompt.class_words:
                assert prompt.text[cw.start : cw.end] == cw.word
                assert cw.word in SHAPES[config.shapes[cw.class_id - 1]].synonyms
                synonyms_seen.add(cw.word)
            assert Prompt.from_json(prompt.to_json()) == prompt
    assert len(synonyms_seen) > 12  # synonyms really vary


def test_caption_format_with_every_part_on() -> None:
    every = CaptionConfig(size_prob=1, position_prob=1, background_prob=1, shuffle_order=False)
    scene = render_scene(3, SceneConfig(min_objects=2, max_objects=2, captions=every))
    a, b = scene.objects
    from synthmask.world.backgrounds import get_background
    from synthmask.world.captions import article, position_phrase

    def phrase(o: SceneObject) -> str:
        head = f"{o.size_name} {o.color_name} {o.shape}"
        return f"{article(head)} {head} {position_phrase(o.position_name)}"

    bg_word = get_background(scene.background).words[0]
    assert scene.prompt.text == f"{phrase(a)} and {phrase(b)} on a {bg_word} background"
    plain = render_scene(
        3, SceneConfig(captions=CaptionConfig(size_prob=0, position_prob=0, background_prob=0))
    )
    assert all(
        t in ("a", "an", "and")
        or t in SHAPES
        or t in ("red", "green", "blue", "yellow", "orange", "purple", "cyan", "pink", "white")
        for t in plain.prompt.text.split()
    )


# ---- domain shift --------------------------------------------------------------------------------
def _saturation_and_sharpness(domain: str) -> tuple[float, float]:
    sats, sharp = [], []
    for seed in range(60):
        scene = render_scene(seed, domain=domain)
        img = scene.image.astype(np.float32)
        chroma = img.max(-1) - img.min(-1)
        sats.append(float(chroma[scene.mask > 0].mean()))  # object colours
        steps = np.abs(np.diff(img, axis=1)).max(axis=-1)
        sharp.append(float((steps > 60).mean()))  # strong one-pixel edges
    return float(np.mean(sats)), float(np.mean(sharp))


def test_target_domain_is_visibly_shifted() -> None:
    src_sat, src_sharp = _saturation_and_sharpness("source")
    tgt_sat, tgt_sharp = _saturation_and_sharpness("target")
    # Measured on seeds 0..59: object chroma 135 (source) vs 80 (target, washed-out palette);
    # strong-edge fraction 0.023 (source) vs 0.003 (target, blurred:
    # its sensor noise, std 6, almost never makes a step above 60).
    assert tgt_sat < 0.75 * src_sat
    assert tgt_sharp < 0.3 * src_sharp
    src_bgs = {render_scene(s).background for s in range(40)}
    tgt_bgs = {render_scene(s, domain="target").background for s in range(40)}
    assert src_bgs.isdisjoint(tgt_bgs) and len(src_bgs) >= 4 and len(tgt_bgs) >= 3


# ---- config errors ---------------------------------------------------------------------------------
def test_config_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="odd"):
        SceneConfig(supersample=4)
    with pytest.raises(KeyError, match="did you mean circle"):
        SceneConfig(shapes=("circel", "square"))
    with pytest.raises(ValueError, match="distinct_classes"):
        SceneConfig(max_objects=7)
    with pytest.raises(KeyError, match="valid domains"):
        render_scene(0, domain="tgt")
    with pytest.raises(ValueError, match="size_range may be too small"):
        render_scene(0, SceneConfig(image_size=8, size_range=(0.005, 0.005), max_objects=1))


# ---- data sets and data modules ---------------------------------------------------------------------
def test_segmentation_datamodule_batches() -> None:
    from synthmask.datamodules.shapes_world import ShapesWorldDataModule

    dm = ShapesWorldDataModule(
        image_size=32, n_train=8, n_val=6, n_test=5, batch_size=4, hflip=True
    )
    assert dm.num_classes == 7
    assert dm.class_names == ["background", "circle", "square", "triangle", "star", "cross", "ring"]
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (4, 32, 32) and batch["mask"].dtype == torch.int64
    assert int(batch["mask"].max()) < 7 and int(batch["mask"].min()) == 0
    assert (
        -2.2 < float(batch["image"].min()) and float(batch["image"].max()) < 2.7
    )  # ImageNet-normalized
    val_a = [b["mask"] for b in dm.val_dataloader()]
    val_b = [b["mask"] for b in dm.val_dataloader()]
    assert [len(m) for m in val_a] == [4, 2]
    assert all(torch.equal(a, b) for a, b in zip(val_a, val_b, strict=True))
    expected = render_scene(scene_seed(0, "val", 0), SceneConfig(image_size=32)).mask
    assert np.array_equal(val_a[0][0].numpy(), expected)
    test_names = next(iter(dm.test_dataloader()))["name"]
    assert test_names[:2] == ["test_000000", "test_000001"]


def test_caption_datamodule_batches() -> None:
    from synthmask.datamodules.shapes_captions import ShapesCaptionDataModule

    dm = ShapesCaptionDataModule(
        image_size=32, min_objects=1, max_objects=1, n_train=6, n_val=3, batch_size=3
    )
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (3, 3, 32, 32)
    assert -1.0 <= float(batch["image"].min()) and float(batch["image"].max()) <= 1.0
    assert len(batch["caption"]) == 3 and all(isinstance(c, str) for c in batch["caption"])
    for caption, prompt, mask in zip(batch["caption"], batch["prompt"], batch["mask"], strict=True):
        assert prompt.text == caption
        assert {cw.class_id for cw in prompt.class_words} == set(mask.unique().tolist()) - {0}
