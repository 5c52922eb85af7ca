"""Where tensors live and in which precision: the device and dtype every entry point takes.

`device` 'auto' (or None) picks cuda if available, else mps, else cpu. `dtype` float32, or bfloat16 / float16
*autocast*: matmuls and convolutions run in half precision while the weights (and so the trained parameters'
master copies and the optimizer state) stay float32. Random generators always stay on the CPU, so a seed
gives the same noise on every device.
"""
import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(device=None) -> torch.device:
    """'auto'/None -> the best device here; 'cuda', 'cuda:1', 'mps', 'cpu' are checked to exist."""
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} asked for, but this torch sees no CUDA GPU; use --device cpu (or auto)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device} asked for, but MPS is not available here; use --device cpu (or auto)")
    return device


def pick_dtype(dtype=None) -> torch.dtype:
    """'float32' (default), 'bfloat16', 'float16' or a torch.dtype -> torch.dtype."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if dtype is None or dtype in DTYPES:
        return DTYPES[dtype or "float32"]
    raise ValueError(f"dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)}")


def autocast(device: torch.device, dtype: torch.dtype):
    """A context running the model in `dtype` (no-op for float32)."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
