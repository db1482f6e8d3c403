"""Attention capture vs DAAM on an SD1.5-shaped pipeline: time ratios to plain sampling, peak memory.

Usage:
    python benchmarks/capture_vs_daam.py --setup-daam      # once: DAAM into its own environment
    python benchmarks/capture_vs_daam.py [--steps 10 30] [--repeats 2] [--batch 8]
        [--batch-steps 10] [--methods plain capture daam] [--model-config-dir DIR]
    python benchmarks/capture_vs_daam.py --tiny --steps 2 --repeats 1   # seconds: checks the path

DAAM's environment (what ``--setup-daam`` runs; ``daam`` is no project dependency):
    python -m venv benchmarks/.daam-venv
    benchmarks/.daam-venv/bin/pip install --no-deps daam==0.2.0
``--no-deps`` because daam 0.2.0 pins diffusers 0.21 and transformers 4.30: this script appends
that environment's site-packages to ``sys.path``, so ``daam`` comes from there and torch,
diffusers and transformers from the project's environment. daam's code is used unchanged; its
modules import spaCy at the top only for word parsing (``parsed_heat_maps``), which this
benchmark does not call, so when spaCy is absent a stand-in ``spacy`` module is registered
whose ``load`` raises (``spacy_stand_in``). daam writes nothing outside a temporary folder.

Pipeline: Stable Diffusion 1.5's architecture (860M-parameter UNet, 123M CLIP ViT-L text encoder,
84M VAE with factor 8) with random weights, built in code (``sd15_pipeline``), or from a
diffusers-format config folder (``--model-config-dir``: unet/, vae/, text_encoder/ configs);
DDIM, 512x512 images (64x64 latents), guidance 7.5, prompt batch 1. Random weights cost the
same time and memory as trained ones. ``--tiny``: the project's tiny test pipeline (64 px).

Methods, interleaved in one run (per repeat: plain, capture, daam at each step count, then the
batch runs) so machine load hits all alike:
    plain    the pipeline's own ``__call__`` (capture_overhead.plain_sample);
    capture  synthmask's attn2mask capture (all cross-attention sides, the single middle step,
             as in the experiment configs) through ``generate_with_attention``;
    capture-all-steps  synthmask capturing every step (DAAM's workload; not in the default set);
    daam     ``with daam.trace(pipe)``: the same call, then ``compute_global_heat_map()`` and the
             class word's heat map (DAAM supports one prompt per call, so no batch rows).
At ``--batch`` (8) only plain and capture run; their rows give per-image costs.

Measurement: every run is a fresh child process (model built, one 1-step warm-up without
decoding, then the timed call), which gives wall time, process CPU time (all threads; the fair
figure on a shared machine) and the peak resident set size ``ru_maxrss`` of that process: the
true high-water mark of all memory (weights, activations, torch's C++ buffers), which
tracemalloc cannot see (it tracks Python allocators only) and a psutil poller can miss (it
samples). Rows (fastest wall and CPU of the repeats, highest peak) are appended to
``benchmarks/results/capture_vs_daam.csv`` with the git SHA; ratios are to plain sampling at the
same steps and batch, and batch rows also to plain at batch 1 per image. ``--in-process`` runs
everything in this process (no peak memory; for tests).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import types
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from capture_overhead import PROMPTS, build, plain_sample, timed  # noqa: E402
from main_job import git_sha  # noqa: E402

from synthmask.diffusion.capture import CaptureConfig  # noqa: E402
from synthmask.diffusion.sampling import generate_with_attention  # noqa: E402
from synthmask.diffusion.tiny import pipeline_from_parts  # noqa: E402

HERE = Path(__file__).resolve().parent
DAAM_VENV = HERE / ".daam-venv"
DAAM_VERSION = "0.2.0"
DEFAULT_OUT = HERE / "results" / "capture_vs_daam.csv"
METHODS = ("plain", "capture", "capture-all-steps", "daam")
CAPTURES = {
    "capture": CaptureConfig(step_window=(0.5, 0.5)),  # attn2mask: every side, middle step
    "capture-all-steps": CaptureConfig(),
}
GUIDANCE = 7.5
COLUMNS = [
    "date", "git_sha", "model", "threads", "steps", "batch", "method", "repeats",
    "wall_s", "cpu_s", "wall_per_image_s", "cpu_per_image_s", "wall_ratio", "cpu_ratio",
    "cpu_per_image_ratio_vs_batch1_plain", "peak_mb", "extra_peak_mb", "load",
]  # fmt: skip
# Stable Diffusion 1.5's configs (unet/, vae/, text_encoder/ config.json of the release).
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, act_fn="silu",
    block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, norm_num_groups=32,
    norm_eps=1e-5, center_input_sample=False, downsample_padding=1, flip_sin_to_cos=True,
    freq_shift=0, mid_block_scale_factor=1,
)  # fmt: skip
SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, act_fn="silu",
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, sample_size=512,
)  # fmt: skip
SD15_TEXT = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
    num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
    layer_norm_eps=1e-5, projection_dim=768, bos_token_id=0, eos_token_id=2, pad_token_id=1,
)  # fmt: skip


def sd15_pipeline(config_dir: Path | None = None, seed: int = 0) -> StableDiffusionPipeline:
    """SD 1.5's architecture with random weights (fp32, CPU, DDIM, no safety checker).

    ``config_dir``: a diffusers-format folder whose unet/, vae/ and text_encoder/ configs replace
    the built-in SD 1.5 settings. Image 512x512 -> latent (4, 64, 64).
    """
    unet_cfg, vae_cfg, text_cfg = SD15_UNET, SD15_VAE, SD15_TEXT
    if config_dir is not None:
        unet_cfg = UNet2DConditionModel.load_config(Path(config_dir) / "unet")
        vae_cfg = AutoencoderKL.load_config(Path(config_dir) / "vae")
        text_cfg = CLIPTextConfig.from_pretrained(Path(config_dir) / "text_encoder").to_dict()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config(unet_cfg)
        vae = AutoencoderKL.from_config(vae_cfg)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    return pipeline_from_parts(unet, vae, text_encoder)


def spacy_stand_in() -> None:
    """Register a ``spacy`` module for daam's top-level imports; its ``load`` raises."""

    def load(*_: Any, **__: Any) -> None:
        raise RuntimeError("spaCy is not installed: daam's word parsing is unavailable here.")

    spacy, tokens = types.ModuleType("spacy"), types.ModuleType("spacy.tokens")
    tokens.Token = type("Token", (), {})  # daam only names it in a type annotation
    spacy.tokens, spacy.load = tokens, load
    sys.modules.update({"spacy": spacy, "spacy.tokens": tokens})


