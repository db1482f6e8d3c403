"""Analysis helpers of benchmarks/transfer_lora.py: look statistics of the cached generations vs
real scenes (``--stats``) and the localization / naming split of segmenter checkpoints on real
target and source val scenes (``--breakdown``)."""

from __future__ import annotations

from pathlib import Path


def _real_scenes(domain: str, n: int, backgrounds: tuple[str, ...] | None):
    import numpy as np

    from synthmask.world import ShapesWorld
    from synthmask.world.config import SceneConfig

    scene = SceneConfig(image_size=32, min_objects=1, max_objects=2, backgrounds=backgrounds)
    world = ShapesWorld(n, scene, domain, "val")
    scenes = [world[i] for i in range(n)]
    return np.stack([s.image for s in scenes]), np.stack([s.mask for s in scenes])


def _cached_images(cache_dir: Path):
    import numpy as np

    from synthmask.cache import SampleCache

    if not cache_dir.is_dir():
        return None
    cache = SampleCache(cache_dir, create=False)
    records = [cache[k] for k in sorted(cache.keys())]
    if not records:
        return None
    return np.stack([r.image for r in records]), np.stack([r.mask for r in records])


def _mask_fractions(masks) -> dict[str, float]:
    """Share of pixels labelled as an object (1..C-1)."""
    return {"object_fraction": float(((masks > 0) & (masks != 255)).mean())}


def vae_roundtrip(images, ldm_dir: str):
    """The frozen VAE's reconstruction of real scenes: the closest a UNet-only LoRA can get.

    Shape:
        images uint8 (N, H, W, 3) -> uint8 (N, H, W, 3)
    """
    import torch

    from synthmask.diffusion.pipeline import PipelineConfig, load_pipeline
    from synthmask.diffusion.vae_roundtrip import vae_roundtrip as roundtrip

    vae = load_pipeline(PipelineConfig(model=ldm_dir)).vae.float()
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return roundtrip(vae, pixels, batch_size=50).permute(0, 2, 3, 1).numpy()


def domain_stats_report(work: Path, ldm_dir: str, n_real: int = 400) -> tuple[str, dict]:
    """Markdown + dict: look statistics (benchmarks/domain_stats.py) of every variant's cached
    generations and of rendered real scenes (target; source with plain backgrounds = what the
    shipped LDM was trained on), and how far each moved from the source look to the target's."""
    from domain_stats import domain_statistics, stats_table, target_shift_fraction

    rows: dict[str, dict[str, float]] = {}
    masks = {}
    for variant in ("source_only", "lora"):
        cached = _cached_images(work / "cache" / variant)
        if cached is not None:
            name = f"generated, {variant}"
            rows[name] = {**domain_statistics(cached[0]), "n": len(cached[0])}
            masks[f"{name} (pseudo-masks)"] = cached[1]
    target_images, masks["real target (exact masks)"] = _real_scenes("target", n_real, None)
    sets = {
        "real target (val)": target_images,
        "real source, plain backgrounds (LDM training look)": _real_scenes(
            "source", n_real, ("plain",)
        )[0],
        "VAE reconstruction of real target": vae_roundtrip(target_images, ldm_dir),
    }
    for name, images in sets.items():
        rows[name] = {**domain_statistics(images), "n": len(images)}
    source = rows["real source, plain backgrounds (LDM training look)"]
    target = rows["real target (val)"]
    lines = [stats_table(rows), ""]
    for name, stats in rows.items():
        if name.startswith(("generated", "VAE")):
            shift = target_shift_fraction(stats, source, target)
            cells = ", ".join(f"{k} {v:+.2f}" for k, v in shift.items() if v == v)
            lines.append(f"- {name}: shift source -> target (0 = source, 1 = target): {cells}")
    lines += ["", "| masks | share of object pixels |", "|---|---|"]
    for name, label_maps in masks.items():
        fractions = _mask_fractions(label_maps)
        rows[name] = fractions
        lines.append(f"| {name} | {fractions['object_fraction']:.3f} |")
    return "\n".join(lines), rows


def evaluate_checkpoint(ckpt_path: Path, domain: str, n_val: int = 300) -> dict:
    """A segmenter checkpoint of one run on the real val scenes of ``domain`` (target: the val
    data of shapes_target_synth.yaml; source: plain backgrounds, as in shapes_real.yaml), split
    by benchmarks/segmenter_breakdown.py into mIoU, fg_iou (finds objects) and fg_class_acc
    (names them)."""
    from segmenter_breakdown import evaluate

    record = evaluate(ckpt_path, n_val, domain)
    record.pop("step")
    return record
