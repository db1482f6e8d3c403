"""LoRA domain adaptation: adapters, diffusers-format interop, fine-tuning, unlabeled images,
scene prompts. Tiny random pipelines (latent 8x8, image 16x16) keep the file fast on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from synthmask.diffusion.lora import (
    LORA_WEIGHT_NAME,
    LoRASettings,
    add_lora,
    load_lora,
    save_lora_weights,
    set_lora_scale,
)
from synthmask.diffusion.pipeline import PipelineConfig, load_pipeline, pipeline_fingerprint
from synthmask.diffusion.tiny import build_tiny_pipeline
from synthmask.diffusion.tokens import class_token_positions
from synthmask.prompts.scene_config import ScenePromptConfig
from synthmask.prompts.scenes import (
    SceneClass,
    ScenePromptComposer,
    shapes_vocabulary,
)
from synthmask.prompts.vocab import Vocabulary, VocabularyClass, cityscapes_vocabulary
from synthmask.world.palette import PALETTE
from tests.fixtures_datasets import make_cityscapes

IMAGE = 16  # tiny pipeline: latent 8 -> image 16


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("lora_tiny") / "pipe"
    build_tiny_pipeline(path, sample_size=8, text_layers=1)
    return path


def _fresh(tiny_dir: Path) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(tiny_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _unet_inputs(pipe, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, 4, 8, 8, generator=gen)
    ids = pipe.tokenizer(
        ["a car on the road", "a photo"], padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    return latents, torch.tensor([10, 700]), ids


@torch.no_grad()
def _unet_out(pipe, seed: int = 0) -> torch.Tensor:
    latents, t, ids = _unet_inputs(pipe, seed)
    text = pipe.text_encoder(ids)[0]
    return pipe.unet(latents, t, text).sample


def _write_images(folder: Path, n: int, color=(200, 40, 40), size=(20, 24)) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pixels = np.asarray(color, float) + rng.normal(0, 4, (*size, 3))
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"img_{i}.png")


# ------------------------------------------------------------------ fine-tuning
@pytest.fixture(scope="module")
def trained(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A LoRAFineTuneModule trained for 12 steps by a Lightning Trainer on 8 tiny images."""
    import lightning as L

    from synthmask.datamodules.unlabeled_images import UnlabeledImagesDataModule
    from synthmask.lightning_modules.lora_finetune import LoRAAdamW, LoRAFineTuneModule

    tmp = tmp_path_factory.mktemp("lora_fit")
    _write_images(tmp / "images" / "city_a", 4)
    _write_images(tmp / "images" / "city_b", 4, color=(40, 40, 200))
    data = UnlabeledImagesDataModule(
        str(tmp / "images"), caption="a photo of a street", resolution=IMAGE,
        batch_size=4, num_workers=0,
    )  # fmt: skip
    torch.manual_seed(0)
    module = LoRAFineTuneModule(
        str(tiny_dir), output_dir=str(tmp / "lora"), rank=4, alpha=8.0, save_every_n_steps=5,
        optimizer=lambda p: LoRAAdamW(p, lr=1e-2, weight_decay=0.0),
    )  # fmt: skip
    base = {k: v.clone() for k, v in module.state_dict().items() if "lora_" not in k}
    batch = next(iter(data.train_dataloader()))
    loss_before = _fixed_loss(module, batch)
    trainer = L.Trainer(
        max_steps=12, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(tmp),
    )  # fmt: skip
    trainer.fit(module, data)
    loss_after = _fixed_loss(module, batch)
    ckpt = trainer.checkpoint_callback.best_model_path or sorted(tmp.rglob("*.ckpt"))[-1]
    return {"module": module, "base": base, "before": loss_before, "after": loss_after,
            "lora_dir": tmp / "lora", "ckpt": Path(ckpt), "tmp": tmp}  # fmt: skip


def _fixed_loss(module, batch) -> float:
    """Loss with fixed noise/timesteps/VAE samples (the same draws before and after training)."""
    module.eval()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        losses = [module.denoising_loss(batch).item() for _ in range(4)]
    module.train()
    module.vae.eval()
    return float(np.mean(losses))


