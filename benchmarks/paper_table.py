"""The paper's table in miniature (shapes world), every row over training seeds, plus scaling curves.

Yoshihashi et al. (VOC val, DeepLabV3+): attn2mask on ~2k images 41.2; + prompt augmentation
scaled to 168,679 images 51.1; + reliability-aware robust training 58.3. Here, with the shipped
shapes LDM and the main job's segmenter and budget per image (12 epochs, so more steps as the
image count grows, as the paper does):

- ``baseline``: attn2mask pseudo-masks from bare class-name prompts ("a star"), 160 images;
- ``prompt_aug``: attn2mask from augmented prompts - synonyms ("disk" for circle), attributes
  (the colour) and counts (one or two shapes) - scaled 8x to 1280 images;
- ``robust``: ``prompt_aug`` with the reliability-aware loss (the less reliable half of each
  mask's pixels ignored, the best mode of the robust-training ablation);
- ``real_bound``: the same segmenter on real rendered scenes with exact masks
  (``experiments/shapes_real.yaml``);
- ``best``: the package's best recipe, the main job (``experiments/shapes_synth.yaml``:
  self_refine masks, reliability-aware loss) - beyond the paper;
- ``lora_source_only`` and ``lora_adapted``: the ``best`` recipe validated on the *target*
  domain's real scenes (textured backgrounds, washed-out colours, tinted light, blur, noise),
  synthesized by the shipped LDM as is, and by the LDM adapted to the target from unlabeled
  target images (a LoRA of the denoiser + a fine-tune of the VAE decoder,
  benchmarks/target_adapters.py); the same prompts, synthesis seed and initial noises for both;
- ``lora_real_bound``: the segmenter on real target scenes with exact masks (the target's bound);
- ``lora_unet_only`` and ``lora_decoder_only``: each adapter alone (which one carries the gain).

Everything but the changed setting is the main job's (``experiments/shapes_synth.yaml``): the
segmenter, its strong augmentation and quarter turns, 10 DDIM steps at guidance 5, the real val
scenes (the LoRA rows: the target domain's). The adapters are trained once per work directory.

    python benchmarks/paper_table.py                  # table rows over seeds 0-2 + the curves
    python benchmarks/paper_table.py --rows baseline prompt_aug --seeds 0

Each run is ``synthmask fit`` in its own process (benchmarks/main_job.py runs it) from
``--workdir`` (default ``runs/paper_table``, which holds the generated configs and the shared
cache). Rows go to benchmarks/results/paper_table.csv (``row,setting,num_images,seed,val_miou,
git_sha``), curve points to paper_table_scaling.csv; a run whose (row, setting, images, seed) is
already in its CSV is skipped (``--force`` reruns), so a killed invocation resumes. The summary
table (mean +- std, gains, the paper's gains) is printed and the curves are drawn to
benchmarks/results/paper_table_scaling.png.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from main_job import append_csv, git_sha, parse_seeds, run_seed  # noqa: E402
from target_adapters import train_decoder, train_lora  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TABLE_CSV = RESULTS / "paper_table.csv"
CURVE_CSV = RESULTS / "paper_table_scaling.csv"
CURVE_PNG = RESULTS / "paper_table_scaling.png"
MAIN_JOB = REPO / "experiments" / "shapes_synth.yaml"
REAL = REPO / "experiments" / "shapes_real.yaml"
COLUMNS = ["row", "setting", "num_images", "seed", "val_miou", "git_sha"]
BASELINE_IMAGES = 160
SCALE = 8
CURVE_IMAGES = (160, 640, 1280, 2560, 5120)
BARE_PROMPTS = {"templates": ["a {class}"]}
AUGMENTED_PROMPTS = {
    "scenes": "shapes",
    "min_subjects": 1,
    "max_subjects": 2,
    "color_prob": 1.0,
    "synonyms": True,
}
ATTN2MASK = {"class_path": "synthmask.masks.Attn2MaskConfig", "init_args": {}}
# The paper's rows (VOC val mIoU, %); the miniature's rows are compared by their gains.
PAPER = {"baseline": 41.2, "prompt_aug": 51.1, "robust": 58.3}


@dataclass(frozen=True)
class Recipe:
    """One row of the table: how its config differs from the main job's."""

    row: str
    setting: str
    base: Path
    prompts: dict | None = None
    mask: dict | None = None
    reliability_mode: str | None = None
    synthetic: bool = True
    val_domain: str = "source"
    adapters: tuple[str, ...] = ()  # target-domain adapters to synthesize with: lora, decoder


