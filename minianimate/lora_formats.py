"""LoRA checkpoint formats: minianimate's own, the official AnimateDiff MotionLoRA / domain adapter, kohya, diffusers.

Every format stores, per target module, a `down` (rank, in[, k, k]) and an `up` (out, rank[, 1, 1]) matrix;
they differ in key names and in where the factor alpha / rank lives:

- `minianimate`: `{module}.lora_down.weight`, `{module}.lora_up.weight`, `{module}.alpha`; update alpha/rank up@down.
- `official` (MotionLoRA, v3 domain adapter): `{attention}.processor.{to_q,to_k,to_v,to_out}_lora.{down,up}.weight`;
  update up @ down (no alpha, i.e. alpha = rank).
- `kohya` (image LoRAs from the web): `lora_unet_{module with '.' -> '_'}.lora_down.weight`, `.lora_up.weight`,
  `.alpha`; update alpha/rank up@down; `lora_te_*` text-encoder keys are ignored.
- `diffusers` (diffusers' `save_lora_weights` / `load_lora_weights`, PEFT's layout): `unet.{module}.lora_A.weight`
  (down), `unet.{module}.lora_B.weight` (up) in a .safetensors file whose header's `lora_adapter_metadata` JSON holds
  PEFT's LoraConfig (`unet.lora_alpha`, `unet.alpha_pattern`, ...); update lora_alpha/r up@down (no header: alpha =
  rank). Keys without `unet.` (`unet.save_lora_adapter`) are read too; `text_encoder*` keys are ignored.

`{module}` is a name of the model's `named_modules()` (diffusers names). In the official format `to_out` is the
module `to_out.0`, and motion-module paths use the official naming
(`down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0`).
"""
import json
import re
import warnings
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from minianimate.checkpoint import save_safetensors, save_torch
from minianimate.inflation import is_motion_key
from minianimate.motion_io import diffusers_to_official, official_to_diffusers

FORMATS = ("minianimate", "official", "kohya", "diffusers")
_OURS = re.compile(r"(.+)\.(lora_down\.weight|lora_up\.weight|alpha)")
_OFFICIAL = re.compile(r"(.+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight")
_KOHYA = re.compile(r"lora_unet_(\w+)\.(lora_down\.weight|lora_up\.weight|alpha)")
_DIFFUSERS = re.compile(r"(?:unet\.)?(.+)\.(lora_A\.weight|lora_B\.weight)")
_PART = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha", "down": "down", "up": "up",
         "lora_A.weight": "down", "lora_B.weight": "up"}
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"  # the file diffusers' save_lora_weights writes in its folder
METADATA_KEY = "lora_adapter_metadata"  # the header entry holding the LoraConfig (diffusers' LORA_ADAPTER_METADATA_KEY)


class LowRankWeights(NamedTuple):
    """One target module's update, (alpha / rank) * up @ down, as stored in a file."""

    down: torch.Tensor  # (rank, in) or (rank, in, k, k)
    up: torch.Tensor  # (out, rank) or (out, rank, 1, 1)
    alpha: float


def detect_lora_format(state: dict) -> str:
    """LoRA file layout: 'minianimate', 'official', 'kohya' or 'diffusers', from the key names; an error saying
    what the file looks like otherwise."""
    keys = list(state)
    if any(k.startswith(("lora_unet_", "lora_te")) for k in keys):
        return "kohya"
    if any(_OFFICIAL.fullmatch(k) for k in keys):
        return "official"
    if any(k.endswith(".lora_down.weight") for k in keys):
        return "minianimate"
    if any(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys):
        return "diffusers"
    hint = "; it looks like a motion module: use load_motion_module" if any(map(is_motion_key, keys)) else ""
    raise ValueError(f"no LoRA keys found (first keys: {keys[:3]}){hint}")


def to_layers(state: dict, fmt: str, model: nn.Module, metadata: dict | None = None) -> dict[str, LowRankWeights]:
    """Group the tensors of a `fmt` file by the model's module names, checked against the model.

    Unknown keys, modules the model lacks, a `down` without its `up` and shapes that do not fit the target
    weight raise one ValueError listing them with the likely cause. Text-encoder keys are ignored (kohya, diffusers).
    metadata: the file's header; a diffusers file's alphas live there (`diffusers_alphas`).
    """
    if fmt in ("kohya", "diffusers"):
        text = [k for k in state if k.startswith("lora_te" if fmt == "kohya" else "text_encoder")]
        if text:
            warnings.warn(f"ignored {len(text)} text-encoder tensors ({'lora_te' if fmt == 'kohya' else 'text_encoder'}"
                          f"*): minianimate has no CLIP LoRA support")
        state = {k: v for k, v in state.items() if k not in text}
        table = _kohya_names(model) if fmt == "kohya" else None
    parts, unknown = {}, []  # module name -> {"down": tensor, "up": tensor, "alpha": tensor}
    for key, value in state.items():
        if fmt == "official":
            m = _OFFICIAL.fullmatch(official_to_diffusers(key) if is_motion_key(key) else key)
            name = m and f"{m[1]}.{m[2]}" + (".0" if m[2] == "to_out" else "")
        else:
            m = {"kohya": _KOHYA, "diffusers": _DIFFUSERS}.get(fmt, _OURS).fullmatch(key)
            name = m and (_kohya_lookup(table, m[1]) if fmt == "kohya" else m[1])
        if m is None:
            unknown.append(key)
        else:
            parts.setdefault(name, {})[_PART[m[m.lastindex]]] = value
    if not parts and not unknown:
        raise ValueError("the file holds no UNet LoRA weights (only text-encoder ones?)")
    _check(model, parts, unknown, fmt)
    if fmt == "diffusers":
        alphas = diffusers_alphas(metadata or {}, {name: p["down"].shape[0] for name, p in parts.items()})
        parts = {name: {**p, "alpha": alphas[name]} for name, p in parts.items()}
    return {name: LowRankWeights(p["down"], p["up"], float(p["alpha"]) if "alpha" in p else p["down"].shape[0])
            for name, p in parts.items()}


