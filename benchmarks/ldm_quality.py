"""Quality of the shapes-world tiny LDM: fidelity, class-word attention localization, binding.

On generated images with a plain background the object's pixels are found exactly enough by
their distance to the border colour, so attention can be scored against them:

(a) fidelity: a CNN trained on real single-object scenes (benchmarks/shape_classifier.py)
    recognizes the prompted class in generated single-object images (target >= 0.8);
(b) localization: IoU of the class word's heatmap (attn2mask threshold 0.4 after min-max, via
    synthmask.diffusion.sampling + synthmask.masks.class_heatmaps) with the object's pixels,
    against a fixed centred disk; inside/outside ratio of the raw class-word attention;
    per-resolution IoU;
(c) two-object prompts: does each class word attend more to the object the classifier says is
    of that class (chance 0.5)?

    python benchmarks/ldm_quality.py --pipeline synthmask/assets/shapes_ldm
    python benchmarks/ldm_quality.py --checkpoint runs/shapes_ldm/checkpoints/last.ckpt
    python benchmarks/ldm_quality.py --watch runs/shapes_ldm --every 1200

Rows are appended to --csv (default benchmarks/results/ldm_quality.csv).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shape_classifier import DEFAULT_DIR, load_classifier  # noqa: E402

from synthmask.diffusion.capture import CaptureConfig  # noqa: E402
from synthmask.diffusion.sampling import generate_with_attention  # noqa: E402
from synthmask.diffusion.tokens import class_token_positions  # noqa: E402
from synthmask.masks.heatmaps import class_heatmaps  # noqa: E402
from synthmask.prompt_types import ClassWord, Prompt  # noqa: E402
from synthmask.world.shapes import DEFAULT_SHAPES  # noqa: E402

COLORS = ("red", "green", "blue", "yellow", "orange", "purple", "cyan", "pink")
FG_THRESHOLD = 48.0  # max channel distance (0..255) to the border colour
HEAT_THRESHOLD = 0.4  # attn2mask with beta = 0.2
DISK_RADIUS = 0.22  # fraction of the image side (~ the median object radius of the world)


def make_prompt(objects: list[tuple[str, str]], suffix: str = " on a plain background") -> Prompt:
    """Prompt "a red star and a blue circle on a plain background" with class-word spans."""
    text, words = "", []
    for i, (color, shape) in enumerate(objects):
        text += (" and " if i else "") + f"a {color} "
        words.append(
            ClassWord(shape, DEFAULT_SHAPES.index(shape) + 1, len(text), len(text) + len(shape))
        )
        text += shape
    return Prompt(text=text + suffix, class_words=tuple(words))


def foreground(images: np.ndarray) -> np.ndarray:
    """Pixels far from the median border colour (plain backgrounds).

    Shape:
        uint8 (B, H, W, 3) -> bool (B, H, W)
    """
    x = images.astype(np.float32)
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
    bg = np.median(border, axis=1)[:, None, None, :]
    return np.abs(x - bg).max(-1) > FG_THRESHOLD


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def centred_disk(size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] + 0.5
    return (xx - size / 2) ** 2 + (yy - size / 2) ** 2 <= (DISK_RADIUS * size) ** 2


def raw_word_maps(
    cross: dict[int, torch.Tensor], tokens: list[list[int]], size: int
) -> dict[int, torch.Tensor]:
    """Per resolution, the word's summed attention upsampled (bilinear) to the image size.

    Shape:
        cross[r] (B, T, r, r) -> {r: (B, size, size)}
    """
    out = {}
    for res, att in cross.items():
        maps = torch.stack([att[b, tok].sum(0) for b, tok in enumerate(tokens)])
        out[res] = F.interpolate(maps[:, None], (size, size), mode="bilinear", align_corners=False)[
            :, 0
        ]
    return out


@torch.no_grad()
def classify(classifier: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return classifier(x).argmax(1).numpy() + 1  # class ids (1..K)


def generate(
    pipe, prompts: list[Prompt], seeds: list[int], steps: int, guidance: float, batch: int = 16
):
    images, cross = [], {}
    for i in range(0, len(prompts), batch):
        out = generate_with_attention(
            pipe, prompts[i : i + batch], seeds[i : i + batch], CaptureConfig(), steps, guidance
        )
        images.append(out.images.numpy())
        for r, a in out.cross_attention.items():
            cross.setdefault(r, []).append(a)
    return np.concatenate(images), {r: torch.cat(a) for r, a in cross.items()}


def single_object_scores(pipe, classifier, n: int, steps: int, guidance: float) -> dict[str, float]:
    objects = [
        [(COLORS[i % len(COLORS)], DEFAULT_SHAPES[i % len(DEFAULT_SHAPES)])] for i in range(n)
    ]
    prompts = [make_prompt(o) for o in objects]
    seeds = list(range(1000, 1000 + n))
    images, cross = generate(pipe, prompts, seeds, steps, guidance)
    size = images.shape[1]
    fg = foreground(images)
    positions = [class_token_positions(pipe.tokenizer, p) for p in prompts]
    heat, _ = class_heatmaps(cross, positions, len(DEFAULT_SHAPES) + 1, (size, size))
    cls = np.array([p.class_words[0].class_id for p in prompts])
    word_heat = heat[torch.arange(n), torch.from_numpy(cls)].numpy()
    raw = raw_word_maps(cross, [pos[0][1] for pos in positions], size)
    disk = centred_disk(size)
    valid = (fg.mean((1, 2)) > 0.01) & (fg.mean((1, 2)) < 0.6)  # one object, not noise
    ious, disk_ious, ratios = [], [], []
    by_res = {r: [] for r in raw}
    for b in np.flatnonzero(valid):
        ious.append(iou(word_heat[b] > HEAT_THRESHOLD, fg[b]))
        disk_ious.append(iou(disk, fg[b]))
        total = sum(m[b] for m in raw.values()).numpy()
        if (~fg[b]).any():
            ratios.append(total[fg[b]].mean() / max(total[~fg[b]].mean(), 1e-12))
        for r, m in raw.items():
            mr = m[b].numpy()
            norm = (mr - mr.min()) / max(mr.max() - mr.min(), 1e-12)
            by_res[r].append(iou(norm > HEAT_THRESHOLD, fg[b]))
    scores = {
        "fidelity": float((classify(classifier, images) == cls).mean()),
        "drawn_fraction": float(valid.mean()),
        "iou_word": float(np.mean(ious)) if ious else 0.0,
        "iou_disk": float(np.mean(disk_ious)) if disk_ious else 0.0,
        "in_out_ratio": float(np.median(ratios)) if ratios else 0.0,
    }
    scores.update(
        {f"iou_res{r}": float(np.mean(v)) if v else 0.0 for r, v in sorted(by_res.items())}
    )
    return scores


def pair_scores(pipe, classifier, n: int, steps: int, guidance: float) -> dict[str, float]:
    k = len(DEFAULT_SHAPES)
    objects = [
        [
            (COLORS[i % 8], DEFAULT_SHAPES[i % k]),
            (COLORS[(i + 3) % 8], DEFAULT_SHAPES[(i + 1 + i // k) % k]),
        ]
        for i in range(n)
    ]
    objects = [
        o
        if o[0][1] != o[1][1]
        else [o[0], (o[1][0], DEFAULT_SHAPES[(DEFAULT_SHAPES.index(o[1][1]) + 1) % k])]
        for o in objects
    ]
    prompts = [make_prompt(o) for o in objects]
    images, cross = generate(pipe, prompts, list(range(5000, 5000 + n)), steps, guidance)
    size = images.shape[1]
    fg = foreground(images)
    found, correct, judged = 0, 0, 0
    for b, prompt in enumerate(prompts):
        labels, count = ndimage.label(fg[b])
        sizes = ndimage.sum(fg[b], labels, range(1, count + 1)) if count else []
        comps = [i + 1 for i in np.argsort(sizes)[::-1][:2] if sizes[i] >= 12]
        if len(comps) < 2:
            continue
        bg = np.median(images[b][~fg[b]], axis=0).astype(np.uint8)
        comp_class = []
        for c in comps:
            only = images[b].copy()
            only[(labels != c) & fg[b]] = bg
            comp_class.append(int(classify(classifier, only[None])[0]))
        wanted = {cw.class_id for cw in prompt.class_words}
        if set(comp_class) != wanted:
            continue
        found += 1
        positions = class_token_positions(pipe.tokenizer, prompt)
        raw = raw_word_maps({r: a[b : b + 1].expand(len(positions), -1, -1, -1) for r, a in cross.items()},
                            [tok for _, tok in positions], size)  # fmt: skip
        total = sum(raw.values()).numpy()
        for w, (class_id, _) in enumerate(positions):
            means = [total[w][labels == c].mean() for c in comps]
            judged += 1
            correct += int(comp_class[int(np.argmax(means))] == class_id)
    return {"pair_found": found / n, "assign_acc": correct / judged if judged else float("nan")}


def evaluate(
    pipe, classifier, n_single: int, n_pair: int, steps: int, guidance: float
) -> dict[str, float]:
    scores = single_object_scores(pipe, classifier, n_single, steps, guidance)
    if n_pair:
        scores.update(pair_scores(pipe, classifier, n_pair, steps, guidance))
    return scores


def checkpoint_info(ckpt: Path) -> dict[str, float]:
    state = torch.load(str(ckpt), map_location="cpu", weights_only=True)
    sd = state["state_dict"]
    return {
        "step": int(state["global_step"]),
        "cpu_hours": float(sd.get("train_cpu_seconds", torch.tensor(0.0))) / 3600,
        "wall_hours": float(sd.get("train_wall_seconds", torch.tensor(0.0))) / 3600,
    }


def append_row(path: Path, row: dict) -> None:
    """Append ``row`` under the file's existing header (missing fields left empty)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(row)
    if path.exists():
        with path.open() as f:
            fields = next(csv.reader(f), fields)
        fields += [k for k in row if k not in fields]
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        if new:
            writer.writeheader()
        writer.writerow(row)


