"""The paper's table in miniature (shapes world), scored on held-out real scenes over seeds.

Yoshihashi et al. (VOC val, DeepLabV3+): attn2mask on ~2k images 41.2; + prompt augmentation
scaled to 168,679 images 51.1; + reliability-aware robust training 58.3. Each row here is a
config anyone can rerun: the main job (``experiments/shapes_synth.yaml``, or
``experiments/shapes_real.yaml`` for the real-mask rows) plus the row's own override files in
``experiments/paper_table/`` (each file's header gives the exact command). Every row trains the
same segmenter for the same 960 optimizer steps whatever its image count, and is scored after
training, from its final weights, on the 300 real ``test`` scenes - never used to choose anything
(``val``, the development split, is still logged). The rows:

- ``baseline``: attn2mask masks from one fixed template per class in the generator's caption
  grammar ("a red circle": one colour per class), 160 images, plain CE;
- ``baseline_synonyms``: the same with the class word replaced by synonyms ("a red disk"): what
  synonyms alone add;
- ``prompt_aug_same_count``: augmented prompts (synonyms, every colour, one or two shapes) at the
  baseline's 160 images: the augmentation's gain without the scale's;
- ``prompt_aug``: the same scaled 8x to 1280 images: the scale's gain on top;
- ``robust``: ``prompt_aug`` + the reliability-aware loss (one network, ``ignore``);
- ``robust_beco``: ``prompt_aug`` + reliability-aware BECO co-training (two networks);
- ``real_bound``: the segmenter on real rendered scenes with exact masks;
- ``best``: the main job (self_refine masks, reliability-aware loss) - beyond the paper;
- ``lora_source_only`` / ``lora_adapted``: ``best`` scored on the shifted *target* domain's
  test scenes, synthesized by the shipped LDM / by the LDM adapted per seed from unlabeled
  target images (denoiser LoRA + VAE decoder, ``benchmarks/target_adapters.py --seed S``);
- ``lora_real_bound`` (not run by default): real target masks;
- ``robust_beco_late`` / ``robust_beco_no_online`` / ``best_beco`` (not run by default): BECO
  diagnostics: its online labels switched on after 640 of the 960 steps / never; BECO on the
  ``best`` row's self_refine masks.

Seed ``S`` of a row sets the training seed and the synthesis seed (other prompts, images and
noises per seed) and, for ``lora_adapted``, the adapters' training seed; all rows share seeds.
The all-background score of each domain's test scenes (what a segmenter that learned nothing
gets) is printed as its own row.

    python benchmarks/paper_table.py                    # every default row, seeds 0-2
    python benchmarks/paper_table.py --quick            # every default row at seed 0 (smoke check)
    python benchmarks/paper_table.py --rows baseline robust --seeds 0-4
    python benchmarks/paper_table.py --summary-only     # the tables from the CSVs (curves replotted), nothing run

Cost: the default table's 30 runs took 5.1 hours of wall time in all and the target adapters
35-45 minutes per seed, measured with two or three runs side by side on a 2-core CPU (about one
core each; ``robust_beco`` trains two nets and takes about three times a ``robust`` run).

Runs are children (``synthmask fit``) working in ``--workdir`` (default ``runs/paper_table``:
the shared cache, W&B runs and adapters); each finished run appends a row to
``benchmarks/results/paper_table.csv`` and writes its resolved config to
``benchmarks/results/paper_table_configs/<row>-seed<S>.yaml`` (the CSV holds its sha256). A run
whose (row, seed, split) is in the CSV is skipped, so a killed invocation resumes. The optional
scaling curves (``--curves``) go to ``paper_table_scaling.csv`` / ``.png``.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from main_job import append_csv, git_sha, parse_seeds, read_rows, run_seed  # noqa: E402
from target_adapters import train_decoder, train_lora  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TABLE_CSV = RESULTS / "paper_table.csv"
CONFIGS_DIR = RESULTS / "paper_table_configs"
CURVE_CSV = RESULTS / "paper_table_scaling.csv"
CURVE_PNG = RESULTS / "paper_table_scaling.png"
MAIN_JOB = "experiments/shapes_synth.yaml"
REAL = "experiments/shapes_real.yaml"
ROW_DIR = "experiments/paper_table"
SPLIT = "test"
COLUMNS = [
    "row", "setting", "split", "num_images", "train_steps", "seed", "synthesis_seed",
    "test_miou", "val_miou", "config_sha256", "git_sha", "wall_seconds",
]  # fmt: skip
CURVE_IMAGES = (160, 640, 1280, 2560)
# The paper's rows (VOC val mIoU, %); the miniature's rows are compared by their gains.
PAPER = {"baseline": 41.2, "prompt_aug": 51.1, "robust": 58.3}


@dataclass(frozen=True)
class Row:
    """One row of the table: the base experiment and the override files applied after it."""

    name: str
    setting: str
    configs: tuple[str, ...]
    synthetic: bool = True
    domain: str = "source"
    adapters: bool = False

    def config_args(self) -> list[str]:
        """``--config`` arguments, base first (paths relative to the repository)."""
        return [arg for path in self.configs for arg in ("--config", str(REPO / path))]


def _row(name: str, setting: str, *files: str, base: str = MAIN_JOB, **kwargs) -> Row:
    return Row(name, setting, (base, *(f"{ROW_DIR}/{f}.yaml" for f in files)), **kwargs)


ROWS = {
    "baseline": _row("baseline", "attn2mask, fixed template (one colour per class), CE", "baseline"),
    "baseline_synonyms": _row(
        "baseline_synonyms", "baseline + synonyms for the class word", "baseline", "baseline_synonyms"
    ),
    "prompt_aug_same_count": _row(
        "prompt_aug_same_count", "attn2mask, augmented prompts, CE, baseline's image count",
        "prompt_aug_same_count",
    ),
    "prompt_aug": _row("prompt_aug", "attn2mask, augmented prompts, CE, 8x images", "prompt_aug"),
    "robust": _row("robust", "prompt_aug + reliability ignore (one net)", "prompt_aug", "robust"),
    "robust_beco": _row(
        "robust_beco", "prompt_aug + reliability-aware BECO co-training (two nets)", "prompt_aug",
        "robust_beco",
    ),
    "robust_beco_late": _row(
        "robust_beco_late", "robust_beco, online labels after 640 of the 960 steps", "prompt_aug",
        "robust_beco", "robust_beco_late",
    ),
    "robust_beco_no_online": _row(
        "robust_beco_no_online", "robust_beco without online labels (offline masks throughout)",
        "prompt_aug", "robust_beco", "robust_beco_no_online",
    ),
    "best_beco": _row(
        "best_beco", "best's self_refine data trained with robust_beco's BECO co-training", "best",
        "robust_beco", "best_beco",
    ),
    "real_bound": _row("real_bound", "real masks", "real_bound", base=REAL, synthetic=False),
    "best": _row("best", "main job: self_refine, augmented prompts, reliability ignore", "best"),
    "lora_source_only": _row(
        "lora_source_only", "best on target test, shipped LDM", "best", "lora_source_only",
        domain="target",
    ),
    "lora_adapted": _row(
        "lora_adapted", "best on target test, LDM + target LoRA + target decoder", "best",
        "lora_source_only", "lora_adapted", domain="target", adapters=True,
    ),
    "lora_real_bound": _row(
        "lora_real_bound", "real target masks", "real_bound", "lora_real_bound", base=REAL,
        synthetic=False, domain="target",
    ),
}  # fmt: skip
# Rows run only when named: the real target bound and the BECO diagnostics.
OPTIONAL_ROWS = ("lora_real_bound", "robust_beco_late", "robust_beco_no_online", "best_beco")
DEFAULT_ROWS = [name for name in ROWS if name not in OPTIONAL_ROWS]
# Gains the summary states: (row, reference row, what the difference isolates).
GAINS = (
    ("baseline_synonyms", "baseline", "synonyms alone"),
    ("prompt_aug_same_count", "baseline", "prompt augmentation at equal image count"),
    ("prompt_aug", "prompt_aug_same_count", "scale (8x images, same steps)"),
    ("prompt_aug", "baseline", "augmentation + scale (the paper's second row)"),
    ("robust", "prompt_aug", "reliability-aware loss, one net"),
    ("robust_beco", "prompt_aug", "reliability-aware BECO co-training"),
    ("robust_beco", "robust", "BECO over the one-net loss"),
    ("robust_beco_late", "robust_beco", "online labels from step 640 instead of 160"),
    ("robust_beco_no_online", "prompt_aug", "BECO without online labels over plain CE"),
    ("robust_beco_no_online", "robust", "BECO without online labels over the one-net loss"),
    ("best_beco", "best", "BECO over the one-net loss on self_refine masks"),
    ("lora_adapted", "lora_source_only", "target adapters (LoRA + decoder)"),
)


def run_overrides(row: Row, seed: int, num_images: int | None = None) -> list[str]:
    """Overrides after the row's configs: seeds, work-directory paths (relative to the run's
    working directory), W&B group/name, per-seed adapters and a curve point's image count."""
    args = [
        *row.config_args()[2:],  # the base config is run_seed's --config
        "--trainer.logger.init_args.save_dir=runs",
        f"--trainer.logger.init_args.group=paper-table-{row.name}",
        f"--trainer.logger.init_args.name={row.name} seed={seed}",
    ]
    if row.synthetic:
        args += [
            f"--data.init_args.synthesis.seed={seed}",
            "--data.init_args.synthesis.cache_dir=cache",
        ]
    if num_images is not None:
        args.append(f"--data.init_args.synthesis.num_images={num_images}")
    if row.adapters:
        args += [
            f"--data.init_args.pipeline.lora_path={adapter_dir(seed)}/lora/weights",
            f"--data.init_args.pipeline.vae_path={adapter_dir(seed)}/decoder/export",
        ]
    return args


