"""Tiny LDM training (VAETrainModule, LDMTrainModule): loss goes down, resume, export, shipped
weights."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import load_file

from synthmask.datamodules.shapes_captions import ShapesCaptionDataModule
from synthmask.diffusion.capture import CaptureConfig
from synthmask.diffusion.sampling import generate_with_attention
from synthmask.diffusion.tokens import class_token_positions
from synthmask.ldm import shipped_ldm_path
from synthmask.ldm.attention_loss import install_recording, localization_loss
from synthmask.ldm.nets import ShapesTextEncoder, ShapesUNet, ShapesVAE
from synthmask.ldm.recipe import min_snr_weights, train_scheduler
from synthmask.lightning_modules.diffusion_common import ShapesAdamW
from synthmask.lightning_modules.diffusion_export import export_pipeline, module_from_checkpoint
from synthmask.lightning_modules.ldm_train import LDMTrainModule
from synthmask.lightning_modules.vae_train import VAETrainModule
from synthmask.prompt_types import Prompt


def tiny_vae_module(pretrained: Path | None = None, **kwargs) -> VAETrainModule:
    vae = ShapesVAE(16, (16, 32), pretrained=None if pretrained is None else str(pretrained))
    return VAETrainModule(vae, warmup_steps=1, **kwargs)


def tiny_ldm_module(vae_dir: Path, **kwargs) -> LDMTrainModule:
    """16 px images, 8 x 8 latents, cross-attention width 16 (the shipped recipe, smaller)."""
    return LDMTrainModule(
        vae=ShapesVAE(pretrained=str(vae_dir)),
        unet=ShapesUNet(8, (16, 32, 32), cross_attention_dim=16, attention_heads=1),
        text_encoder=ShapesTextEncoder(hidden_size=16),
        sample_every_n_steps=0,
        warmup_steps=1,
        **kwargs,
    )


def tiny_data(batch_size: int = 4) -> ShapesCaptionDataModule:
    return ShapesCaptionDataModule(image_size=16, n_train=8, n_val=4, batch_size=batch_size)


def trainer(root: Path, max_steps: int, callbacks: list | None = None) -> Trainer:
    return Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
        callbacks=callbacks or [],
    )


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vae")
    torch.manual_seed(0)
    ShapesVAE(16, (16, 32)).save_pretrained(str(path))
    return path


def fixed_batch_loss(
    module: VAETrainModule | LDMTrainModule, data: ShapesCaptionDataModule
) -> float:
    batch = next(iter(data.val_dataloader()))
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(123)
        module.eval()
        if isinstance(module, VAETrainModule):
            return float(module.vae_losses(batch["image"])["loss"])
        return float(module.ldm_loss(batch["image"], batch["caption"])[0])


def test_min_snr_weights_match_formula() -> None:
    abar = train_scheduler().alphas_cumprod
    t = torch.tensor([0, 500, 999])
    snr = abar[t] / (1 - abar[t])
    expected = torch.minimum(snr, torch.tensor(5.0)) / (snr + 1)
    assert torch.allclose(min_snr_weights(t, abar, 5.0), expected.float())
    # at t=0 the SNR is huge: weight = gamma / (snr + 1) ~ 0; at t=999 snr < gamma: snr/(snr+1)
    assert min_snr_weights(t, abar, 5.0)[0] < 0.01
    assert torch.allclose(min_snr_weights(t, abar, None), torch.ones(3))


@pytest.mark.parametrize("stage", ["vae", "ldm"])
def test_training_lowers_the_loss(stage: str, vae_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    lr = 3e-3 if stage == "vae" else 2e-3
    optimizer = functools.partial(ShapesAdamW, lr=lr)
    if stage == "vae":
        module = tiny_vae_module(optimizer=optimizer)
    else:  # attention loss: the shipped recipe's setting
        module = tiny_ldm_module(vae_dir, optimizer=optimizer, attention_loss_weight=0.05)
    data = tiny_data()
    data.sizes["val"] = 8  # evaluate on the training scenes themselves
    data.sizes["train"] = 8
    before = fixed_batch_loss(module, data)
    trainer(tmp_path, max_steps=15 if stage == "vae" else 20).fit(module, datamodule=data)
    after = fixed_batch_loss(module, data)
    assert after < 0.8 * before, (before, after)
    assert float(module.train_cpu_seconds) > 0.0


def test_decoder_finetune_keeps_the_latent_space(vae_dir: Path, tmp_path: Path) -> None:
    """train_part="decoder": only the decoder moves, the loss falls, and the export keeps the
    encoder and scaling factor the denoiser was trained with."""
    torch.manual_seed(0)
    export = tmp_path / "export"
    module = tiny_vae_module(
        vae_dir, train_part="decoder", optimizer=functools.partial(ShapesAdamW, lr=3e-3),
        export_dir=str(export),
    )  # fmt: skip
    encoder_before = {k: v.clone() for k, v in module.vae.encoder.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in module.vae.decoder.state_dict().items()}
    data = tiny_data()
    data.sizes["val"] = data.sizes["train"] = 8
    before = fixed_batch_loss(module, data)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer(tmp_path, max_steps=15, callbacks=[ckpt]).fit(module, datamodule=data)
    assert fixed_batch_loss(module, data) < 0.8 * before
    for name, value in module.vae.encoder.state_dict().items():
        assert torch.equal(value, encoder_before[name]), name
    assert any(
        not torch.equal(v, decoder_before[k]) for k, v in module.vae.decoder.state_dict().items()
    )
    exported = AutoencoderKL.from_pretrained(str(export))
    original = AutoencoderKL.from_pretrained(str(vae_dir))
    assert exported.config.scaling_factor == original.config.scaling_factor
    assert torch.equal(exported.quant_conv.weight, original.quant_conv.weight)
    # The documented `vae` command: the checkpoint's VAE in fp16, same scaling factor.
    from synthmask.lightning_modules.diffusion_export import main as export_main

    export_main(["vae", str(tmp_path / "ckpt" / "last.ckpt"), str(tmp_path / "vae16")])
    shipped = AutoencoderKL.from_pretrained(str(tmp_path / "vae16"))
    stored = load_file(str(tmp_path / "vae16" / "diffusion_pytorch_model.safetensors"))
    assert {t.dtype for t in stored.values()} == {torch.float16}
    # (the run's latent_scale buffer is float32)
    assert shipped.config.scaling_factor == pytest.approx(original.config.scaling_factor, rel=1e-6)
    weight = module.vae.decoder.conv_out.weight.detach()
    assert torch.equal(shipped.decoder.conv_out.weight, weight.half().float())
    with pytest.raises(ValueError, match="'vae'-stage"):
        module_ckpt = tmp_path / "ldm.ckpt"
        ldm = tiny_ldm_module(vae_dir)
        checkpoint = {"hyper_parameters": dict(ldm.hparams), "state_dict": ldm.state_dict()}
        ldm.on_save_checkpoint(checkpoint)
        torch.save(checkpoint, module_ckpt)
        export_main(["vae", str(module_ckpt), str(tmp_path / "nope")])


def test_bad_settings_are_refused(vae_dir: Path) -> None:
    with pytest.raises(ValueError, match="train_part"):
        tiny_vae_module(train_part="encoder")
    with pytest.raises(ValueError, match="cross_attention_dim=16 but the text encoder's"):
        LDMTrainModule(
            vae=ShapesVAE(pretrained=str(vae_dir)),
            unet=ShapesUNet(8, (16, 32, 32), cross_attention_dim=16, attention_heads=1),
            text_encoder=ShapesTextEncoder(hidden_size=32),
        )
    with pytest.raises(FileNotFoundError, match="no VAE"):
        ShapesVAE(pretrained=str(vae_dir / "missing"))


class FirstStep(Callback):
    def __init__(self) -> None:
        self.first: int | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LDMTrainModule) -> None:
        self.first = trainer.global_step


def test_resume_continues_global_step_and_ema(vae_dir: Path, tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "ckpt"
    module = tiny_ldm_module(vae_dir)
    trainer(tmp_path, 3, [ModelCheckpoint(dirpath=ckpt_dir, save_last=True)]).fit(
        module, datamodule=tiny_data()
    )
    ema_after_3 = next(module.ema_unet.parameters()).detach().clone()
    resumed = tiny_ldm_module(vae_dir)
    first = FirstStep()
    run = trainer(tmp_path, 5, [ModelCheckpoint(dirpath=ckpt_dir, save_last=True), first])
    run.fit(resumed, datamodule=tiny_data(), ckpt_path="last")
    assert first.first == 3
    assert run.global_step == 5
    state = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    assert state["global_step"] == 5
    # the EMA was restored (not re-initialized from the fresh UNet) and kept moving
    fresh = next(tiny_ldm_module(vae_dir).ema_unet.parameters())
    restored = state["state_dict"]["ema_unet.conv_in.weight"]
    assert not torch.equal(restored, ema_after_3)
    assert (restored - ema_after_3).abs().max() < (restored - fresh.detach()).abs().max()


def test_export_loads_with_from_pretrained(vae_dir: Path, tmp_path: Path) -> None:
    module = tiny_ldm_module(vae_dir)
    trainer(tmp_path, 2, [ModelCheckpoint(dirpath=tmp_path / "c", save_last=True)]).fit(
        module, datamodule=tiny_data()
    )
    out = tmp_path / "pipe"
    export_pipeline(tmp_path / "c" / "last.ckpt", out, fp16=True)
    pipe = StableDiffusionPipeline.from_pretrained(str(out), torch_dtype=torch.float32)
    assert pipe.text_encoder.config.num_hidden_layers == 0
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.vae.config.scaling_factor == pytest.approx(float(module.latent_scale), rel=1e-3)
    # EMA weights were exported (fp16 storage)
    ema = module.ema_unet.conv_in.weight.detach().half().float()
    assert torch.allclose(pipe.unet.conv_in.weight, ema, atol=1e-3)
    images = pipe(
        "a red circle", num_inference_steps=2, output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images  # fmt: skip
    assert images.shape == (1, 16, 16, 3)
    assert np.isfinite(images).all()
    # The documented command line (the code lives in diffusion_export): non-EMA resume state.
    resume = tmp_path / "resume"
    subprocess.run(
        [sys.executable, "-m", "synthmask.lightning_modules.diffusion_train", "resume-state",
         str(tmp_path / "c" / "last.ckpt"), str(resume)],
        check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip
    unet = UNet2DConditionModel.from_pretrained(str(resume), subfolder="unet")
    # The non-EMA weights, stored in fp16 (from_pretrained loads them back as float32).
    assert torch.equal(unet.conv_in.weight, module.unet.conv_in.weight.detach().half().float())


def test_former_single_class_checkpoint_still_loads(vae_dir: Path, tmp_path: Path) -> None:
    """A DiffusionTrainModule checkpoint (stage and sizes in its hyperparameters, no recorded
    architecture) is rebuilt from those hyperparameters; the weights keep their names."""
    module = tiny_ldm_module(vae_dir)
    hparams = {
        "_class_path": "synthmask.lightning_modules.diffusion_train.DiffusionTrainModule",
        "stage": "ldm",
        "image_size": 16,
        "vae_channels": [16, 32],
        "unet_channels": [16, 32, 32],
        "attention_heads": 1,
        "text_hidden_size": 16,
    }
    old = tmp_path / "old.ckpt"
    torch.save({"hyper_parameters": hparams, "state_dict": module.state_dict()}, old)
    loaded = module_from_checkpoint(old)
    assert isinstance(loaded, LDMTrainModule)
    assert torch.equal(loaded.ema_unet.conv_in.weight, module.ema_unet.conv_in.weight)
    assert float(loaded.latent_scale) == pytest.approx(float(module.latent_scale))
    with pytest.raises(ValueError, match="records no tiny-LDM networks"):
        torch.save({"hyper_parameters": {}, "state_dict": {}}, tmp_path / "other.ckpt")
        module_from_checkpoint(tmp_path / "other.ckpt")


def test_shipped_ldm_loads_and_samples() -> None:
    path = shipped_ldm_path()
    pipe = StableDiffusionPipeline.from_pretrained(str(path), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(
        ["a red circle", "a blue star"], num_inference_steps=3, output_type="np",
        generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
    ).images  # fmt: skip
    assert images.shape == (2, 32, 32, 3)
    assert images.dtype == np.float32 and 0.0 <= images.min() and images.max() <= 1.0
    assert pipe.text_encoder.config.num_hidden_layers == 0
    assert sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) <= 30 * 2**20


def test_localization_loss_hand_computed() -> None:
    probs = torch.full((1, 4, 3), 0.0)
    probs[0, :, 1] = torch.tensor([0.9, 0.1, 0.1, 0.1])  # token 1 attends to the top-left pixel
    masks = torch.tensor([[[1, 0], [0, 0]]])
    loss = localization_loss([probs], [[(1, [1])]], masks)
    assert float(loss) == pytest.approx(1.0 - 0.9 / 1.2)  # mass outside / total mass
    # a dropped caption (None) and a class absent from the mask contribute nothing
    assert float(localization_loss([probs], [None], masks)) == 0.0
    assert float(localization_loss([probs], [[(2, [1])]], masks)) == 0.0


def test_recording_processor_matches_default_attention(vae_dir: Path) -> None:
    module = tiny_ldm_module(vae_dir)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 700])
    text = torch.randn(2, 77, 16)
    with torch.no_grad():
        reference = module.unet(x, t, text).sample
        store = install_recording(module.unet)
        recorded = module.unet(x, t, text).sample
    assert torch.allclose(recorded, reference, atol=1e-5)
    assert len(store) == sum(n.endswith("attn2.processor") for n in module.unet.attn_processors)
    assert all(torch.allclose(m.sum(-1), torch.ones(())) for m in store)  # probabilities


def test_shipped_ldm_class_word_attention_sits_on_the_object() -> None:
    """Measured floor (model card: in/out ratio 41, IoU 0.33 vs disk 0.28 on 48 prompts)."""
    path = shipped_ldm_path()
    pipe = StableDiffusionPipeline.from_pretrained(str(path), torch_dtype=torch.float32)
    shapes = ["circle", "square", "triangle", "star", "cross", "ring"]
    prompts = [
        Prompt.from_text_and_words(f"a {c} {s} on a plain background", [(s, i + 1)])
        for i, (c, s) in enumerate(
            zip(["red", "blue", "green", "yellow", "orange", "pink"], shapes, strict=True)
        )
    ]
    out = generate_with_attention(pipe, prompts, list(range(6)), CaptureConfig(), 10, 3.0)
    images = out.images.numpy().astype(np.float32)
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], 1)
    fg = np.abs(images - np.median(border, 1)[:, None, None]).max(-1) > 48
    ratios = []
    for b, prompt in enumerate(prompts):
        ((_, tokens),) = class_token_positions(pipe.tokenizer, prompt)
        heat = sum(
            torch.nn.functional.interpolate(a[b : b + 1, tokens].sum(1, keepdim=True), (32, 32),
                                            mode="bilinear")[0, 0]
            for a in out.cross_attention.values()
        ).numpy()  # fmt: skip
        if 0.01 < fg[b].mean() < 0.6:  # one object drawn (not empty, not noise)
            ratios.append(heat[fg[b]].mean() / heat[~fg[b]].mean())
    assert len(ratios) >= 4
    assert np.median(ratios) > 3.0, ratios  # flat attention gives ~1


def test_ldm_training_step_read_from_the_model_card(tmp_path: Path) -> None:
    from synthmask.ldm import ldm_training_step

    (tmp_path / "MODEL_CARD.md").write_text("3. Steps: 16,501 optimizer steps (132k images).\n")
    assert ldm_training_step(tmp_path) == 16501
    assert ldm_training_step(tmp_path / "missing") is None
    (tmp_path / "MODEL_CARD.md").write_text("no statement here\n")
    assert ldm_training_step(tmp_path) is None
