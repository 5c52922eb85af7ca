"""Real checkpoints in and out: a diffusers Stable Diffusion 1.5 folder + AnimateDiff files -> the pipeline's
parts, and a pipeline -> a diffusers folder that `AnimateDiffPipeline.from_pretrained` reads.

    SD folder: unet/ vae/ text_encoder/ tokenizer/ scheduler/   (diffusers layout, e.g. stable-diffusion-v1-5)
    motion module: mm_sd_v15*.ckpt, v3_sd15_mm.ckpt (official) or a MotionAdapter folder (diffusers)

What a bare motion-module file's tensors cannot tell (heads, GroupNorm groups) comes from a json beside it
(`<name>.json` or `motion_module.json`, key "motion") or from the caller; the official releases use 8 heads.
"""
import json
import re
from pathlib import Path

import torch
from torch import nn

from minianimate.checkpoint import DIFFUSERS_WEIGHTS, atomic_write, read_state_dict, save_safetensors
from minianimate.ddim import DDIM
from minianimate.inflation import MotionConfig
from minianimate.motion_io import detect_motion_format, diffusers_to_official, official_to_diffusers

# What a diffusers SD folder must hold, per subfolder.
NEEDED = {"unet": ("config.json", DIFFUSERS_WEIGHTS), "vae": ("config.json", DIFFUSERS_WEIGHTS),
          "text_encoder": ("config.json", "model.safetensors"), "tokenizer": ("tokenizer_config.json",),
          "scheduler": ("scheduler_config.json",)}
# Scheduler fields DDIM implements only at these values.
SCHEDULER_FIXED = {"prediction_type": "epsilon", "clip_sample": False, "set_alpha_to_one": False,
                   "thresholding": False, "rescale_betas_zero_snr": False, "trained_betas": None}
SCHEDULER_FIELDS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "steps_offset",
                    "timestep_spacing")


class CLIPPromptEncoder(nn.Module):
    """Stable Diffusion's text side: CLIP tokenizer (padded to its max length) + CLIPTextModel's last hidden
    state, as diffusers' pipelines encode a prompt. prompts (B,) -> context (B, 77, 768) for SD1.5."""

    def __init__(self, tokenizer, text_encoder):
        super().__init__()
        self.tokenizer, self.text_encoder = tokenizer, text_encoder

    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(list(prompts), padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids.to(self.text_encoder.device))[0]


def ddim_from_config(config: dict) -> DDIM:
    """A DDIM with the noise schedule of a diffusers scheduler config (DDIM, PNDM, ... of the same betas)."""
    bad = [f"{k}={config[k]!r} (only {v!r})" for k, v in SCHEDULER_FIXED.items() if config.get(k, v) != v]
    if bad:
        raise ValueError("scheduler config has settings minianimate's DDIM does not implement: " + "; ".join(bad))
    return DDIM(**{k: config[k] for k in SCHEDULER_FIELDS if k in config})


def ddim_config(ddim: DDIM) -> dict:
    """The diffusers `DDIMScheduler` config of `ddim`."""
    return {"_class_name": "DDIMScheduler", **{k: getattr(ddim, k) for k in SCHEDULER_FIELDS}, **SCHEDULER_FIXED}


def check_sd_folder(folder) -> Path:
    """`folder` as a Path if it holds every file of a diffusers SD folder (`NEEDED`), else an error that lists
    what to put where."""
    folder = Path(folder)
    missing = [f"{sub}/{name}" for sub, names in NEEDED.items() for name in names if not (folder / sub / name).exists()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a complete diffusers Stable Diffusion folder: missing "
                                f"{', '.join(missing)}. Download e.g. stable-diffusion-v1-5/stable-diffusion-v1-5 "
                                f"(safetensors) and put its unet/, vae/, text_encoder/, tokenizer/, scheduler/ there")
    return folder