def adapter_dir(seed: int) -> str:
    """The per-seed target adapters, relative to the work directory."""
    return f"adapters/seed-{seed}"


def resolved_config(result_config: dict) -> str:
    """The run's resolved ``fit`` config as YAML (without the ``config`` file list, which holds
    absolute paths): the text the CSV's ``config_sha256`` is taken of."""
    config = dict(result_config.get("fit", result_config))
    config.pop("config", None)
    return yaml.safe_dump(config, sort_keys=True)


def measure(
    row: Row,
    seed: int,
    csv_path: Path,
    workdir: Path,
    force: bool = False,
    num_images: int | None = None,
    configs_dir: Path = CONFIGS_DIR,
    table_csv: Path = TABLE_CSV,
) -> None:
    """Run one (row, seed[, images]) unless it is in ``csv_path`` already (or, for a curve
    point, is a run of ``table_csv``: see ``reuse_table_run``); append its row."""
    done = {(r["row"], r["seed"], r["split"], r["num_images"]) for r in read_rows(csv_path)}
    key = (row.name, str(seed), SPLIT)
    if not force and any(
        d[:3] == key and (num_images is None or d[3] == str(num_images)) for d in done
    ):
        print(f"{row.name} seed={seed}: in {csv_path.name}, skipped", flush=True)
        return
    if (
        not force
        and num_images is not None
        and reuse_table_run(row, seed, num_images, csv_path, configs_dir, table_csv)
    ):
        return
    if row.adapters:
        train_decoder(workdir, seed=seed)
        train_lora(workdir, seed=seed)
    sha = git_sha()
    result = run_seed(
        REPO / row.configs[0], seed, run_overrides(row, seed, num_images), workdir, test=True
    )
    text = resolved_config(result["config"])
    suffix = f"-{num_images}" if num_images is not None else ""
    configs_dir.mkdir(parents=True, exist_ok=True)
    (configs_dir / f"{row.name}{suffix}-seed{seed}.yaml").write_text(text)
    synthesis = _find(result["config"], "synthesis") or {}
    record = {
        "row": row.name,
        "setting": row.setting,
        "split": SPLIT,
        "num_images": str(synthesis.get("num_images", 0)) if row.synthetic else "0",
        "train_steps": str(result["train_steps"]),
        "seed": str(seed),
        "synthesis_seed": str(synthesis.get("seed", "")) if row.synthetic else "",
        "test_miou": f"{result['test_miou']:.4f}",
        "val_miou": f"{result['val_miou']:.4f}",
        "config_sha256": hashlib.sha256(text.encode()).hexdigest()[:16],
        "git_sha": sha,
        "wall_seconds": f"{result['wall_seconds']:.0f}",
    }
    append_csv(csv_path, [record], COLUMNS)
    print(f"{row.name} seed={seed}: test mIoU {record['test_miou']} (val {record['val_miou']}, "
          f"{record['wall_seconds']} s)", flush=True)  # fmt: skip


