"""Pixels <-> latents through a diffusers `AutoencoderKL` (Stable Diffusion's VAE, or the toy one).

Latent diffusion runs the UNet on latents instead of pixels; latents are scaled by the VAE's
`scaling_factor` (0.18215 for SD1.5), as the UNet was trained on them. The spatial factor is
`2 ** (len(block_out_channels) - 1)` (8 for SD1.5, 4 for the toy VAE).
"""
import numpy as np
import torch
from einops import rearrange


def spatial_factor(vae) -> int:
    """Pixels per latent pixel along each side."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1]."""
    return rearrange(torch.from_numpy(np.ascontiguousarray(images)).float() / 127.5 - 1, "... h w c -> ... c h w")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (..., 3, H, W) in [-1, 1] -> uint8 (..., H, W, 3)."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(x, "... c h w -> ... h w c").numpy()


@torch.no_grad()
def encode(vae, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Pixels (B, 3, H, W) in [-1, 1] -> scaled latents (B, C, H/s, W/s) (the posterior mean), in chunks."""
    ref = next(vae.parameters())
    return torch.cat([vae.encode(x.to(ref.device, ref.dtype)).latent_dist.mean.float().cpu()
                      for x in images.split(batch)]) * vae.config.scaling_factor


@torch.no_grad()
def decode(vae, latents: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Scaled latents (B, C, h, w) -> pixels (B, 3, s*h, s*w) in [-1, 1], decoded in chunks of `batch`
    (frame by frame for video: fold frames into B first)."""
    ref = next(vae.parameters())
    return torch.cat([vae.decode((z / vae.config.scaling_factor).to(ref.device, ref.dtype)).sample.float().cpu()
                      for z in latents.split(batch)])


@torch.no_grad()
def encode_clips(vae, clips) -> torch.Tensor:
    """uint8 (n, F, H, W, 3) or float (n, F, 3, H, W) clips -> scaled latents (n, C, F, H/s, W/s)."""
    x = to_tensor(clips) if isinstance(clips, np.ndarray) else clips
    latents = encode(vae, rearrange(x, "n f c h w -> (n f) c h w"))
    return rearrange(latents, "(n f) c h w -> n c f h w", n=x.shape[0])
