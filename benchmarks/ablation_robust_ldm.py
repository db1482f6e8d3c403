"""Part (b) of the robust-training ablation: pseudo-masks from the shipped shapes-world LDM.

The training set is synthesized once through the real synthesis engine
(``SyntheticSegDataModule.synthesize`` -> ``synthmask.synthesis`` -> content-addressed cache),
with the synthesis settings experiments/shapes_synth.yaml had at commit 2c5674c (shapes
vocabulary, "shapes" scene prompts with 1-2 subjects and colours p = 0.5, attn2mask beta 0.2,
reliability = top 50% margin per class and image, 25 DDIM steps, guidance 3, plan seed 0), so
the pseudo-masks, margins and reliability maps are the engine's own. ``--ldm-mask self_refine``
makes the same images' masks with Dataset Diffusion's self-attention refinement instead.
The segmenter of part (a) trains on them and is evaluated on REAL rendered scenes with exact
masks: the val split of shapes_synth.yaml (source domain, plain backgrounds, 1-2 objects, 32 px,
6 shapes, base seed 0). Reference: plain CE on the exact masks of as many real training scenes.
Control ``ignore_random``: ``ignore`` with a random half of the pixels marked reliable.

Called from ``ablation_robust.py --part ldm`` (and ``--report``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from synthmask.cache import SampleRecord
from synthmask.ldm import ldm_training_step
from synthmask.world.config import DEFAULT_SHAPES

HERE = Path(__file__).resolve().parent
IMAGENET_MEAN = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
LDM_MODEL = "synthmask:shapes-ldm"
# The synthesized set's cache, inside the repository's ignored runs/ folder.
DEFAULT_CACHE = str(HERE.parent / "runs" / "ablation_cache")
CLASSIFIER = str(HERE / "assets" / "shape_classifier")  # the shipped shape_classifier.py weights
# Priority order: configurations are run in this order, 3 seeds each (drop from the end).
LDM_CONFIGS = (
    ("real", "ce", 0),
    ("pseudo", "ce", 0),
    ("pseudo", "ignore", 0),
    ("pseudo", "weight", 0),
    ("pseudo", "beco_offline", 0),
    ("pseudo", "ce", 1),
    ("pseudo", "ignore", 1),
    ("pseudo", "weight", 1),
    ("pseudo", "beco_offline", 1),
    ("pseudo", "ignore_random", 0),  # control: is it *which* pixels `ignore` drops?
)
METHOD_ORDER = ("ce", "ignore", "ignore_random", "weight", "beco", "beco_offline")


def records_to_tensors(records: list[SampleRecord]) -> dict[str, torch.Tensor]:
    """Cached synthetic samples -> training tensors of the batch contract.

    Shape:
        records[i]: image uint8 (H, W, 3), mask uint8 (H, W) (255 = ignore), reliability uint8
        (H, W) (255 = reliable), margin float16 (H, W)
        -> image float32 (N, 3, H, W) ImageNet-normalised, mask int64 (N, H, W),
        reliability float32 (N, H, W) in {0, 1}, margin float32 (N, H, W)
    """
    if not records:
        raise ValueError("no cached samples to convert; synthesize the training set first.")
    images = torch.from_numpy(np.stack([r.image for r in records])).permute(0, 3, 1, 2)
    images = (images.float() / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return {
        "image": images,
        "mask": torch.from_numpy(np.stack([r.mask for r in records]).astype(np.int64)),
        "reliability": torch.from_numpy(np.stack([r.reliability for r in records]) >= 128).float(),
        "margin": torch.from_numpy(np.stack([r.margin for r in records]).astype(np.float32)),
    }


def pseudo_mask_quality(
    mask: torch.Tensor, reliability: torch.Tensor, foreground: torch.Tensor
) -> dict[str, float]:
    """How well the pseudo-masks' object/background split matches the generated objects.

    ``foreground`` = pixels far from the plain background colour (``ldm_quality.foreground``);
    the class of a generated object is unknown, so only object vs background is scored.

    Shape:
        mask int64 (N, H, W) (255 = ignore), reliability float (N, H, W), foreground bool
        (N, H, W) -> dict of floats
    """
    valid = mask != 255
    pseudo_fg = (mask > 0) & valid
    wrong = (pseudo_fg != foreground) & valid
    reliable = (reliability >= 0.5) & valid
    unreliable = ~reliable & valid
    inter = (pseudo_fg & foreground).flatten(1).sum(1).float()
    union = (pseudo_fg | foreground).flatten(1).sum(1).float()
    per_image = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))

    def share(x: torch.Tensor, of: torch.Tensor) -> float:
        return float(x.sum() / of.sum().clamp(min=1))

    return {
        "fg_iou_mean": float(per_image.mean()),
        "wrong_fg_bg_pixels": share(wrong, valid),
        "wrong_in_reliable": share(wrong & reliable, reliable),
        "wrong_in_unreliable": share(wrong & unreliable, unreliable),
        "reliable_fraction": share(reliable, valid),
        "pseudo_fg_fraction": share(pseudo_fg, valid),
        "generated_fg_fraction": float(foreground.float().mean()),
    }


def real_scenes(n: int, split: str, size: int = 32) -> dict[str, torch.Tensor]:
    """Real rendered scenes of shapes_synth.yaml's val data (source, plain, 1-2 objects)."""
    from synthmask.world import SceneConfig, ShapesWorld

    config = SceneConfig(image_size=size, min_objects=1, max_objects=2, backgrounds=("plain",))
    world = ShapesWorld(n, config, "source", split, base_seed=0)
    scenes = [world[i] for i in range(n)]
    images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1) for s in scenes]) / 255.0
    masks = torch.stack([torch.from_numpy(s.mask.astype("int64")) for s in scenes])
    return {
        "image": ((images - IMAGENET_MEAN) / IMAGENET_STD).float(),
        "mask": masks,
        "reliability": torch.ones(masks.shape),
    }


