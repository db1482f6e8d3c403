"""Robust-training ablation on the shapes world (METHOD.md Technique 1).

Trains a tiny DeepLabV3+ on shapes-world scenes whose training masks are noisy and evaluates
mIoU on clean REAL validation scenes. Methods: plain CE, ``ignore``, ``weight`` (w = 0.3), BECO
co-training; each with and without reliability-based pruning (20% of samples, per class).

Part (a) "noisy": the exact masks corrupted with controlled noise at level p in {0.1, 0.3, 0.5}:
every object independently (i) with probability p has its boundary moved (eroded or dilated by
1-2 px, 3x3 kernel) and (ii) with probability p is relabelled to another foreground class.
Reliability comes from a documented noisy-score model standing in for attention heatmaps:
per class c, score_c = GaussianBlur_sigma=1.5(1[noisy label == c]) * a_object + smooth noise
(std 0.05), with amplitude a ~ U(0.5, 1.0) for untouched objects and U(0.35, 0.85) for
corrupted ones (a generator is less sure where it is wrong; the ranges overlap), background
amplitude 0.8. margin = top1 - top2 score (synthmask.masks.reliability_margin); reliable =
top 50% margin within each class of each image (synthmask.masks.reliable_mask). The label is
the noisy mask itself, so the noise level is exactly controlled; low margins concentrate at
(noisy) boundaries, as attention maps do.

Part (b) "ldm": pseudo-masks, margins and reliability maps of the shipped shapes-world LDM
(synthmask/assets/shapes_ldm, step 9334), synthesized once through the synthesis engine into a
cache; 6 shapes; evaluated on real plain-background scenes (see ablation_robust_ldm.py).
Each run appends one JSON line to --out / --ldm-out (resumable: finished runs are skipped);
``--report`` prints the Markdown tables and writes the PNG plots.

    OMP_NUM_THREADS=1 nohup python benchmarks/ablation_robust.py --part noisy &
    OMP_NUM_THREADS=1 nohup python benchmarks/ablation_robust.py --part ldm --steps 160 &
    python benchmarks/ablation_robust.py --report
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from synthmask.masks.reliability import reliability_margin, reliable_mask
from synthmask.models import DeepLabV3Plus, SegmentationIoU, mean_iou
from synthmask.models.losses import ReliabilityOptions, reliability_weighted_cross_entropy
from synthmask.training import (
    boundary_band,
    co_training_loss,
    copy_paste_halves,
    dilate,
    erode,
    online_labels,
    reliable_from_map,
    sample_reliability_stats,
    select_reliable_samples,
    strong_photometric_augment,
)
from synthmask.world import SceneConfig, ShapesWorld

HERE = Path(__file__).resolve().parent
IMAGENET_MEAN = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
METHODS = ("ce", "ignore", "weight", "beco")
# beco_offline: BECO without the online labels (offline labels and reliability for the whole run);
# ignore_random (part ldm): `ignore` with a random half of the pixels marked reliable (control).
EXTRA_METHODS = ("beco_offline", "ignore_random")
ALL_METHODS = METHODS + EXTRA_METHODS
PRUNE_LABELS = {0: "no", 1: "20% least reliable", 2: "20% at random"}
LEVELS = (0.1, 0.3, 0.5)


@dataclass
class Budget:
    image_size: int = 32
    n_train: int = 384
    n_val: int = 192
    steps: int = 200
    batch_size: int = 16
    lr: float = 3e-3  # AdamW: a randomly initialised tiny net learns too slowly with SGD here
    shapes: tuple[str, ...] = ("circle", "square", "triangle")
    prune_share: float = 0.2
    warmup_fraction: float = 1 / 3


def render(
    n: int, split: str, size: int, shapes: tuple[str, ...]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shape: -> images float (N, 3, S, S) normalised, masks int64 (N, S, S), instances (N, S, S)."""
    config = SceneConfig(image_size=size, shapes=shapes)
    world = ShapesWorld(n, config, "source", split, base_seed=0)
    scenes = [world[i] for i in range(n)]
    images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1) for s in scenes]) / 255.0
    images = (images - IMAGENET_MEAN) / IMAGENET_STD
    masks = torch.stack([torch.from_numpy(s.mask.astype("int64")) for s in scenes])
    instances = torch.stack([torch.from_numpy(s.instances.astype("int64")) for s in scenes])
    return images.float(), masks, instances


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Shape: (N, C, H, W) -> (N, C, H, W), reflect padding."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(x.shape[1], 1, 1, 1)
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k, groups=x.shape[1])
    return F.conv2d(x, k.transpose(-1, -2), groups=x.shape[1])