RECIPES = {
    "baseline": Recipe("baseline", "attn2mask, bare prompts, CE", MAIN_JOB, BARE_PROMPTS, ATTN2MASK, "none"),
    "prompt_aug": Recipe(
        "prompt_aug", "attn2mask, augmented prompts, CE", MAIN_JOB, AUGMENTED_PROMPTS, ATTN2MASK, "none"
    ),
    "robust": Recipe(
        "robust", "attn2mask, augmented prompts, reliability ignore", MAIN_JOB, AUGMENTED_PROMPTS,
        ATTN2MASK, "ignore",
    ),
    "real_bound": Recipe("real_bound", "real masks (shapes_real.yaml)", REAL, synthetic=False),
    "best": Recipe("best", "main job: self_refine, augmented prompts, reliability ignore", MAIN_JOB),
    "lora_source_only": Recipe(
        "lora_source_only", "best, target val, shipped LDM", MAIN_JOB, val_domain="target"
    ),
    "lora_adapted": Recipe(
        "lora_adapted", "best, target val, LDM + target LoRA + target decoder", MAIN_JOB,
        val_domain="target", adapters=("lora", "decoder"),
    ),
    "lora_real_bound": Recipe(
        "lora_real_bound", "real target masks (shapes_real.yaml, target domain)", REAL,
        synthetic=False, val_domain="target",
    ),
    # Which adapter does it: each alone (not rows of the paper)
    "lora_unet_only": Recipe(
        "lora_unet_only", "best, target val, LDM + target LoRA", MAIN_JOB, val_domain="target",
        adapters=("lora",),
    ),
    "lora_decoder_only": Recipe(
        "lora_decoder_only", "best, target val, LDM + target decoder", MAIN_JOB,
        val_domain="target", adapters=("decoder",),
    ),
}  # fmt: skip
TABLE_IMAGES = {"baseline": BASELINE_IMAGES, "prompt_aug": SCALE * BASELINE_IMAGES}
for _row in (
    "robust",
    "best",
    *(n for n, r in RECIPES.items() if r.adapters or n == "lora_source_only"),
):
    TABLE_IMAGES[_row] = TABLE_IMAGES["prompt_aug"]


def set_key(config: dict, key: str, value: Any) -> bool:
    """Set ``key`` where it already sits in a nested config (depth first); True if found."""
    if key in config:
        config[key] = value
        return True
    return any(isinstance(v, dict) and set_key(v, key, value) for v in config.values())


def recipe_config(recipe: Recipe, num_images: int, workdir: Path) -> Path:
    """Write the recipe's config (the base config with the recipe's changes) under ``workdir``."""
    config = yaml.safe_load(recipe.base.read_text())
    config["trainer"]["max_time"] = None  # a busy machine must not cut a measured run short
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(workdir / "wandb")
    data = config["data"]["init_args"]
    if recipe.synthetic:
        for key, value in (
            ("num_images", num_images),
            ("cache_dir", str(workdir / "cache")),
            ("prompts", recipe.prompts),
            ("mask", recipe.mask),
        ):
            if value is not None and not set_key(data, key, value):
                raise KeyError(f"{recipe.base.name} has no data setting {key!r} to change")
    if recipe.reliability_mode is not None:
        config["model"]["init_args"]["reliability_mode"] = recipe.reliability_mode
    if recipe.val_domain != "source":  # real data of that domain (train + val, or val only)
        scenes = data["val_data"]["init_args"] if recipe.synthetic else data
        scenes["domain"] = recipe.val_domain
        scenes.pop("scene", None)  # the domain's own backgrounds
    if "lora" in recipe.adapters:
        data["pipeline"]["lora_path"] = str(train_lora(workdir))
    if "decoder" in recipe.adapters:
        data["pipeline"]["vae_path"] = str(train_decoder(workdir))
    path = workdir / "configs" / f"{recipe.row}-{num_images}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def append_row(path: Path, row: dict[str, str]) -> None:
    append_csv(path, [row], COLUMNS)


