"""The text-conditioned 2D UNet of Stable Diffusion, written once and inflated later for video.

Built from a diffusers `UNet2DConditionModel` config dict; its `state_dict()` keys are diffusers' keys,
so SD1.5 weights load unchanged. The blocks never assume what the batch axis holds: for video, frames
are folded into it (`(b f) c h w`) and each block calls its `motion_modules` (absent in 2D, inserted by
`minianimate.inflation`) after every resnet(+attention) pair. That is the whole of *inflation*.
"""
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from minianimate.attention import Transformer2D

# Fields of a diffusers config that this UNet implements.
SUPPORTED = {"in_channels", "out_channels", "block_out_channels", "layers_per_block", "down_block_types",
             "up_block_types", "mid_block_type", "attention_head_dim", "cross_attention_dim",
             "norm_num_groups", "norm_eps", "use_linear_projection", "flip_sin_to_cos", "freq_shift",
             "sample_size", "transformer_layers_per_block"}
# Fields accepted only at these values (SD1.x/2.x defaults): anything else is a feature we do not have.
FIXED = {"center_input_sample": False, "only_cross_attention": False, "downsample_padding": 1,
         "mid_block_scale_factor": 1, "dropout": 0.0, "act_fn": "silu", "reverse_transformer_layers_per_block": None,
         "encoder_hid_dim": None, "encoder_hid_dim_type": None, "num_attention_heads": None,
         "dual_cross_attention": False, "class_embed_type": None, "addition_embed_type": None,
         "addition_time_embed_dim": None, "num_class_embeds": None, "upcast_attention": False,
         "resnet_time_scale_shift": "default", "resnet_skip_time_act": False, "resnet_out_scale_factor": 1.0,
         "time_embedding_type": "positional", "time_embedding_dim": None, "time_embedding_act_fn": None,
         "timestep_post_act": None, "time_cond_proj_dim": None, "conv_in_kernel": 3, "conv_out_kernel": 3,
         "projection_class_embeddings_input_dim": None, "attention_type": "default",
         "class_embeddings_concat": False, "mid_block_only_cross_attention": None, "cross_attention_norm": None,
         "addition_embed_type_num_heads": 64}
DEFAULTS = {"in_channels": 4, "out_channels": 4, "block_out_channels": (320, 640, 1280, 1280),
            "layers_per_block": 2, "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            "mid_block_type": "UNetMidBlock2DCrossAttn", "attention_head_dim": 8, "cross_attention_dim": 1280,
            "norm_num_groups": 32, "norm_eps": 1e-5, "use_linear_projection": False, "flip_sin_to_cos": True,
            "freq_shift": 0, "sample_size": None, "transformer_layers_per_block": 1}
# Stable Diffusion 1.5's UNet (859,520,964 parameters).
SD15 = {**DEFAULTS, "cross_attention_dim": 768, "sample_size": 64}


def check_config(config: dict) -> dict:
    """Validate a diffusers UNet2DConditionModel config; return it complete with defaults.

    Raises a ValueError naming every field this UNet does not implement.
    """
    def same(v, default):  # diffusers may store a per-block list of one value
        return v == default or (isinstance(v, (list, tuple)) and len(v) > 0 and all(x == default for x in v))

    bad = [f"{k}={v!r} (only {FIXED[k]!r} is supported)" for k, v in config.items()
           if k in FIXED and not same(v, FIXED[k])]
    bad += [f"{k} (unknown field)" for k in config if k not in SUPPORTED | FIXED.keys() and not k.startswith("_")]
    if bad:
        raise ValueError("UNet config has fields minianimate's UNet does not implement: " + "; ".join(bad))
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if k in SUPPORTED}}
    n = len(cfg["block_out_channels"])
    for key in ("down_block_types", "up_block_types"):
        if len(cfg[key]) != n:
            raise ValueError(f"{key} has {len(cfg[key])} entries but block_out_channels has {n}")
    for kind in (*cfg["down_block_types"], *cfg["up_block_types"], cfg["mid_block_type"]):
        if kind not in BLOCKS:
            raise ValueError(f"block type {kind!r} is not supported; use one of {sorted(BLOCKS)}")
    for key in ("attention_head_dim", "layers_per_block", "transformer_layers_per_block"):
        value = cfg[key]
        if isinstance(value, (list, tuple)) and len(value) != n:
            raise ValueError(f"{key} has {len(value)} entries but block_out_channels has {n}")
    if not isinstance(cfg["cross_attention_dim"], int):
        raise ValueError("cross_attention_dim must be one int (per-block values are not supported)")
    return cfg


