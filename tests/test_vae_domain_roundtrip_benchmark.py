"""benchmarks/vae_domain_roundtrip.py: PSNR per image, rows per VAE and domain, the table."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import vae_domain_roundtrip as bench  # noqa: E402

from synthmask.diffusion.shipped import shipped_ldm_path  # noqa: E402


def test_psnr_per_image_on_known_errors() -> None:
    images = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    recon = images.copy()
    recon[0] += 1  # mse 1 -> 48.13 dB
    recon[1, 0, 0, 0] = 255  # one pixel of 48 off by 255 -> mse 255^2 / 48
    psnr = bench.psnr_per_image(images, recon)
    assert psnr[0] == pytest.approx(20 * np.log10(255), abs=1e-6)
    assert psnr[1] == pytest.approx(10 * np.log10(48), abs=1e-6)


def test_domains_differ_and_shipped_vae_prefers_its_own(tmp_path: Path) -> None:
    source, target = bench.real_scenes("source", 24), bench.real_scenes("target", 24)
    assert source.shape == target.shape == (24, 32, 32, 3)
    rows = bench.measure({"shipped": shipped_ldm_path()}, 24)
    psnr = {r["domain"]: float(r["psnr_db"]) for r in rows}
    # the shipped VAE saw plain backgrounds only: the target costs it several dB
    assert psnr["source"] > psnr["target"] + 5.0
    out = tmp_path / "rows.csv"
    bench.append(out, rows)
    bench.append(out, rows)
    assert out.read_text().count("\n") == 1 + 2 * len(rows)
    assert "| shipped |" in bench.table(rows)
    with pytest.raises(SystemExit, match="NAME=DIR"):
        bench.parse_vaes(["no-name"])
