"""Argument checks shared by the Python API and the command line, so that the two cannot drift apart.

Each check returns the value (an int, a float, a list) or raises one sentence that names the argument, the
value and what is allowed: `frames must be >= 1, got 0`. A value of the wrong type is a TypeError, a wrong
value a ValueError. The command line's argparse types (`minianimate.toy.cli_args`) call the same functions
with `name=None`; argparse puts the option in front: `--frames: must be >= 1, got 0`.

    frames = whole("frames", frames)                       # 1, 2, ...; numpy ints too, never a bool
    guidance = finite("guidance", guidance, low=0)         # no NaN, no inf
    choice("fuse", fuse, ("pyramid", "flat"))
"""
import math
import numbers
from dataclasses import fields, is_dataclass
from typing import get_args, get_type_hints

import torch

from minianimate.device import DTYPES


def show(value) -> str:
    """A value as a message shows it: numbers plainly (numpy scalars too), anything else by repr, cut short."""
    if isinstance(value, numbers.Number) and not isinstance(value, bool) and hasattr(value, "item"):
        value = value.item()  # np.int64(3) -> 3
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def fail(name: str | None, rule: str, got: str, error=ValueError):
    """raise `error('{name} {rule}, got {got}')`; without a name (argparse adds the option) `'{rule}, got ...'`."""
    raise error(f"{name} {rule}, got {got}" if name else f"{rule}, got {got}")


