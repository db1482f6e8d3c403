"""Measured domain transfer with LoRA (METHOD.md Technique 3) on the shapes world.

The shipped shapes LDM only saw *source*-domain scenes. On the *target* domain's real val split
(rendered scenes with exact masks), compare segmenters trained on synthesis from
- ``source_only``: the shipped LDM as is, and
- ``lora``: the shipped LDM + a LoRA trained on unlabeled target images
  (experiments/shapes_target_lora.yaml, generic caption, no labels),
at the same budget (experiments/shapes_target_synth.yaml: same prompts, seeds, mask method,
segmenter, epochs), over >= 3 seeds. Optionally ``real_target``: the same segmenter on the real
target masks (upper bound).

Every run goes through the ``synthmask`` CLI in-process and appends one JSON line to --out
(resumable: finished runs are skipped). ``--report`` prints the Markdown table (mean +- std per
variant, paired differences) and ``--grid`` writes a PNG: generations of the same prompts and
seeds before / after adaptation, with real target scenes below.

    OMP_NUM_THREADS=1 nohup python benchmarks/transfer_lora.py --seeds 0 1 2 &
    python benchmarks/transfer_lora.py --report
    python benchmarks/transfer_lora.py --grid
    python benchmarks/transfer_lora.py --stats

``--lora-seed N`` trains one LoRA (seed N) shared by every segmenter seed (the synthesis and the
segmenter still follow each seed). Each synthetic variant has its own cache
(``<work>/cache/<variant>``), which ``--stats`` reads to compare the generations' look with
rendered real target and source scenes (benchmarks/domain_stats.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LORA_CONFIG = REPO / "experiments" / "shapes_target_lora.yaml"
SYNTH_CONFIG = REPO / "experiments" / "shapes_target_synth.yaml"
REAL_CONFIG = REPO / "experiments" / "shapes_real.yaml"
VARIANTS = ("source_only", "lora", "real_target")


def _quiet_trainer_args(run_dir: Path) -> list[str]:
    return [
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={run_dir}",
        "--trainer.logger.init_args.offline=true",
    ]


def train_lora(work: Path, seed: int, extra: list[str]) -> Path:
    """Train the target-domain LoRA once per seed (skipped when its weights exist)."""
    from synthmask.cli import main

    out = work / f"lora_seed{seed}"
    if (out / "pytorch_lora_weights.safetensors").is_file():
        return out
    main(
        [
            "fit",
            "--config",
            str(LORA_CONFIG),
            f"--seed_everything={seed}",
            f"--model.init_args.model={_ldm_dir()}",
            f"--model.init_args.output_dir={out}",
            f"--trainer.default_root_dir={work / f'lora_run{seed}'}",
            *_quiet_trainer_args(work / "runs"),
            *extra,
        ]
    )
    finish_wandb_run()
    return out


LDM_DIR: str | None = None  # --ldm; None = the shipped shapes LDM


def _ldm_dir() -> str:
    if LDM_DIR is not None:
        return LDM_DIR
    from synthmask.ldm import shipped_ldm_path

    return str(shipped_ldm_path())


def run_segmenter(
    variant: str, seed: int, work: Path, lora: Path | None, extra: list[str]
) -> float:
    """Train + validate one segmenter; returns the final val/mIoU on the target val split."""
    from synthmask.cli import main

    if variant == "real_target":
        args = [
            "fit", "--config", str(REAL_CONFIG), "--data.init_args.domain=target",
            "--data.init_args.scene=" + json.dumps({"backgrounds": None}),  # target's own
        ]  # fmt: skip
    else:
        args = [
            "fit", "--config", str(SYNTH_CONFIG),
            f"--data.init_args.pipeline.model={_ldm_dir()}",
            # JSON form: jsonargparse turns `pipeline.lora_path=null` into the string "None"
            "--data.init_args.pipeline=" + json.dumps({"lora_path": str(lora) if variant == "lora" else None}),
            f"--data.init_args.synthesis.seed={seed}",
            f"--data.init_args.synthesis.cache_dir={work / 'cache' / variant}",
            "--data.init_args.synthesis.progress=false",
        ]  # fmt: skip
    cli = main(
        [
            *args,
            f"--seed_everything={seed}",
            f"--trainer.default_root_dir={work / f'{variant}_seed{seed}'}",
            *_quiet_trainer_args(work / "runs"),
            *extra,
        ]
    )
    finish_wandb_run()
    return float(cli.trainer.callback_metrics["val/mIoU"])


def finish_wandb_run() -> None:
    """End the active W&B run after one in-process CLI fit: WandbLogger reuses a live
    ``wandb.run``, so without this every later fit of the process logs (and checkpoints) into
    the first fit's run."""
    import wandb

    if wandb.run is not None:
        wandb.finish()