def reuse_table_run(
    row: Row,
    seed: int,
    num_images: int,
    csv_path: Path,
    configs_dir: Path,
    table_csv: Path = TABLE_CSV,
) -> bool:
    """A curve point that is a table run (same row, seed and image count: the same resolved
    config) is copied from the table's CSV and configs instead of being trained again."""
    key = (row.name, str(seed), SPLIT, str(num_images))
    table = [
        r for r in read_rows(table_csv) if (r["row"], r["seed"], r["split"], r["num_images"]) == key
    ]
    source = table_csv.parent / CONFIGS_DIR.name / f"{row.name}-seed{seed}.yaml"
    if not table or not source.is_file():
        return False
    configs_dir.mkdir(parents=True, exist_ok=True)
    (configs_dir / f"{row.name}-{num_images}-seed{seed}.yaml").write_text(source.read_text())
    append_csv(csv_path, [table[-1]], COLUMNS)
    print(f"{row.name} seed={seed} images={num_images}: the table's run, copied", flush=True)
    return True


def _find(config: object, key: str) -> object:
    """The first value under ``key`` in a nested config (depth first)."""
    if isinstance(config, dict):
        if key in config:
            return config[key]
        for value in config.values():
            if (found := _find(value, key)) is not None:
                return found
    return None