def evaluate_checkpoint(ckpt: Path, export_root: Path, args: argparse.Namespace) -> dict:
    from synthmask.lightning_modules.diffusion_export import export_pipeline

    info = checkpoint_info(ckpt)
    out = export_root / f"step{info['step']:07d}"
    if not out.is_dir():
        export_pipeline(ckpt, out, use_ema=True, fp16=False)
    return {**info, **run_pipeline(out, args), "pipeline": str(out)}


def run_pipeline(path: Path, args: argparse.Namespace) -> dict:
    pipe = StableDiffusionPipeline.from_pretrained(str(path), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    classifier = load_classifier(args.classifier)
    return evaluate(pipe, classifier, args.n_single, args.n_pair, args.steps, args.guidance)


def plot_curve(csv_path: Path, out_png: Path, tag: str = "watch") -> None:
    """Figures of the rows with ``tag`` against training CPU hours (matplotlib, PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open() as f:
        rows = [r for r in csv.DictReader(f) if tag in (r.get("tag"), "all") and r.get("cpu_hours")]
    rows.sort(key=lambda r: float(r["cpu_hours"]))
    hours = [float(r["cpu_hours"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in [
        ("fidelity", "fidelity (classifier acc.)"),
        ("iou_word", "class-word attention IoU"),
        ("iou_disk", "centred-disk IoU"),
        ("assign_acc", "2-object word assignment"),
    ]:
        ax.plot(hours, [float(r[key]) for r in rows], marker="o", label=label)
    ax.set_xlabel("training CPU hours (1 thread)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("shapes-world tiny LDM quality")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--pipeline", type=Path)
    src.add_argument("--checkpoint", type=Path)
    src.add_argument("--watch", type=Path, help="a run dir with checkpoints/last.ckpt")
    src.add_argument("--plot", type=Path, help="write a PNG of the --csv rows (tag --tag)")
    parser.add_argument("--every", type=float, default=1200.0, help="seconds between watch evals")
    parser.add_argument("--n-single", type=int, default=48)
    parser.add_argument("--n-pair", type=int, default=24)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--classifier", type=Path, default=DEFAULT_DIR)
    parser.add_argument(
        "--csv", type=Path, default=Path(__file__).parent / "results" / "ldm_quality.csv"
    )
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.plot:
        plot_curve(args.csv, args.plot, args.tag or "watch")
        return
    stamp = lambda: dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")  # noqa: E731
    if args.pipeline:
        row = {
            "time": stamp(),
            "tag": args.tag,
            **run_pipeline(args.pipeline, args),
            "pipeline": str(args.pipeline),
        }
        append_row(args.csv, row)
        print(row)
        return
    if args.checkpoint:
        row = {
            "time": stamp(),
            "tag": args.tag,
            **evaluate_checkpoint(args.checkpoint, args.checkpoint.parent.parent / "exports", args),
        }
        append_row(args.csv, row)
        print(row)
        return
    last_step = -1
    while True:
        ckpt = args.watch / "checkpoints" / "last.ckpt"
        try:  # the trainer may be writing last.ckpt right now: retry shortly on a torn read
            if ckpt.is_file() and checkpoint_info(ckpt)["step"] != last_step:
                row = {
                    "time": stamp(),
                    "tag": args.tag,
                    **evaluate_checkpoint(ckpt, args.watch / "exports", args),
                }
                last_step = row["step"]
                append_row(args.csv, row)
                print(row, flush=True)
        except (RuntimeError, EOFError, OSError) as err:
            print(f"retrying after a failed read of {ckpt}: {err}", flush=True)
            time.sleep(30)
            continue
        time.sleep(args.every)


if __name__ == "__main__":
    main()
