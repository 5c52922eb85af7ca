"""Checkpoint files: one reader for every format, and writes that are atomic (a crash never leaves half a file)."""
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"  # the weights file of a diffusers model folder


def read_state_dict(source, metadata: bool = False):
    """Tensors of a .safetensors / .ckpt / .pt / .bin file or a diffusers folder, or a state dict as is.

    Pickles are read with weights_only=True; a top-level `state_dict` and DDP's `module.` prefixes are
    unwrapped. With `metadata`, returns (tensors, safetensors metadata dict) instead."""
    info = {}
    if isinstance(source, dict):
        state = source
    else:
        path = Path(source)
        if path.is_dir():
            path = path / DIFFUSERS_WEIGHTS
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint at {path}")
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                state, info = {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    return (state, info) if metadata else state


def atomic_write(path, write) -> Path:
    """Call `write(tmp_path)` on a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_safetensors(state: dict, path, metadata: dict | None = None) -> Path:
    """Save a state dict of tensors as safetensors, atomically."""
    state = {k: v.detach().contiguous() for k, v in state.items()}
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def save_torch(obj, path) -> Path:
    """torch.save, atomically (for optimizer state and other non-tensor-only payloads)."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))