def all_background_miou(domain: str) -> float:
    """mIoU of predicting background everywhere on the test scenes of ``domain``: the score of a
    segmenter that learned nothing (the main job's val/test data module, same metric)."""
    import torch
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule

    from synthmask.models.metrics import SegmentationIoU, mean_iou

    data = yaml.safe_load((REPO / MAIN_JOB).read_text())["data"]["init_args"]["val_data"]
    if domain != "source":
        data["init_args"]["domain"] = domain
        data["init_args"]["scene"] = None
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "scenes", required=True)
    module = parser.instantiate(parser.parse_object({"scenes": data})).scenes
    module.setup("test")
    metric = SegmentationIoU(module.num_classes)
    for batch in module.test_dataloader():
        metric.update(torch.zeros_like(batch["mask"]), batch["mask"])
    return float(mean_iou(metric.compute()))


def _stats(rows: list[dict[str, str]], name: str) -> dict[str, float] | None:
    values = {int(r["seed"]): float(r["test_miou"]) for r in rows if r["row"] == name}
    if not values:
        return None
    seq = list(values.values())
    return {
        "mean": statistics.mean(seq),
        "std": statistics.stdev(seq) if len(seq) > 1 else 0.0,
        "n": len(seq),
        "by_seed": values,
    }


def summary(rows: list[dict[str, str]], background: dict[str, float] | None = None) -> str:
    """Markdown: each row's test mIoU mean +- std over seeds, then each gain isolated (paired
    over the seeds both rows share: mean +- std of the per-seed differences)."""
    lines = [
        f"| row | setting | images | seeds | {SPLIT} mIoU | paper (VOC val) |",
        "|---|---|---|---|---|---|",
    ]
    for domain, value in (background or {}).items():
        lines.append(
            f"| all_background ({domain}) | predict background everywhere | - | - | {value:.3f} | |"
        )
    for name, row in ROWS.items():
        stats = _stats(rows, name)
        if stats is None:
            continue
        images = next((r["num_images"] for r in rows if r["row"] == name), "")
        lines.append(
            f"| {name} | {row.setting} | {images if row.synthetic else 'real'} | {stats['n']} | "
            f"{stats['mean']:.3f} +- {stats['std']:.3f} | {PAPER.get(name, '')} |"
        )
    lines += [
        "",
        "| gain | rows | paired seeds | gain (mean +- std) | better in |",
        "|---|---|---|---|---|",
    ]
    for name, reference, what in GAINS:
        a, b = _stats(rows, name), _stats(rows, reference)
        if a is None or b is None:
            continue
        seeds = sorted(set(a["by_seed"]) & set(b["by_seed"]))
        if not seeds:
            continue
        diffs = [a["by_seed"][s] - b["by_seed"][s] for s in seeds]
        std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        wins = sum(d > 0 for d in diffs)
        lines.append(
            f"| {what} | {name} - {reference} | {len(seeds)} | "
            f"{statistics.mean(diffs):+.3f} +- {std:.3f} | {wins}/{len(seeds)} |"
        )
    return "\n".join(lines)


