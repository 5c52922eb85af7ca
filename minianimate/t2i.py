"""The toy text-to-image model (VAE + toy text encoder + UNet + DDIM), its training and its personalized models.

AnimateDiff starts from a frozen T2I latent diffusion model and personalized derivatives of it. Here we
train that base ourselves on ShapeWorld images (16x16x4 latents), then two personalized models it never
shows the motion module: `outlined` (DreamBooth-style full fine-tune) and `pastel` (a LoRA).
Both noise schedules of the toy world are the paper's `linear` betas (one schedule from base to motion stage).
"""
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from minianimate import shapeworld as sw
from minianimate.ddim import DDIM
from minianimate.sampling import sample
from minianimate.text_encoder import ToyTextEncoder
from minianimate.unet import UNet
from minianimate.vae import decode, encode, to_tensor, to_uint8

CHECKPOINTS = Path(__file__).resolve().parent.parent / "data_samples" / "checkpoints"
# 16x16x4 latents -> 8x8 -> 4x4; cross-attention to the text at 8x8 and 4x4 (4.1 M parameters).
TOY_UNET = dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64, 128), layers_per_block=1,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=4,
                cross_attention_dim=64, norm_num_groups=16)
TOY_SCHEDULE = dict(beta_schedule="linear", beta_start=0.00085, beta_end=0.012)


@dataclass
class T2I:
    """A text-to-image latent diffusion model: prompts -> uint8 images (B, 64, 64, 3)."""

    vae: object
    text_encoder: ToyTextEncoder
    unet: UNet
    ddim: DDIM

    @torch.no_grad()
    def generate(self, prompts: list[str], steps: int = 25, guidance: float = 7.5, seed: int = 0,
                 progress: bool = False) -> np.ndarray:
        context = self.text_encoder.encode_prompt(prompts)
        uncond = self.text_encoder.encode_prompt([""] * len(prompts))
        size = self.unet.config["sample_size"]
        latents = sample(self.unet, (len(prompts), 4, size, size), context, uncond, self.ddim, steps, guidance,
                         seed, progress=progress)
        return to_uint8(decode(self.vae, latents))


def load_vae(root=CHECKPOINTS):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(Path(root) / "vae", torch_dtype=torch.float32).eval().requires_grad_(False)


def load_text_encoder(root=CHECKPOINTS) -> ToyTextEncoder:
    from safetensors.torch import load_file

    folder = Path(root) / "text_encoder"
    encoder = ToyTextEncoder(**json.loads((folder / "config.json").read_text()))
    encoder.load_state_dict(load_file(folder / "model.safetensors"))
    return encoder.eval().requires_grad_(False)


def load_t2i(model: str = "base", root=CHECKPOINTS) -> T2I:
    """The shipped toy T2I: model 'base', 'outlined' (DreamBooth UNet), 'pastel' (base + LoRA merged),
    or a path to a diffusers UNet folder trained from the same base."""
    root = Path(root)
    if not (root / "vae").exists():
        raise FileNotFoundError(f"no toy checkpoints in {root}; rebuild them with `make checkpoints`")
    shipped = {"base": "unet_base", "outlined": "unet_outlined", "pastel": "unet_base"}  # pastel = base + LoRA
    path = root / shipped[model] if model in shipped else Path(model)
    unet = UNet.from_pretrained(path).eval().requires_grad_(False)
    if model == "pastel":
        from minianimate.lora import LoRA

        LoRA.load(unet, root / "lora_pastel.safetensors").merge()
    return T2I(load_vae(root), load_text_encoder(root), unet, DDIM(**TOY_SCHEDULE))


# --------------------------------------------------------------------------------------------------
# Data: images rendered once, encoded once to latents (the VAE is frozen from here on)

def image_set(n: int, seed: int, style: str | None = None, moving: float = 0.0) -> tuple[np.ndarray, list[str]]:
    """n ShapeWorld images and captions, uint8 (n, 64, 64, 3).

    moving: the fraction of photos of moving shapes (a motion streak behind them, caption
    `a red circle moving left`), as an image dataset holds photos of running horses next to still ones.
    """
    rng = np.random.default_rng(seed)
    items = [sw.render_image(rng, style=style, direction=str(rng.choice(sw.DIRECTIONS)) if rng.random() < moving
                             else None) for _ in range(n)]
    return np.stack([i[0] for i in items]), [i[1] for i in items]


@torch.no_grad()
def encode_set(vae, images: np.ndarray, captions: list[str] | None = None, flip: bool = True):
    """Scaled latents of images, (n, 4, 16, 16), followed by those of the mirrored images if `flip`.

    With `captions`, returns (latents, captions of every latent): the mirrored images' captions swap
    `left` and `right` (`shapeworld.flip_caption`).
    """
    x = to_tensor(images)
    if flip:
        x = torch.cat([x, x.flip(-1)])
    latents = torch.cat([encode(vae, chunk) for chunk in x.split(256)])
    if captions is None:
        return latents
    return latents, list(captions) + ([sw.flip_caption(c) for c in captions] if flip else [])


def diffusion_loss(unet, text_encoder, latents, captions, ddim: DDIM, generator, batch: int,
                   text_dropout: float = 0.1, offset_noise: float = 0.0) -> torch.Tensor:
    """Epsilon MSE on a random batch; captions dropped to "" with prob `text_dropout` (for CFG).

    `offset_noise` adds a per-image, per-channel constant to the noise ("offset noise"), which lets a
    model learn images whose mean brightness is far from its training data's (the pastel style).
    """
    idx = torch.randint(0, len(latents), (batch,), generator=generator)
    x0 = latents[idx]
    drop = torch.rand(batch, generator=generator) < text_dropout
    prompts = ["" if d else captions[i] for i, d in zip(idx.tolist(), drop.tolist())]
    noise = torch.randn(x0.shape, generator=generator)
    if offset_noise:
        noise = noise + offset_noise * torch.randn(*x0.shape[:2], 1, 1, generator=generator)
    t = torch.randint(0, ddim.num_train_timesteps, (batch,), generator=generator)
    eps = unet(ddim.add_noise(x0, noise, t), t, text_encoder.encode_prompt(prompts))
    return F.mse_loss(eps, noise)


def evaluate(model: T2I, per_prompt: int = 4, steps: int = 25, guidance: float = 7.5, seed: int = 0,
             style: str | None = None) -> dict:
    """Colour / shape accuracy and style rate over all 12 `a {color} {shape}` prompts (rule-based metrics).

    Returns {"color": .., "shape": .., "style": .., "n": ..} and the images under "images" (N, 64, 64, 3).
    """
    from minianimate import metrics

    combos = [(c, s) for c in sw.COLORS for s in sw.SHAPES]
    prompts = [sw.caption(c, s) for c, s in combos for _ in range(per_prompt)]
    images = np.concatenate([model.generate(prompts[i:i + 48], steps, guidance, seed + i)
                             for i in range(0, len(prompts), 48)])
    colors = [c for c, _ in combos for _ in range(per_prompt)]
    shapes = [s for _, s in combos for _ in range(per_prompt)]
    return {"color": metrics.color_accuracy(images, colors), "shape": metrics.shape_accuracy(images, shapes),
            "style": metrics.style_rate(images, style), "n": len(images), "images": images}
