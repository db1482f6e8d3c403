"""Attention capture overhead: sampling time with vs without capture, and memory vs steps.

Usage:
    python benchmarks/capture_overhead.py [--model tiny|medium|DIR] [--steps 20] [--repeats 3]
        [--prompts 2] [--memory-steps 10 50] [--device cpu] [--dtype float32]

One process, one thread (OMP_NUM_THREADS=1). Timing: a warm-up, then ``--repeats`` rounds that
each run plain sampling (the pipeline's ``__call__`` with the same latents) and every capture
setting once, interleaved so machine load hits all alike; the ratio uses the fastest run of each
(wall clock, and process CPU time, the fair figure on a shared machine). The CPU time spent
computing the captured probabilities (the only extra work) is also timed inside each run:
``1 + work / plain`` is an estimate that machine-load noise between runs does not affect. Memory: for each step
count a fresh child process samples once without capture (baseline peak RSS) and then once
with the heaviest capture (cross + self attention, all layers, all steps); the extra peak RSS
and the bytes held by the AttentionStore must not grow with the number of steps.

Models: ``tiny`` = ``build_tiny_pipeline()`` (64 px, latent 32, attention at 32/16);
``medium`` = a 3-level UNet (64/128/128 channels, 4 heads) at latent 32 (attention at 32/16/8);
or any local pipeline directory (e.g. Stable Diffusion 1.5 on a GPU with --device cuda).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from synthmask.diffusion import sampling  # noqa: E402
from synthmask.diffusion.capture import (  # noqa: E402
    AttentionStore,
    CaptureAttnProcessor,
    CaptureConfig,
)
from synthmask.diffusion.pipeline import PipelineConfig, load_pipeline  # noqa: E402
from synthmask.diffusion.sampling import generate_with_attention, initial_latents  # noqa: E402
from synthmask.diffusion.tiny import build_tiny_pipeline  # noqa: E402
from synthmask.prompt_types import Prompt  # noqa: E402

PROMPTS = [
    Prompt.from_text_and_words("a photograph of a dog on the grass", [("dog", 1)]),
    Prompt.from_text_and_words("a red star on a striped background", [("star", 2)]),
    Prompt.from_text_and_words("a cat next to a pottedplant", [("cat", 3), ("pottedplant", 4)]),
    Prompt.from_text_and_words("a car and a person on a road", [("car", 5), ("person", 6)]),
]


def build(model: str, device: str, dtype: str):
    if model == "tiny":
        pipe = build_tiny_pipeline()
    elif model == "medium":
        pipe = build_tiny_pipeline(
            sample_size=32, unet_channels=(64, 128, 128), attention_heads=4, text_hidden_size=64
        )
    else:
        pipe = load_pipeline(PipelineConfig(model=model, device=device, dtype=dtype))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def settings(resolutions: list[int]) -> dict[str, CaptureConfig]:
    """Capture settings measured; ``resolutions`` = the model's attention sides, largest first."""
    low = tuple(resolutions[1:]) or tuple(resolutions)
    return {
        "cross, all res, middle step (attn2mask)": CaptureConfig(step_window=(0.5, 0.5)),
        f"cross, res {list(low)}, steps 25-75%": CaptureConfig(
            step_window=(0.25, 0.75), cross_resolutions=low
        ),
        "cross, all res, all steps (DiffuMask)": CaptureConfig(),
        "cross + self, all layers, all steps": CaptureConfig(self_attention=True),
    }


def plain_sample(pipe, prompts, seeds, steps: int, guidance: float) -> None:
    scale = pipe.vae_scale_factor
    side = pipe.unet.config.sample_size
    pipe(
        prompt=[p.text for p in prompts],
        height=side * scale,
        width=side * scale,
        num_inference_steps=steps,
        guidance_scale=guidance,
        latents=initial_latents(seeds, (pipe.unet.config.in_channels, side, side)).to(
            pipe.device, pipe.unet.dtype
        ),
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        output_type="pt",
    )


def timed(fn) -> tuple[float, float]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - wall0, time.process_time() - cpu0


