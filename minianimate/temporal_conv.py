"""TemporalConv: a 1D convolution over frames, the baseline the paper's ablation puts where the motion module goes.

Same place and interface as `MotionModule` (after each resnet(+attention) pair; x ((b f), C, H, W) with
`num_frames` = f -> same shape), about the same number of parameters and the same zero-initialised output
projection (a fresh one is the identity), but each pixel mixes only its neighbouring frames through a fixed
kernel instead of attending to all of them. Chosen with `MotionConfig(temporal="conv")`; an ablation, so it has
no official or diffusers checkpoint format.
"""
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from minianimate.motion_module import MotionModule


def matched_hidden(channels: int, kernel: int, heads: int, max_frames: int, groups: int, layers: int) -> int:
    """Hidden width that gives TemporalConv(channels) the parameter count of MotionModule(channels, ...)."""
    target = sum(p.numel() for p in MotionModule(channels, heads, max_frames, groups, layers).parameters())
    fixed = 2 * channels + 2 * (channels * channels + channels) + channels  # norm, proj_in/out, conv2 bias
    return max(1, round((target - fixed) / (2 * kernel * channels + 1)))


class TemporalConv(nn.Module):
    """GroupNorm -> proj_in -> Conv1d over frames -> SiLU -> Conv1d -> zero-initialised proj_out -> residual."""

    def __init__(self, channels: int, hidden: int, kernel: int = 3, groups: int = 32):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.conv1 = nn.Conv1d(channels, hidden, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv1d(hidden, channels, kernel, padding=kernel // 2)
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)  # starts as the identity, as the motion module does
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        height, width = x.shape[-2:]
        h = self.norm(rearrange(x, "(b f) c h w -> b c f h w", f=num_frames).contiguous())
        h = self.proj_in(rearrange(h, "b c f h w -> (b h w) f c"))
        h = self.conv2(F.silu(self.conv1(rearrange(h, "n f c -> n c f"))))  # (N, C, F): neighbours in time
        h = self.proj_out(rearrange(h, "n c f -> n f c"))
        return x + rearrange(h, "(b h w) f c -> (b f) c h w", h=height, w=width)