def load_sd_folder(folder) -> tuple:
    """A diffusers SD folder -> (vae, CLIPPromptEncoder, image UNet, DDIM), nothing downloaded; missing files
    raise an error that lists what to put where (`check_sd_folder`)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    from minianimate.unet import UNet

    folder = check_sd_folder(folder)
    vae = AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True).eval().requires_grad_(False)
    text = CLIPPromptEncoder(CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True),
                             CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True).eval())
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    return vae, text.requires_grad_(False), UNet.from_pretrained(folder / "unet"), ddim_from_config(scheduler)


def motion_config_of(source, heads: int | None = None, groups: int | None = None) -> MotionConfig:
    """The MotionConfig of a motion-module file or MotionAdapter folder: mid block, layers and positional
    length from its tensors; heads and groups from a json beside it, else the arguments, else 8 / the UNet's."""
    path = Path(source)
    if path.is_dir():
        c = json.loads((path / "config.json").read_text())
        return MotionConfig(heads=c["motion_num_attention_heads"], max_frames=c["motion_max_seq_length"],
                            mid_block=c["use_motion_mid_block"], groups=c.get("motion_norm_num_groups"),
                            layers=c.get("motion_transformer_layers_per_block", 1))
    beside = [p for p in (path.with_suffix(".json"), path.parent / "motion_module.json") if p.is_file()]
    told = json.loads(beside[0].read_text()).get("motion", {}) if beside else {}
    state = read_state_dict(path)
    pe = [v.shape[1] for k, v in state.items() if re.search(r"\.(pos_encoder|pos_embed)\.pe$", k)]
    blocks = [int(m[1]) for k in state for m in [re.search(r"transformer_blocks\.(\d+)\.", k)] if m]
    return MotionConfig(heads=heads or told.get("heads", 8), max_frames=told.get("max_frames", pe[0] if pe else 32),
                        mid_block=any(k.startswith("mid_block.") for k in state),
                        groups=groups or told.get("groups"), layers=max(blocks, default=0) + 1)


def adapter_config(state: dict, motion: MotionConfig, groups: int) -> dict:
    """A diffusers `MotionAdapter` config from motion-module tensors (diffusers keys) and what they cannot tell."""
    channels = {int(k.split(".")[1]): v.shape[0] for k, v in state.items()
                if re.fullmatch(r"down_blocks\.\d+\.motion_modules\.0\.proj_in\.weight", k)}
    per_block = {k.split(".")[3] for k in state if k.startswith("down_blocks.0.motion_modules.")}
    return {"_class_name": "MotionAdapter", "block_out_channels": [channels[i] for i in sorted(channels)],
            "motion_layers_per_block": len(per_block), "motion_num_attention_heads": motion.heads,
            "motion_norm_num_groups": motion.groups or groups, "motion_max_seq_length": motion.max_frames,
            "use_motion_mid_block": motion.mid_block, "motion_transformer_layers_per_block": motion.layers}


def convert_motion_module(source, out, to: str, heads: int | None = None, groups: int | None = None) -> Path:
    """Rewrite a motion module: to 'diffusers' (a MotionAdapter folder) or 'official' (a .ckpt/.safetensors
    file with the official keys). `heads`/`groups`: see `motion_config_of` (groups default 32, SD1.5's)."""
    if to not in ("diffusers", "official"):
        raise ValueError(f"--to must be 'diffusers' or 'official', got {to!r}")
    motion = motion_config_of(source, heads, groups)
    state = read_state_dict(source)
    if detect_motion_format(state) == "official":
        state = {official_to_diffusers(k): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not re.search(r"\.(pos_encoder|pos_embed)\.pe$", k)}
    out = Path(out)
    if to == "official":
        official = {diffusers_to_official(k): v for k, v in state.items()}
        if out.suffix == ".safetensors":
            return save_safetensors(official, out)
        return atomic_write(out, lambda tmp: torch.save({"state_dict": official}, tmp))
    save_safetensors(state, out / DIFFUSERS_WEIGHTS)
    config = json.dumps(adapter_config(state, motion, groups or 32), indent=2)
    atomic_write(out / "config.json", lambda tmp: Path(tmp).write_text(config))
    return out


def save_pipeline(pipe, folder) -> Path:
    """Write `pipe` as a diffusers `AnimateDiffPipeline` folder: unet/ (the image UNet, merged LoRAs included),
    motion_adapter/, vae/, scheduler/, and text_encoder/ + tokenizer/ when the text side is CLIP. LoRA hooks
    (domain adapter, MotionLoRAs) are not written: merge them first if they belong in the export."""
    from minianimate.motion_io import save_motion_module

    folder = Path(folder)
    pipe.unet.save_pretrained(folder / "unet")
    save_motion_module(pipe.unet, folder / "motion_adapter", format="diffusers")
    pipe.vae.save_pretrained(folder / "vae")
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(ddim_config(pipe.ddim), indent=2))
    index = {"_class_name": "AnimateDiffPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
             "motion_adapter": ["diffusers", "MotionAdapter"], "vae": ["diffusers", "AutoencoderKL"],
             "scheduler": ["diffusers", "DDIMScheduler"], "feature_extractor": [None, None],
             "image_encoder": [None, None]}
    if isinstance(pipe.text_encoder, CLIPPromptEncoder):
        pipe.text_encoder.text_encoder.save_pretrained(folder / "text_encoder")
        pipe.text_encoder.tokenizer.save_pretrained(folder / "tokenizer")
        index.update(text_encoder=["transformers", "CLIPTextModel"], tokenizer=["transformers", "CLIPTokenizer"])
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder
