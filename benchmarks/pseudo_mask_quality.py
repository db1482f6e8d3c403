"""Pseudo-mask quality of the synthesis engine on the shapes-world tiny LDM.

N single-object prompts "a {colour} {shape} on a plain background" (fixed seeds) are generated
ONCE with attention capture (cross-attention at every resolution, self-attention at the
latent side for self_refine); every mask method of the engine then derives pseudo-masks from
the same images and attention: attn2mask, threshold (DiffuMask, Otsu), self_refine (Dataset
Diffusion) and each + dense CRF, next to a fixed centred disk labelled with the prompted class.

Ground truth: the generated image's exact foreground (plain background: pixels far from the
border colour, `ldm_quality.foreground`), labelled with the prompted class. Images where the
model drew nothing usable (foreground < 1% or > 60% of the image) are left out and counted
("drawn").

Scores (one confusion matrix over all kept images, as for segmentation val mIoU):
- miou: mean IoU over background + the 6 shape classes (ignore pixels counted as background);
- fg_iou: foreground-vs-background IoU of the object pixels, class ignored;
- ignored: fraction of pixels the method labels 255; per-class IoU columns iou_<shape>.
CAVEAT: the shipped LDM was trained with a mask-supervised class-word localization loss, so
its attention is taught to sit on the object (a stand-in for what SD learns at scale).

    python benchmarks/pseudo_mask_quality.py --pipeline synthmask/assets/shapes_ldm --n 96
    python benchmarks/pseudo_mask_quality.py --pipeline DIR --steps 25 20 15 --tag step12000

One row per (run, sampling steps, method) is appended to --csv
(default benchmarks/results/pseudo_mask_quality.csv).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import torch

from synthmask.ldm import ldm_training_step
from synthmask.masks import IGNORE_INDEX, MaskConfig, pseudo_masks
from synthmask.models.metrics import per_class_iou
from synthmask.world.shapes import DEFAULT_SHAPES

# Generation helpers (diffusers, the classifier) are imported where used, so that importing
# this module for its scoring functions stays fast.
sys.path.insert(0, str(Path(__file__).resolve().parent))

NUM_CLASSES = len(DEFAULT_SHAPES) + 1  # background 0 + shapes 1..K


def mask_methods(self_side: int) -> dict[str, MaskConfig]:
    """The engine's mask methods with their replicated settings (self_refine at the latent side)."""
    base = {
        "attn2mask": MaskConfig("attn2mask", {"beta": 0.2}),
        "threshold": MaskConfig("threshold", {"threshold": "otsu"}),
        "self_refine": MaskConfig("self_refine", {"self_resolution": self_side}),
    }
    out = dict(base)
    for name, cfg in base.items():
        out[f"{name}+crf"] = MaskConfig(cfg.method, dict(cfg.params), crf=True)
    return out