def from_layers(layers: dict[str, LowRankWeights], fmt: str) -> dict:
    """The state dict of a `fmt` file. The official format has no alpha: alpha/rank is baked into `up`."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    state = {}
    for name, (down, up, alpha) in layers.items():
        if fmt == "official":
            m = re.fullmatch(r"(.+)\.(to_q|to_k|to_v|to_out\.0)", name)
            if m is None or down.ndim != 2:
                raise ValueError(f"the official format holds only attention projections (to_q/to_k/to_v/to_out.0 "
                                 f"Linears), not {name!r}: save with format='minianimate' or 'kohya'")
            prefix = f"{m[1]}.processor.{m[2].removesuffix('.0')}_lora"
            pair = {f"{prefix}.down.weight": down, f"{prefix}.up.weight": up * (alpha / down.shape[0])}
            state.update({diffusers_to_official(k) if is_motion_key(k) else k: v for k, v in pair.items()})
        elif fmt == "diffusers":  # alpha goes into the header (`diffusers_metadata`)
            state.update({f"unet.{name}.lora_A.weight": down, f"unet.{name}.lora_B.weight": up})
        else:
            prefix = name if fmt == "minianimate" else "lora_unet_" + name.replace(".", "_")
            state.update({f"{prefix}.lora_down.weight": down, f"{prefix}.lora_up.weight": up,
                          f"{prefix}.alpha": torch.tensor(float(alpha))})
    return state


# --- diffusers: rank and alpha live in the header, as PEFT's LoraConfig -------------------------------------
def diffusers_metadata(layers: dict[str, LowRankWeights], targets: dict[str, nn.Module]) -> dict:
    """The header of a diffusers file, as `save_lora_weights(..., unet_lora_adapter_metadata=LoraConfig.to_dict())`
    writes it: the most common rank and alpha, a `^{module}` pattern for each module that differs. Linear and Conv2d
    targets carry over (PEFT's conv LoRA is ours: k x k down, 1x1 up), but not a dilated or non-zero-padded conv
    (PEFT's lora_A copies only kernel, stride and padding): a ValueError."""
    odd = [name for name, m in targets.items()
           if isinstance(m, nn.Conv2d) and (m.dilation != (1, 1) or m.padding_mode != "zeros")]
    if odd:
        raise ValueError(f"the diffusers (PEFT) format cannot express a LoRA on a dilated or non-zero-padded conv "
                         f"({', '.join(odd[:3])}): PEFT's lora_A would ignore that; save with format='minianimate'")
    ranks = {name: w.down.shape[0] for name, w in layers.items()}
    alphas = {name: float(w.alpha) for name, w in layers.items()}
    r, alpha = Counter(ranks.values()).most_common(1)[0][0], Counter(alphas.values()).most_common(1)[0][0]
    config = {"r": r, "lora_alpha": alpha, "target_modules": sorted(layers),
              "rank_pattern": {f"^{n}": v for n, v in ranks.items() if v != r},
              "alpha_pattern": {f"^{n}": v for n, v in alphas.items() if v != alpha}}
    return {"format": "pt", METADATA_KEY: json.dumps({f"unet.{k}": v for k, v in config.items()}, sort_keys=True)}


def diffusers_alphas(metadata: dict, ranks: dict[str, int]) -> dict[str, float]:
    """Each module's alpha (in our sense: update alpha/rank up@down) from a diffusers file's header: PEFT's
    `lora_alpha`, or the first `alpha_pattern` entry matching the module as PEFT matches it; with `use_rslora`
    PEFT scales by lora_alpha/sqrt(r), i.e. alpha = lora_alpha sqrt(r). No header: alpha = rank (diffusers' rule)."""
    config = json.loads(metadata.get(METADATA_KEY) or "{}")
    if any(k.startswith("unet.") for k in config):  # a pipeline's file: the UNet's entries
        config = {k.removeprefix("unet."): v for k, v in config.items() if k.startswith("unet.")}
    if "lora_alpha" not in config:
        return {name: float(r) for name, r in ranks.items()}
    patterns = config.get("alpha_pattern") or {}
    alphas = {}
    for name, r in ranks.items():
        key = next((k for k in patterns if re.match(rf"(.*\.)?({k})$", name)), None)
        alpha = float(patterns[key] if key is not None else config["lora_alpha"])
        alphas[name] = alpha * r ** 0.5 if config.get("use_rslora") else alpha
    return alphas


def diffusers_file(path) -> Path:
    """Where a diffusers LoRA goes: a .safetensors path as is, a folder gets DIFFUSERS_FILE (as `save_lora_weights`
    writes it). A pickle has no header for the alphas: an error."""
    path = Path(path)
    if path.suffix and path.suffix != ".safetensors":
        raise ValueError(f"{path}: a diffusers LoRA is a .safetensors file (its alphas live in the header); give a "
                         f".safetensors path or a folder (for {DIFFUSERS_FILE})")
    return path if path.suffix else path / DIFFUSERS_FILE


def save_lora_file(state: dict, path, metadata: dict) -> Path:
    """A .safetensors file (with string `metadata`) or, for any other suffix (.ckpt, .pt), a pickle of the
    tensors, as the official code reads MotionLoRAs with torch.load. Written atomically."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return save_safetensors(state, path, metadata)
    return save_torch({k: v.detach().contiguous() for k, v in state.items()}, path)


# --- kohya names: '.' became '_', so map back through the model's own names ---------------------------------
def _kohya_names(model: nn.Module) -> dict:
    """{name with '.' -> '_': name} over the model's Linear/Conv2d modules; None marks an ambiguous flat name."""
    table = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            flat = name.replace(".", "_")
            table[flat] = None if flat in table else name
    return table


def _kohya_lookup(table: dict, flat: str) -> str:
    if flat in table and table[flat] is None:
        raise ValueError(f"kohya name lora_unet_{flat} fits several modules of the model: cannot map it back")
    return table.get(flat, "lora_unet_" + flat)  # unknown names stay kohya-style, for the error message


# --- checks -------------------------------------------------------------------------------------------------
def _check(model: nn.Module, parts: dict, unknown: list, fmt: str) -> None:
    modules = dict(model.named_modules())
    missing = sorted(n for n in parts if not isinstance(modules.get(n), (nn.Linear, nn.Conv2d)))
    incomplete = sorted(n for n, p in parts.items() if n not in missing and not {"down", "up"} <= p.keys())
    shapes = []
    for name, p in parts.items():
        if name not in missing and name not in incomplete:
            down, up = expected_shapes(modules[name], p["down"].shape[0])
            if _squeeze(p["down"].shape) != _squeeze(down) or _squeeze(p["up"].shape) != _squeeze(up):
                shapes.append(f"{name}: down {tuple(p['down'].shape)}, up {tuple(p['up'].shape)}, "
                              f"model expects {down}, {up}")
    if not (unknown or missing or incomplete or shapes):
        return
    causes = []
    if any(map(is_motion_key, missing)):
        if not any(map(is_motion_key, modules)):
            causes.append("keys target motion modules but the model has none: load into a MotionUNet")
        elif any(n.startswith("mid_block.") for n in missing):
            causes.append("the file has mid-block motion modules (a v2 MotionLoRA): build the model with motion='v2'")
    if any(re.match(r"(lora_unet_)?(input_blocks|middle_block|output_blocks)", n) for n in missing):
        causes.append("CompVis/SGM layer names (input_blocks/middle_block/output_blocks): an SDXL or "
                      "LDM-named LoRA, not supported")
    if shapes:
        causes.append("shapes differ: a LoRA for another base model (e.g. SD2/SDXL on an SD1.5 UNet) "
                      "or other channel/head sizes")
    if incomplete:
        causes.append("a down without its up (or the reverse): the file is truncated or was filtered")
    if unknown:
        causes.append(f"keys outside the {fmt} format (LyCORIS LoHa/LoKr, DoRA and other extensions are not supported)")
    if missing and not causes:
        causes.append("module names the model lacks: a LoRA made for another architecture")
    found = [f"{len(unknown)} unknown keys {unknown[:4]}", f"{len(missing)} modules not in the model {missing[:4]}",
             f"{len(incomplete)} incomplete {incomplete[:4]}", f"{len(shapes)} mis-shaped {shapes[:3]}"]
    raise ValueError(f"{fmt} LoRA does not fit the model: " + "; ".join(f for f in found if not f.startswith("0 "))
                     + ". Likely cause: " + "; ".join(causes))


def expected_shapes(module: nn.Module, rank: int) -> tuple[tuple, tuple]:
    """Shapes of (down, up) for a rank-`rank` LoRA on a Linear ((r, in), (out, r)) or a Conv2d
    ((r, in, kh, kw), (out, r, 1, 1))."""
    if isinstance(module, nn.Linear):
        return (rank, module.in_features), (module.out_features, rank)
    return (rank, module.in_channels, *module.kernel_size), (module.out_channels, rank, 1, 1)


def _squeeze(shape) -> tuple:
    """A 1x1 conv and a Linear hold the same matrix: (a, b, 1, 1) -> (a, b)."""
    shape = tuple(shape)
    return shape[:2] if len(shape) == 4 and shape[2:] == (1, 1) else shape
