"""The latent autoencoder: a small diffusers `AutoencoderKL` trained on ShapeWorld, 64x64x3 <-> 16x16x4.

Latent diffusion runs the UNet on latents instead of pixels: at 16x16x4 a training step is ~15x cheaper
than at 64x64x3 (shared/FEASIBILITY.md), which is what makes every later stage fit in CPU minutes.
Why 16x16x4 and not SD's 8x downsampling (8x8x4, another 3x cheaper for the UNet): measured here, an 8x8x4
VAE trained 10 CPU minutes reached 24.0 dB PSNR and kept colour in only 73% of frames (red drifted to orange,
blue to green); the colour and shape the metrics read must survive the autoencoder (>= 98%).
Latents are scaled by `scaling_factor` = 1 / std(latents), as Stable Diffusion does (0.18215 there).
"""
import numpy as np
import torch
import torch.nn.functional as F

from minianimate.trainer import shard, world
from minianimate.toy import shapeworld as sw

VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64, 64),
                  down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                  layers_per_block=1, norm_num_groups=16, sample_size=64, mid_block_add_attention=False)


def make_vae(**overrides):
    """A fresh `AutoencoderKL` with the toy config (or overrides)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(**{**VAE_CONFIG, **overrides})


def render_mix(n: int, seed: int, wide: bool = False, anything: float = 0.0) -> np.ndarray:
    """n frames covering every domain the VAE must decode: uint8 (n, 64, 64, 3).

    30% clean images, 20% outlined, 20% pastel (half of each a moving shape with its motion streak),
    20% watermarked video frames, 10% zoomed camera frames. The thin outlines and the pale pastel colours
    are the hardest to keep through a 4x downsampling, hence their share.
    wide: the wider world (`render_wide_mix`, with `anything`) instead.
    """
    if wide:
        return render_wide_mix(n, seed, anything)
    rng = np.random.default_rng(seed)
    frames = []
    for u in rng.random(n):
        direction = str(rng.choice(sw.DIRECTIONS)) if rng.random() < 0.5 else None
        if u < 0.3:
            frames.append(sw.render_image(rng, direction=direction)[0])
        elif u < 0.5:
            frames.append(sw.render_image(rng, style="outlined", direction=direction)[0])
        elif u < 0.7:
            frames.append(sw.render_image(rng, style="pastel", direction=direction)[0])
        elif u < 0.9:
            frames.append(sw.render_clip(rng, frames=1, style=rng.choice([None, None, "pastel"]))[0][0])
        else:
            frames.append(sw.render_camera_clip(rng, "zoom-in", frames=2)[0][int(rng.integers(2))])
    return np.stack(frames)


def any_colours(rng: np.random.Generator) -> tuple[tuple, tuple]:
    """A (background, shape) RGB pair drawn uniformly from the whole RGB cube, MIN_SHAPE_CONTRAST apart."""
    while True:
        bg, fg = rng.uniform(0, 255, (2, 3))
        if np.linalg.norm(bg - fg) >= sw.MIN_SHAPE_CONTRAST:
            return tuple(bg), tuple(fg)


def render_wide_mix(n: int, seed: int, anything: float = 0.0) -> np.ndarray:
    """n frames of the wider world, as an image autoencoder sees photos of anything: uint8 (n, 64, 64, 3).

    35% clean images on random backgrounds (`shapeworld.random_background`: dark, grey, light, coloured), 15% the
    same with the shape in a random colour (so no shape colour is new to the VAE), 10% outlined (half on random
    backgrounds), 10% pastel on its cream, 20% video frames (watermarked, random backgrounds), 10% zoomed camera
    frames (random backgrounds). Half of the images show a moving shape with its motion streak.
    anything: the fraction of the clean images whose background and shape colours are drawn from the whole RGB cube
    instead (`any_colours`): colours no ShapeWorld kind draws, as photos hold colours no caption names.
    """
    rng = np.random.default_rng(seed)
    frames = []
    for u in rng.random(n):
        direction = str(rng.choice(sw.DIRECTIONS)) if rng.random() < 0.5 else None
        if u < 0.5:
            rgb = tuple(rng.uniform(0, 255, 3)) if u >= 0.35 else None
            background = "random"
            if anything and rng.random() < anything:
                background, rgb = any_colours(rng)
            frames.append(sw.render_image(rng, direction=direction, background=background, rgb=rgb)[0])
        elif u < 0.6:
            background = "random" if rng.random() < 0.5 else None
            frames.append(sw.render_image(rng, style="outlined", direction=direction, background=background)[0])
        elif u < 0.7:
            frames.append(sw.render_image(rng, style="pastel", direction=direction)[0])
        elif u < 0.9:
            frames.append(sw.render_clip(rng, frames=1, background="random")[0][0])
        else:
            frames.append(sw.render_camera_clip(rng, "zoom-in", frames=2, background="random")[0][int(rng.integers(2))])
    return np.stack(frames)


def vae_loss(vae, data: torch.Tensor, generator: torch.Generator, batch: int, crop: int = 32,
             kl_weight: float = 1e-6) -> torch.Tensor:
    """Reconstruction loss (MSE + 0.1 L1, tiny KL) on a random batch of frames `data` (N, 3, 64, 64).

    The VAE is convolutional, so it trains on random `crop` x `crop` patches (4x cheaper at 32) and then
    runs on whole 64x64 frames."""
    x = data[shard(torch.randint(0, len(data), (batch * world()[1],), generator=generator))]  # DDP: own slice
    if crop < x.shape[-1]:
        top, left = (int(v) for v in torch.randint(0, x.shape[-1] - crop + 1, (2,), generator=generator) // 4 * 4)
        x = x[..., top:top + crop, left:left + crop]  # 4-aligned, so latents line up with the full frame
    x = x.to(next(vae.parameters()).device)
    posterior = vae.encode(x).latent_dist
    recon = vae.decode(posterior.sample(generator=generator)).sample
    return F.mse_loss(recon, x) + 0.1 * F.l1_loss(recon, x) + kl_weight * posterior.kl().mean()


@torch.no_grad()
def set_scaling_factor(vae, data: torch.Tensor) -> float:
    """Set `scaling_factor` = 1 / std of the latents of (up to 2,048 of) `data`, as Stable Diffusion does."""
    vae.eval()
    latents = torch.cat([vae.encode(x).latent_dist.mean for x in data[:2048].split(256)])
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    return vae.config.scaling_factor


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 arrays, dB."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255 ** 2 / max(mse, 1e-12)))
