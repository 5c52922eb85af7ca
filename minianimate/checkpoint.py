"""Checkpoint files written atomically: a crash mid-write never leaves a half file behind."""
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file


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