def per_block(value, n: int) -> list:
    """An int, or a per-block list, as a list of length n."""
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def timestep_embedding(t: torch.Tensor, dim: int, flip_sin_to_cos: bool = True, shift: float = 0.0) -> torch.Tensor:
    """Sinusoidal embedding of diffusion timesteps: t (B,) -> (B, dim), frequencies 1 .. 1/10000."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - shift))
    angles = t[:, None].float() * freqs[None]
    emb = torch.cat([angles.cos(), angles.sin()] if flip_sin_to_cos else [angles.sin(), angles.cos()], dim=-1)
    return F.pad(emb, (0, dim % 2))


class TimestepEmbedding(nn.Module):
    """MLP on the sinusoidal timestep embedding: (B, C) -> (B, 4C)."""

    def __init__(self, channels: int, dim: int):
        super().__init__()
        self.linear_1, self.linear_2 = nn.Linear(channels, dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class ResnetBlock(nn.Module):
    """Two 3x3 convs with GroupNorm+SiLU, the time embedding added in between, and a skip connection.

    x (B, C_in, H, W), temb (B, T) -> (B, C_out, H, W).
    """

    def __init__(self, cin: int, cout: int, temb: int, groups: int, eps: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class Downsample(nn.Module):
    """Stride-2 3x3 conv: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour resize to `size` (2x by default), then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, size=None):
        return self.conv(F.interpolate(x, size=size, scale_factor=None if size else 2.0, mode="nearest"))


