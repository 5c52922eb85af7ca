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
from einops import rearrange
from tqdm.auto import tqdm

from minianimate import shapeworld as sw

VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64, 64),
                  down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                  layers_per_block=1, norm_num_groups=16, sample_size=64, mid_block_add_attention=False)


def make_vae(**overrides):
    """A fresh `AutoencoderKL` with the toy config (or overrides)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(**{**VAE_CONFIG, **overrides})


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1]."""
    return rearrange(torch.from_numpy(np.ascontiguousarray(images)).float() / 127.5 - 1, "... h w c -> ... c h w")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (..., 3, H, W) in [-1, 1] -> uint8 (..., H, W, 3)."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(x, "... c h w -> ... h w c").numpy()


@torch.no_grad()
def encode(vae, images: torch.Tensor) -> torch.Tensor:
    """Pixels (B, 3, H, W) in [-1, 1] -> scaled latents (B, 4, H/4, W/4) (the posterior mean)."""
    return vae.encode(images).latent_dist.mean * vae.config.scaling_factor


@torch.no_grad()
def decode(vae, latents: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Scaled latents (B, 4, h, w) -> pixels (B, 3, 4h, 4w) in [-1, 1], decoded in chunks (frame by frame
    for video: fold frames into B first)."""
    return torch.cat([vae.decode(z / vae.config.scaling_factor).sample for z in latents.split(batch)])


def render_mix(n: int, seed: int) -> np.ndarray:
    """n frames covering every domain the VAE must decode: uint8 (n, 64, 64, 3).

    30% clean images, 20% outlined, 20% pastel (half of each a moving shape with its motion streak),
    20% watermarked video frames, 10% zoomed camera frames. The thin outlines and the pale pastel colours
    are the hardest to keep through a 4x downsampling, hence their share.
    """
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


def train_vae(steps: int = 3000, batch: int = 32, lr: float = 1e-3, pool: int = 8000, kl_weight: float = 1e-6,
              crop: int = 32, seed: int = 0, vae=None, progress: bool = True):
    """Train the toy VAE on `render_mix` frames (MSE + L1 reconstruction, tiny KL); set `scaling_factor`.

    The VAE is convolutional, so it trains on random `crop` x `crop` patches (4x cheaper at 32) and then
    runs on whole 64x64 frames. Returns (vae, losses). Deterministic for a seed on CPU.
    """
    torch.manual_seed(seed)
    vae = vae or make_vae()
    data = to_tensor(render_mix(pool, seed))  # (pool, 3, 64, 64)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in tqdm(range(steps), desc="vae", disable=not progress):
        x = data[torch.randint(0, pool, (batch,), generator=g)]
        if crop < x.shape[-1]:
            top, left = (int(v) for v in torch.randint(0, x.shape[-1] - crop + 1, (2,), generator=g) // 4 * 4)
            x = x[..., top:top + crop, left:left + crop]  # 4-aligned, so latents line up with the full frame
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=g)).sample
        loss = F.mse_loss(recon, x) + 0.1 * F.l1_loss(recon, x) + kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    vae.eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(x).latent_dist.mean for x in data[:2048].split(256)])
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    return vae, losses


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 arrays, dB."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255 ** 2 / max(mse, 1e-12)))