def time_overhead(args) -> dict:
    pipe = build(args.model, args.device, args.dtype)
    prompts, seeds = PROMPTS[: args.prompts], list(range(args.prompts))
    probe = generate_with_attention(pipe, prompts[:1], [0], CaptureConfig(), 1, args.guidance)
    resolutions = sorted(probe.cross_attention, reverse=True)
    cases = settings(resolutions)
    runs: dict[str, list[tuple[float, float]]] = {"plain": [], **{name: [] for name in cases}}
    record_cpu: dict[str, list[float]] = {name: [] for name in cases}
    spent = [0.0]
    original_record = CaptureAttnProcessor._record

    def timed_record(self, *a, **kw) -> None:  # CPU time of the extra work (probabilities)
        cpu0 = time.process_time()
        original_record(self, *a, **kw)
        spent[0] += time.process_time() - cpu0

    CaptureAttnProcessor._record = timed_record

    def run(name: str) -> None:
        if name == "plain":
            plain_sample(pipe, prompts, seeds, args.steps, args.guidance)
        else:
            generate_with_attention(pipe, prompts, seeds, cases[name], args.steps, args.guidance)

    for name in runs:  # warm-up
        run(name)
    for _ in range(args.repeats):
        for name in runs:
            spent[0] = 0.0
            runs[name].append(timed(lambda name=name: run(name)))
            if name in record_cpu:
                record_cpu[name].append(spent[0])
    CaptureAttnProcessor._record = original_record
    best = {name: (min(w for w, _ in r), min(c for _, c in r)) for name, r in runs.items()}
    record = {name: min(r) for name, r in record_cpu.items()}
    return {"resolutions": resolutions, "best": best, "record": record}


def memory_child(args) -> None:
    """Runs in a fresh process: prints peak RSS growth of one captured run and store size."""
    pipe = build(args.model, args.device, args.dtype)
    prompts, seeds = PROMPTS[: args.prompts], list(range(args.prompts))
    plain_sample(pipe, prompts, seeds, args.child_steps, args.guidance)
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stores: list[AttentionStore] = []

    class KeptStore(AttentionStore):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            stores.append(self)

    sampling.AttentionStore = KeptStore
    capture = CaptureConfig(self_attention=True)
    generate_with_attention(pipe, prompts, seeds, capture, args.child_steps, args.guidance)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    store = stores[0]
    print(
        json.dumps(
            {
                "steps": args.child_steps,
                "extra_peak_mib": (peak_kb - base_kb) / 1024,
                "peak_rss_mib": peak_kb / 1024,
                "store_mib": sum(t.numel() * 4 for t in store.sums.values()) / 2**20,
                "store_tensors": store.num_tensors(),
                "maps_added": sum(store.counts.values()),
            }
        )
    )


def measure_memory(args) -> list[dict]:
    results = []
    for steps in args.memory_steps:
        cmd = [sys.executable, __file__, "--child-steps", str(steps), "--model", args.model]
        cmd += ["--prompts", str(args.prompts), "--device", args.device, "--dtype", args.dtype]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--memory-steps", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--child-steps", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.child_steps:
        memory_child(args)
        return
    print(
        f"# {platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
        f"load average {os.getloadavg()[0]:.2f}; model={args.model}, prompts={args.prompts}, "
        f"steps={args.steps}, guidance={args.guidance}, device={args.device}"
    )
    timing = time_overhead(args)
    plain_wall, plain_cpu = timing["best"]["plain"]
    print(f"attention resolutions: {timing['resolutions']}")
    print(
        "| setting | wall s | CPU s | ratio (wall) | ratio (CPU) | "
        "capture work CPU s | 1 + work / plain CPU |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, (wall, cpu) in timing["best"].items():
        work = timing["record"].get(name, 0.0)
        print(
            f"| {name} | {wall:.2f} | {cpu:.2f} | {wall / plain_wall:.3f} | {cpu / plain_cpu:.3f} "
            f"| {work:.3f} | {1 + work / plain_cpu:.3f} |"
        )
    print()
    print("| steps | extra peak RSS MiB | peak RSS MiB | store MiB | store tensors | maps added |")
    print("|---|---|---|---|---|---|")
    for m in measure_memory(args):
        print(
            f"| {m['steps']} | {m['extra_peak_mib']:.1f} | {m['peak_rss_mib']:.0f} | "
            f"{m['store_mib']:.2f} | {m['store_tensors']} | {m['maps_added']} |"
        )


if __name__ == "__main__":
    main()