class Block(nn.Module):
    """Resnets, optionally each followed by a spatial transformer and (once inflated) a motion module.

    Shared by down, mid and up blocks; `attentions`/`motion_modules` are None when absent, so the
    state-dict keys are diffusers' `resnets.i`, `attentions.i`, `motion_modules.i`.
    """

    def __init__(self, resnets: list, attentions: list | None):
        super().__init__()
        self.attentions = nn.ModuleList(attentions) if attentions else None  # registered first, as in diffusers
        self.resnets = nn.ModuleList(resnets)
        self.register_module("motion_modules", None)  # an empty slot, filled by inflation
        self.gradient_checkpointing = False  # see UNet.enable_gradient_checkpointing

    def layer(self, i: int, h, temb, context, num_frames: int):
        """Resnet i, then its attention and motion module: (N, C, H, W) -> (N, C', H, W), N = B*frames."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(self._layer, i, h, temb, context, num_frames, use_reentrant=False)
        return self._layer(i, h, temb, context, num_frames)

    def _layer(self, i: int, h, temb, context, num_frames: int):
        h = self.resnets[i](h, temb)
        if self.attentions is not None:
            h = self.attentions[i](h, context)
        if self.motion_modules is not None:
            h = self.motion_modules[i](h, num_frames)
        return h


class DownBlock(Block):
    """Encoder stage: `layers` resnet(+attention) pairs, then a stride-2 downsampler (except the last stage).

    Returns the output and the skip connections it hands to the decoder.
    """

    def __init__(self, cin, cout, temb, layers, groups, eps, heads=None, context_dim=None,
                 transformer_layers=1, linear_projection=False, downsample=True):
        resnets = [ResnetBlock(cin if i == 0 else cout, cout, temb, groups, eps) for i in range(layers)]
        attentions = [Transformer2D(cout, heads, context_dim, groups, transformer_layers, linear_projection)
                      for _ in range(layers)] if heads else None
        super().__init__(resnets, attentions)
        self.downsamplers = nn.ModuleList([Downsample(cout)]) if downsample else None

    def forward(self, h, temb, context, num_frames=1):
        skips = []
        for i in range(len(self.resnets)):
            h = self.layer(i, h, temb, context, num_frames)
            skips.append(h)
        if self.downsamplers is not None:
            h = self.downsamplers[0](h)
            skips.append(h)
        return h, skips


class MidBlock(Block):
    """Bottleneck: resnet, then (attention [+ motion module], resnet) pairs."""

    def __init__(self, channels, temb, groups, eps, heads, context_dim, transformer_layers=1,
                 linear_projection=False, layers=1):
        resnets = [ResnetBlock(channels, channels, temb, groups, eps) for _ in range(layers + 1)]
        attentions = [Transformer2D(channels, heads, context_dim, groups, transformer_layers, linear_projection)
                      for _ in range(layers)]
        super().__init__(resnets, attentions)

    def _layer(self, i: int, h, temb, context, num_frames: int):
        """Attention i [+ motion module i], then resnet i + 1 (so `layer` checkpoints the mid block too)."""
        h = self.attentions[i](h, context)
        if self.motion_modules is not None:
            h = self.motion_modules[i](h, num_frames)
        return self.resnets[i + 1](h, temb)

    def forward(self, h, temb, context, num_frames=1):
        h = self.resnets[0](h, temb)
        for i in range(len(self.attentions)):
            h = self.layer(i, h, temb, context, num_frames)
        return h


class UpBlock(Block):
    """Decoder stage: `layers` resnet(+attention) pairs, each fed one skip connection, then a 2x upsampler."""

    def __init__(self, cin, cout, prev, temb, layers, groups, eps, heads=None, context_dim=None,
                 transformer_layers=1, linear_projection=False, upsample=True):
        resnets = [ResnetBlock((prev if i == 0 else cout) + (cin if i == layers - 1 else cout), cout, temb,
                               groups, eps) for i in range(layers)]
        attentions = [Transformer2D(cout, heads, context_dim, groups, transformer_layers, linear_projection)
                      for _ in range(layers)] if heads else None
        super().__init__(resnets, attentions)
        self.upsamplers = nn.ModuleList([Upsample(cout)]) if upsample else None

    def forward(self, h, skips, temb, context, num_frames=1, upsample_size=None):
        for i in range(len(self.resnets)):
            h = self.layer(i, torch.cat([h, skips.pop()], dim=1), temb, context, num_frames)
        if self.upsamplers is not None:
            h = self.upsamplers[0](h, upsample_size)
        return h


def encoder(cfg: dict) -> tuple[nn.Conv2d, TimestepEmbedding, nn.ModuleList, MidBlock]:
    """conv_in, the time embedding, the down blocks and the mid block of a (checked) UNet config: the half of
    the UNet that `ControlNet` copies."""
    ch, n = list(cfg["block_out_channels"]), len(cfg["block_out_channels"])
    heads, layers, tlayers = (per_block(cfg[k], n) for k in ("attention_head_dim", "layers_per_block",
                                                             "transformer_layers_per_block"))
    groups, eps, ctx, lin, temb = (cfg["norm_num_groups"], cfg["norm_eps"], cfg["cross_attention_dim"],
                                   cfg["use_linear_projection"], ch[0] * 4)
    down = nn.ModuleList(DownBlock(ch[max(i - 1, 0)], ch[i], temb, layers[i], groups, eps,
                                   heads[i] if kind.startswith("CrossAttn") else None, ctx, tlayers[i], lin,
                                   downsample=i < n - 1) for i, kind in enumerate(cfg["down_block_types"]))
    mid = MidBlock(ch[-1], temb, groups, eps, heads[-1], ctx, tlayers[-1], lin)
    return nn.Conv2d(cfg["in_channels"], ch[0], 3, padding=1), TimestepEmbedding(ch[0], temb), down, mid


def embed_time(model: nn.Module, timestep, sample: torch.Tensor) -> torch.Tensor:
    """The time embedding (N, 4 * C0) of `model` (a UNet or ControlNet) for int, () or (N,) timesteps."""
    n, cfg = sample.shape[0], model.config
    t = torch.as_tensor(timestep, device=sample.device)
    t = t.reshape(-1).expand(n) if t.numel() == 1 else t
    return model.time_embedding(timestep_embedding(t, cfg["block_out_channels"][0], cfg["flip_sin_to_cos"],
                                                   cfg["freq_shift"]).to(sample.dtype))


BLOCKS = {"CrossAttnDownBlock2D": DownBlock, "DownBlock2D": DownBlock, "CrossAttnUpBlock2D": UpBlock,
          "UpBlock2D": UpBlock, "UNetMidBlock2DCrossAttn": MidBlock}


class UNet(nn.Module):
    """The text-conditioned denoiser epsilon_theta(x_t, t, text) of latent diffusion.

    sample (B, C, H, W), timestep (B,) or int, context (B, L, D) -> predicted noise (B, C_out, H, W).
    """

    def __init__(self, config: dict):
        super().__init__()
        self.config = cfg = check_config(config)
        ch = list(cfg["block_out_channels"])
        n = len(ch)
        heads = per_block(cfg["attention_head_dim"], n)  # diffusers' `attention_head_dim` is the number of heads
        layers = per_block(cfg["layers_per_block"], n)
        tlayers = per_block(cfg["transformer_layers_per_block"], n)
        groups, eps, ctx, lin = cfg["norm_num_groups"], cfg["norm_eps"], cfg["cross_attention_dim"], cfg[
            "use_linear_projection"]
        temb = ch[0] * 4

        self.conv_in, self.time_embedding, down_blocks, mid_block = encoder(cfg)
        self.down_blocks, self.up_blocks = down_blocks, nn.ModuleList()  # diffusers' key order
        self.mid_block = mid_block
        rch, rheads, rlayers, rtl = ch[::-1], heads[::-1], layers[::-1], tlayers[::-1]
        for i, kind in enumerate(cfg["up_block_types"]):
            attn = kind.startswith("CrossAttn")
            self.up_blocks.append(UpBlock(
                rch[min(i + 1, n - 1)], rch[i], rch[max(i - 1, 0)], temb, rlayers[i] + 1, groups, eps,
                rheads[i] if attn else None, ctx, rtl[i], lin, upsample=i < n - 1))
        self.conv_norm_out = nn.GroupNorm(groups, ch[0], eps=eps)
        self.conv_out = nn.Conv2d(ch[0], cfg["out_channels"], 3, padding=1)

    # ----------------------------------------------------------------------------------------------
    def forward(self, sample: torch.Tensor, timestep, context: torch.Tensor,
                down_block_additional_residuals=None, mid_block_additional_residual=None,
                num_frames: int = 1) -> torch.Tensor:
        """Predict the noise in `sample`.

        sample (N, C, H, W); timestep int, () or (N,); context (N, L, D); ControlNet residuals, as diffusers
        names them, are added to the skip connections and to the mid block output. `num_frames` > 1 only
        when frames are folded into N (N = B * frames, see `minianimate.inflation`).
        """
        self._check_inputs(sample, context)
        temb = embed_time(self, timestep, sample)

        h = self.conv_in(sample)
        skips = [h]
        for block in self.down_blocks:
            h, block_skips = block(h, temb, context, num_frames)
            skips += block_skips
        if down_block_additional_residuals is not None:
            if len(down_block_additional_residuals) != len(skips):
                raise ValueError(f"expected {len(skips)} ControlNet down residuals, got "
                                 f"{len(down_block_additional_residuals)}")
            skips = [s + r for s, r in zip(skips, down_block_additional_residuals)]
        h = self.mid_block(h, temb, context, num_frames)
        if mid_block_additional_residual is not None:
            h = h + mid_block_additional_residual
        for block in self.up_blocks:
            size = skips[-len(block.resnets) - 1].shape[-2:] if block.upsamplers is not None else None
            h = block(h, skips, temb, context, num_frames, size)
        return self.conv_out(F.silu(self.conv_norm_out(h)))

    def enable_gradient_checkpointing(self, enabled: bool = True) -> "UNet":
        """Recompute each resnet(+attention, + motion module) layer in the backward pass instead of keeping
        its activations: less memory for more compute (about one extra forward), same gradients."""
        for block in [*self.down_blocks, self.mid_block, *self.up_blocks]:
            block.gradient_checkpointing = enabled
        return self

    def _check_inputs(self, sample, context):
        cfg = self.config
        if sample.ndim != 4 or sample.shape[1] != cfg["in_channels"]:
            raise ValueError(f"sample must be (B, {cfg['in_channels']}, H, W), got {tuple(sample.shape)}"
                             + (" (a video? use minianimate.MotionUNet)" if sample.ndim == 5 else ""))
        if context.ndim != 3 or context.shape[-1] != cfg["cross_attention_dim"] or context.shape[0] != sample.shape[0]:
            raise ValueError(f"context must be (B={sample.shape[0]}, L, {cfg['cross_attention_dim']}), "
                             f"got {tuple(context.shape)}")

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def from_diffusers(cls, unet) -> "UNet":
        """Same config and weights as a diffusers `UNet2DConditionModel` (strict key match)."""
        model = cls(dict(unet.config))
        model.load_state_dict(unet.state_dict(), strict=True)
        return model.to(unet.dtype)

    @classmethod
    def from_pretrained(cls, path, dtype: torch.dtype = torch.float32) -> "UNet":
        """Load a diffusers-format folder (`config.json` + `diffusion_pytorch_model.safetensors`),
        or a full pipeline folder that has it under `unet/`; a damaged file or wrong keys name the file."""
        from minianimate.checkpoint import read_state_dict

        path = Path(path)
        if (path / "unet" / "config.json").exists():
            path = path / "unet"
        weights = path / "diffusion_pytorch_model.safetensors"
        if not (path / "config.json").exists() or not weights.exists():
            raise FileNotFoundError(f"{path} is not a diffusers UNet folder: expected config.json and "
                                    f"diffusion_pytorch_model.safetensors (or a pipeline folder with unet/)")
        model = cls(json.loads((path / "config.json").read_text()))
        model.load_state_dict(read_state_dict(weights, expected=model.state_dict(), fix="export it again, or use a "
                                              f"UNet2DConditionModel of {path / 'config.json'}"))
        return model.to(dtype)

    def save_pretrained(self, path, dtype: torch.dtype | None = None) -> None:
        """Write `config.json` + `diffusion_pytorch_model.safetensors` (tensors cast to `dtype` if given),
        readable by diffusers."""
        from minianimate.checkpoint import save_safetensors

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {"_class_name": "UNet2DConditionModel", **self.config}
        (path / "config.json").write_text(json.dumps(config, indent=2))
        state = {k: v.to(dtype) if dtype else v for k, v in self.state_dict().items()
                 if "motion_modules." not in k}  # a MotionUNet writes its image UNet
        save_safetensors(state, path / "diffusion_pytorch_model.safetensors")