def test_only_lora_trainable_base_unchanged_and_loss_falls(trained) -> None:
    module = trained["module"]
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert all(p.dtype == torch.float32 for p in module.parameters() if p.requires_grad)
    # 4 projections x (A, B) per attention; every UNet attention layer got an adapter
    attn = [n for n, _ in module.unet.named_modules() if n.endswith((".attn1", ".attn2"))]
    assert len(trainable) == len(attn) * 4 * 2
    after = {k: v for k, v in module.state_dict().items() if "lora_" not in k}
    assert after.keys() == trained["base"].keys()
    assert all(torch.equal(after[k], trained["base"][k]) for k in after)
    lora_b = [p for n, p in module.named_parameters() if ".lora_B." in n]
    assert any(p.abs().max() > 0 for p in lora_b)  # B starts at zero: it trained
    assert trained["after"] < 0.9 * trained["before"], (trained["before"], trained["after"])


def test_checkpoint_keeps_only_lora_and_reloads(trained, tiny_dir: Path) -> None:
    from synthmask.lightning_modules.lora_finetune import LoRAFineTuneModule

    state = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)["state_dict"]
    assert state and all("lora_" in k for k in state)
    n_lora = sum(1 for n, p in trained["module"].named_parameters() if p.requires_grad)
    assert len(state) == n_lora
    restored = LoRAFineTuneModule.load_from_checkpoint(trained["ckpt"], map_location="cpu")
    ref = trained["module"]
    torch.testing.assert_close(restored.state_dict(), ref.state_dict(), rtol=0, atol=0)


def test_saved_lora_loads_in_plain_diffusers_and_reproduces(trained, tiny_dir: Path) -> None:
    lora_dir = trained["lora_dir"]
    assert (lora_dir / LORA_WEIGHT_NAME).is_file()
    periodic = sorted(p.name for p in lora_dir.glob("step_*"))
    assert periodic == ["step_10", "step_5"]  # save_every_n_steps=5 over 12 steps
    module = trained["module"].eval()
    with torch.no_grad():
        latents, t, ids = _unet_inputs(module)
        expected = module.unet(latents, t, module.text_encoder(ids)[0]).sample
    pipe = _fresh(tiny_dir)
    base = _unet_out(pipe)
    pipe.load_lora_weights(str(lora_dir))  # what a plain diffusers user does
    loaded = _unet_out(pipe)
    torch.testing.assert_close(loaded, expected, rtol=1e-5, atol=1e-6)
    assert (loaded - base).abs().max() > 1e-4  # the adapter does something
    # alpha (8) != rank (4): the scale survives only through the saved metadata
    layer = pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    assert layer.scaling[next(iter(layer.scaling))] == pytest.approx(2.0)
    set_lora_scale(pipe.unet, 0.0)
    torch.testing.assert_close(_unet_out(pipe), base, rtol=0, atol=0)  # scale 0 = base


def test_synthesis_pipeline_lora_scale_and_cache_key(trained, tiny_dir: Path) -> None:
    lora_dir = str(trained["lora_dir"])
    base_cfg = PipelineConfig(model=str(tiny_dir))
    base = _unet_out(load_pipeline(base_cfg))
    zero = load_pipeline(PipelineConfig(model=str(tiny_dir), lora_path=lora_dir, lora_scale=0.0))
    torch.testing.assert_close(_unet_out(zero), base, rtol=0, atol=0)
    full = load_pipeline(PipelineConfig(model=str(tiny_dir), lora_path=lora_dir))
    assert (_unet_out(full) - base).abs().max() > 1e-4

    other = trained["tmp"] / "other_lora"
    pipe = _fresh(tiny_dir)
    add_lora(pipe.unet, LoRASettings(rank=2))
    save_lora_weights(other, pipe.unet)
    keys = {
        pipeline_fingerprint(base_cfg),
        pipeline_fingerprint(PipelineConfig(model=str(tiny_dir), lora_path=lora_dir)),
        pipeline_fingerprint(
            PipelineConfig(model=str(tiny_dir), lora_path=lora_dir, lora_scale=0.5)
        ),
        pipeline_fingerprint(PipelineConfig(model=str(tiny_dir), lora_path=str(other))),
    }
    assert len(keys) == 4
    again = PipelineConfig(model=str(tiny_dir), lora_path=lora_dir, lora_scale=0.5)
    assert pipeline_fingerprint(again) in keys


def test_text_encoder_lora_round_trip(tiny_dir: Path, tmp_path: Path) -> None:
    pipe = _fresh(tiny_dir)
    base = _unet_out(pipe)
    params = add_lora(pipe.unet, LoRASettings(rank=2, train_text_encoder=True), pipe.text_encoder)
    te_params = [p for p in pipe.text_encoder.parameters() if p.requires_grad]
    assert te_params and all(p.dtype == torch.float32 for p in params)
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn_like(p))
    expected = _unet_out(pipe)
    save_lora_weights(tmp_path, pipe.unet, pipe.text_encoder)
    fresh = _fresh(tiny_dir)
    load_lora(fresh, tmp_path)
    torch.testing.assert_close(_unet_out(fresh), expected, rtol=1e-5, atol=1e-6)
    zero = _fresh(tiny_dir)
    load_lora(zero, tmp_path, scale=0.0)
    torch.testing.assert_close(_unet_out(zero), base, rtol=0, atol=0)


