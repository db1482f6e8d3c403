"""The three quality figures of the shapes-world LDM against its training CPU hours.

Reads the rows the benchmarks appended (nothing is recomputed):
- fidelity: `results/ldm_quality.csv` (ldm_quality.py; rows with a step and CPU hours);
- pseudo-mask mIoU per mask method: `results/pseudo_mask_quality.csv` (pseudo_mask_quality.py;
  the CPU hours of a row's ``model_step`` come from the fidelity rows of the same step);
- downstream ratio: `results/main_job.csv` (val mIoU of `synthmask fit` runs of shapes_synth.yaml
  variants divided by shapes_real.yaml's at the same step budget; benchmarks/main_job.py appends
  them; rows with a fine-tuned VAE decoder sit at the denoiser's CPU hours plus the decoder's).

    python benchmarks/quality_curves.py --out benchmarks/results/quality_curves.png
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
TARGETS = {"fidelity": 0.8, "pseudo-mask mIoU": 0.6, "downstream ratio": 0.7}


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


# Tag suffix of rows measured after the VAE decoder fine-tune (2026-12-04): same denoiser step,
# more CPU hours (their ldm_quality rows carry the sum), so they are kept apart from step_hours.
DECODER_TAG = "-decft"


def step_hours(ldm_rows: list[dict[str, str]], decoder: bool = False) -> dict[int, float]:
    """Training CPU hours of every LDM step that has a fidelity row (``decoder``: of the rows
    measured with the fine-tuned decoder, denoiser + decoder hours)."""
    return {
        int(r["step"]): float(r["cpu_hours"])
        for r in ldm_rows
        if r.get("step") and r["cpu_hours"] and (DECODER_TAG in r["tag"]) == decoder
    }


def fidelity_points(ldm_rows: list[dict[str, str]]) -> list[tuple[float, float]]:
    """(CPU h, fidelity) of the training-run rows (guidance 3, the original classifier)."""
    pts = [(float(r["cpu_hours"]), float(r["fidelity"])) for r in ldm_rows if r["tag"] == "watch"]
    return sorted(pts)


def row_step(row: dict[str, str]) -> int | None:
    """The LDM step of an ldm_quality row: its step column, else the ``stepNNNNNNN`` export dir."""
    if row.get("step"):
        return int(row["step"])
    found = re.search(r"step0*(\d+)", row.get("pipeline", ""))
    return int(found.group(1)) if found else None


def robust_fidelity_points(
    ldm_rows: list[dict[str, str]], hours: dict[int, float], tag: str
) -> list[tuple[float, float]]:
    """(CPU h, fidelity) of the rows tagged ``tag`` (guidance 5, a blur-robust classifier), and
    of the rows tagged ``tag`` + DECODER_TAG at their own CPU hours."""
    pts = {
        (hours[step], float(r["fidelity"]))
        for r in ldm_rows
        if r["tag"] == tag and (step := row_step(r)) in hours
    }
    pts |= {
        (float(r["cpu_hours"]), float(r["fidelity"]))
        for r in ldm_rows
        if r["tag"] == tag + DECODER_TAG and r["cpu_hours"]
    }
    return sorted(pts)


def mask_points(
    mask_rows: list[dict[str, str]],
    hours: dict[int, float],
    decoder_hours: dict[int, float] | None = None,
) -> dict[str, list[tuple[float, float]]]:
    """Per mask method, (CPU h, mIoU) at 15 DDIM steps (the main job's sampling until 2026-12-01),
    or at 10 (since 2026-12-04) for a model step with no 15-step row; rows tagged DECODER_TAG at
    ``decoder_hours`` of their step."""
    decoder_hours = decoder_hours or {}
    by_steps: dict[str, dict[tuple[str, float], float]] = {"15": {}, "10": {}}
    for r in mask_rows:
        step = int(r["model_step"]) if r.get("model_step") else None
        x = (decoder_hours if DECODER_TAG in r["tag"] else hours).get(step)
        if x is not None and r["steps"] in by_steps and "+crf" not in r["method"]:
            by_steps[r["steps"]][(r["method"], x)] = float(r["miou"])
    merged = {**by_steps["10"], **by_steps["15"]}
    out: dict[str, list[tuple[float, float]]] = {}
    for (method, x), miou in merged.items():
        out.setdefault(method, []).append((x, miou))
    return {m: sorted(set(p)) for m, p in out.items()}


def ratio_points(job_rows: list[dict[str, str]], hours: dict[int, float]) -> dict[str, list]:
    """(CPU h, ratio) of the main-job runs, grouped by prompt grammar and loss."""
    out: dict[str, list[tuple[float, float]]] = {}
    for r in job_rows:
        step = int(r["model_step"])
        if step in hours and not r.get("notes"):  # one-off variants stay in the table only
            label = f"{r['prompts'].split()[0]}, {r['images']} img, {r['loss']}"
            if r.get("augment", "hflip") != "hflip":
                label += f", {r['augment']}"
            if r.get("ddim_steps", "15") != "15":
                label += f", {r['ddim_steps']} DDIM steps"
            # A fine-tuned VAE decoder adds its CPU hours to the denoiser's.
            extra = float(r.get("decoder_ft_cpu_hours") or 0.0)
            if extra:
                label += ", VAE decoder fine-tuned"
            out.setdefault(label, []).append((hours[step] + extra, float(r["ratio"])))
    return {k: sorted(v) for k, v in out.items()}


def plot(out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ldm_rows = read_rows(RESULTS / "ldm_quality.csv")
    hours = step_hours(ldm_rows)
    panels = {
        "fidelity": {
            "guidance 3, mild classifier": fidelity_points(ldm_rows),
            "guidance 5, blur-robust classifier of 2026-11-25": robust_fidelity_points(
                ldm_rows, hours, "robustclf-g5"
            ),
            "guidance 5, blur-robust classifier of 2026-12-04 (last point: decoder fine-tuned)": (
                robust_fidelity_points(ldm_rows, hours, "robustclf-s5-g5-steps25")
            ),
        },
        "pseudo-mask mIoU": mask_points(
            read_rows(RESULTS / "pseudo_mask_quality.csv"), hours, step_hours(ldm_rows, True)
        ),
        "downstream ratio": ratio_points(read_rows(RESULTS / "main_job.csv"), hours),
    }
    fig, axes = plt.subplots(1, 3, figsize=(15, 6.5))
    for ax, (title, series) in zip(axes, panels.items(), strict=True):
        for label, pts in series.items():
            ax.plot(*zip(*pts, strict=True), marker="o", label=label)
        ax.axhline(TARGETS[title], color="grey", ls="--", lw=1, label=f"target {TARGETS[title]}")
        ax.set_title(title)
        ax.set_xlabel("LDM training CPU hours (1 thread)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=RESULTS / "quality_curves.png")
    plot(parser.parse_args().out)


if __name__ == "__main__":
    main()
