"""The embedded "shapes world": procedural scenes with exact masks and captions.

Quick use::

    from synthmask.world import SceneConfig, render_scene
    scene = render_scene(seed=0, config=SceneConfig(image_size=64), domain="source")
    scene.image, scene.mask, scene.prompt.text
"""

from synthmask.world.backgrounds import BACKGROUNDS, SOURCE_BACKGROUNDS, TARGET_BACKGROUNDS
from synthmask.world.captions import build_caption
from synthmask.world.config import CaptionConfig, SceneConfig
from synthmask.world.datasets import (
    ShapesCaptionDataset,
    ShapesSegmentationDataset,
    ShapesWorld,
    collate_captions,
)
from synthmask.world.domains import DOMAINS, Domain, get_domain
from synthmask.world.layout import SceneObject
from synthmask.world.palette import PALETTE
from synthmask.world.render import Scene, rasterize, render_scene
from synthmask.world.seeds import scene_seed
from synthmask.world.shapes import DEFAULT_SHAPES, SHAPES, class_names

__all__ = [
    "BACKGROUNDS",
    "DEFAULT_SHAPES",
    "DOMAINS",
    "PALETTE",
    "SHAPES",
    "SOURCE_BACKGROUNDS",
    "TARGET_BACKGROUNDS",
    "CaptionConfig",
    "Domain",
    "Scene",
    "SceneConfig",
    "SceneObject",
    "ShapesCaptionDataset",
    "ShapesSegmentationDataset",
    "ShapesWorld",
    "build_caption",
    "class_names",
    "collate_captions",
    "get_domain",
    "rasterize",
    "render_scene",
    "scene_seed",
]