def done_runs(out: Path) -> dict[tuple[str, int], dict]:
    if not out.is_file():
        return {}
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return {(r["variant"], r["seed"]): r for r in rows}


def run_all(args: argparse.Namespace) -> None:
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    finished = done_runs(out)
    for seed in args.seeds:
        lora = None
        for variant in args.variants:
            if (variant, seed) in finished:
                continue
            if variant == "lora" and lora is None:
                start, cpu_start = time.time(), _cpu_seconds()
                lora_seed = seed if args.lora_seed is None else args.lora_seed
                lora = train_lora(work, lora_seed, args.lora_args)
                lora_seconds = time.time() - start
                lora_cpu = _cpu_seconds() - cpu_start
            start, cpu_start = time.time(), _cpu_seconds()
            extra = args.real_args if variant == "real_target" else args.synth_args
            miou = run_segmenter(variant, seed, work, lora, extra)
            row = {
                "variant": variant,
                "seed": seed,
                "miou": miou,
                "seconds": round(time.time() - start, 1),
                "cpu_seconds": round(_cpu_seconds() - cpu_start, 1),
                "lora": str(lora) if variant == "lora" else None,
            }
            if variant == "lora":  # 0 when the shared LoRA was already on disk
                row["lora_seconds"] = round(lora_seconds, 1)
                row["lora_cpu_seconds"] = round(lora_cpu, 1)
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)
    return mean, math.sqrt(var)


def report(out: Path) -> str:
    """Markdown table: per-variant mean +- std (sample std) and the paired LoRA - source gap."""
    runs = done_runs(out)
    lines = ["| variant | seeds | mIoU per seed | mean +- std |", "|---|---|---|---|"]
    by_variant: dict[str, dict[int, float]] = {}
    for (variant, seed), row in sorted(runs.items()):
        by_variant.setdefault(variant, {})[seed] = row["miou"]
    for variant in VARIANTS:
        scores = by_variant.get(variant)
        if not scores:
            continue
        mean, std = _mean_std(list(scores.values()))
        per_seed = ", ".join(f"{s}: {v:.3f}" for s, v in sorted(scores.items()))
        lines.append(f"| {variant} | {len(scores)} | {per_seed} | {mean:.3f} +- {std:.3f} |")
    src, lora = by_variant.get("source_only", {}), by_variant.get("lora", {})
    paired = [lora[s] - src[s] for s in sorted(set(src) & set(lora))]
    if paired:
        mean, std = _mean_std(paired)
        wins = sum(d > 0 for d in paired)
        lines.append("")
        lines.append(
            f"LoRA - source-only (paired by seed, n={len(paired)}): {mean:+.3f} +- {std:.3f} "
            f"mIoU; LoRA better in {wins}/{len(paired)} seeds."
        )
    return "\n".join(lines)


