"""The main job (README) per training seed, one row per run appended to results/main_job.csv.

    python benchmarks/main_job.py --seeds 0-4
    python benchmarks/main_job.py --seeds 0 --notes "prompt synonyms" -- --data.init_args.prompts.synonyms=true
    python benchmarks/main_job.py --seeds 0-4 --config experiments/shapes_real.yaml \
        --csv benchmarks/results/real_bound.csv          # the real-mask upper bound

Each seed runs ``synthmask fit --config experiments/shapes_synth.yaml --seed_everything=S`` (plus
the overrides after ``--``) in its own Python process, from ``--workdir`` (default: the current
directory; the first run fills ``synthmask_cache/`` there, the others read it: the synthesized
set does not depend on the training seed). The row records what the run resolved (model step of
the shipped LDM, images, DDIM steps, guidance, mask method, loss, augmentation, optimizer steps),
its val mIoU, the ratio to the real-mask upper bound, wall and CPU seconds, the machine's load
and the git commit it ran from. Nothing in the CSV is typed by hand.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CSV_PATH = REPO / "benchmarks" / "results" / "main_job.csv"
CONFIG = REPO / "experiments" / "shapes_synth.yaml"
CARD = REPO / "synthmask" / "assets" / "shapes_ldm" / "MODEL_CARD.md"
# val mIoU of the real-mask upper bound, `synthmask fit --config experiments/shapes_real.yaml
# --seed_everything=S` over seeds 0-4 (benchmarks/RESULTS.md, "Main job"); --real-miou overrides.
REAL_MIOU = 0.782
COLUMNS = [
    "date", "model_step", "prompts", "guidance", "images", "objects", "masks", "loss",
    "train_steps", "machine", "val_miou", "real_miou", "ratio", "augment", "ddim_steps", "notes",
    "decoder_ft_steps", "decoder_ft_cpu_hours", "seed", "git_sha", "wall_seconds", "cpu_seconds",
]  # fmt: skip
RESULT_MARK = "MAIN_JOB_RESULT "


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> [0, 1, 2, 3, 4]; ``"0,2,5"`` -> [0, 2, 5]; ranges and lists combine."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"--seeds {text!r}: use e.g. 0-4 or 0,2,5")
        seeds.extend(range(int(lo), int(hi or lo) + 1))
    return seeds


def find_key(config: Any, key: str, default: Any = None) -> Any:
    """The first value stored under ``key`` anywhere in a nested config (depth first), so a
    row does not depend on how the data module groups its arguments."""
    if isinstance(config, dict):
        if key in config:
            return config[key]
        values = config.values()
    elif isinstance(config, list):
        values = config
    else:
        return default
    for value in values:
        found = find_key(value, key, None)
        if found is not None:
            return found
    return default


def card_figures(card: Path = CARD) -> dict[str, str]:
    """Model step and decoder fine-tune cost as the shipped LDM's card states them
    ("46,441 optimizer steps", "VAE decoder fine-tune: 4,000 steps, 0.67 CPU hours")."""
    text = card.read_text() if card.is_file() else ""
    step = re.search(r"(\d[\d,]*) optimizer steps", text)
    decoder = re.search(r"VAE decoder fine-tune: (\d[\d,]*) steps, ([\d.]+) CPU hours", text)
    return {
        "model_step": step.group(1).replace(",", "") if step else "",
        "decoder_ft_steps": decoder.group(1).replace(",", "") if decoder else "0",
        "decoder_ft_cpu_hours": decoder.group(2) if decoder else "0",
    }


def mask_method(mask: dict[str, Any]) -> str:
    """The mask method of a data module's ``mask`` block: ``method: self_refine`` or a
    ``class_path`` to a mask choice class whose ``method`` names it."""
    if "method" in mask:
        return str(mask["method"])
    class_path = str(mask.get("class_path", ""))
    module, _, name = class_path.rpartition(".")
    try:
        return str(getattr(importlib.import_module(module), name).method)
    except (ValueError, ImportError, AttributeError):
        return name


def describe_run(config: dict[str, Any]) -> dict[str, str]:
    """The CSV columns a resolved ``synthmask fit`` config determines."""
    prefix = find_key(config, "prefix") or ""
    prompts = f"{'picture-of' if 'picture' in prefix else 'grammar'} "
    prompts += f"colour-{float(find_key(config, 'color_prob', 1.0))}"
    if find_key(config, "synonyms", False):
        prompts += " synonyms"
    augment = "hflip"
    if float(find_key(config, "rot90_prob", 0.0)) > 0:
        augment += "+rot90"
    if find_key(config, "strong_augment", False):
        augment += "+strong"
    if float(find_key(config, "copy_paste_p", 0.0)) > 0:
        augment += f"+copypaste{find_key(config, 'copy_paste_p')}"
    mask = find_key(config, "mask", {}) or {}
    mode = find_key(config, "reliability_mode", "none")
    guidance = find_key(config, "guidance_scale")
    if find_key(config, "num_images") is None:  # no synthesis: a real-mask run (shapes_real.yaml)
        prompts, mask = "", {"method": "exact (real)"}
    return {
        "prompts": prompts,
        "guidance": "" if guidance is None else str(float(guidance)),
        "images": str(find_key(config, "num_images", "")),
        "objects": f"{find_key(config, 'min_subjects', '')}-{find_key(config, 'max_subjects', '')}",
        "masks": mask_method(mask),
        "loss": "ce" if mode == "none" else str(mode),
        "augment": augment,
        "ddim_steps": str(find_key(config, "num_inference_steps", "")),
    }


def git_sha() -> str:
    """HEAD's commit, with ``-dirty`` when tracked files other than the benchmarks' own result
    files (``benchmarks/results/``, which the scripts append to) differ from it."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    dirty = (
        subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--", ".", ":(exclude)benchmarks/results"],
            cwd=REPO,
        ).returncode
        != 0
    )
    return (sha or "unknown") + ("-dirty" if dirty else "")