def corrupt(
    masks: torch.Tensor, instances: torch.Tensor, level: float, num_classes: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boundary moves and class swaps per object with probability ``level`` each.

    Returns the noisy masks and, per pixel, the score amplitude of the object it belongs to.
    Shape: masks/instances (N, H, W) -> noisy (N, H, W) int64, amplitude (N, H, W) float
    """
    noisy = masks.clone()
    amplitude = torch.full(masks.shape, 0.8)
    for n in range(masks.shape[0]):
        for k in torch.unique(instances[n]).tolist():
            if k == 0:
                continue
            region = instances[n] == k
            cls = int(masks[n][region][0])
            touched = False
            if torch.rand((), generator=g) < level:  # boundary error
                touched = True
                steps = 1 + int(torch.rand((), generator=g) < 0.5)
                grown = region[None]
                op = dilate if torch.rand((), generator=g) < 0.5 else erode
                for _ in range(steps):
                    grown = op(grown)
                noisy[n][region & ~grown[0]] = 0
                region = grown[0]
            if torch.rand((), generator=g) < level:  # class swap
                touched = True
                others = [c for c in range(1, num_classes) if c != cls]
                cls = others[int(torch.randint(len(others), (), generator=g))]
            noisy[n][region] = cls
            low, high = (0.35, 0.85) if touched else (0.5, 1.0)
            amplitude[n][region] = low + (high - low) * torch.rand((), generator=g).item()
    return noisy, amplitude


def noisy_scores(
    noisy: torch.Tensor, amplitude: torch.Tensor, num_classes: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The documented score model -> (margin (N, H, W), reliable bool (N, H, W))."""
    one_hot = F.one_hot(noisy, num_classes).permute(0, 3, 1, 2).float()
    scores = gaussian_blur(one_hot * amplitude[:, None], 1.5)
    noise = gaussian_blur(torch.randn(scores.shape, generator=g), 1.0) * 0.05 / 0.25
    margin = reliability_margin(scores + noise)
    return margin, reliable_mask(margin, noisy, fraction=0.5)


def make_net(num_classes: int, seed: int) -> DeepLabV3Plus:
    torch.manual_seed(seed)
    return DeepLabV3Plus(
        num_classes,
        encoder_name="test_resnet",
        aspp_channels=32,
        decoder_channels=32,
        low_level_channels=16,
        output_stride=8,
    )


def poly_sgd(params, budget: Budget) -> tuple[torch.optim.Optimizer, object]:
    opt = torch.optim.AdamW(params, lr=budget.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 - s / budget.steps) ** 0.9)
    return opt, sched