CURVE_RECIPES = (("baseline", "fixed template"), ("prompt_aug", "augmented prompts"))


def curve_points(rows: list[dict[str, str]], name: str) -> dict[int, list[float]]:
    """The test mIoUs of row ``name`` by image count (one per curve seed)."""
    points: dict[int, list[float]] = {}
    for r in rows:
        if r["row"] == name:
            points.setdefault(int(r["num_images"]), []).append(float(r["test_miou"]))
    return points


def curve_summary(rows: list[dict[str, str]]) -> str:
    """Markdown: test mIoU (mean over curve seeds, with their count) per image count and prompt
    recipe; '-' where a point has not been run."""
    points = {name: curve_points(rows, name) for name, _ in CURVE_RECIPES}
    counts = sorted({n for p in points.values() for n in p})
    lines = [
        f"| images | {' | '.join(f'{label} ({name})' for name, label in CURVE_RECIPES)} |",
        "|---|" + "---|" * len(CURVE_RECIPES),
    ]
    for n in counts:
        cells = [
            f"{statistics.mean(p[n]):.3f} ({len(p[n])} seed{'s' * (len(p[n]) > 1)})"
            if n in p else "-"
            for p in points.values()
        ]  # fmt: skip
        lines.append(f"| {n} | {' | '.join(cells)} |")
    return "\n".join(lines)


def plot_curves(rows: list[dict[str, str]], out: Path) -> None:
    """Test mIoU against image count (960 steps each) for the two prompt recipes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, label in CURVE_RECIPES:
        points = curve_points(rows, name)
        if points:
            xs = sorted(points)
            ax.plot(xs, [statistics.mean(points[x]) for x in xs], "o-", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("synthetic images (960 optimizer steps each)")
    ax.set_ylabel("test mIoU on real scenes")
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
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, choices=list(ROWS))
    parser.add_argument("--seeds", default="0-2", help="seeds of the table rows, e.g. 0-2")
    parser.add_argument("--quick", action="store_true", help="seed 0 only (a smoke check)")
    parser.add_argument("--curves", action="store_true", help="also run the scaling curves")
    parser.add_argument("--curve-seeds", default="0")
    parser.add_argument("--curve-images", type=int, nargs="*", default=list(CURVE_IMAGES))
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "paper_table")
    parser.add_argument("--csv", type=Path, default=TABLE_CSV)
    parser.add_argument("--curve-csv", type=Path, default=CURVE_CSV)
    parser.add_argument("--png", type=Path, default=CURVE_PNG)
    parser.add_argument("--force", action="store_true", help="rerun runs already in the CSVs")
    parser.add_argument(
        "--summary-only", action="store_true", help="print the table from the CSV, run nothing"
    )
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    seeds = [] if args.summary_only else [0] if args.quick else parse_seeds(args.seeds)
    for seed in seeds:
        for name in args.rows:
            measure(ROWS[name], seed, args.csv, workdir, args.force)
    if args.curves and not args.summary_only:
        for seed in parse_seeds(args.curve_seeds):
            for name in ("baseline", "prompt_aug"):
                for images in args.curve_images:
                    measure(ROWS[name], seed, args.curve_csv, workdir, args.force, images,
                            CONFIGS_DIR / "curves", args.csv)  # fmt: skip
    background = {d: all_background_miou(d) for d in ("source", "target")}
    print(summary(read_rows(args.csv), background))
    if args.curve_csv.is_file():  # the curves run so far: their table, and the plot redrawn
        curve_rows = read_rows(args.curve_csv)
        plot_curves(curve_rows, args.png)
        print(f"\n{curve_summary(curve_rows)}\n\ncurves: {args.png}")


if __name__ == "__main__":
    main()
