"""ControlNet (Zhang et al. 2023): a trainable copy of the UNet's encoder that reads a condition image (edges,
pose, a silhouette, ...) and adds what it sees to the frozen UNet's skip connections through zero-initialised
1x1 convolutions, so that training starts from the unchanged image model.

The paper's last claim: a ControlNet trained on *images* steers every frame of a clip, and the motion module
keeps the frames coherent. As for every spatial layer, frames fold into the batch (inflation: no 3D
ControlNet). State-dict keys and config fields are those of diffusers' `ControlNetModel`.

    controlnet = ControlNet.from_unet(unet)                               # the encoder's weights, zero convs
    down, mid = controlnet(sample, t, context, cond)                      # cond (B, 3, H, W) in [0, 1]
    eps = unet(sample, t, context, down_block_additional_residuals=down, mid_block_additional_residual=mid)
"""
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from minianimate import checks
from minianimate.checkpoint import DIFFUSERS_WEIGHTS, atomic_write, read_state_dict, save_safetensors
from minianimate.unet import UNet, check_config, embed_time, encoder

# ControlNet-only config fields (diffusers' defaults); the rest are the UNet's.
EXTRA = {"conditioning_channels": 3, "conditioning_embedding_out_channels": (16, 32, 96, 256),
         "controlnet_conditioning_channel_order": "rgb", "global_pool_conditions": False}
UNET_ONLY = ("out_channels", "up_block_types", "sample_size")