def train(method: str, data: dict, num_classes: int, budget: Budget, seed: int) -> list:
    """Train and return the nets used for evaluation."""
    g = torch.Generator().manual_seed(1000 + seed)
    nets = [make_net(num_classes, seed)] + (
        [make_net(num_classes, seed + 500)] if method.startswith("beco") else []
    )
    params = [p for net in nets for p in net.parameters()]
    opt, sched = poly_sgd(params, budget)
    n = data["image"].shape[0]
    warmup = int(budget.steps * budget.warmup_fraction)
    options = ReliabilityOptions(unreliable_weight=0.3)
    for step in range(budget.steps):
        idx = torch.randperm(n, generator=g)[: budget.batch_size]
        batch = {k: v[idx] for k, v in data.items()}
        flip = torch.rand(budget.batch_size, generator=g) < 0.5
        batch = {
            k: torch.where(flip.view(-1, *[1] * (v.dim() - 1)), v.flip(-1), v)
            for k, v in batch.items()
        }
        if method.startswith("beco"):
            loss = beco_step(nets, batch, method == "beco" and step >= warmup, g)
        else:
            logits = nets[0](batch["image"])
            mode = {"ce": "none", "weight": "weight"}.get(method, "ignore")
            loss = reliability_weighted_cross_entropy(
                logits, batch["mask"], batch["reliability"], mode=mode, options=options
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return nets


def beco_step(nets: list, batch: dict, after_warmup: bool, g: torch.Generator) -> torch.Tensor:
    if after_warmup:
        label, reliable = online_labels(nets, batch["image"])
        batch = {**batch, "mask": label, "reliability": reliable.float()}
    batch, pasted = copy_paste_halves(batch, p=0.5, generator=g)
    band = boundary_band(pasted) if after_warmup else None
    images = strong_photometric_augment(batch["image"], generator=g)
    reliable = reliable_from_map(batch["reliability"], batch["mask"])
    logits = [net(images) for net in nets]
    return co_training_loss(logits, batch["mask"], reliable, band).total


@torch.no_grad()
def evaluate(nets: list, images: torch.Tensor, masks: torch.Tensor, num_classes: int) -> float:
    metric = SegmentationIoU(num_classes)
    for net in nets:
        net.eval()
    for start in range(0, images.shape[0], 64):
        x = images[start : start + 64]
        logits = torch.stack([net(x) for net in nets]).mean(0)
        metric.update(logits.argmax(1), masks[start : start + 64])
    return float(mean_iou(metric.compute()))


def run_noisy(args: argparse.Namespace, budget: Budget) -> None:
    out = Path(args.out)
    done = set()
    if out.exists():
        done = {
            (r["part"], r["level"], r["method"], r["prune"], r["seed"])
            for r in map(json.loads, out.read_text().splitlines())
        }
    images, masks, instances = render(budget.n_train, "train", budget.image_size, budget.shapes)
    val_images, val_masks, _ = render(budget.n_val, "val", budget.image_size, budget.shapes)
    num_classes = len(budget.shapes) + 1
    for seed in args.seeds:
        for level in args.levels:
            g = torch.Generator().manual_seed(seed * 7919 + int(level * 100))
            if level == 0:
                noisy, margin, reliable = (
                    masks,
                    torch.ones(masks.shape),
                    torch.ones(masks.shape, dtype=torch.bool),
                )
            else:
                noisy, amplitude = corrupt(masks, instances, level, num_classes, g)
                margin, reliable = noisy_scores(noisy, amplitude, num_classes, g)
            label_noise = float((noisy != masks).float().mean())
            stats = sample_reliability_stats(noisy, margin, reliable.float(), num_classes)
            kept = select_reliable_samples(stats, budget.prune_share, per_class=True)
            full = {"image": images, "mask": noisy, "reliability": reliable.float()}
            # prune 2 = control: the same number of scenes dropped at random
            shuffled = torch.randperm(len(masks), generator=torch.Generator().manual_seed(seed))
            chosen = {1: kept, 2: shuffled[: len(kept)].sort().values}
            for prune in args.prune:
                subset = chosen.get(prune, slice(None))
                data = {k: v[subset] for k, v in full.items()}
                pruned_noise = float((data["mask"] != masks[subset]).float().mean())
                for method in args.methods:
                    key = ("noisy", level, method, prune, seed)
                    if key in done or (level == 0 and (prune or method not in ("ce",))):
                        continue
                    start = time.time()
                    nets = train(method, data, num_classes, budget, seed)
                    miou = evaluate(nets, val_images, val_masks, num_classes)
                    record = {
                        "part": "noisy",
                        "level": level,
                        "method": method,
                        "prune": prune,
                        "seed": seed,
                        "val_mIoU": miou,
                        "pixel_noise": label_noise,
                        "train_pixel_noise": pruned_noise,
                        "n_train": int(data["image"].shape[0]),
                        "seconds": round(time.time() - start, 1),
                        "budget": vars(budget),
                    }
                    with out.open("a") as f:
                        f.write(json.dumps(record) + "\n")
                    print(json.dumps(record), flush=True)


def report(path: Path, plot: Path) -> str:
    import statistics
    from collections import defaultdict

    rows = [json.loads(line) for line in path.read_text().splitlines()]
    groups: dict = defaultdict(list)
    noise: dict = defaultdict(list)
    for r in rows:
        groups[(r["part"], r["level"], r["method"], r["prune"])].append(100 * r["val_mIoU"])
        noise[(r["part"], r["level"], r["prune"])].append(100 * r["train_pixel_noise"])
    lines = [
        "| part | noise level | wrong train pixels % | method | pruning | runs | real-val mIoU (mean +- std) |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in sorted(groups, key=lambda k: (k[0], k[1], ALL_METHODS.index(k[2]), k[3])):
        vals = groups[key]
        std = statistics.stdev(vals) if len(vals) > 1 else float("nan")
        wrong = statistics.mean(noise[(key[0], key[1], key[3])])
        lines.append(
            f"| {key[0]} | {key[1]:.1f} | {wrong:.1f} | {key[2]} | {PRUNE_LABELS[key[3]]} | {len(vals)} | {statistics.mean(vals):.1f} +- {std:.1f} |"
        )
    _plot(groups, plot)
    return "\n".join(lines)


def _plot(groups: dict, plot: Path) -> None:
    import statistics

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, prune in zip(axes, (False, True), strict=True):
        for method in ALL_METHODS:
            keys = sorted(
                k
                for k in groups
                if k[0] == "noisy" and k[2] == method and k[3] == prune and k[1] > 0
            )
            if not keys:
                continue
            xs = [k[1] for k in keys]
            means = [statistics.mean(groups[k]) for k in keys]
            stds = [statistics.stdev(groups[k]) if len(groups[k]) > 1 else 0 for k in keys]
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=method)
        clean = groups.get(("noisy", 0.0, "ce", False))
        if clean:
            ax.axhline(statistics.mean(clean), color="grey", ls="--", label="ce, clean masks")
        ax.set_title(f"noisy real masks, pruning {'20%' if prune else 'off'}")
        ax.set_xlabel("per-object noise level p")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("real-val mIoU (%)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(plot, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", default="noisy", choices=("noisy", "ldm"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--levels", type=float, nargs="+", default=[0.0, *LEVELS])
    parser.add_argument("--methods", nargs="+", default=None, choices=ALL_METHODS)
    parser.add_argument("--prune", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=Budget.steps)
    parser.add_argument("--out", default=str(HERE / "results" / "ablation_robust.jsonl"))
    parser.add_argument("--plot", default=str(HERE / "ablation_robust.png"))
    parser.add_argument("--report", action="store_true")
    ldm = parser.add_argument_group("part ldm")
    ldm.add_argument("--ldm-images", type=int, default=384, help="synthetic training images")
    ldm.add_argument("--ldm-steps", type=int, default=25, help="DDIM steps")
    ldm.add_argument("--ldm-guidance", type=float, default=3.0)
    ldm.add_argument("--ldm-mask", default="attn2mask", choices=("attn2mask", "self_refine"))
    ldm.add_argument("--ldm-val", type=int, default=300, help="real val scenes")
    ldm.add_argument("--ldm-cache", default=str(HERE.parent / "runs" / "ablation_cache"))
    ldm.add_argument("--ldm-out", default=str(HERE / "results" / "ablation_robust_ldm.jsonl"))
    ldm.add_argument("--ldm-info", default=str(HERE / "results" / "ablation_robust_ldm_data.json"))
    ldm.add_argument("--ldm-plot", default=str(HERE / "ablation_robust_ldm.png"))
    ldm.add_argument("--synth-only", action="store_true", help="only fill the cache")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.report:
        if Path(args.out).exists():
            print(report(Path(args.out), Path(args.plot)))
        if Path(args.ldm_out).exists():
            from ablation_robust_ldm import ldm_report

            print("\n" + ldm_report(Path(args.ldm_out), Path(args.ldm_plot)))
        return
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if args.part == "noisy":
        args.methods = args.methods or list(METHODS)
        run_noisy(args, Budget(steps=args.steps))
    else:
        from ablation_robust_ldm import DEFAULT_SHAPES, LDM_CONFIGS, run_ldm

        args.methods = args.methods or sorted({c[1] for c in LDM_CONFIGS})
        budget = Budget(
            steps=args.steps, n_train=args.ldm_images, n_val=args.ldm_val, shapes=DEFAULT_SHAPES
        )
        run_ldm(args, budget, train)


if __name__ == "__main__":
    main()