def machine() -> str:
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    return f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, OMP_NUM_THREADS={threads}"


def run_one(config: Path, seed: int, overrides: list[str], test: bool = False) -> None:
    """In this process: fit the config with ``seed`` (then, with ``test``, score the final
    weights on the data module's test split); print the result line for the parent."""
    from synthmask.cli import main

    cli = main(["fit", "--config", str(config), f"--seed_everything={seed}", *overrides])
    result = {
        "val_miou": float(cli.trainer.callback_metrics["val/mIoU"]),
        "train_steps": int(cli.trainer.global_step),
        "config": cli.config.as_dict(),
    }
    if test:  # the weights as training left them, not a checkpoint chosen on val
        scores = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
        result["test_miou"] = float(scores[0]["test/mIoU"])
    print(RESULT_MARK + json.dumps(result, default=str), flush=True)


def run_seed(
    config: Path, seed: int, overrides: list[str], workdir: Path, test: bool = False
) -> dict[str, Any]:
    """Run one seed in a child process; its result plus wall and CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    cmd = [sys.executable, __file__, "--run-one", str(seed), "--config", str(config)]
    cmd += ["--test", "--"] if test else ["--"]
    proc = subprocess.run([*cmd, *overrides], cwd=workdir, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [x for x in proc.stdout.splitlines() if x.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        sys.stdout.write(proc.stdout[-4000:])
        raise RuntimeError(f"seed {seed}: synthmask fit failed (exit {proc.returncode})")
    result = json.loads(lines[-1][len(RESULT_MARK) :])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {**result, "wall_seconds": wall, "cpu_seconds": cpu}


def make_row(
    result: dict[str, Any], seed: int, real_miou: float, notes: str, load: str, sha: str
) -> dict[str, str]:
    """One CSV row of a finished run."""
    val = result["val_miou"]
    return {
        "date": dt.datetime.now(dt.timezone.utc).date().isoformat(),
        **card_figures(),
        **describe_run(result["config"]),
        "train_steps": str(result["train_steps"]),
        "machine": load,
        "val_miou": f"{val:.3f}",
        "real_miou": f"{real_miou:.3f}",
        "ratio": f"{val / real_miou:.3f}",
        "notes": notes,
        "seed": str(seed),
        "git_sha": sha,
        "wall_seconds": f"{result['wall_seconds']:.0f}",
        "cpu_seconds": f"{result['cpu_seconds']:.0f}",
    }


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV written by ``append_csv`` (none if there is no file yet)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def append_csv(path: Path, rows: list[dict[str, str]], columns: list[str]) -> None:
    """Append rows to a CSV with ``columns``, writing the header when the file is new."""
    new = not path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, columns, lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerows(rows)


def append_rows(path: Path, rows: list[dict[str, str]]) -> None:
    """Append rows; a file with an older header gets the new columns (empty in old rows)."""
    old: list[dict[str, str]] = []
    if path.is_file():
        with path.open() as f:
            reader = csv.DictReader(f)
            if list(reader.fieldnames or []) != COLUMNS:
                old = list(reader)
    if old or not path.is_file():
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS, restval="", lineterminator="\n")
            writer.writeheader()
            writer.writerows(old)
    with path.open("a", newline="") as f:
        csv.DictWriter(f, COLUMNS, restval="", lineterminator="\n").writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0", help="training seeds, e.g. 0-4 or 0,2")
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--csv", type=Path, default=CSV_PATH)
    parser.add_argument("--workdir", type=Path, default=Path.cwd())
    parser.add_argument("--real-miou", type=float, default=REAL_MIOU)
    parser.add_argument("--notes", default="", help="free text for the notes column")
    parser.add_argument("--run-one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--test", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="synthmask fit overrides, after --")
    args = parser.parse_args()
    config = args.config.resolve()
    if not config.is_file():
        raise FileNotFoundError(f"--config {config} does not exist; give an experiments/*.yaml.")
    if args.run_one is not None:
        run_one(config, args.run_one, args.overrides, args.test)
        return
    notes = " ".join([args.notes, *args.overrides]).strip()
    args.workdir.mkdir(parents=True, exist_ok=True)
    for seed in parse_seeds(args.seeds):
        load, sha = machine(), git_sha()
        result = run_seed(config, seed, args.overrides, args.workdir)
        row = make_row(result, seed, args.real_miou, notes, load, sha)
        append_rows(args.csv, [row])
        print(f"seed {seed}: val mIoU {row['val_miou']} (ratio {row['ratio']}) -> {args.csv}")


if __name__ == "__main__":
    main()