def zero(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ConditioningEmbedding(nn.Module):
    """The small conv stack on the condition image: (B, 3, H, W) -> (B, C0, H/s, W/s), s = 2 ** (len(channels)
    - 1) (8 for SD1.5's (16, 32, 96, 256), the VAE's factor); its last conv starts at zero."""

    def __init__(self, cin: int, channels: tuple, cout: int):
        super().__init__()
        self.conv_in = nn.Conv2d(cin, channels[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        for a, b in zip(channels[:-1], channels[1:]):
            self.blocks.extend([nn.Conv2d(a, a, 3, padding=1), nn.Conv2d(a, b, 3, padding=1, stride=2)])
        self.conv_out = zero(nn.Conv2d(channels[-1], cout, 3, padding=1))

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.conv_in(cond))
        for conv in self.blocks:
            h = F.silu(conv(h))
        return self.conv_out(h)


class ControlNet(nn.Module):
    """(sample (B, C, h, w), timestep, context (B, L, D), cond (B, 3, H, W) in [0, 1], scale) ->
    (down residuals: one (B, C_i, h_i, w_i) per UNet skip connection, mid residual (B, C_mid, h', w'))."""

    def __init__(self, config: dict):
        super().__init__()
        extra = {k: config.get(k, v) for k, v in EXTRA.items()}
        if extra["controlnet_conditioning_channel_order"] != "rgb" or extra["global_pool_conditions"]:
            raise ValueError("only controlnet_conditioning_channel_order='rgb' and global_pool_conditions=False "
                             "are supported")
        rest = {k: v for k, v in config.items() if k not in EXTRA and k not in UNET_ONLY}
        ups = [kind.replace("Down", "Up") for kind in rest.get("down_block_types", ())][::-1]  # only to check
        cfg = check_config({**rest, **({"up_block_types": ups} if ups else {})})
        self.config = {**{k: v for k, v in cfg.items() if k not in UNET_ONLY}, **extra}
        self.factor = 2 ** (len(extra["conditioning_embedding_out_channels"]) - 1)
        self.conv_in, self.time_embedding, down_blocks, mid_block = encoder(cfg)
        ch = cfg["block_out_channels"][0]
        self.controlnet_cond_embedding = ConditioningEmbedding(
            extra["conditioning_channels"], tuple(extra["conditioning_embedding_out_channels"]), ch)
        self.down_blocks = down_blocks
        skips = [ch] + [block.resnets[0].conv2.out_channels for block in down_blocks
                        for _ in range(len(block.resnets) + (block.downsamplers is not None))]
        self.controlnet_down_blocks = nn.ModuleList(zero(nn.Conv2d(c, c, 1)) for c in skips)  # the zero convs
        mid = mid_block.resnets[0].conv2.out_channels
        self.controlnet_mid_block = zero(nn.Conv2d(mid, mid, 1))
        self.mid_block = mid_block  # registered last, as in diffusers

    def forward(self, sample: torch.Tensor, timestep, context: torch.Tensor, cond: torch.Tensor,
                scale: float = 1.0) -> tuple[list, torch.Tensor]:
        if cond.shape[0] != sample.shape[0] or cond.shape[-2:] != tuple(s * self.factor for s in sample.shape[-2:]):
            raise ValueError(f"the condition must be (B={sample.shape[0]}, 3, {sample.shape[-2] * self.factor}, "
                             f"{sample.shape[-1] * self.factor}) for latents {tuple(sample.shape)} (factor "
                             f"{self.factor}), got {tuple(cond.shape)}")
        temb = embed_time(self, timestep, sample)
        h = self.conv_in(sample) + self.controlnet_cond_embedding(cond.to(sample.dtype))
        skips = [h]
        for block in self.down_blocks:
            h, block_skips = block(h, temb, context)
            skips += block_skips
        h = self.mid_block(h, temb, context)
        down = [conv(s) * scale for conv, s in zip(self.controlnet_down_blocks, skips)]
        return down, self.controlnet_mid_block(h) * scale

    # --- construction and files ---------------------------------------------------------------------
    @classmethod
    def from_unet(cls, unet, conditioning_embedding_out_channels=(16, 32, 96, 256)) -> "ControlNet":
        """A ControlNet whose encoder is a copy of `unet`'s (weights included), zero convs at zero: its
        residuals are 0, so the UNet is unchanged until training moves them."""
        checks.instance("unet", unet, UNet)
        checks.wholes("conditioning_embedding_out_channels", conditioning_embedding_out_channels)
        model = cls({**{k: v for k, v in unet.config.items() if k not in UNET_ONLY},
                     "conditioning_embedding_out_channels": tuple(conditioning_embedding_out_channels)})
        copied = {k: v for k, v in unet.state_dict().items() if k.startswith(("conv_in.", "time_embedding.",
                  "down_blocks.", "mid_block.")) and "motion_modules." not in k}
        missing, unexpected = model.load_state_dict(copied, strict=False)
        if unexpected or not all(k.startswith("controlnet_") for k in missing):
            raise ValueError(f"the UNet's encoder does not fit: missing {missing[:4]}, unexpected {unexpected[:4]}")
        return model.to(next(unet.parameters()).device)

    @classmethod
    def from_pretrained(cls, path) -> "ControlNet":
        """A diffusers `ControlNetModel` folder (config.json + diffusion_pytorch_model.safetensors)."""
        path = Path(path)
        if not (path / "config.json").is_file() or not (path / DIFFUSERS_WEIGHTS).is_file():
            raise FileNotFoundError(f"{path} is not a diffusers ControlNet folder: expected config.json and "
                                    f"{DIFFUSERS_WEIGHTS}")
        model = cls({k: v for k, v in json.loads((path / "config.json").read_text()).items() if not k.startswith("_")})
        model.load_state_dict(read_state_dict(path / DIFFUSERS_WEIGHTS, expected=model.state_dict()))
        return model

    def save_pretrained(self, path, dtype: torch.dtype | None = None) -> Path:
        """Write the folder `ControlNetModel.from_pretrained` reads (tensors cast to `dtype` if given)."""
        path = Path(path)
        save_safetensors({k: v.to(dtype) if dtype else v for k, v in self.state_dict().items()},
                         path / DIFFUSERS_WEIGHTS)
        config = json.dumps({"_class_name": "ControlNetModel", **self.config}, indent=2)
        atomic_write(path / "config.json", lambda tmp: Path(tmp).write_text(config))
        return path


class ControlledUNet(nn.Module):
    """A UNet or MotionUNet steered by a ControlNet, as one eps model: (x, t, context, control) -> eps.

    x (B, C, h, w), or clips (B, C, F, h, w) whose frames fold into the batch for the ControlNet; control
    (B', 3, H, W) or per frame (B', 3, F, H, W) in [0, 1], B' dividing B (guidance doubles the batch).
    `steps`: the timesteps at which control acts (None: all; see `control_start` / `control_end`).
    """

    def __init__(self, unet, controlnet: ControlNet, scale: float = 1.0, steps=None):
        super().__init__()
        self.unet, self.controlnet, self.scale, self.steps = unet, controlnet, scale, steps

    def forward(self, x: torch.Tensor, t, context: torch.Tensor, control: torch.Tensor | None = None):
        if control is None or (self.steps is not None and int(t) not in self.steps):
            return self.unet(x, t, context)
        control = repeat(control, "b ... -> (r b) ...", r=x.shape[0] // control.shape[0]).to(x.device)
        if x.ndim == 4:
            down, mid = self.controlnet(x, t, context, control, self.scale)
            return self.unet(x, t, context, down_block_additional_residuals=down, mid_block_additional_residual=mid)
        b, f = x.shape[0], x.shape[2]
        if control.ndim == 4:  # one image for every frame
            control = repeat(control, "b c h w -> b c f h w", f=f)
        frames_context = repeat(context, "b l d -> (b f) l d", f=f) if context.shape[0] == b else context
        t_frames = repeat(torch.as_tensor(t).reshape(-1).expand(b), "b -> (b f)", f=f)
        down, mid = self.controlnet(rearrange(x, "b c f h w -> (b f) c h w"), t_frames, frames_context,
                                    rearrange(control, "b c f h w -> (b f) c h w"), self.scale)
        return self.unet(x, t, context, down_block_additional_residuals=down, mid_block_additional_residual=mid)
