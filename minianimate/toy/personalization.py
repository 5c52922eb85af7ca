"""The toy world's personalized T2I models: `outlined` (DreamBooth-style: the whole base UNet fine-tuned) and `pastel`
(a LoRA on the frozen base), each from a few images of its style (160 shipped) with plain captions (`a red square`).

    python -m minianimate train outlined|pastel --config configs/outlined.yaml|pastel.yaml

Levers (issue 24, `python -m minianimate eval --personalized` measures them, `benchmarks/personalized_sweep.py`
runs them side by side): styled images with the whole shape in frame (`margin`) and the outline's hole open
(`hole`), DreamBooth's prior-preservation images (`prior`), the LoRA's targets and rank, and training partly under
the shipped ControlNet (`control`, `PartlyControlled`) so that the model follows one.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from minianimate import stages
from minianimate.controlnet import ControlledUNet
from minianimate.lora import RESNET_CONVS, SPATIAL_ALL, SPATIAL_ATTENTION, LoRA
from minianimate.trainer import TrainConfig
from minianimate.unet import UNet
from minianimate.toy import datasets, segmentation
from minianimate.toy.control import as_conditions
from minianimate.toy.models import FILES, SHIP_DTYPE, load_controlnet, load_text_encoder, load_vae, toy_ddim

# Where an image LoRA (pastel, the domain adapter) goes: attention only, the whole transformers (kohya), or those
# plus every resnet convolution and conv_in/conv_out (kohya "LoCon").
LORA_TARGETS = {"spatial_attention": SPATIAL_ATTENTION, "spatial_all": SPATIAL_ALL,
                "spatial_all+conv": SPATIAL_ALL + RESNET_CONVS}


@dataclass
class OutlinedStage(TrainConfig):
    images: int = 40
    moving: float = 0.5  # fraction of photos of moving shapes (motion streak, caption with the direction)
    text_dropout: float = 0.1
    prior: float = 0.0  # plain images per styled image (DreamBooth's prior preservation), see `_styled_images`
    max_t: int = 1000  # train on timesteps [0, max_t) only: below 1000 the base's high-noise steps (layout, motion) stay
    margin: float = 0.0  # the styled images keep their shape this far (px) from the frame's edge: picked with the
    # whole subject in frame, as one picks photos for DreamBooth (0: placed as anywhere in ShapeWorld)
    hole: float = 0.0  # outlined images only: each shape's hole at least this wide (px, `render_image`): picked with
    # the hole that makes the style showing, as `margin` picks the whole subject (0: as drawn in ShapeWorld)
    control: float = 0.0  # fraction of samples trained with the shipped ControlNet attached (`PartlyControlled`)


@dataclass
class PastelStage(OutlinedStage):
    rank: int = 8
    offset_noise: float = 0.0
    targets: str = "spatial_all+conv"  # where the LoRA goes: a key of LORA_TARGETS


@dataclass
class LookStage(PastelStage):
    look: str = "ink"  # a training-only look (`shapeworld.LOOKS`): a variant of the base for the several-bases lever


class PartlyControlled(ControlledUNet):
    """A ControlledUNet for training whose ControlNet residuals reach the UNet for a random fraction `p` of the
    samples only (control dropout, as text dropout): (x (B, C, h, w), t, context, control (B, 3, H, W)) -> eps.
    A LoRA trained through it learns to follow the ControlNet and to draw without one."""

    def __init__(self, unet, controlnet, p: float, seed: int = 0):
        super().__init__(unet, controlnet)
        self.p, self.generator = p, torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor, t, context: torch.Tensor, control: torch.Tensor | None = None):
        down, mid = self.controlnet(x, t, context, control.to(x.device), self.scale)
        keep = (torch.rand(len(x), generator=self.generator) < self.p).to(x).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
        return self.unet(x, t, context, down_block_additional_residuals=[d * keep for d in down],
                         mid_block_additional_residual=mid * keep)


def _styled_images(out: Path, cfg: OutlinedStage, style: str | None, look: str | None = None):
    """The few styled images of a personalized model (`cfg.images`, a fraction `cfg.moving` of them photos of
    moving shapes) and `round(cfg.prior * cfg.images)` plain rendered still images of the same classes, as
    DreamBooth's prior-preservation images (here under the same captions: a plain image pulls its prompt back
    toward the base); returns latents (2 * all images, 4, 16, 16) and captions (mirror images included) and the
    images (all images, 64, 64, 3)."""
    images, captions = datasets.image_set(cfg.images, cfg.seed + 1000, style=style, moving=cfg.moving,
                                          margin=cfg.margin, hole=cfg.hole, look=look)
    if round(cfg.prior * cfg.images):
        plain, plain_captions = datasets.image_set(round(cfg.prior * cfg.images), cfg.seed + 1500)
        images, captions = np.concatenate([images, plain]), captions + plain_captions
    latents, captions = datasets.encode_images(load_vae(out), images, captions)
    return latents, captions, images


def _ddim(cfg: OutlinedStage):
    """The toy schedule, its training timesteps cut to [0, cfg.max_t) (`diffusion_loss` draws t below
    `num_train_timesteps`; the noise levels are the schedule's own)."""
    ddim = toy_ddim()
    if not 0 < cfg.max_t <= ddim.num_train_timesteps:
        raise ValueError(f"max_t must be in 1..{ddim.num_train_timesteps}, got {cfg.max_t}")
    ddim.num_train_timesteps = cfg.max_t
    return ddim


def _partly_controlled(unet, out: Path, cfg: OutlinedStage, images: np.ndarray):
    """The model a personalized stage trains through: `unet` itself, or with `cfg.control` the shipped ControlNet
    attached for that fraction of the samples (`PartlyControlled`), conditioned on each image's silhouette (its
    segmented shape, white on black; mirror images too). Returns (model, `fit`'s extra loss options)."""
    if not cfg.control:
        return unet, {}
    masks = np.repeat(segmentation.segment(images)["filled"][..., None] * np.uint8(255), 3, axis=-1)
    conditions = as_conditions(np.concatenate([masks, masks[:, :, ::-1]]))  # + mirror images
    return PartlyControlled(unet, load_controlnet(out), cfg.control, cfg.seed), {"conditions": conditions}


def outlined_stage(cfg: OutlinedStage, out: Path, run: Path, resume: bool, progress: bool):
    """DreamBooth-style personalization: the whole UNet fine-tuned on a few `outlined` images (with `cfg.control`,
    partly through the shipped ControlNet: `_partly_controlled`)."""
    ddim = _ddim(cfg)  # checks max_t before any work
    latents, captions, images = _styled_images(out, cfg, "outlined")
    unet, text_encoder = UNet.from_pretrained(out / FILES["base"]), load_text_encoder(out)
    model, control = _partly_controlled(unet, out, cfg, images)
    trainer = stages.fit({"unet": unet}, model, text_encoder, latents, captions, ddim, cfg, run, resume=resume,
                         progress=progress, desc="outlined", text_dropout=cfg.text_dropout, **control)
    trainer.use_ema()  # with `ema`, its weights are exported
    unet.save_pretrained(out / FILES["outlined"], dtype=SHIP_DTYPE)
    return {"trainer": trainer}


def pastel_stage(cfg: PastelStage, out: Path, run: Path, resume: bool, progress: bool, look: str | None = None):
    """LoRA personalization from a few `pastel` images on the frozen base UNet, at `cfg.targets`
    (LORA_TARGETS: attention only, the spatial transformers, or those plus the resnet convolutions and
    conv_in/conv_out as kohya "LoCon" LoRAs do). `cfg.control`: the shipped ControlNet steers the UNet for that
    fraction of the training samples, so that the LoRA learns to follow it (`_partly_controlled`). look: the same
    recipe on images of a training-only look (`look_stage`) instead of pastel's."""
    ddim = _ddim(cfg)  # checks max_t before any work
    latents, captions, images = _styled_images(out, cfg, None if look else "pastel", look)
    unet = UNet.from_pretrained(out / FILES["base"]).requires_grad_(False)
    lora = LoRA.inject(unet, LORA_TARGETS[cfg.targets], rank=cfg.rank, name=look or "pastel")
    model, control = _partly_controlled(unet, out, cfg, images)
    trainer = stages.fit({"lora": lora}, model, load_text_encoder(out), latents, captions, ddim, cfg, run,
                         resume=resume, progress=progress, desc=f"look {look}" if look else "pastel",
                         text_dropout=cfg.text_dropout,
                         offset_noise=cfg.offset_noise, **control)
    trainer.use_ema()  # a LoRA trained with `ema` ships its EMA weights, as the outlined UNet does
    lora.save(out / (FILES["looks"] + f"/{look}.safetensors" if look else FILES["pastel"]))
    return {"trainer": trainer, "lora_parameters": lora.num_parameters()}


def look_stage(cfg: LookStage, out: Path, run: Path, resume: bool, progress: bool):
    """A training-only variant of the base: pastel's LoRA recipe on images of `cfg.look` (`shapeworld.LOOKS`),
    written to looks/LOOK.safetensors, for the motion stage's `bases` (never shipped, never evaluated on)."""
    return pastel_stage(cfg, out, run, resume, progress, look=cfg.look)
