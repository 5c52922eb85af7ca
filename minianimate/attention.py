"""Attention, the transformer block and the spatial transformer of the Stable Diffusion UNet.

Parameter names follow diffusers (`to_q`, `to_k`, `to_v`, `to_out.0`, `norm1..3`, `attn1`, `attn2`,
`ff.net.0.proj`, `ff.net.2`, `proj_in`, `proj_out`) so that real checkpoints load key for key.
The same `Attention` and `FeedForward` are reused by the motion module (temporal attention).
"""
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class Attention(nn.Module):
    """Multi-head attention: self-attention when `context` is None, cross-attention otherwise.

    x (B, N, query_dim), context (B, M, context_dim) -> (B, N, query_dim).
    """

    def __init__(self, query_dim: int, heads: int, head_dim: int, context_dim: int | None = None):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Dropout(0.0)])  # diffusers' `to_out.0`

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q, k, v = (rearrange(p, "b n (h d) -> b h n d", h=self.heads)
                   for p in (self.to_q(x), self.to_k(context), self.to_v(context)))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v, (B, heads, N, d)
        return self.to_out[0](rearrange(out, "b h n d -> b n (h d)"))


class GEGLU(nn.Module):
    """GELU-gated linear unit: one projection to 2*inner, half of it gates the other half."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, gate = self.proj(x).chunk(2, dim=-1)
        return hidden * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward with a x4 inner width: (B, N, dim) -> (B, N, dim). Keys `net.0.proj`, `net.2`."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: self-attention, cross-attention to the text, feed-forward; residual around each.

    x (B, N, dim), context (B, M, context_dim) -> (B, N, dim).
    """

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, head_dim, context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2D(nn.Module):
    """Spatial transformer: every pixel of a feature map is a token that attends to the others and to the text.

    GroupNorm -> proj_in (1x1 conv, or linear when `linear_projection`) -> transformer blocks -> proj_out
    -> residual. x (B, C, H, W), context (B, M, context_dim) -> (B, C, H, W).
    """

    def __init__(self, channels: int, heads: int, context_dim: int, groups: int = 32,
                 layers: int = 1, linear_projection: bool = False):
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels cannot be split into {heads} attention heads")
        self.linear_projection = linear_projection
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        proj = (lambda i, o: nn.Linear(i, o)) if linear_projection else (lambda i, o: nn.Conv2d(i, o, 1))
        self.proj_in = proj(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(channels, heads, channels // heads, context_dim) for _ in range(layers))
        self.proj_out = proj(channels, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        tokens = self.norm(x)
        if self.linear_projection:
            tokens = self.proj_in(rearrange(tokens, "b c h w -> b (h w) c"))
        else:
            tokens = rearrange(self.proj_in(tokens), "b c h w -> b (h w) c")
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        if self.linear_projection:
            out = rearrange(self.proj_out(tokens), "b (h w) c -> b c h w", h=h, w=w)
        else:
            out = self.proj_out(rearrange(tokens, "b (h w) c -> b c h w", h=h, w=w))
        return x + out
