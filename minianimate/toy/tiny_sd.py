"""A tiny *random* Stable-Diffusion-shaped diffusers folder, written on the spot (nothing downloaded): the
stand-in for SD1.5 in the tests and in notebook 12's quick mode. Same parts and layout as the real one
(CLIP text model + tokenizer, AutoencoderKL of factor 8, UNet2DConditionModel, DDIM scheduler), tiny sizes,
random weights: the pictures are noise, the code path is the real one."""
import json
from pathlib import Path

import torch

from minianimate.inflation import MotionUNet
from minianimate.motion_io import save_motion_module

UNET = dict(sample_size=8, block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32, norm_num_groups=8)
# The scheduler diffusers' AnimateDiff examples use (linear betas, "linspace" timesteps).
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="linear", steps_offset=1, clip_sample=False,
                 timestep_spacing="linspace", set_alpha_to_one=False)


def bytes_to_unicode() -> dict:
    """GPT-2's byte -> printable character table, the alphabet of CLIP's byte-level BPE."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    extra = [b for b in range(256) if b not in keep]
    return dict(zip(keep + extra, map(chr, keep + [256 + i for i in range(len(extra))])))


def write_tiny_sd(folder, seed: int = 0) -> Path:
    """Write unet/ vae/ text_encoder/ tokenizer/ scheduler/ with random weights into `folder`; return it."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    chars = list(bytes_to_unicode().values())  # a vocabulary of single characters, no merges
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    (folder / "vocabulary").mkdir(parents=True, exist_ok=True)
    (folder / "vocabulary" / "vocab.json").write_text(json.dumps(vocab))
    (folder / "vocabulary" / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "vocabulary", model_max_length=32, local_files_only=True)
    tokenizer.save_pretrained(folder / "tokenizer")
    CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, max_position_embeddings=32, eos_token_id=len(vocab) - 1,
                                 bos_token_id=len(vocab) - 2)).save_pretrained(folder / "text_encoder")
    AutoencoderKL(block_out_channels=(8, 8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=4,
                  sample_size=64).save_pretrained(folder / "vae")
    UNet2DConditionModel(**UNET).save_pretrained(folder / "unet")
    DDIMScheduler(**SCHEDULER).save_pretrained(folder / "scheduler")
    return folder


def write_random_motion_module(path, format: str = "official", seed: int = 0) -> Path:
    """A v2-shaped motion module (mid block, 4 heads, 16 frames) for `write_tiny_sd`'s UNet, every weight
    random so the temporal path counts; official files get the json of what their tensors cannot tell."""
    path = Path(path)
    model = MotionUNet(UNET, dict(heads=4, mid_block=True, max_frames=16))
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed)
        for p in model.motion_parameters():
            p.normal_(0, 0.05, generator=generator)
    save_motion_module(model, path, format)
    if format == "official":
        path.with_suffix(".json").write_text(json.dumps({"motion": {"heads": 4, "max_frames": 16}}))
    return path