def import_daam(venv: Path | None = None) -> types.ModuleType | None:
    """daam from ``venv`` (default DAAM_VENV; appended to sys.path), or None when not there."""
    venv = DAAM_VENV if venv is None else venv
    site = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    if not (site / "daam" / "__init__.py").is_file():
        return None
    if str(site) not in sys.path:
        sys.path.append(str(site))  # after the project's packages: those win
    if "spacy" not in sys.modules and importlib.util.find_spec("spacy") is None:
        spacy_stand_in()
    warnings.filterwarnings(
        "ignore", message=r".*torch\.cuda\.amp\.autocast", category=FutureWarning
    )
    import daam

    return daam


def setup_daam(venv: Path | None = None) -> None:
    """Create ``venv`` (default DAAM_VENV) and install daam into it without dependencies."""
    venv = DAAM_VENV if venv is None else venv
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps"]
    subprocess.run([*pip, f"daam=={DAAM_VERSION}"], check=True)


def load_pipeline_for(args: argparse.Namespace) -> StableDiffusionPipeline:
    if args.tiny:
        return build("tiny", "cpu", "float32")
    return sd15_pipeline(args.model_config_dir)


def warm_up(pipe: StableDiffusionPipeline) -> None:
    """One step without decoding: first-call costs (kernel choice, allocations) leave the timing."""
    pipe(PROMPTS[0].text, num_inference_steps=1, guidance_scale=GUIDANCE, output_type="latent")


def run_method(pipe: StableDiffusionPipeline, method: str, steps: int, batch: int) -> None:
    """One sampling call of ``method`` on ``batch`` prompts (seeds 0..batch-1)."""
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    seeds = list(range(batch))
    if method == "plain":
        plain_sample(pipe, prompts, seeds, steps, GUIDANCE)
    elif method in CAPTURES:
        generate_with_attention(pipe, prompts, seeds, CAPTURES[method], steps, GUIDANCE)
    elif method == "daam":
        daam = import_daam()
        if batch != 1:
            raise ValueError(f"daam traces one prompt per call; batch={batch} is not possible.")
        with tempfile.TemporaryDirectory() as tmp, daam.trace(pipe, data_dir=tmp) as tc:
            plain_sample(pipe, prompts, seeds, steps, GUIDANCE)
            word = prompts[0].class_words[0].word
            factors = tc.all_heat_maps.factors()  # at 512 px DAAM's default set; tiny: 3, 6
            heat = tc.compute_global_heat_map(factors=factors).compute_word_heat_map(word).heatmap
            assert torch.isfinite(heat).all()
    else:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}.")


def measure_child(args: argparse.Namespace, method: str, steps: int, batch: int) -> dict:
    """Time one run in a fresh process; its ru_maxrss is the run's peak memory."""
    cmd = [sys.executable, __file__, "--child", f"{method},{steps},{batch}"]
    cmd += ["--tiny"] if args.tiny else []
    if args.model_config_dir:
        cmd += ["--model-config-dir", str(args.model_config_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{method} at {steps} steps, batch {batch} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_main(args: argparse.Namespace) -> None:
    method, steps, batch = args.child.split(",")
    if method == "daam":
        import_daam()  # its import (matplotlib, ...) stays out of the timing
    pipe = load_pipeline_for(args)
    warm_up(pipe)
    wall, cpu = timed(lambda: run_method(pipe, method, int(steps), int(batch)))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "peak_mb": peak_mb}))


