"""The toy models and their shipped checkpoints: configs, file names and loaders (one place for all of them).

AnimateDiff starts from a frozen T2I latent diffusion model and personalized derivatives of it. Here that
base is trained on ShapeWorld images (16x16x4 latents), with two personalized models the motion module
never sees: `outlined` (DreamBooth-style full fine-tune) and `pastel` (a LoRA). One noise schedule (the
paper's `linear` betas) from the base to the motion stage.
"""
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from minianimate.ddim import DDIM
from minianimate.inflation import MotionUNet
from minianimate.lora import LoRA
from minianimate.motion_io import load_motion_module
from minianimate.pipeline import AnimationPipeline, ImagePipeline
from minianimate.toy.text_encoder import ToyTextEncoder
from minianimate.unet import UNet

CHECKPOINTS = Path(__file__).resolve().parents[2] / "data_samples" / "checkpoints"
# 16x16x4 latents -> 8x8 -> 4x4; cross-attention to the text at 8x8 and 4x4 (4.1 M parameters).
TOY_UNET = dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64, 128), layers_per_block=1,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=4,
                cross_attention_dim=64, norm_num_groups=16)
TOY_SCHEDULE = dict(beta_schedule="linear", beta_start=0.00085, beta_end=0.012)
TOY_MOTION = dict(heads=4, max_frames=32)  # the toy's motion modules (v3-like: no mid-block module)
# The shipped files, relative to the checkpoint folder.
FILES = {"vae": "vae", "text_encoder": "text_encoder", "base": "unet_base", "outlined": "unet_outlined",
         "pastel": "lora_pastel.safetensors", "adapter": "domain_adapter.safetensors",
         "motion": "motion_module.safetensors", "motion_config": "motion_module.json", "motion_loras": "motion_loras"}
PERSONALIZED = ("base", "outlined", "pastel")


def toy_ddim() -> DDIM:
    return DDIM(**TOY_SCHEDULE)


def shipped(name: str, root=CHECKPOINTS) -> Path:
    """Path of a shipped file ('vae', 'base', 'motion', ... see FILES); an error naming what makes it if absent."""
    path = Path(root) / FILES[name]
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; `make checkpoints` rebuilds the shipped toy checkpoints")
    return path


def load_vae(root=CHECKPOINTS):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(shipped("vae", root), torch_dtype=torch.float32,
                                         local_files_only=True).eval().requires_grad_(False)


def load_text_encoder(root=CHECKPOINTS) -> ToyTextEncoder:
    folder = shipped("text_encoder", root)
    encoder = ToyTextEncoder(**json.loads((folder / "config.json").read_text()))
    encoder.load_state_dict(load_file(folder / "model.safetensors"))
    return encoder.eval().requires_grad_(False)


def personalized_path(model: str, root=CHECKPOINTS) -> str:
    """'base' as is; 'outlined' / 'pastel' -> their shipped folder / LoRA file; anything else is a path."""
    return shipped(model, root) if model in ("outlined", "pastel") else model


def load_unet(model: str = "base", root=CHECKPOINTS) -> UNet:
    """The image UNet of 'base', 'outlined', 'pastel' (base + LoRA merged) or a diffusers UNet folder."""
    path = shipped("base", root) if model in ("base", "pastel") else Path(personalized_path(model, root))
    unet = UNet.from_pretrained(path).eval().requires_grad_(False)
    if model == "pastel":
        LoRA.load(unet, shipped("pastel", root)).merge()
    return unet


def load_t2i(model: str = "base", root=CHECKPOINTS) -> ImagePipeline:
    """The shipped toy text-to-image model: `load_t2i('pastel').generate(['a red square'])` -> (1, 64, 64, 3)."""
    return ImagePipeline(load_vae(root), load_text_encoder(root), load_unet(model, root), toy_ddim())


def load_motion_unet(root=CHECKPOINTS, motion=None) -> MotionUNet:
    """The base UNet inflated with motion modules: the shipped ones unless `motion` gives a config (dict of
    MotionConfig fields) for fresh ones."""
    unet = UNet.from_pretrained(shipped("base", root))
    if motion is not None:
        return MotionUNet.from_unet(unet, motion)
    config = json.loads(shipped("motion_config", root).read_text())
    model = MotionUNet.from_unet(unet, config["motion"])
    load_motion_module(model, shipped("motion", root), verbose=False)
    return model


def load_pipeline(model: str = "base", root=CHECKPOINTS) -> AnimationPipeline:
    """The shipped toy checkpoints as the paper plugs them: base UNet + motion module + domain adapter (scale 0
    until asked), then the personalized `model` ('base', 'outlined', 'pastel', a UNet folder or LoRA file)."""
    unet = load_motion_unet(root).eval().requires_grad_(False)
    pipe = AnimationPipeline(load_vae(root), load_text_encoder(root), unet, toy_ddim())
    pipe.motion_lora_folder = Path(root) / FILES["motion_loras"]
    if (Path(root) / FILES["adapter"]).exists():
        pipe.adapter = LoRA.load(unet, Path(root) / FILES["adapter"], scale=0.0).requires_grad_(False)
    return load_personalized(pipe, model, root)


def load_personalized(pipe: AnimationPipeline, model: str, root=CHECKPOINTS) -> AnimationPipeline:
    """`pipe.load_personalized` with the shipped names ('outlined', 'pastel') resolved."""
    return pipe.load_personalized(personalized_path(model, root), name=model)