def picture_grid(path: Path, lora: Path, n: int = 8, seed: int = 0) -> None:
    """PNG: row 1 source-only generations, row 2 LoRA generations (same prompts and seeds),
    row 3 real target-domain scenes."""
    import numpy as np
    import torch
    from PIL import Image, ImageDraw

    from synthmask.diffusion.pipeline import PipelineConfig, load_pipeline
    from synthmask.prompts.scene_config import ScenePromptConfig
    from synthmask.prompts.scenes import shapes_vocabulary
    from synthmask.world import ShapesWorld, get_domain
    from synthmask.world.config import SceneConfig

    synth = _synth_data_args()  # the prompt recipe and sampler of the measured runs
    prompts = ScenePromptConfig(**synth["prompts"]).prompts(shapes_vocabulary(), n, seed)
    steps, guidance = synth["pipeline"]["num_inference_steps"], synth["pipeline"]["guidance_scale"]
    rows = []
    for lora_path in (None, str(lora)):
        cfg = PipelineConfig(model=_ldm_dir(), lora_path=lora_path, num_inference_steps=steps,
                             guidance_scale=guidance)  # fmt: skip
        pipe = load_pipeline(cfg)
        pipe.set_progress_bar_config(disable=True)
        generators = [torch.Generator().manual_seed(seed * 1000 + i) for i in range(n)]
        images = pipe(
            [p.text for p in prompts], num_inference_steps=steps, guidance_scale=guidance,
            output_type="np", generator=generators,
        ).images  # fmt: skip
        rows.append([(img * 255).round().astype(np.uint8) for img in images])
    world = ShapesWorld(n, SceneConfig(image_size=rows[0][0].shape[0]), get_domain("target"), "val")
    rows.append([world[i].image for i in range(n)])
    grid = np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)
    scale = max(1, 256 // rows[0][0].shape[0])
    picture = Image.fromarray(grid).resize(
        (grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST
    )
    labelled = Image.new("RGB", (picture.width + 120, picture.height), "white")
    labelled.paste(picture, (120, 0))
    draw = ImageDraw.Draw(labelled)
    row_height = picture.height // len(rows)
    for r, label in enumerate(("source-only LDM", "LDM + target LoRA", "real target")):
        draw.text((6, r * row_height + row_height // 2 - 6), label, fill="black")
    labelled.save(path)
    (path.with_suffix(".txt")).write_text("\n".join(p.text for p in prompts) + "\n")


def _synth_data_args() -> dict:
    import yaml

    return yaml.safe_load(SYNTH_CONFIG.read_text())["data"]["init_args"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["source_only", "lora"], choices=VARIANTS)
    parser.add_argument("--work", default="runs/transfer_lora")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/transfer_lora.jsonl"))
    parser.add_argument("--ldm", default=None, help="base LDM dir (default: the shipped one)")
    parser.add_argument(
        "--lora-arg", dest="lora_args", action="append", default=[],
        help="extra CLI arg of the LoRA fit, e.g. --lora-arg=--trainer.max_steps=500",
    )  # fmt: skip
    parser.add_argument(
        "--synth-arg", dest="synth_args", action="append", default=[],
        help="extra CLI arg of every segmenter run, e.g. "
        "--synth-arg=--data.init_args.synthesis.num_images=500",
    )  # fmt: skip
    parser.add_argument(
        "--real-arg", dest="real_args", action="append", default=[],
        help="extra CLI arg of the real_target run, e.g. --real-arg=--trainer.max_epochs=2",
    )  # fmt: skip
    parser.add_argument(
        "--lora-seed", type=int, default=None,
        help="train one LoRA with this seed for all segmenter seeds (default: one per seed)",
    )  # fmt: skip
    parser.add_argument("--report", action="store_true", help="print the table and exit")
    parser.add_argument(
        "--breakdown", nargs="+", metavar="LABEL=CKPT", default=None,
        help="evaluate segmenter checkpoints on real target and source val (JSON lines)",
    )  # fmt: skip
    parser.add_argument(
        "--stats", action="store_true",
        help="print look statistics of the cached generations vs real target/source scenes",
    )  # fmt: skip
    parser.add_argument("--grid", action="store_true", help="write the before/after PNG")
    parser.add_argument("--grid-path", default=str(REPO / "benchmarks/results/transfer_lora.png"))
    return parser.parse_args()


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    arguments = parse_args()
    LDM_DIR = arguments.ldm
    if arguments.report:
        print(report(Path(arguments.out)))
    elif arguments.breakdown:
        import torch
        from transfer_lora_analysis import evaluate_checkpoint

        torch.set_num_threads(1)
        for item in arguments.breakdown:
            label, _, ckpt_path = item.partition("=")
            for domain in ("target", "source"):
                result = evaluate_checkpoint(Path(ckpt_path), domain)
                print(json.dumps({"label": label, **result}), flush=True)
    elif arguments.stats:
        from transfer_lora_analysis import domain_stats_report

        text, stat_rows = domain_stats_report(Path(arguments.work).resolve(), _ldm_dir())
        print(text)
        Path(arguments.out).with_suffix(".stats.json").write_text(json.dumps(stat_rows, indent=1))
    elif arguments.grid:
        grid_seed = arguments.seeds[0] if arguments.lora_seed is None else arguments.lora_seed
        lora_dir = Path(arguments.work).resolve() / f"lora_seed{grid_seed}"
        picture_grid(Path(arguments.grid_path), lora_dir)
        print(f"wrote {arguments.grid_path}")
    else:
        run_all(arguments)
        print(report(Path(arguments.out)))