def ldm_datamodule(
    num_images: int, cache_dir: str, steps: int, guidance: float, mask: str = "attn2mask"
):
    """The synthetic data module of experiments/shapes_synth.yaml (training part only);
    ``mask="self_refine"``: Dataset Diffusion's self-attention refinement at latent side 16."""
    from synthmask.datamodules.settings import AugmentConfig, SynthesisConfig
    from synthmask.datamodules.synthetic import SyntheticSegDataModule
    from synthmask.diffusion.capture import CaptureConfig
    from synthmask.diffusion.pipeline import PipelineConfig
    from synthmask.masks import MaskConfig
    from synthmask.prompts.scene_config import ScenePromptConfig

    return SyntheticSegDataModule(
        pipeline=PipelineConfig(
            model=LDM_MODEL,
            dtype="float32",
            device="cpu",
            scheduler="ddim",
            num_inference_steps=steps,
            guidance_scale=guidance,
        ),
        vocabulary="shapes",
        # the wording of the recorded runs (the library's shapes default is now prefix "" and
        # colour always, which the shipped LDM draws more faithfully)
        prompts=ScenePromptConfig(
            scenes="shapes", min_subjects=1, max_subjects=2, color_prob=0.5, prefix="a picture of "
        ),
        mask=MaskConfig(
            method=mask,
            params={"beta": 0.2} if mask == "attn2mask" else {"self_resolution": 16},
            reliability_fraction=0.5,
        ),
        capture=CaptureConfig()  # the cache keys of shapes_synth.yaml's attn2mask samples
        if mask == "attn2mask"
        else CaptureConfig(self_attention=True, self_resolutions=(16,)),
        synthesis=SynthesisConfig(
            num_images=num_images,
            batch_size=32,
            cache_dir=cache_dir,
            mode="ahead",
            seed=0,
            progress=False,
        ),
        wandb_log=False,
        augment=AugmentConfig(crop_size=32, scale_range=(1.0, 1.0)),
    )


