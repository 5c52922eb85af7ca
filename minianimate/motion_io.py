"""Motion-module checkpoint formats: the official AnimateDiff files and diffusers' `MotionAdapter`.

Official (`mm_sd_v15.ckpt`, `mm_sd_v15_v2.ckpt`, `v3_sd15_mm.ckpt`): optional top-level `state_dict`,
keys `...motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q.weight`,
`norms.0/1`, `ff_norm`, sometimes `pos_encoder.pe` buffers. diffusers: the same tensors with
`.temporal_transformer` stripped, `attention_blocks.0/1 -> attn1/attn2`, `norms.0/1 -> norm1/norm2`,
`ff_norm -> norm3` (our own keys). Positional encodings are computed, never loaded.
"""
import json
import re
from pathlib import Path

from minianimate import checks
from minianimate.checkpoint import (DIFFUSERS_WEIGHTS, CheckpointError, atomic_write, describe_keys, read_state_dict,
                                    save_safetensors, save_torch)
from minianimate.inflation import MotionUNet, is_motion_key

# (official, diffusers) name pieces; applied left to right, reversed for the way back.
_RENAMES = [(".temporal_transformer.", "."), (".attention_blocks.0.", ".attn1."), (".attention_blocks.1.", ".attn2."),
            (".norms.0.", ".norm1."), (".norms.1.", ".norm2."), (".ff_norm.", ".norm3.")]
_POSITIONAL = re.compile(r"\.(pos_encoder|pos_embed)\.pe$")
_MODULE = re.compile(r"(.*?motion_modules\.\d+)\.")
FORMATS = ("official", "diffusers")
_INFLATE = " (inflate the image UNet first: MotionUNet.from_unet(unet, motion_config))"


def official_to_diffusers(key: str) -> str:
    for old, new in _RENAMES:
        key = key.replace(old, new)
    return key


def diffusers_to_official(key: str) -> str:
    key = key.replace(".motion_modules.", "@")  # protect, then re-insert temporal_transformer after the index
    key = re.sub(r"@(\d+)\.", r".motion_modules.\1.temporal_transformer.", key)
    for old, new in _RENAMES[1:]:
        key = key.replace(new, old)
    return key


def detect_motion_format(state: dict) -> str:
    """Motion-module file layout: 'official', 'diffusers' or an error that says what the file looks like instead."""
    keys = list(state)
    if any("_lora." in k or "lora_" in k for k in keys):
        raise ValueError(f"this file holds LoRA weights ({describe_keys(keys)}), not a motion module; "
                         f"load it with LoRA.load (minianimate.lora)")
    if any(".temporal_transformer." in k for k in keys):
        return "official"
    if any(is_motion_key(k) for k in keys):
        return "diffusers"
    raise ValueError(f"no motion-module keys found: the file looks like {describe_keys(keys)} (an image UNet "
                     f"checkpoint goes to UNet.from_pretrained)")


def load_motion_module(model: MotionUNet, source, format: str = "auto", verbose: bool = True) -> str:
    """Load motion-module weights into `model` from a file, folder or state dict; return the format found.

    Missing, unexpected or mis-shaped keys raise a ValueError listing them with the likely cause.
    """
    checks.instance("model", model, MotionUNet, _INFLATE)
    checks.choice("format", format, ("auto", *FORMATS))
    state = read_state_dict(source)
    try:  # errors about what the file holds name the file
        found = detect_motion_format(state)
        if format not in ("auto", found):
            raise ValueError(f"format={format!r} but the checkpoint looks like the {found} format; "
                             f"pass format='{found}' or 'auto'")
        if found == "official":
            state = {official_to_diffusers(k): v for k, v in state.items()}
        state = {k: v for k, v in state.items() if is_motion_key(k) and not _POSITIONAL.search(k)}
        expected = {k: v for k, v in model.motion_state_dict().items() if not _POSITIONAL.search(k)}
        _check_keys(state, expected, model, found)
    except ValueError as e:
        raise CheckpointError(f"{'motion-module state dict' if isinstance(source, dict) else source}: {e}") from None
    model.load_state_dict(state, strict=False)
    if verbose:
        print(f"loaded {len(state)} motion-module tensors ({found} format)"
              + ("" if isinstance(source, dict) else f" from {source}"))
    return found


def _check_keys(state: dict, expected: dict, model: MotionUNet, found: str) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in set(state) & set(expected) if state[k].shape != expected[k].shape]
    if not (missing or unexpected or shapes):
        return
    causes = []
    if any(k.startswith("mid_block.") for k in unexpected):
        causes.append("the file has mid-block motion modules (a v2 file): build the model with motion='v2'")
    if any(k.startswith("mid_block.") for k in missing):
        causes.append("the model has mid-block motion modules the file lacks (a v1/v3 file?): use motion='v1'/'v3'")
    if shapes:
        causes.append("tensor shapes differ: the file was made for another base model (channels) or head count")
    in_file, in_model = ({m[1] for m in map(_MODULE.match, keys) if m} for keys in (state, expected))
    if {m for m in in_file ^ in_model if not m.startswith("mid_block.")}:
        causes.append(f"the file has {len(in_file)} motion modules, the model {len(in_model)}: its blocks / layers_per"
                      f"_block differ ({model.config['block_out_channels']}, {model.config['layers_per_block']})")
    elif missing and unexpected:
        causes.append(f"the same motion modules, but tensor names differ (the file's {unexpected[0]} where the model "
                      f"has {missing[0]}): a renamed key, an edited file or another implementation's naming")
    lines = [f"{len(missing)} missing: {missing[:6]}", f"{len(unexpected)} unexpected: {unexpected[:6]}",
             f"{len(shapes)} mis-shaped: {shapes[:4]}"]
    raise ValueError(f"motion-module checkpoint ({found} format) does not fit the model: " + "; ".join(lines)
                     + ". Likely cause: " + ("; ".join(causes) or "a different motion-module version"))


def save_motion_module(model: MotionUNet, path, format: str = "official") -> Path:
    """Save the motion modules: 'official' (.safetensors or .ckpt file, official keys, no positional buffers)
    or 'diffusers' (a MotionAdapter folder: config.json + diffusion_pytorch_model.safetensors)."""
    checks.instance("model", model, MotionUNet, _INFLATE)
    checks.choice("format", format, FORMATS)
    if model.motion_config.temporal != "attention":
        raise ValueError(f"{model.motion_config.temporal!r} temporal layers have no {format} motion-module format (an "
                         f"ablation): save model.motion_state_dict() with minianimate.checkpoint.save_safetensors")
    path = Path(path)
    state = model.motion_state_dict()
    if format == "official":
        state = {diffusers_to_official(k): v for k, v in state.items() if not _POSITIONAL.search(k)}
        if path.suffix == ".safetensors":
            return save_safetensors(state, path)
        return save_torch({"state_dict": state}, path)
    path.mkdir(parents=True, exist_ok=True)  # diffusers
    save_safetensors(state, path / DIFFUSERS_WEIGHTS)
    config = json.dumps(model.adapter_config(), indent=2)
    atomic_write(path / "config.json", lambda tmp: Path(tmp).write_text(config))
    return path
