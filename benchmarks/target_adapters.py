"""The target-domain adapters of METHOD.md Technique 3 for the shapes world, from unlabeled
target images only: a VAE decoder fine-tune (experiments/shapes_target_decoder.yaml) and a
LoRA of the denoiser (experiments/shapes_target_lora.yaml), both from the same fixed pool of
2000 target scenes with every caption replaced by one generic text.

Each is one ``synthmask fit`` in a child process writing under ``<workdir>/adapters/seed-<S>``
(``--seed S`` sets the training seed; the pool of target images stays the same); an adapter whose
weights exist is not retrained, and the decoder run resumes from its last checkpoint.

    python benchmarks/target_adapters.py [--workdir runs/paper_table] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DECODER_CONFIG = REPO / "experiments" / "shapes_target_decoder.yaml"
LORA_CONFIG = REPO / "experiments" / "shapes_target_lora.yaml"
LORA_STEPS = 1000  # the yaml's 2000 halved: 8 passes over the 2000 target images (4.5 minutes)
DECODER_STEPS = 1500  # the yaml's own (13 minutes on one thread)
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


def _fit(config: Path, overrides: list[str], log: Path) -> None:
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    cmd = [sys.executable, "-m", "synthmask.cli", "fit", "--config", str(config), *overrides]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{config.name} failed (exit {proc.returncode}); its log: {log}")


def adapter_root(workdir: Path, seed: int) -> Path:
    """Where the adapters of training seed ``seed`` live under ``workdir``."""
    return workdir / "adapters" / f"seed-{seed}"


def train_decoder(workdir: Path, steps: int = DECODER_STEPS, seed: int = 0) -> Path:
    """The target-adapted VAE (encoder kept, decoder fine-tuned); returns its folder."""
    root = adapter_root(workdir, seed) / "decoder"
    export = root / "export"
    if (export / "config.json").is_file():
        return export
    _fit(
        DECODER_CONFIG,
        [
            f"--seed_everything={seed}",
            f"--trainer.max_steps={steps}",
            f"--trainer.default_root_dir={root}",
            f"--trainer.logger.init_args.save_dir={root}",
            f"--trainer.callbacks.init_args.dirpath={root / 'checkpoints'}",
            f"--model.init_args.export_dir={export}",
        ],
        root / "fit.log",
    )
    return export


def train_lora(workdir: Path, steps: int = LORA_STEPS, seed: int = 0) -> Path:
    """The target LoRA of the shipped denoiser; returns the folder of its weights."""
    root = adapter_root(workdir, seed) / "lora"
    out = root / "weights"
    if (out / LORA_WEIGHTS).is_file():
        return out
    _fit(
        LORA_CONFIG,
        [
            f"--seed_everything={seed}",
            f"--trainer.max_steps={steps}",
            f"--trainer.default_root_dir={root}",
            f"--trainer.logger.init_args.save_dir={root}",
            f"--model.init_args.output_dir={out}",
            "--trainer.enable_progress_bar=false",
        ],
        root / "fit.log",
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "paper_table")
    parser.add_argument("--lora-steps", type=int, default=LORA_STEPS)
    parser.add_argument("--decoder-steps", type=int, default=DECODER_STEPS)
    parser.add_argument("--seed", type=int, default=0, help="training seed of both adapters")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    print("decoder:", train_decoder(workdir, args.decoder_steps, args.seed), flush=True)
    print("lora:", train_lora(workdir, args.lora_steps, args.seed), flush=True)


if __name__ == "__main__":
    main()