def test_lora_settings_errors(tiny_dir: Path) -> None:
    with pytest.raises(ValueError, match="rank"):
        LoRASettings(rank=0)
    pipe = _fresh(tiny_dir)
    with pytest.raises(ValueError, match="no LoRA adapter"):
        save_lora_weights("/nonexistent", pipe.unet)
    with pytest.raises(ValueError, match="not found in the UNet"):
        add_lora(pipe.unet, LoRASettings(unet_targets=("to_qq",)))
    with pytest.raises(FileNotFoundError, match="LoRA weights"):
        load_lora(pipe, "/nonexistent/lora")


# ------------------------------------------------------------- unlabeled images
def test_unlabeled_folder_recursive_range_and_shape(tmp_path: Path) -> None:
    from synthmask.datamodules.unlabeled_images import UnlabeledImagesDataModule

    _write_images(tmp_path / "a", 2, color=(255, 0, 0))
    _write_images(tmp_path / "a" / "b" / "c", 3, color=(255, 0, 0))
    (tmp_path / "notes.txt").write_text("not an image")
    data = UnlabeledImagesDataModule(
        str(tmp_path), caption="a photo", resolution=8, batch_size=5, num_workers=0,
        random_flip=False,
    )  # fmt: skip
    assert len(data.paths) == 5
    batch = next(iter(data.train_dataloader()))
    assert batch["pixel_values"].shape == (5, 3, 8, 8)
    assert batch["pixel_values"].dtype == torch.float32
    # pure red with noise of std 4/255: channel means ~ (1, -1, -1) in [-1, 1] units
    means = batch["pixel_values"].mean(dim=(0, 2, 3))
    torch.testing.assert_close(means, torch.tensor([1.0, -1.0, -1.0]), atol=0.05, rtol=0)
    assert batch["pixel_values"].min() >= -1.0 and batch["pixel_values"].max() <= 1.0
    assert batch["caption"] == ["a photo"] * 5
    assert sorted(batch["name"])[0] == "a/b/c/img_0.png"


def test_unlabeled_cityscapes_layout_and_errors(tmp_path: Path) -> None:
    from synthmask.datamodules.unlabeled_images import UnlabeledImagesDataModule

    root = make_cityscapes(tmp_path / "cityscapes", n_train=3, n_val=1)
    data = UnlabeledImagesDataModule(str(root), layout="cityscapes", split="train", resolution=16)
    assert len(data.paths) == 3 and all("leftImg8bit/train" in p.as_posix() for p in data.paths)
    item = (data.setup("fit"), data.train_dataset[0])[1]
    assert item["pixel_values"].shape == (3, 16, 16)  # 32x64 -> short side 16, center crop
    with pytest.raises(FileNotFoundError, match="does not exist"):
        UnlabeledImagesDataModule(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="leftImg8bit"):
        UnlabeledImagesDataModule(str(tmp_path), layout="cityscapes")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images found"):
        UnlabeledImagesDataModule(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="layout"):
        UnlabeledImagesDataModule(str(root), layout="kitti")


# ----------------------------------------------------------------- scene prompts
def test_scene_prompt_exact_text_and_spans() -> None:
    composer = ScenePromptComposer(
        vocabulary=Vocabulary("toy", tuple(VocabularyClass(n, n) for n in ("road", "car", "sky"))),
        scene_classes=[
            SceneClass("road", ("road",), "ground", article="the"),
            SceneClass("car", ("car",), "subject", grounds=("road",)),
            SceneClass("sky", ("sky",), "context", phrase="under the {}"),
        ],
        max_subjects=1, max_context=1, ground_prob=1.0, suffix="a photo",
    )  # fmt: skip
    prompt = composer.prompt(0)
    assert prompt.text == "a car on the road under the sky, a photo"
    spans = [(w.word, w.class_id, w.start, w.end) for w in prompt.class_words]
    assert spans == [("car", 2, 2, 5), ("road", 1, 13, 17), ("sky", 3, 28, 31)]