def confusion(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix (rows = target, columns = prediction); prediction 255 counts as 0.

    Shape:
        pred, target int (B, H, W) -> int64 (C, C)
    """
    pred = np.where(pred == IGNORE_INDEX, 0, pred).astype(np.int64).ravel()
    target = target.astype(np.int64).ravel()
    return np.bincount(target * num_classes + pred, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def score_masks(pred: np.ndarray, target: np.ndarray, num_classes: int) -> dict[str, float]:
    """mIoU (background + classes present in target or prediction), foreground IoU, per-class
    IoU (NaN for a class absent from both) and the ignored fraction of `pred`.

    Shape:
        pred int (B, H, W) with 255 = ignore, target int (B, H, W) in 0..C-1 -> dict
    """
    per_class = per_class_iou(torch.as_tensor(confusion(pred, target, num_classes))).numpy()
    pred_fg = (pred != 0) & (pred != IGNORE_INDEX)
    target_fg = target != 0
    fg_union = np.logical_or(pred_fg, target_fg).sum()
    return {
        "miou": float(np.nanmean(per_class)),
        "fg_iou": float(np.logical_and(pred_fg, target_fg).sum() / fg_union) if fg_union else 0.0,
        "ignored": float((pred == IGNORE_INDEX).mean()),
        **{f"iou_{k}": float(v) for k, v in enumerate(per_class)},
    }


def named_scores(scores: dict[str, float]) -> dict[str, float]:
    """Rename iou_<k> to iou_background / iou_<shape>."""
    names = ["background", *DEFAULT_SHAPES]
    return {
        (f"iou_{names[int(k[4:])]}" if k[4:].isdigit() else k): round(v, 4)
        for k, v in scores.items()
    }


def single_object_prompts(n: int) -> tuple[list, list[int], np.ndarray]:
    from ldm_quality import COLORS, make_prompt

    objects = [
        [(COLORS[i % len(COLORS)], DEFAULT_SHAPES[i % len(DEFAULT_SHAPES)])] for i in range(n)
    ]
    prompts = [make_prompt(o) for o in objects]
    class_ids = np.array([p.class_words[0].class_id for p in prompts])
    return prompts, list(range(1000, 1000 + n)), class_ids


def evaluate(
    pipe, n: int, steps: int, guidance: float, batch: int = 16
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Generate once, score every method on the same images: ({method: scores}, run info)."""
    from ldm_quality import centred_disk, foreground

    from synthmask.diffusion.capture import CaptureConfig
    from synthmask.diffusion.sampling import generate_with_attention
    from synthmask.diffusion.tokens import class_token_positions

    prompts, seeds, class_ids = single_object_prompts(n)
    self_side = pipe.unet.config.sample_size
    capture = CaptureConfig(self_attention=True, self_resolutions=(self_side,))
    methods = mask_methods(self_side)
    preds: dict[str, list[np.ndarray]] = {name: [] for name in methods}
    images, gen_seconds, mask_seconds = [], 0.0, {name: 0.0 for name in methods}
    for i in range(0, n, batch):
        start = time.perf_counter()
        out = generate_with_attention(
            pipe, prompts[i : i + batch], seeds[i : i + batch], capture, steps, guidance
        )
        gen_seconds += time.perf_counter() - start
        positions = [class_token_positions(pipe.tokenizer, p) for p in prompts[i : i + batch]]
        size = tuple(out.images.shape[1:3])
        for name, cfg in methods.items():
            start = time.perf_counter()
            pseudo, _, _ = pseudo_masks(
                out.cross_attention,
                out.self_attention,
                positions,
                NUM_CLASSES,
                size,
                cfg,
                image=out.images,
            )
            mask_seconds[name] += time.perf_counter() - start
            preds[name].append(pseudo.label.numpy())
        images.append(out.images.numpy())
    images_np = np.concatenate(images)
    fg = foreground(images_np)
    share = fg.mean((1, 2))
    keep = (share > 0.01) & (share < 0.6)  # one object drawn, not noise
    target = fg[keep] * class_ids[keep, None, None]
    disk = centred_disk(images_np.shape[1])[None] * class_ids[keep, None, None]
    results = {"disk": {**score_masks(disk, target, NUM_CLASSES), "mask_seconds": 0.0}}
    for name in methods:
        results[name] = score_masks(np.concatenate(preds[name])[keep], target, NUM_CLASSES)
        results[name]["mask_seconds"] = mask_seconds[name]
    info = {"n": n, "drawn": float(keep.mean()), "gen_seconds": round(gen_seconds, 1)}
    return results, info


def model_step(pipeline: Path) -> str:
    """Training step named in the pipeline's MODEL_CARD.md ("9,334 optimizer steps"), or ""."""
    step = ldm_training_step(pipeline)
    return "" if step is None else str(step)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pipeline", type=Path, default=Path("synthmask/assets/shapes_ldm"))
    parser.add_argument("--n", type=int, default=96)
    parser.add_argument("--steps", type=int, nargs="+", default=[25])
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--csv", type=Path, default=Path(__file__).parent / "results" / "pseudo_mask_quality.csv"
    )
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from diffusers import StableDiffusionPipeline
    from ldm_quality import append_row

    pipe = StableDiffusionPipeline.from_pretrained(str(args.pipeline), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    for steps in args.steps:
        results, info = evaluate(pipe, args.n, steps, args.guidance)
        print(f"--- {args.pipeline} steps={steps} {info}")
        for method, scores in results.items():
            row = {
                "time": stamp,
                "tag": args.tag,
                "model_step": model_step(args.pipeline),
                "steps": steps,
                "guidance": args.guidance,
                **info,
                "method": method,
                **named_scores(scores),
                "pipeline": str(args.pipeline),
            }
            append_row(args.csv, row)
            print(
                f"{method:18s} mIoU {scores['miou']:.3f}  fg IoU {scores['fg_iou']:.3f}  "
                f"ignored {scores['ignored']:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
