"""Inflation: the 2D UNet reused unchanged for video, with motion modules inserted between its layers.

`MotionUNet` *is* the image `UNet` (same blocks, same weights, same keys) whose blocks get a `motion_modules`
list: one after each resnet(+attention) pair of every down and up block, and optionally one in the mid
block. Frames fold into the batch for all spatial layers, `b c f h w -> (b f) c h w`; only the motion
modules look across frames. Its `state_dict()` keys are those of diffusers' `UNetMotionModel`.
"""
from dataclasses import asdict, dataclass

import torch
from einops import rearrange, repeat
from torch import nn

from minianimate.motion_module import MotionModule, PositionalEncoding
from minianimate.temporal_conv import TemporalConv, matched_hidden
from minianimate.unet import UNet


@dataclass(frozen=True)
class MotionConfig:
    """Shape of the motion modules. `groups=None` uses the UNet's `norm_num_groups` (as diffusers does)."""

    heads: int = 8
    max_frames: int = 32  # length of the positional encoding
    mid_block: bool = False  # a module in the mid block (v2)
    groups: int | None = None
    layers: int = 1  # temporal transformer blocks per module
    temporal: str = "attention"  # or "conv": a parameter-matched `TemporalConv` (the paper's ablation)
    positional: bool = True  # False: no frame-position encoding (its buffers zeroed; the ablation without it)


# The official releases on SD1.5: mm_sd_v15.ckpt, mm_sd_v15_v2.ckpt, v3_sd15_mm.ckpt.
PRESETS = {"v1": MotionConfig(max_frames=24), "v2": MotionConfig(mid_block=True), "v3": MotionConfig()}

_MOTION_TYPES = {"CrossAttnDownBlockMotion": "CrossAttnDownBlock2D", "DownBlockMotion": "DownBlock2D",
                 "CrossAttnUpBlockMotion": "CrossAttnUpBlock2D", "UpBlockMotion": "UpBlock2D"}
# UNetMotionModel config fields accepted only at these values.
_MOTION_FIXED = {"reverse_temporal_transformer_layers_per_block": None, "reverse_motion_num_attention_heads": None,
                 "transformer_layers_per_mid_block": None, "temporal_transformer_layers_per_mid_block": 1,
                 "mid_block_layers": 1}


def motion_config(value) -> MotionConfig:
    """A MotionConfig from a preset name ('v1', 'v2', 'v3'), a dict of fields or a MotionConfig."""
    if isinstance(value, MotionConfig):
        return value
    if isinstance(value, str):
        if value not in PRESETS:
            raise ValueError(f"unknown motion-module preset {value!r}; use one of {sorted(PRESETS)} or a dict")
        return PRESETS[value]
    unknown = set(value) - set(MotionConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown motion config fields {sorted(unknown)}; "
                         f"expected some of {sorted(MotionConfig.__dataclass_fields__)}")
    if value.get("temporal", "attention") not in ("attention", "conv"):
        raise ValueError(f"temporal must be 'attention' or 'conv', got {value['temporal']!r}")
    return MotionConfig(**value)