def whole(name: str | None, value, low: int | None = 1, high: int | None = None) -> int:
    """A whole number in [low, high] (an int or a numpy int; not a bool, a float or a string) -> int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fail(name, "must be a whole number", show(value), TypeError)
    if (low is not None and value < low) or (high is not None and value > high):
        rule = " and ".join(([f">= {low}"] if low is not None else []) + ([f"<= {high}"] if high is not None else []))
        fail(name, f"must be {rule}", show(value))
    return int(value)


def wholes(name: str | None, value, low: int | None = 1) -> tuple[int, ...]:
    """A non-empty list or tuple of whole numbers >= low (channel counts, ...) -> tuple of ints."""
    if not isinstance(value, (list, tuple)):
        fail(name, "must be a list or tuple of whole numbers", show(value), TypeError)
    if not value:
        fail(name, "must hold at least one whole number", show(value))
    return tuple(whole(f"{name}[{i}]", v, low) for i, v in enumerate(value))


def finite(name: str | None, value, low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False) -> float:
    """A finite number (int or float, numpy's too; not a bool) in the interval low..high -> float. The bounds
    are included unless `low_open` / `high_open`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(name, "must be a number", show(value), TypeError)
    value = float(value)
    if low is not None and high is not None:
        rule = f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        rule = f" {'>' if low_open else '>='} {low:g}"
    else:
        rule = f" {'<' if high_open else '<='} {high:g}" if high is not None else ""
    if not math.isfinite(value) or (low is not None and (value <= low if low_open else value < low)) or (
            high is not None and (value >= high if high_open else value > high)):
        fail(name, f"must be a finite number{rule}", show(value))
    return value


def probability(name: str | None, value) -> float:
    """A finite number in [0, 1] (a fraction, a dropout rate, DDIM's eta) -> float."""
    return finite(name, value, 0, 1)


def choice(name: str | None, value, allowed):
    """One of `allowed` (names, e.g. fuse or schedule), else a ValueError listing them."""
    if isinstance(value, (str, int, float, type(None))) and value in tuple(allowed):
        return value
    fail(name, f"must be one of {', '.join(map(str, allowed))}", show(value))


def text(name: str | None, value) -> str:
    """A string (a negative prompt, a name)."""
    if not isinstance(value, str):
        fail(name, "must be a string", show(value), TypeError)
    return value


def strings(name: str | None, value, count: int | None = None, each: str = "item") -> list[str]:
    """A non-empty list (or tuple) of strings, `count` of them (one per `each`) if given -> list."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or not hasattr(value, "__getitem__"):
        fail(name, "must be a list of strings", show(value), TypeError)
    if not len(value) or (count is not None and len(value) != count):
        fail(name, "must hold at least one string" if count is None else f"must hold {count} strings (one per {each})",
             f"{len(value)}")
    bad = next((v for v in value if not isinstance(v, str)), None)
    if bad is not None:
        fail(name, "must hold only strings", f"{show(bad)} in it", TypeError)
    return list(value)


def prompts(name: str | None, value) -> list[str]:
    """A prompt or a non-empty list of prompts -> list of strings."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and value:
        return strings(name, value)
    fail(name, "must be a string or a non-empty list of strings", show(value),
         ValueError if isinstance(value, (list, tuple)) else TypeError)


def keyframes(name: str | None, value, frames: int) -> dict:
    """Prompt travel {frame: prompt}: at least one keyframe, whole frame numbers in 0..frames - 1, string prompts."""
    if not isinstance(value, dict) or not value:
        error = ValueError if isinstance(value, dict) else TypeError
        fail(name, "must be a non-empty {frame: prompt} dict", show(value), error)
    for frame, prompt in value.items():
        if isinstance(frame, bool) or not isinstance(frame, numbers.Integral) or not isinstance(prompt, str):
            fail(name, "must map whole frame numbers to prompt strings", show({frame: prompt}), TypeError)
    keys = sorted(int(k) for k in value)
    if keys[0] < 0 or keys[-1] >= frames:
        raise ValueError(f"{name} keyframes {keys} must lie in 0..{frames - 1} (frames={frames})")
    return value


def instance(name: str | None, value, kind: type, hint: str = ""):
    """`value` if it is a `kind` (a MotionUNet, a UNet), else a TypeError (with `hint`: what to do)."""
    if not isinstance(value, kind):
        fail(name, f"must be a {kind.__name__}{hint}", type(value).__name__, TypeError)
    return value


def tensor(name: str | None, value, *shapes: str) -> torch.Tensor:
    """A tensor with as many dimensions as one of `shapes` ('(N, C, h, w)', ...), none of them empty."""
    want = f"must be a tensor {' or '.join(shapes)}"
    if not isinstance(value, torch.Tensor):
        fail(name, want, type(value).__name__, TypeError)
    if value.ndim not in {s.count(",") + 1 for s in shapes} or not value.numel():
        fail(name, want, f"shape {tuple(value.shape)}")
    return value


def same_count(name: str | None, count: int, expected: int, each: str) -> None:
    """`count` items where `expected` are needed (one per `each`: conditions per latent, ...)."""
    if count != expected:
        fail(name, f"must have {expected} entries (one per {each})", str(count))


def config(cfg, where: str = "config"):
    """A training config (`TrainConfig` or a stage's dataclass subclass of it) -> `cfg`, or a ValueError naming
    the first field of the wrong type or range: ints are counts (>= 1; `seed` any, `warmup` >= 0), floats finite
    and >= 0 (`lr` > 0, `ema` in [0, 1)), `decay` 'cosine' or 'constant', `dtype` one of DTYPES."""
    if not is_dataclass(cfg) or isinstance(cfg, type):
        fail(where, "must be a TrainConfig (or a stage's config dataclass)", show(cfg), TypeError)
    hints = get_type_hints(type(cfg))
    for f in fields(cfg):
        name, value = f"{where}: {f.name}", getattr(cfg, f.name)
        types = get_args(hints[f.name]) or (hints[f.name],)
        if isinstance(value, bool) != (bool in types) or not isinstance(value, (*types, *[int] * (float in types))):
            yaml = isinstance(value, str) and "e" in value
            hint = " (YAML reads 1e-3 as text: write 1.0e-3 or 0.001)" if yaml else ""
            kinds = " or ".join(t.__name__.replace("NoneType", "null") for t in types)
            fail(name, f"must be {kinds}", f"{value!r}{hint}")
        if f.name in ("decay", "dtype"):
            choice(name, value, ("cosine", "constant") if f.name == "decay" else tuple(DTYPES))
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or f.name == "seed":
            continue
        elif float in types:
            finite(name, value, 0, 1 if f.name == "ema" else None, low_open=f.name == "lr", high_open=True)
        else:
            whole(name, value, 0 if f.name == "warmup" else 1)
    return cfg