def test_cityscapes_scene_prompts_are_multiclass_and_deterministic(tiny_dir: Path) -> None:
    vocab = cityscapes_vocabulary()
    config = ScenePromptConfig(scenes="cityscapes")
    composer = config.composer(vocab, seed=3)
    prompts = config.prompts(vocab, 200, seed=3)
    assert prompts == composer.generate(200)
    assert [p.text for p in prompts[:20]] != [p.text for p in config.prompts(vocab, 20, seed=4)]
    assert composer.prompt(57) == prompts[57]
    word_class = {w: vocab.class_id(sc.name) for sc in composer.scene_classes for w in sc.words}
    things = {vocab.class_id(n) for n in ("person", "rider", "car", "truck", "bus", "train",
                                          "motorcycle", "bicycle")}  # fmt: skip
    named = set()
    tokenizer = _fresh(tiny_dir).tokenizer
    for p in prompts:
        assert p.text.endswith(", a photo of a street scene, cityscapes")
        for w in p.class_words:
            assert p.text[w.start : w.end] == w.word and word_class[w.word] == w.class_id
        ids = p.class_ids
        assert len(ids) >= 2 and ids[0] in things and 0 not in ids  # subject first, no bg
        if vocab.class_id("rider") in ids:  # a rider always rides something
            assert {vocab.class_id("bicycle"), vocab.class_id("motorcycle")} & set(ids)
        positions = class_token_positions(tokenizer, p)  # fits the 77-token window
        assert [c for c, _ in positions] == [w.class_id for w in p.class_words]
        named |= set(ids)
    assert named == set(range(1, 20))  # all 19 classes appear over 200 prompts


def test_shapes_scene_prompts_use_world_ids() -> None:
    from synthmask.world.shapes import class_names

    vocab = shapes_vocabulary()
    assert vocab.class_names == class_names()  # background 0, shape i -> i + 1 as in the world
    prompts = ScenePromptConfig(scenes="shapes", max_subjects=3).prompts(vocab, 50, seed=0)
    colours = {f"a {c} " for c in PALETTE} | {f"an {c} " for c in PALETTE}
    for p in prompts:  # the shipped LDM's caption grammar: no lead-in, every colour named
        assert any(p.text.startswith(c) for c in colours), p.text
        assert p.text.count(" a ") + p.text.count(" an ") == len(p.class_words) - 1
        assert 1 <= len(p.class_words) <= 3 and len(set(p.class_ids)) == len(p.class_words)
        assert all(vocab.class_names[w.class_id] == w.word for w in p.class_words)
    assert max(len(p.class_words) for p in prompts) == 3
    lead_in = ScenePromptConfig(scenes="shapes", prefix="a picture of ", color_prob=0.0)
    for p in lead_in.prompts(vocab, 20, seed=0):
        assert p.text.startswith("a picture of a") and not any(c in p.text for c in colours)
    with pytest.raises(ValueError, match="shapes-world vocabulary"):
        ScenePromptConfig(scenes="shapes").prompts(cityscapes_vocabulary(), 1, seed=0)
    with pytest.raises(KeyError, match="cityscapes"):
        ScenePromptConfig(scenes="citiscapes")


def test_scene_prompts_give_multiclass_pseudo_masks_with_the_lora(trained, tiny_dir: Path) -> None:
    from synthmask.datamodules.settings import AugmentConfig, LoaderConfig, SynthesisConfig
    from synthmask.datamodules.synthetic import SyntheticSegDataModule

    data = SyntheticSegDataModule(
        pipeline=PipelineConfig(
            model=str(tiny_dir), num_inference_steps=2, lora_path=str(trained["lora_dir"])
        ),
        vocabulary="cityscapes",
        prompts=ScenePromptConfig(scenes="cityscapes", min_subjects=2),
        synthesis=SynthesisConfig(
            num_images=2, batch_size=2, cache_dir=str(trained["tmp"] / "cache"), progress=False
        ),
        loader=LoaderConfig(batch_size=2),
        augment=AugmentConfig(crop_size=IMAGE, scale_range=(1.0, 1.0), hflip_prob=0.0),
    )
    assert data.num_classes == 19
    data.setup("fit")
    vocab = cityscapes_vocabulary()
    for record, spec in zip(data.sample_records(2), data.plan(), strict=True):
        named = {vocab.dataset_label(c) for c in spec.prompt.class_ids}  # train ids
        found = set(np.unique(record.mask).tolist()) - {255}
        assert len(named) >= 3 and found <= named and len(found) >= 2, (spec.prompt.text, found)
