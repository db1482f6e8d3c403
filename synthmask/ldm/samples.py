"""Sample grids of the shapes-world LDM during training (PNG on disk + any image logger)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from synthmask.diffusion.capture import CaptureConfig
from synthmask.diffusion.sampling import generate_with_attention
from synthmask.diffusion.tokens import class_token_positions
from synthmask.masks.heatmaps import class_heatmaps
from synthmask.prompt_types import ClassWord, Prompt
from synthmask.world.shapes import DEFAULT_SHAPES

DEFAULT_SAMPLE_PROMPTS: tuple[str, ...] = (
    "a red circle",
    "a blue square",
    "a green triangle",
    "a yellow star",
    "a white cross",
    "an orange ring",
    "a red star and a blue circle",
    "a green square and a pink triangle",
)


@torch.no_grad()
def sample_images(
    pipe: StableDiffusionPipeline,
    prompts: Sequence[str],
    seeds: Sequence[int],
    num_inference_steps: int = 25,
    guidance_scale: float = 3.0,
) -> np.ndarray:
    """Images for (prompt, seed) pairs; sample i uses its own generator seeded with seeds[i].

    Shape:
        -> uint8 (len(prompts), H, W, 3)
    """
    if len(prompts) != len(seeds):
        raise ValueError(
            f"{len(prompts)} prompts but {len(seeds)} seeds; give one seed per prompt."
        )
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    out = pipe(
        list(prompts),
        generator=generators,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        output_type="np",
    ).images
    return (np.clip(out, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def image_grid(images: np.ndarray, columns: int, scale: int = 2) -> Image.Image:
    """Tile images into a grid, upscaled by `scale` (nearest) for viewing.

    Shape:
        images uint8 (N, H, W, 3) -> PIL image (rows*H*scale, columns*W*scale)
    """
    n, h, w, _ = images.shape
    rows = -(-n // columns)
    canvas = np.zeros((rows * h, columns * w, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        canvas[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
    return Image.fromarray(canvas).resize((columns * w * scale, rows * h * scale), Image.NEAREST)


def prompt_with_shape_words(text: str, shapes: Sequence[str] = DEFAULT_SHAPES) -> Prompt:
    """Prompt whose class words are the canonical shape names found in ``text`` (ids 1..K)."""
    words = []
    for class_id, name in enumerate(shapes, start=1):
        for match in re.finditer(rf"\b{re.escape(name)}\b", text):
            words.append(ClassWord(name, class_id, match.start(), match.end()))
    if not words:
        raise ValueError(f"prompt {text!r} names none of the shapes {list(shapes)}; name one.")
    return Prompt(text=text, class_words=tuple(sorted(words, key=lambda w: w.start)))


def heat_overlay(images: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """Darkened image with the heatmap in red on top.

    Shape:
        images uint8 (N, H, W, 3), heat float (N, H, W) in [0, 1] -> uint8 (N, H, W, 3)
    """
    out = images.astype(np.float32) * 0.35
    out[..., 0] += 255.0 * 0.65 * heat
    out[..., 2] += 255.0 * 0.3 * (1.0 - heat)
    return np.clip(out, 0, 255).astype(np.uint8)


@torch.no_grad()
def log_sample_grid(
    pipe: StableDiffusionPipeline,
    prompts: Sequence[str],
    path: Path,
    loggers: Sequence[Any] = (),
    step: int | None = None,
    seeds_per_prompt: int = 4,
    num_inference_steps: int = 25,
    guidance_scale: float = 3.0,
) -> Image.Image:
    """Sample `seeds_per_prompt` images per prompt with the first class word's attention
    (attn2mask-style heatmap, all layers and steps) and save/log a grid: image rows alternate
    with heatmap rows.

    Loggers with a ``log_image(key, images, caption=...)`` method (Lightning's WandbLogger) get
    the grid under "samples/grid".
    """
    parsed = [prompt_with_shape_words(p) for p in prompts]
    all_prompts = [p for p in parsed for _ in range(seeds_per_prompt)]
    seeds = [s for _ in parsed for s in range(seeds_per_prompt)]
    modes = (pipe.unet.training, pipe.text_encoder.training)
    pipe.unet.eval()
    pipe.text_encoder.eval()
    out = generate_with_attention(
        pipe, all_prompts, seeds, CaptureConfig(), num_inference_steps, guidance_scale
    )
    pipe.unet.train(modes[0])
    pipe.text_encoder.train(modes[1])
    images = out.images.numpy()
    size = images.shape[1:3]
    positions = [[class_token_positions(pipe.tokenizer, p)[0]] for p in all_prompts]
    heat, _ = class_heatmaps(out.cross_attention, positions, len(DEFAULT_SHAPES) + 1, size)
    first = torch.tensor([pos[0][0] for pos in positions])
    word_heat = heat[torch.arange(len(all_prompts)), first].numpy()
    overlays = heat_overlay(images, word_heat)
    tiles = []
    for i in range(0, len(images), seeds_per_prompt):
        tiles += [images[i : i + seeds_per_prompt], overlays[i : i + seeds_per_prompt]]
    grid = image_grid(np.concatenate(tiles), columns=seeds_per_prompt * 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    caption = f"step {step}: " + " | ".join(prompts) + " (right of each image block: word heat)"
    for logger in loggers:
        if hasattr(logger, "log_image"):
            logger.log_image(key="samples/grid", images=[grid], caption=[caption])
    return grid