class MotionUNet(UNet):
    """The inflated UNet: epsilon_theta for clips.

    sample (B, C, F, H, W), timestep int or (B,), context (B, L, D) or a prompt per frame (B*F, L, D)
    -> (B, C, F, H, W). ControlNet residuals, if given, are per frame: ((B*F), C_i, H_i, W_i).
    """

    def __init__(self, config: dict, motion="v3"):
        super().__init__(config)
        self.motion_config = mc = motion_config(motion)
        groups = mc.groups or self.config["norm_num_groups"]

        def modules(block, n: int) -> nn.ModuleList:
            channels = block.resnets[0].conv2.out_channels
            if mc.temporal == "conv":
                hidden = matched_hidden(channels, 3, mc.heads, mc.max_frames, groups, mc.layers)
                return nn.ModuleList(TemporalConv(channels, hidden, 3, groups) for _ in range(n))
            return nn.ModuleList(MotionModule(channels, mc.heads, mc.max_frames, groups, mc.layers) for _ in range(n))

        for block in [*self.down_blocks, *self.up_blocks]:
            block.motion_modules = modules(block, len(block.resnets))  # after each resnet(+attention) pair
        if mc.mid_block:
            self.mid_block.motion_modules = modules(self.mid_block, 1)  # between attention and second resnet
        if not mc.positional:  # the ablation: frames differ to the temporal attention by their content alone
            for encoding in (m for m in self.modules() if isinstance(m, PositionalEncoding)):
                encoding.pe.zero_()

    def forward(self, sample: torch.Tensor, timestep, context: torch.Tensor,
                down_block_additional_residuals=None, mid_block_additional_residual=None) -> torch.Tensor:
        if sample.ndim != 5:
            raise ValueError(f"MotionUNet takes clips (B, C, F, H, W), got {tuple(sample.shape)}")
        b, _, f = sample.shape[:3]
        t = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(b)
        if context.shape[0] == b:  # one prompt per clip: every frame sees it
            context = repeat(context, "b l d -> (b f) l d", f=f)
        elif context.shape[0] != b * f:
            raise ValueError(f"context must be (B={b}, L, D) or one prompt per frame (B*F={b * f}, L, D), "
                             f"got {tuple(context.shape)}")
        out = super().forward(rearrange(sample, "b c f h w -> (b f) c h w"), repeat(t, "b -> (b f)", f=f),
                              context, down_block_additional_residuals, mid_block_additional_residual,
                              num_frames=f)
        return rearrange(out, "(b f) c h w -> b c f h w", f=f)

    def enable_forward_chunking(self, chunk_size: int | None = 4096) -> "MotionUNet":
        """Run each motion module's temporal transformer over `chunk_size` pixels at a time (None: all at
        once): the same output, less peak memory for large frames (diffusers' name for the lever)."""
        for module in self.modules():
            if isinstance(module, MotionModule):
                module.chunk = chunk_size
        return self

    # --- the two halves: what stage 2 trains, and the image model it never changes ----------------
    def motion_parameters(self) -> list[nn.Parameter]:
        """The motion modules' parameters (the only ones trained in stage 2)."""
        return [p for name, p in self.named_parameters() if is_motion_key(name)]

    def motion_state_dict(self) -> dict:
        """Motion-module tensors under diffusers' MotionAdapter / UNetMotionModel keys."""
        return {k: v for k, v in self.state_dict().items() if is_motion_key(k)}

    def spatial_state_dict(self) -> dict:
        """The image UNet's tensors: a state dict `UNet` loads as is."""
        return {k: v for k, v in self.state_dict().items() if not is_motion_key(k)}

    def load_spatial_state_dict(self, state: dict) -> None:
        """Swap the image weights (e.g. for a personalized model), keeping the motion modules."""
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not is_motion_key(k)]
        if missing or unexpected:
            raise ValueError(f"not the state dict of this image UNet: {len(missing)} missing keys {missing[:5]}, "
                             f"{len(unexpected)} unexpected keys {unexpected[:5]}")

    # --- construction -------------------------------------------------------------------------------
    @classmethod
    def from_unet(cls, unet: UNet, motion="v3") -> "MotionUNet":
        """Inflate a trained image UNet: same spatial weights, fresh (identity) motion modules."""
        ref = next(unet.parameters())
        model = cls(unet.config, motion).to(ref.device, ref.dtype)
        model.load_spatial_state_dict(unet.state_dict())
        return model

    @classmethod
    def from_diffusers(cls, unet_motion_model) -> "MotionUNet":
        """Same config and weights as a diffusers `UNetMotionModel` (strict key match)."""
        cfg = dict(unet_motion_model.config)
        bad = [f"{k}={cfg[k]!r}" for k, v in _MOTION_FIXED.items() if k in cfg and cfg[k] not in (v, None)]
        heads = cfg.pop("motion_num_attention_heads", 8)
        if not isinstance(heads, int):
            bad.append(f"motion_num_attention_heads={heads!r} (only one int is supported)")
        if bad:
            raise ValueError("UNetMotionModel config has fields MotionUNet does not implement: " + "; ".join(bad))
        motion = MotionConfig(heads=heads, max_frames=cfg.pop("motion_max_seq_length", 32),
                              mid_block=cfg.pop("use_motion_mid_block", True),
                              layers=cfg.pop("temporal_transformer_layers_per_block", 1))
        for key in [*_MOTION_FIXED, "reverse_transformer_layers_per_block"]:
            cfg.pop(key, None)
        cfg["attention_head_dim"] = cfg.pop("num_attention_heads")  # diffusers' naming quirk: it is heads
        for key in ("down_block_types", "up_block_types"):
            cfg[key] = [_MOTION_TYPES.get(kind, kind) for kind in cfg[key]]
        model = cls(cfg, motion)
        model.load_state_dict(unet_motion_model.state_dict(), strict=True)
        return model.to(unet_motion_model.dtype)

    def adapter_config(self) -> dict:
        """The diffusers `MotionAdapter` config describing these motion modules."""
        mc = self.motion_config
        return {"_class_name": "MotionAdapter", "block_out_channels": list(self.config["block_out_channels"]),
                "motion_layers_per_block": self.config["layers_per_block"], "motion_num_attention_heads": mc.heads,
                "motion_norm_num_groups": mc.groups or self.config["norm_num_groups"],
                "motion_max_seq_length": mc.max_frames, "use_motion_mid_block": mc.mid_block,
                "motion_transformer_layers_per_block": mc.layers}

    def extra_repr(self) -> str:
        return f"motion={asdict(self.motion_config)}"


def is_motion_key(key: str) -> bool:
    """True for the names of motion-module tensors (`...motion_modules.i...`)."""
    return "motion_modules." in key
