"""How well an autoencoder represents each domain of the shapes world: PSNR of its round-trips
(encode, latent mode, decode) of held-out real scenes, source (plain backgrounds, what the
shipped LDM was trained on) and target (textured backgrounds, washed-out colours, tinted light,
blur, noise).

The shipped VAE against the one whose decoder was adapted to the target from unlabeled target
images (benchmarks/target_adapters.py, trained on the first run, then reused). A UNet LoRA
cannot draw what the decoder cannot represent, so this bounds Technique 3 in the miniature.

    python benchmarks/vae_domain_roundtrip.py [--n 400] [--vae NAME=DIR ...]

Rows (date, git_sha, vae, domain, n, psnr_db, psnr_std_db) are appended to
benchmarks/results/vae_domain_roundtrip.csv and printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL

sys.path.insert(0, str(Path(__file__).resolve().parent))
from main_job import append_csv, git_sha  # noqa: E402
from target_adapters import train_decoder  # noqa: E402

from synthmask.diffusion.shipped import shipped_ldm_path  # noqa: E402
from synthmask.diffusion.vae_roundtrip import vae_roundtrip  # noqa: E402
from synthmask.diffusion.vae_swap import vae_folder  # noqa: E402
from synthmask.world import ShapesWorld  # noqa: E402
from synthmask.world.config import SceneConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "vae_domain_roundtrip.csv"
COLUMNS = ["date", "git_sha", "vae", "domain", "n", "psnr_db", "psnr_std_db"]
DOMAINS = {"source": ("plain",), "target": None}  # None: the domain's own backgrounds


def real_scenes(domain: str, n: int) -> np.ndarray:
    """Held-out (val split) real scenes, 32 px, 1-2 objects.

    Shape:
        -> uint8 (n, 32, 32, 3)
    """
    scene = SceneConfig(image_size=32, min_objects=1, max_objects=2, backgrounds=DOMAINS[domain])
    world = ShapesWorld(n, scene, domain, "val")
    return np.stack([world[i].image for i in range(n)])


def psnr_per_image(images: np.ndarray, reconstructions: np.ndarray) -> np.ndarray:
    """PSNR in dB of each image against its reconstruction (8-bit peak).

    Shape:
        images, reconstructions uint8 (N, H, W, 3) -> float (N,)
    """
    error = (images.astype(np.float64) - reconstructions.astype(np.float64)) ** 2
    mse = np.maximum(error.reshape(len(images), -1).mean(axis=1), 1e-10)
    return 10.0 * np.log10(255.0**2 / mse)


@torch.no_grad()
def roundtrip_psnr(vae: AutoencoderKL, images: np.ndarray) -> np.ndarray:
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    out = vae_roundtrip(vae, pixels, batch_size=50).permute(0, 2, 3, 1).numpy()
    return psnr_per_image(images, out)


def measure(vaes: dict[str, Path], n: int) -> list[dict[str, str]]:
    rows = []
    scenes = {domain: real_scenes(domain, n) for domain in DOMAINS}
    for name, path in vaes.items():
        vae = AutoencoderKL.from_pretrained(vae_folder(path)).float()
        for domain, images in scenes.items():
            psnr = roundtrip_psnr(vae, images)
            rows.append(
                {
                    "date": dt.datetime.now(dt.timezone.utc).date().isoformat(),
                    "git_sha": git_sha(),
                    "vae": name,
                    "domain": domain,
                    "n": str(n),
                    "psnr_db": f"{psnr.mean():.2f}",
                    "psnr_std_db": f"{psnr.std():.2f}",
                }
            )
    return rows


def append(path: Path, rows: list[dict[str, str]]) -> None:
    append_csv(path, rows, COLUMNS)


def table(rows: list[dict[str, str]]) -> str:
    lines = ["| VAE | source PSNR | target PSNR |", "|---|---|---|"]
    by_vae: dict[str, dict[str, str]] = {}
    for r in rows:
        by_vae.setdefault(r["vae"], {})[r["domain"]] = f"{r['psnr_db']} dB"
    for name, cells in by_vae.items():
        lines.append(f"| {name} | {cells.get('source', '')} | {cells.get('target', '')} |")
    return "\n".join(lines)


def parse_vaes(items: list[str]) -> dict[str, Path]:
    vaes = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"--vae {item!r}: give NAME=DIR (a VAE folder or a pipeline)")
        vaes[name] = Path(path)
    return vaes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=400, help="real scenes per domain")
    parser.add_argument("--vae", nargs="*", default=None, help="NAME=DIR (default: see above)")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "paper_table")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.vae is None:
        vaes = {
            "shipped": shipped_ldm_path(),
            "target-adapted decoder": train_decoder(args.workdir.resolve()),
        }
    else:
        vaes = parse_vaes(args.vae)
    rows = measure(vaes, args.n)
    append(args.out, rows)
    print(table(rows))


if __name__ == "__main__":
    main()
