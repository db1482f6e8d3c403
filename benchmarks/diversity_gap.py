"""Diversity gap: what the shipped shapes LDM draws per prompt recipe, against the real val scenes.

The paper's prompt augmentation helps because bare class-name prompts make Stable Diffusion draw
a narrow mode, and synonyms/hyponyms open up the variety the real validation set has. Before
asking whether augmentation can help in the shapes world, this measures the gap it would have to
close. Every image set - generated or real - goes through the same label-free estimators, so the
estimators' own bias cancels in the comparison:

- ``fg_fraction``: share of pixels far from the border colour (object size);
- ``radial``: distance of the foreground centroid from the image centre, in image sides (position);
- ``components``: connected foreground components of >= 4 pixels, capped at 3 (object count);
- ``color``: palette colour nearest to the largest component's median RGB (object colour).

Per recipe it prints the spread of each quantity (std; entropy in bits for the categorical ones)
and its distance to the real val scenes (1-Wasserstein for the continuous ones, total variation
for the categorical ones). Recipes:

- ``bare``: "a {shape}" - the paper's bare class-name prompt, at several guidance scales (does the
  LDM collapse to one typical drawing under guidance?);
- ``main``: the main job's prompts (colour named, 1-2 shapes, ``experiments/shapes_synth.yaml``);
- ``synonyms``: the same with shape synonyms ("disk" for circle), the augmentation that was tried.

    python benchmarks/diversity_gap.py                # 256 images per recipe, 10 DDIM steps

Rows are appended to benchmarks/results/diversity_gap.csv (with the git SHA).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from scipy import ndimage, stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ldm_quality import foreground  # noqa: E402

from synthmask.prompts import get_vocabulary  # noqa: E402
from synthmask.prompts.scene_config import ScenePromptConfig  # noqa: E402
from synthmask.world import SceneConfig, ShapesWorld  # noqa: E402
from synthmask.world.palette import PALETTE  # noqa: E402
from synthmask.world.shapes import DEFAULT_SHAPES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "synthmask" / "assets" / "shapes_ldm"
CSV = REPO / "benchmarks" / "results" / "diversity_gap.csv"
MAX_COMPONENTS = 3
MIN_COMPONENT_PIXELS = 4
COLOR_NAMES = tuple(PALETTE)
COLOR_RGB = np.array([PALETTE[c] for c in COLOR_NAMES], dtype=np.float32)


def image_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image size, position, count and colour estimates (see the module docstring).

    Shape:
        images: uint8 (N, H, W, 3) -> dict of (N,) arrays (float, float, int, int)
    """
    fg = foreground(images)
    n, h, w = fg.shape
    ys, xs = np.mgrid[0:h, 0:w]
    frac = fg.mean((1, 2))
    radial = np.zeros(n)
    comps = np.zeros(n, dtype=np.int64)
    color = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        if not fg[i].any():
            continue
        cy, cx = ys[fg[i]].mean(), xs[fg[i]].mean()
        radial[i] = np.hypot((cy - (h - 1) / 2) / h, (cx - (w - 1) / 2) / w)
        labels, k = ndimage.label(fg[i])
        sizes = np.bincount(labels.ravel())[1:]
        comps[i] = min(int((sizes >= MIN_COMPONENT_PIXELS).sum()), MAX_COMPONENTS)
        largest = labels == (np.argmax(sizes) + 1)
        rgb = np.median(images[i][largest].astype(np.float32), axis=0)
        color[i] = int(np.argmin(((COLOR_RGB - rgb) ** 2).sum(1)))
    return {"fg_fraction": frac, "radial": radial, "components": comps, "color": color}


