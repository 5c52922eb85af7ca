"""The toy world's image stages: the latent autoencoder (`vae`) and the base text-to-image model (`base`), trained on
ShapeWorld images (`minianimate.toy.stages` runs them as `python -m minianimate train vae|base`)."""
import json
from dataclasses import dataclass
from pathlib import Path

from minianimate import stages
from minianimate.checkpoint import DIFFUSERS_WEIGHTS, atomic_write, save_safetensors
from minianimate.trainer import Trainer, TrainConfig, train_device
from minianimate.autoencoder import to_tensor
from minianimate.unet import UNet
from minianimate.toy import datasets
from minianimate.toy.models import FILES, TOY_UNET, SHIP_DTYPE, load_vae, toy_ddim
from minianimate.toy.text_encoder import ToyTextEncoder
from minianimate.toy.vae import make_vae, render_mix, set_scaling_factor, vae_loss


@dataclass
class VAEStage(TrainConfig):
    pool: int = 8000  # rendered frames (`render_mix`) to train on
    crop: int = 32  # random square crops (px) per training sample
    kl_weight: float = 1e-6
    wide: bool = False  # the wider world's frames (`vae.render_wide_mix`: any background, any shape colour)
    anything: float = 0.0  # with `wide`: the share of clean images in colours from the whole RGB cube
    norm_groups: int = 16  # GroupNorm groups of a fresh VAE (diffusers' `norm_num_groups`)
    decoder_only: bool = False  # start from the VAE in the checkpoint folder and train its decoder alone (the
    # encoder, its latents and the scaling factor stay as they are, so every later stage stays valid: SD's ft-MSE VAE)


@dataclass
class BaseStage(TrainConfig):
    images: int = 8000
    moving: float = 0.5  # fraction of photos of moving shapes (motion streak, caption with the direction)
    text_dropout: float = 0.1
    background: str | None = None  # None (near-black) or "random" (the wider world's, `shapeworld.random_background`)


def vae_stage(cfg: VAEStage, out: Path, run: Path, resume: bool, progress: bool):
    vae = load_vae(out).requires_grad_(False) if cfg.decoder_only else make_vae(norm_num_groups=cfg.norm_groups)
    vae = vae.to(train_device(cfg))
    if cfg.decoder_only:
        vae.decoder.requires_grad_(True)
        vae.post_quant_conv.requires_grad_(True)
    data = to_tensor(render_mix(cfg.pool, cfg.seed, cfg.wide, cfg.anything))  # (pool, 3, 64, 64)
    trainer = Trainer({"vae": vae}, cfg, run)
    if resume and trainer.resume():
        print(f"resumed from step {trainer.step} ({run})")
    trainer.fit(lambda step, g: vae_loss(vae, data, g, cfg.batch, cfg.crop, cfg.kl_weight), desc="vae",
                progress=progress)
    vae = vae.cpu()
    scaling = vae.config.scaling_factor if cfg.decoder_only else set_scaling_factor(vae, data)
    folder = out / FILES["vae"]  # a diffusers folder, written atomically (`save_pretrained` would not)
    save_safetensors({k: v.to(SHIP_DTYPE) for k, v in vae.state_dict().items()}, folder / DIFFUSERS_WEIGHTS,
                     {"format": "pt"})
    atomic_write(folder / "config.json", lambda tmp: Path(tmp).write_text(vae.to_json_string()))
    return {"trainer": trainer, "scaling_factor": scaling}


def base_stage(cfg: BaseStage, out: Path, run: Path, resume: bool, progress: bool):
    """The base T2I: UNet + toy text encoder on ShapeWorld image latents (the VAE is already trained)."""
    vae = load_vae(out)
    images, captions = datasets.image_set(cfg.images, cfg.seed, moving=cfg.moving, background=cfg.background)
    latents, captions = datasets.encode_images(vae, images, captions)  # + mirror images, `left`/`right` swapped
    unet, text_encoder = UNet(TOY_UNET), ToyTextEncoder()
    trainer = stages.fit({"unet": unet, "text_encoder": text_encoder}, unet, text_encoder, latents, captions,
                         toy_ddim(), cfg, run, resume=resume, progress=progress, desc="base",
                         text_dropout=cfg.text_dropout)
    trainer.use_ema()  # with `ema`, its weights are exported
    final = trainer.modules
    final["unet"].save_pretrained(out / FILES["base"], dtype=SHIP_DTYPE)
    folder = out / FILES["text_encoder"]
    save_safetensors(final["text_encoder"].state_dict(), folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(final["text_encoder"].config, indent=2))
    return {"trainer": trainer}
