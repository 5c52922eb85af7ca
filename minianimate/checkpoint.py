"""Checkpoint files: one reader for every format, whose errors name the file, say what is wrong and what to do;
writes that are atomic (a crash never leaves half a file) and keep the umask's file mode."""
import glob
import json
import os
import uuid
import zipfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"  # the weights file of a diffusers model folder
REDO = "export or copy the file again"  # what to do about a damaged file, unless the caller knows better
# Key pieces -> what a file holding them is (the first that matches: LoRAs also hold motion-module names).
_LAYOUTS = {"lora_A.": "a diffusers/PEFT LoRA", "lora_unet_": "a kohya LoRA", ".lora_down.": "a minianimate LoRA",
            "_lora.": "an official AnimateDiff LoRA", ".temporal_transformer.": "an official AnimateDiff motion module",
            "motion_modules.": "a diffusers motion module (MotionAdapter)", "text_model.": "a CLIP text encoder",
            "model.diffusion_model.": "a CompVis/LDM checkpoint", "decoder.up_blocks.": "a diffusers AutoencoderKL",
            "token_embedding.": "the toy text encoder", "time_embedding.": "a diffusers UNet2DConditionModel"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file, what was found in it and what to do."""


def read_state_dict(source, metadata: bool = False, expected: dict | None = None, fix: str = REDO, raw: bool = False):
    """Tensors of a .safetensors / .ckpt / .pt / .bin file (told apart by their first bytes), a diffusers folder or
    a state dict; pickles are read with weights_only=True, a `state_dict` level and DDP's `module.` unwrapped. A
    missing, foreign or truncated file, or keys other than `expected`'s (`check_keys`), raise a CheckpointError
    naming the file, what was found and `fix`. metadata: (tensors, metadata). raw: the unpickled object as is."""
    path = None if isinstance(source, dict) else Path(source)
    if path is not None and path.is_dir():
        names = (DIFFUSERS_WEIGHTS, "model.safetensors", "pytorch_lora_weights.safetensors")  # a model's, a LoRA's
        path = next((path / n for n in names if (path / n).exists()), path / DIFFUSERS_WEIGHTS)
    state, info = (source, {}) if path is None else _read(path, fix)
    if raw:
        return state
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a dict of tensors; {fix}")
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if expected is not None:
        check_keys(state, expected, path or "the state dict", *(() if fix == REDO else (fix,)))
    return (state, info) if metadata else state


def _read(path: Path, fix: str):
    """(object, metadata) of a torch pickle or a safetensors file, told apart by their first bytes."""
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}" + ("" if fix == REDO else f"; {fix}"))
    with open(path, "rb") as f:
        start = f.read(64)  # safetensors: an 8-byte header length, then the JSON header
    try:
        if start[8:9] != b"{" and (start[:4] == b"PK\x03\x04" or start[:1] == b"\x80"):  # torch.save's zip, a pickle
            with open(path, "rb") as f:  # a file object: torch.load would read a `.safetensors` name as safetensors
                return torch.load(f, map_location="cpu", weights_only=True), {}
        problem = _safetensors_problem(path, start)
        if problem is None:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    except Exception as e:
        problem = ("truncated torch checkpoint (its zip archive has no end)" if start[:4] == b"PK\x03\x04" and not
                   zipfile.is_zipfile(path) else f"unreadable checkpoint ({' '.join(str(e).split())[:160]})")
    raise CheckpointError(f"{path}: {problem}; {fix}")


def _safetensors_problem(path: Path, start: bytes) -> str | None:
    """What is wrong with a file read as safetensors (8-byte header length, JSON header, data), or None."""
    size, n = path.stat().st_size, int.from_bytes(start[:8], "little")
    if start[8:9] == b"{" and 8 + n > size:
        return f"truncated safetensors file: {size:,} bytes, less than its own header ({8 + n:,} bytes)"
    try:
        with open(path, "rb") as f:
            header = json.loads(f.read(8 + n)[8:]) if start[8:9] == b"{" else None  # a JSON header
        end = 8 + n + max([v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"] or [0])
        return None if size >= end else f"truncated safetensors file: {size:,} of {end:,} bytes"
    except (ValueError, TypeError, KeyError, AttributeError):
        text = start[:40].decode("ascii", "replace")  # an HTML page, a Git LFS pointer: show it
        shown = f": it starts with {text!r}" if text.isascii() and text.isprintable() and text else ""
        return f"not a checkpoint: neither safetensors nor a torch pickle ({size:,} bytes{shown})"


def check_keys(state: dict, expected: dict, where, fix: str = "use a file made for this model") -> None:
    """CheckpointError unless `state` has exactly the keys and shapes of `expected` (a model's state dict)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} is {tuple(state[k].shape)} in the file, {tuple(expected[k].shape)} in the model"
              for k in sorted(set(state) & set(expected)) if state[k].shape != expected[k].shape]
    found = [f"{len(v)} {what} (first: {v[0]})" for what, v in
             [("keys of the model missing", missing), ("unexpected keys", unexpected), ("shapes differ", shapes)] if v]
    if found:
        raise CheckpointError(f"{where}: does not fit the model: {', '.join(found)}; the file looks like "
                              f"{describe_keys(state)}; {fix}")


def describe_keys(keys) -> str:
    """What a checkpoint with these keys is, for error messages ('an official AnimateDiff motion module', ...)."""
    found = [name for piece, name in _LAYOUTS.items() if any(piece in k for k in keys)] + [
        f"an unknown layout (first keys: {list(keys)[:3]})" if keys else "a file without tensors"]
    return found[0]


def atomic_write(path, write) -> Path:
    """Call `write(tmp_path)` on a temporary file beside `path` (mode 0o666 minus the umask, as `open` makes),
    then rename it over `path`. Leftovers of killed writes (`.{name}.*.tmp`) are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    mode = tmp.stat().st_mode & 0o777  # `write` may replace the file by one of its own (safetensors: 0600)
    try:
        write(str(tmp))
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_safetensors(state: dict, path, metadata: dict | None = None) -> Path:
    """Save a state dict of tensors as safetensors, atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def save_torch(obj, path) -> Path:
    """torch.save, atomically (for optimizer state and other non-tensor-only payloads)."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))