def categorical(values: np.ndarray, n: int) -> np.ndarray:
    """Histogram as probabilities over 0..n-1 (values < 0, i.e. nothing drawn, are dropped)."""
    counts = np.bincount(values[values >= 0], minlength=n).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def compare(gen: dict[str, np.ndarray], real: dict[str, np.ndarray]) -> dict[str, float]:
    """Spread of each quantity in ``gen`` and its distance to ``real``."""
    row: dict[str, float] = {}
    for name in ("fg_fraction", "radial"):
        row[f"{name}_mean"] = float(gen[name].mean())
        row[f"{name}_std"] = float(gen[name].std())
        row[f"{name}_w1"] = float(stats.wasserstein_distance(gen[name], real[name]))
    for name, n in (("components", MAX_COMPONENTS + 1), ("color", len(COLOR_NAMES))):
        p, q = categorical(gen[name], n), categorical(real[name], n)
        row[f"{name}_entropy"] = entropy_bits(p)
        row[f"{name}_tv"] = float(0.5 * np.abs(p - q).sum())
    row["components_mean"] = float(gen["components"].mean())
    return row


def real_val_images(n: int, image_size: int) -> np.ndarray:
    """The main job's validation scenes (shapes_real.yaml's val split: plain, 1-2 objects)."""
    config = SceneConfig(
        image_size=image_size, min_objects=1, max_objects=2, backgrounds=("plain",)
    )
    world = ShapesWorld(n, config, domain="source", split="val", base_seed=0)
    return np.stack([world[i].image for i in range(n)])


def recipe_prompts(recipe: str, n: int) -> list[str]:
    """Prompt texts of a recipe (deterministic)."""
    if recipe == "bare":
        return [f"a {DEFAULT_SHAPES[i % len(DEFAULT_SHAPES)]}" for i in range(n)]
    config = ScenePromptConfig(
        scenes="shapes", min_subjects=1, max_subjects=2, synonyms=recipe == "synonyms"
    )
    return [p.text for p in config.prompts(get_vocabulary("shapes"), n, seed=0)]


def generate(pipe, texts: list[str], guidance: float, steps: int, size: int, batch: int = 32):
    """uint8 (N, size, size, 3) images, seed i for prompt i."""
    out = []
    for i in range(0, len(texts), batch):
        chunk = texts[i : i + batch]
        gens = [torch.Generator().manual_seed(10_000 + i + j) for j in range(len(chunk))]
        images = pipe(
            chunk,
            generator=gens,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=size,
            width=size,
            output_type="np",
        ).images
        out.append((np.clip(images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out)


def git_sha() -> str:
    try:
        return subprocess.check_output(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True
        ).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def append_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=256, help="images per recipe and real scenes")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps (the main job's)")
    parser.add_argument("--size", type=int, default=32, help="image side (the main job's)")
    parser.add_argument("--guidance", type=float, default=5.0, help="main/synonyms guidance")
    parser.add_argument(
        "--bare-guidance",
        type=float,
        nargs="+",
        default=[1.0, 3.0, 5.0, 7.5],
        help="guidance scales for the bare class-name prompts",
    )
    parser.add_argument("--pipeline", type=Path, default=PIPELINE)
    parser.add_argument("--csv", type=Path, default=CSV)
    args = parser.parse_args()
    torch.manual_seed(0)
    pipe = StableDiffusionPipeline.from_pretrained(
        args.pipeline, torch_dtype=torch.float32, safety_checker=None
    )
    pipe.set_progress_bar_config(disable=True)
    real = image_statistics(real_val_images(args.n, args.size))
    settings = [("real", None)] + [("bare", g) for g in args.bare_guidance]
    settings += [("main", args.guidance), ("synonyms", args.guidance)]
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M")
    rows = []
    for recipe, guidance in settings:
        if recipe == "real":
            gen = real
        else:
            images = generate(pipe, recipe_prompts(recipe, args.n), guidance, args.steps, args.size)
            gen = image_statistics(images)
        row = {
            "date": stamp,
            "recipe": recipe,
            "guidance": guidance if guidance else "",
            "n": args.n,
        }
        row.update({k: round(v, 4) for k, v in compare(gen, real).items()})
        row["git_sha"] = git_sha()
        rows.append(row)
        print(
            ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("date", "git_sha")),
            flush=True,
        )
    append_rows(args.csv, rows)


if __name__ == "__main__":
    main()