def measure(
    recipe: Recipe, num_images: int, seed: int, csv_path: Path, workdir: Path, force: bool
) -> None:
    """Run one (recipe, images, seed) unless its row is in ``csv_path`` already."""
    done = {(r["row"], r["setting"], r["num_images"], r["seed"]) for r in read_rows(csv_path)}
    images = str(num_images) if recipe.synthetic else "0"
    if not force and (recipe.row, recipe.setting, images, str(seed)) in done:
        print(f"{recipe.row} images={images} seed={seed}: in {csv_path.name}, skipped", flush=True)
        return
    config = recipe_config(recipe, num_images, workdir)
    sha = git_sha()
    result = run_seed(config, seed, [], workdir)
    row = {
        "row": recipe.row,
        "setting": recipe.setting,
        "num_images": images,
        "seed": str(seed),
        "val_miou": f"{result['val_miou']:.4f}",
        "git_sha": sha,
    }
    append_row(csv_path, row)
    print(f"{recipe.row} images={images} seed={seed}: val mIoU {row['val_miou']} "
          f"({result['wall_seconds']:.0f} s)", flush=True)  # fmt: skip


def summary(rows: list[dict[str, str]]) -> str:
    """Markdown table: each row's mean +- std over seeds, its gain and the paper's gain."""
    lines = [
        "| row | setting | images | seeds | val mIoU | gain over the row above | paper (VOC) | paper gain |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    previous: float | None = None
    paper_previous: float | None = None
    means: dict[str, float] = {}
    for name, recipe in RECIPES.items():
        images = str(TABLE_IMAGES.get(name, 0)) if recipe.synthetic else "0"
        values = [
            float(r["val_miou"])
            for r in rows
            if r["row"] == name and r["setting"] == recipe.setting and r["num_images"] == images
        ]
        if not values:
            continue
        mean = statistics.mean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        means[name] = mean
        gain = f"{mean - previous:+.3f}" if previous is not None and name in PAPER else ""
        if recipe.adapters and "lora_source_only" in means:  # an adapter's gain
            gain = f"{mean - means['lora_source_only']:+.3f}"
        paper = PAPER.get(name)
        paper_gain = (
            f"{paper - paper_previous:+.1f}" if paper and paper_previous is not None else ""
        )
        lines.append(
            f"| {name} | {recipe.setting} | {images if recipe.synthetic else 'real'} | "
            f"{len(values)} | {mean:.3f} +- {std:.3f} | {gain} | {paper or ''} | {paper_gain} |"
        )
        if name in PAPER:
            previous, paper_previous = mean, paper
    return "\n".join(lines)


def plot_curves(rows: list[dict[str, str]], out: Path) -> None:
    """val mIoU against image count for bare and augmented prompts (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, label in (
        ("baseline", "bare class-name prompts"),
        ("prompt_aug", "augmented prompts"),
    ):
        points: dict[int, list[float]] = {}
        for r in rows:
            if r["row"] == name and r["setting"] == RECIPES[name].setting:
                points.setdefault(int(r["num_images"]), []).append(float(r["val_miou"]))
        if points:
            xs = sorted(points)
            ax.plot(xs, [statistics.mean(points[x]) for x in xs], "o-", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("synthetic images (12 epochs each)")
    ax.set_ylabel("val mIoU on real scenes")
    ax.set_title("attn2mask masks, plain CE: scaling by prompt recipe")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--seeds", default="0-2", help="training seeds of the table rows")
    parser.add_argument("--curve-seeds", default="0", help="training seeds of the curve points")
    parser.add_argument("--curve-images", type=int, nargs="*", default=list(CURVE_IMAGES))
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "paper_table")
    parser.add_argument("--csv", type=Path, default=TABLE_CSV)
    parser.add_argument("--curve-csv", type=Path, default=CURVE_CSV)
    parser.add_argument("--png", type=Path, default=CURVE_PNG)
    parser.add_argument("--force", action="store_true", help="rerun runs already in the CSVs")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for seed in parse_seeds(args.seeds):
        for name in args.rows:
            images = TABLE_IMAGES.get(name, 0)
            measure(RECIPES[name], images, seed, args.csv, workdir, args.force)
    for seed in parse_seeds(args.curve_seeds) if args.curve_images else []:
        for name in ("baseline", "prompt_aug"):
            for images in args.curve_images:
                measure(RECIPES[name], images, seed, args.curve_csv, workdir, args.force)
    table = read_rows(args.csv)
    print(summary(table))
    # Table rows are curve points too (the baseline at 160 images, prompt_aug at 1280).
    curve_rows = table + read_rows(args.curve_csv)
    if curve_rows:
        plot_curves(curve_rows, args.png)
        print(f"curves: {args.png}")


if __name__ == "__main__":
    main()
