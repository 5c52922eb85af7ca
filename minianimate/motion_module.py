"""The motion module: a temporal transformer that lets every pixel attend to itself across frames.

AnimateDiff inserts one after each resnet(+attention) pair of the frozen image UNet. Frames arrive folded
into the batch, `(b f) c h w`; the module unfolds them, attends over **frames at each spatial position**
(`(b h w) f c`), and adds the result back. Its output projection starts at zero, so a freshly inserted
module is the identity and the inflated UNet equals the image model frame by frame.
Names follow diffusers' `AnimateDiffTransformer3D` (the official names are mapped in `motion_io`).
"""
import math

import torch
from einops import rearrange
from torch import nn

from minianimate.attention import Attention, FeedForward


class PositionalEncoding(nn.Module):
    """Sinusoidal encoding of the frame index, added to the tokens: (N, F, C) -> (N, F, C), F <= max_frames."""

    def __init__(self, dim: int, max_frames: int):
        super().__init__()
        position = torch.arange(max_frames)[:, None]
        freqs = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        pe = torch.zeros(1, max_frames, dim)
        pe[0, :, 0::2] = torch.sin(position * freqs)
        pe[0, :, 1::2] = torch.cos(position * freqs)
        self.register_buffer("pe", pe)  # (1, max_frames, C); a buffer, so diffusers' `pos_embed.pe` key exists

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


class TemporalTransformerBlock(nn.Module):
    """Two temporal self-attentions and a GEGLU feed-forward, each pre-LayerNorm with a residual.

    The frame-position encoding is added to the normed input of both attentions. x (N, F, C) -> (N, F, C).
    """

    def __init__(self, dim: int, heads: int, max_frames: int):
        super().__init__()
        self.pos_embed = PositionalEncoding(dim, max_frames)
        self.norm1, self.attn1 = nn.LayerNorm(dim), Attention(dim, heads, dim // heads)
        self.norm2, self.attn2 = nn.LayerNorm(dim), Attention(dim, heads, dim // heads)
        self.norm3, self.ff = nn.LayerNorm(dim), FeedForward(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.pos_embed(self.norm1(x)))
        x = x + self.attn2(self.pos_embed(self.norm2(x)))
        return x + self.ff(self.norm3(x))


class MotionModule(nn.Module):
    """GroupNorm -> proj_in -> temporal transformer block(s) -> zero-initialised proj_out -> residual.

    x ((b f), C, H, W) with `num_frames` = f -> same shape. Attention is per pixel, but the GroupNorm
    statistics span all frames and pixels of a clip (as in the official code and diffusers).
    """

    def __init__(self, channels: int, heads: int = 8, max_frames: int = 32, groups: int = 32, layers: int = 1):
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels cannot be split into {heads} motion-module heads")
        self.max_frames, self.chunk = max_frames, None  # chunk: pixels per pass (`enable_forward_chunking`)
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            TemporalTransformerBlock(channels, heads, max_frames) for _ in range(layers))
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)  # starts as the identity: plug-and-play on a trained image model
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        if num_frames > self.max_frames:
            raise ValueError(f"{num_frames} frames exceed the motion module's positional encoding "
                             f"({self.max_frames} frames); generate longer clips with sliding context "
                             f"windows of at most {self.max_frames} frames instead")
        height, width = x.shape[-2:]
        h = self.norm(rearrange(x, "(b f) c h w -> b c f h w", f=num_frames).contiguous())  # see test_bad_inputs
        h = self.proj_in(rearrange(h, "b c f h w -> (b h w) f c"))
        h = torch.cat([self.temporal(part) for part in h.split(self.chunk)]) if self.chunk else self.temporal(h)
        h = self.proj_out(h)
        return x + rearrange(h, "(b h w) f c -> (b f) c h w", h=height, w=width)

    def temporal(self, h: torch.Tensor) -> torch.Tensor:
        """The temporal transformer: attention over frames, at each pixel independently. (N, F, C) -> (N, F, C)."""
        for block in self.transformer_blocks:
            h = block(h)
        return h