def synthesize_training_set(args: argparse.Namespace) -> tuple[dict, dict]:
    """Fill (or read) the cache; returns training tensors and the synthesis record."""
    from synthmask.cache import SampleCache
    from synthmask.world.shapes import class_names as world_class_names

    dm = ldm_datamodule(
        args.ldm_images, args.ldm_cache, args.ldm_steps, args.ldm_guidance, args.ldm_mask
    )
    if dm.class_names != world_class_names(DEFAULT_SHAPES):
        raise ValueError(f"label spaces differ: {dm.class_names} vs the shapes world's")
    report = dm.synthesize(log_to_wandb=False)
    cache = SampleCache(args.ldm_cache, create=False)
    records = [cache.get(spec.key) for spec in dm.plan()]
    if any(r is None for r in records):
        raise RuntimeError("some planned samples are missing from the cache after synthesis")
    data = records_to_tensors(records)
    from ldm_quality import foreground

    quality = pseudo_mask_quality(
        data["mask"],
        data["reliability"],
        torch.from_numpy(foreground(np.stack([r.image for r in records]))),
    )
    quality.update(prompted_class_agreement(records))
    fingerprint = dm.synthesizer.fingerprint()
    info = {
        "model": LDM_MODEL,
        "model_step": ldm_training_step(),  # the shipped model card's
        "generator_fingerprint": fingerprint["generator"],
        "num_images": args.ldm_images,
        "ddim_steps": args.ldm_steps,
        "guidance": args.ldm_guidance,
        "mask": fingerprint["mask"],
        "cache_dir": args.ldm_cache,
        "generated_now": report.generated,
        "cache_hits": report.cache_hits,
        "images_per_s": round(report.images_per_second, 3),
        "prompts_first": [r.meta["prompt"]["text"] for r in records[:3]],
        "quality": quality,
    }
    return data, info


@torch.no_grad()
def prompted_class_agreement(records: list[SampleRecord], classifier_dir: str = CLASSIFIER) -> dict:
    """Share of single-object images whose drawn shape (real-trained classifier, ~99.8% on real
    scenes) is the prompted class, i.e. the class of the pseudo-mask (the LDM's fidelity)."""
    if not (Path(classifier_dir) / "shape_classifier.safetensors").is_file():
        return {}
    from ldm_quality import classify
    from shape_classifier import load_classifier

    single = [r for r in records if len(r.meta["prompt"]["class_words"]) == 1]
    if not single:
        return {}
    prompted = np.array([r.meta["prompt"]["class_words"][0]["class_id"] for r in single])
    drawn = classify(
        load_classifier(Path(classifier_dir), False), np.stack([r.image for r in single])
    )
    return {
        "single_object_images": len(single),
        "class_agreement": float((drawn == prompted).mean()),
    }


@torch.no_grad()
def evaluate_detail(nets: list, data: dict, num_classes: int) -> dict:
    """mIoU, per-class IoU and object-vs-background IoU on real scenes (both nets averaged)."""
    from synthmask.models import SegmentationIoU

    metric = SegmentationIoU(num_classes)
    inter = union = 0
    for net in nets:
        net.eval()
    for start in range(0, data["image"].shape[0], 64):
        x, y = data["image"][start : start + 64], data["mask"][start : start + 64]
        pred = torch.stack([net(x) for net in nets]).mean(0).argmax(1)
        metric.update(pred, y)
        inter += int(((pred > 0) & (y > 0)).sum())
        union += int(((pred > 0) | (y > 0)).sum())
    per_class = metric.compute()
    return {
        "val_mIoU": float(torch.nanmean(per_class)),
        "val_IoU_per_class": [round(float(v), 4) for v in per_class],
        "val_fg_IoU": inter / max(union, 1),
    }


