"""Training stages of the toy text-to-image world: `vae`, `base`, `outlined` (DreamBooth), `pastel` (LoRA).

Each stage reads a yaml config (TrainConfig fields + stage settings under `extra`), trains with the shared
`Trainer` in `runs/<stage>/` (checkpoints, `--resume`) and exports its result into the checkpoint folder
(`data_samples/checkpoints/` by default) in the formats the rest of minianimate loads.
"""
import json
import time
from dataclasses import fields
from pathlib import Path

import torch
import yaml

from minianimate import t2i
from minianimate.checkpoint import save_safetensors
from minianimate.ddim import DDIM
from minianimate.text_encoder import ToyTextEncoder
from minianimate.trainer import TrainConfig, Trainer
from minianimate.unet import UNet


SHIP_DTYPE = torch.float16  # shipped weights are stored in fp16 (half the size) and loaded as fp32


def load_config(path) -> TrainConfig:
    """A TrainConfig from yaml; unknown top-level keys are an error naming them."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{path}: unknown config keys {unknown}; put stage settings under `extra:`")
    return TrainConfig(**raw)


def _report(stage: str, out: Path, started: float, **numbers) -> None:
    record = {"stage": stage, "minutes": round((time.time() - started) / 60, 2), **numbers}
    log = out / "training_log.json"
    history = json.loads(log.read_text()) if log.exists() else {}
    history[stage] = record
    log.write_text(json.dumps(history, indent=2))
    print(f"{stage}: {record}")


def train_vae_stage(cfg: TrainConfig, out: Path, run: Path, resume: bool = False, progress: bool = True):
    from minianimate.vae import train_vae

    started = time.time()
    torch.manual_seed(cfg.seed)
    vae, losses = train_vae(steps=cfg.steps, batch=cfg.batch, lr=cfg.lr, seed=cfg.seed, progress=progress,
                            **cfg.extra)
    vae.to(SHIP_DTYPE).save_pretrained(out / "vae")
    _report("vae", out, started, final_loss=sum(losses[-50:]) / 50, scaling_factor=vae.config.scaling_factor)


def train_base_stage(cfg: TrainConfig, out: Path, run: Path, resume: bool = False, progress: bool = True):
    """The base T2I: UNet + toy text encoder on ShapeWorld image latents (the VAE is already trained)."""
    started = time.time()
    torch.manual_seed(cfg.seed)
    vae = t2i.load_vae(out)
    images, captions = t2i.image_set(cfg.extra.get("images", 8000), cfg.seed, moving=cfg.extra.get("moving", 0.5))
    latents, captions = t2i.encode_set(vae, images, captions)  # + mirror images, `left`/`right` swapped
    unet, text_encoder = UNet(t2i.TOY_UNET), ToyTextEncoder()
    ddim = DDIM(**t2i.TOY_SCHEDULE)
    trainer = Trainer({"unet": unet, "text_encoder": text_encoder}, cfg, run)
    if resume and trainer.resume():
        print(f"resumed from step {trainer.step}")
    trainer.fit(lambda step, g: t2i.diffusion_loss(unet, text_encoder, latents, captions, ddim, g, cfg.batch,
                                                   cfg.extra.get("text_dropout", 0.1)),
                desc="base", progress=progress)
    final = trainer.ema or trainer.modules
    final["unet"].save_pretrained(out / "unet_base", dtype=SHIP_DTYPE)
    encoder = final["text_encoder"]
    (out / "text_encoder").mkdir(parents=True, exist_ok=True)
    save_safetensors(encoder.state_dict(), out / "text_encoder" / "model.safetensors")
    (out / "text_encoder" / "config.json").write_text(json.dumps(encoder.config, indent=2))
    _report("base", out, started, final_loss=sum(trainer.losses[-100:]) / len(trainer.losses[-100:]), steps=trainer.step)


def _personal_data(out: Path, cfg: TrainConfig, style: str):
    """The few styled images (<= 40) of a personalized model, as latents with their captions (plain, or
    with a direction for the photos of moving shapes)."""
    vae = t2i.load_vae(out)
    images, captions = t2i.image_set(cfg.extra.get("images", 40), cfg.seed + 1000, style=style,
                                     moving=cfg.extra.get("moving", 0.5))
    return t2i.encode_set(vae, images, captions)


def train_outlined_stage(cfg: TrainConfig, out: Path, run: Path, resume: bool = False, progress: bool = True):
    """DreamBooth-style personalization: the whole UNet fine-tuned on a few `outlined` images."""
    started = time.time()
    torch.manual_seed(cfg.seed)
    latents, captions = _personal_data(out, cfg, "outlined")
    unet, text_encoder = UNet.from_pretrained(out / "unet_base"), t2i.load_text_encoder(out)
    ddim = DDIM(**t2i.TOY_SCHEDULE)
    trainer = Trainer({"unet": unet}, cfg, run)
    if resume and trainer.resume():
        print(f"resumed from step {trainer.step}")
    trainer.fit(lambda step, g: t2i.diffusion_loss(unet, text_encoder, latents, captions, ddim, g, cfg.batch,
                                                   cfg.extra.get("text_dropout", 0.1)),
                desc="outlined", progress=progress)
    (trainer.ema or trainer.modules)["unet"].save_pretrained(out / "unet_outlined", dtype=SHIP_DTYPE)
    _report("outlined", out, started, final_loss=sum(trainer.losses[-50:]) / len(trainer.losses[-50:]), steps=trainer.step)


def train_pastel_stage(cfg: TrainConfig, out: Path, run: Path, resume: bool = False, progress: bool = True):
    """LoRA personalization: a low-rank update of the frozen base UNet, learned from a few `pastel` images.

    Targets the spatial transformers, the resnet convolutions and conv_in/conv_out (as kohya "LoCon"
    LoRAs do): the pastel background covers the whole frame, and the toy UNet has no attention at its
    full 16x16 resolution.
    """
    from minianimate.lora import SPATIAL_ALL, LoRA

    started = time.time()
    torch.manual_seed(cfg.seed)
    latents, captions = _personal_data(out, cfg, "pastel")
    unet = UNet.from_pretrained(out / "unet_base").requires_grad_(False)
    text_encoder = t2i.load_text_encoder(out)
    targets = SPATIAL_ALL + [r"(down|mid|up)_blocks?.*resnets\.\d+\.(conv1|conv2)", r"conv_in|conv_out"]
    lora = LoRA.inject(unet, targets, rank=cfg.extra.get("rank", 8), name="pastel")
    ddim = DDIM(**t2i.TOY_SCHEDULE)
    trainer = Trainer({"lora": lora}, cfg, run)
    if resume and trainer.resume():
        print(f"resumed from step {trainer.step}")
    trainer.fit(lambda step, g: t2i.diffusion_loss(unet, text_encoder, latents, captions, ddim, g, cfg.batch,
                                                   cfg.extra.get("text_dropout", 0.1), cfg.extra.get("offset_noise", 0.0)),
                desc="pastel", progress=progress)
    lora.save(out / "lora_pastel.safetensors")
    _report("pastel", out, started, final_loss=sum(trainer.losses[-50:]) / len(trainer.losses[-50:]), steps=trainer.step,
            lora_parameters=lora.num_parameters())


STAGES = {"vae": train_vae_stage, "base": train_base_stage, "outlined": train_outlined_stage,
          "pastel": train_pastel_stage}


def run_stage(stage: str, config, out=t2i.CHECKPOINTS, resume: bool = False, progress: bool = True, run=None):
    """Train one stage: the toy T2I ones here, the video ones of `minianimate.train_video`.

    config: a yaml path or a TrainConfig. `out` holds the checkpoints the stage starts from and receives what
    it trains; `run` (default runs/<stage>) its training checkpoints (for --resume)."""
    from minianimate.train_video import STAGES as VIDEO_STAGES

    stages = {**STAGES, **VIDEO_STAGES}
    if stage not in stages:
        raise ValueError(f"unknown stage {stage!r}; choose one of {list(stages)}")
    cfg = config if isinstance(config, TrainConfig) else load_config(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stages[stage](cfg, out, Path(run or Path("runs") / stage), resume=resume, progress=progress)