def plan(args: argparse.Namespace, methods: list[str]) -> list[tuple[str, int, int]]:
    """(method, steps, batch) of one repeat, in the interleaved order."""
    runs = [(m, s, 1) for s in args.steps for m in methods]
    if args.batch > 1:
        runs += [(m, args.batch_steps, args.batch) for m in ("plain", "capture")]
    return runs


def measure(args: argparse.Namespace, methods: list[str]) -> dict[tuple, list[dict]]:
    """All repeats of every (method, steps, batch); in-process runs report no peak memory."""
    runs, results = plan(args, methods), {}
    pipe = load_pipeline_for(args) if args.in_process else None
    if pipe is not None:
        warm_up(pipe)
    for repeat in range(args.repeats):
        for key in runs:
            if pipe is None:
                got = measure_child(args, *key)
            else:
                wall, cpu = timed(lambda key=key: run_method(pipe, *key))
                got = {"wall_s": wall, "cpu_s": cpu, "peak_mb": None}
            results.setdefault(key, []).append(got)
            print(f"repeat {repeat + 1}/{args.repeats} {key}: {got}", flush=True)
    return results


def summarize(results: dict[tuple, list[dict]], args: argparse.Namespace) -> list[dict]:
    """One row per (method, steps, batch): fastest wall/CPU, highest peak, ratios to plain."""
    best = {}
    for (method, steps, batch), got in results.items():
        peaks = [g["peak_mb"] for g in got if g["peak_mb"] is not None]
        best[method, steps, batch] = (
            min(g["wall_s"] for g in got),
            min(g["cpu_s"] for g in got),
            max(peaks) if peaks else None,
        )
    common = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_sha": git_sha(),
        "model": "tiny" if args.tiny else str(args.model_config_dir or "sd15-architecture"),
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "load": f"{os.getloadavg()[0]:.2f}",
    }
    rows = []
    for (method, steps, batch), (wall, cpu, peak) in best.items():
        p_wall, p_cpu, p_peak = best[("plain", steps, batch)]
        b1 = best.get(("plain", steps, 1))
        row = {**common, "steps": steps, "batch": batch, "method": method}
        row.update(wall_s=f"{wall:.3f}", cpu_s=f"{cpu:.3f}")
        row.update(wall_per_image_s=f"{wall / batch:.3f}", cpu_per_image_s=f"{cpu / batch:.3f}")
        row.update(wall_ratio=f"{wall / p_wall:.4f}", cpu_ratio=f"{cpu / p_cpu:.4f}")
        row["cpu_per_image_ratio_vs_batch1_plain"] = f"{cpu / batch / b1[1]:.4f}" if b1 else ""
        row["peak_mb"] = f"{peak:.0f}" if peak is not None else ""
        row["extra_peak_mb"] = f"{peak - p_peak:.0f}" if peak is not None else ""
        rows.append(row)
    return rows


def append_rows(rows: list[dict], out: Path) -> None:
    """Append ``rows`` to the CSV at ``out`` (header written when the file is new)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        with out.open() as f:
            header = next(csv.reader(f), None)
        if header != COLUMNS:
            raise ValueError(f"{out} has columns {header}, not {COLUMNS}; move it aside first.")
    new = not out.exists()
    with out.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def print_table(rows: list[dict]) -> None:
    print("| steps | batch | method | wall s | CPU s | ratio wall | ratio CPU | per image CPU "
          "vs plain b1 | peak MB | extra peak MB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    keys = ["steps", "batch", "method", "wall_s", "cpu_s", "wall_ratio", "cpu_ratio"]
    keys += ["cpu_per_image_ratio_vs_batch1_plain", "peak_mb", "extra_peak_mb"]
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the interleaved runs")
    parser.add_argument("--batch", type=int, default=8, help="batched capture size (1: none)")
    parser.add_argument("--batch-steps", type=int, default=10, help="steps of the batch runs")
    parser.add_argument("--methods", nargs="+", default=["plain", "capture", "daam"])
    parser.add_argument("--model-config-dir", type=Path, default=None)
    parser.add_argument("--tiny", action="store_true", help="the tiny test pipeline (64 px)")
    parser.add_argument("--in-process", action="store_true", help="no child processes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--setup-daam", action="store_true", help=f"install daam {DAAM_VERSION}")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown or "plain" not in args.methods:
        parser.error(f"--methods {args.methods}: include plain, choose from {list(METHODS)}")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    if args.setup_daam:
        setup_daam()
        print(f"daam {import_daam().__version__} imports from {DAAM_VENV}")
        return []
    if args.child:
        child_main(args)
        return []
    methods = list(args.methods)
    if "daam" in methods and import_daam() is None:
        methods.remove("daam")
        print(
            f"DAAM arm skipped: daam is not installed in {DAAM_VENV}. Install it once with "
            "`python benchmarks/capture_vs_daam.py --setup-daam`.",
            flush=True,
        )
    rows = summarize(measure(args, methods), args)
    append_rows(rows, args.out)
    print_table(rows)
    print(f"rows appended to {args.out}")
    return rows


if __name__ == "__main__":
    main()