def run_ldm(args: argparse.Namespace, budget, train_fn) -> None:
    """All LDM_CONFIGS x seeds, resumable via the JSON lines in ``args.ldm_out``."""
    from synthmask.training import sample_reliability_stats, select_reliable_samples

    out = Path(args.ldm_out)
    done = set()
    if out.exists():
        done = {
            (r["labels"], r["method"], r["prune"], r["seed"])
            for r in map(json.loads, out.read_text().splitlines())
        }
    pseudo, info = synthesize_training_set(args)
    info_path = Path(args.ldm_info)
    if info["generated_now"] == 0 and info_path.exists():  # keep the first run's timing
        first = json.loads(info_path.read_text())
        info.update({k: first[k] for k in ("generated_now", "images_per_s") if k in first})
    info_path.write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info), flush=True)
    if args.synth_only:
        return
    num_classes = len(DEFAULT_SHAPES) + 1
    n = pseudo["image"].shape[0]
    real = real_scenes(n, "train")
    val = real_scenes(args.ldm_val, "val")
    stats = sample_reliability_stats(
        pseudo["mask"], pseudo["margin"], pseudo["reliability"], num_classes
    )
    kept = select_reliable_samples(stats, budget.prune_share, per_class=True)
    train_sets = {
        ("pseudo", 0): {k: pseudo[k] for k in ("image", "mask", "reliability")},
        ("pseudo", 1): {k: pseudo[k][kept] for k in ("image", "mask", "reliability")},
        ("real", 0): real,
    }
    configs = [c for c in LDM_CONFIGS if c[1] in args.methods and c[2] in args.prune]
    for kind, method, prune in configs:
        labels = (
            kind if kind == "real" or args.ldm_mask == "attn2mask" else f"{kind}:{args.ldm_mask}"
        )
        for seed in args.seeds:
            if (labels, method, prune, seed) in done:
                continue
            data = train_sets[(kind, prune)]
            if method == "ignore_random":
                g = torch.Generator().manual_seed(2000 + seed)
                random_half = torch.rand(data["mask"].shape, generator=g) < 0.5
                data = {**data, "reliability": random_half.float()}
            start = time.time()
            nets = train_fn(method, data, num_classes, budget, seed)
            record = {
                "part": "ldm",
                "labels": labels,
                "method": method,
                "prune": prune,
                "seed": seed,
                **evaluate_detail(nets, val, num_classes),
                "n_train": int(data["image"].shape[0]),
                "n_val": args.ldm_val,
                "seconds": round(time.time() - start, 1),
                "ldm": {k: info[k] for k in ("model_step", "generator_fingerprint", "ddim_steps")},
                "budget": vars(budget),
            }
            with out.open("a") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)


def ldm_report(path: Path, plot: Path) -> str:
    """Markdown table (mean +- std over seeds) of part (b) and its PNG plot."""
    groups: dict = defaultdict(list)
    fg: dict = defaultdict(list)
    for r in map(json.loads, path.read_text().splitlines()):
        key = (r["labels"], r["method"], r["prune"])
        groups[key].append(100 * r["val_mIoU"])
        fg[key].append(100 * r["val_fg_IoU"])
    order = sorted(groups, key=lambda k: (k[0] != "real", k[0], k[2], METHOD_ORDER.index(k[1])))
    lines = [
        "| part | training masks | method | pruning | runs | real-val mIoU (mean +- std) "
        "| real-val object/background IoU |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in order:
        labels = "exact (real scenes)" if key[0] == "real" else "LDM pseudo-masks"
        labels += f" ({key[0].split(':')[1]})" if ":" in key[0] else ""
        pruning = "20% least reliable" if key[2] else "no"
        lines.append(
            f"| ldm | {labels} | {key[1]} | {pruning} | {len(groups[key])} | "
            f"{_mean_std(groups[key])} | {_mean_std(fg[key])} |"
        )
    _plot_ldm(
        {"real-val mIoU (%), 7 classes": groups, "real-val object/background IoU (%)": fg},
        order,
        plot,
    )
    return "\n".join(lines)


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.1f} +- {std:.1f}"


def _plot_ldm(panels: dict, order: list, plot: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(12, 4))
    names = [
        ("exact " if k[0] == "real" else "") + k[1] + (" +prune" if k[2] else "") for k in order
    ]
    colours = ["grey" if k[0] == "real" else ("tab:orange" if k[2] else "tab:blue") for k in order]
    for ax, (title, groups) in zip(axes, panels.items(), strict=True):
        means = [statistics.mean(groups[k]) for k in order]
        stds = [statistics.stdev(groups[k]) if len(groups[k]) > 1 else 0.0 for k in order]
        ax.bar(range(len(order)), means, yerr=stds, capsize=3, color=colours)
        ax.set_xticks(range(len(order)), names, rotation=30, ha="right")
        ax.set_ylabel(title)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        "shapes world, real val: trained on shipped-LDM pseudo-masks "
        "(blue; orange: 20% least reliable pruned; grey: exact masks of real scenes)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(plot, dpi=100)
