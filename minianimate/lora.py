"""LoRA: a low-rank update W + scale * (alpha / rank) * up @ down, attached to a frozen model by forward hooks.

One mechanism, three uses in AnimateDiff:
- image LoRAs on the spatial UNet (personalization; kohya files from the web);
- the **domain adapter** (stage 1): a LoRA on the spatial attention, trained on video frames to absorb the
  visual artefacts of the video data set, then scaled down (or to 0) at inference;
- **MotionLoRA** (stage 3): a LoRA on the motion modules' temporal attention that learns one camera motion.

The model is never edited: a `LoRA` holds its own low-rank layers and adds their output to each target
module's output with a forward hook, so `model.state_dict()` keeps diffusers' keys and several LoRAs
(adapter + image LoRA + MotionLoRAs) simply add up. `merge()` folds the update into the weights for fast
inference; `unmerge()` restores them bit for bit. Files: `minianimate.lora_formats`.
"""
import re
import weakref
from functools import partial
from pathlib import Path

import torch
from torch import nn

from minianimate import checks
from minianimate.inflation import is_motion_key
from minianimate.checkpoint import CheckpointError, read_state_dict
from minianimate.lora_formats import (FORMATS, LowRankWeights, detect_lora_format, diffusers_file, diffusers_metadata,
                                      from_layers, save_lora_file, to_layers)

# Target sets: regexes that must match a whole module name (re.fullmatch).
_QKVO = r"attn[12]\.(to_q|to_k|to_v|to_out\.0)"
SPATIAL_ATTENTION = [rf"(down|mid|up)_blocks?.*attentions\.\d+\.transformer_blocks\.\d+\.{_QKVO}"]  # domain adapter
MOTION_ATTENTION = [rf".*motion_modules\.\d+\.transformer_blocks\.\d+\.{_QKVO}"]  # MotionLoRA
SPATIAL_ALL = [rf"(down|mid|up)_blocks?.*attentions\.\d+\.(proj_in|proj_out|transformer_blocks\.\d+\."
               rf"({_QKVO}|ff\.net\.(0\.proj|2)))"]  # what kohya image LoRAs train
RESNET_CONVS = [r"(down|mid|up)_blocks?.*resnets\.\d+\.(conv1|conv2)", r"conv_in|conv_out"]  # kohya "LoCon"


class LowRank(nn.Module):
    """The low-rank path beside one Linear or Conv2d: x -> (alpha / rank) * up(down(x)).

    Linear: down (in -> r), up (r -> out); x (..., in) -> (..., out).
    Conv2d: down = Conv2d(in, r, k, stride, padding), up = 1x1 Conv2d(r, out); x (N, in, H, W) -> (N, out, H', W').
    down ~ normal(std=1/rank) and up = 0 (as the official code), so a fresh layer adds nothing.
    """

    def __init__(self, target: nn.Module, rank: int, alpha: float):
        super().__init__()
        if isinstance(target, nn.Linear):
            self.down = nn.Linear(target.in_features, rank, bias=False)
            self.up = nn.Linear(rank, target.out_features, bias=False)
        elif isinstance(target, nn.Conv2d) and target.groups == 1:
            self.down = nn.Conv2d(target.in_channels, rank, target.kernel_size, target.stride, target.padding,
                                  target.dilation, bias=False, padding_mode=target.padding_mode)
            self.up = nn.Conv2d(rank, target.out_channels, 1, bias=False)
        else:
            raise TypeError(f"LoRA supports nn.Linear and (ungrouped) nn.Conv2d targets, not {target}")
        self.rank, self.alpha = rank, float(alpha)
        nn.init.normal_(self.down.weight, std=1 / rank)
        nn.init.zeros_(self.up.weight)
        self.to(target.weight.device, target.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x)) * (self.alpha / self.rank)

    def delta_weight(self) -> torch.Tensor:
        """(alpha / rank) * up @ down, shaped like the target's weight: (out, in) or (out, in, kh, kw)."""
        up = self.up.weight.flatten(1)  # (out, r)
        return torch.einsum("or,r...->o...", up, self.down.weight) * (self.alpha / self.rank)


# Target modules with merged LoRAs: module -> (pristine weight, [(lora, module name), ...] in merge order).
# Shared by all LoRAs, so a weight is always exactly `pristine + deltas of the LoRAs merged into it`.
_MERGED: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _rewrite(module: nn.Module) -> None:
    """weight = pristine + the deltas of the LoRAs still merged into `module` (pristine itself when none)."""
    pristine, merged = _MERGED[module]
    with torch.no_grad():
        weight = pristine.clone()
        for lora, name in merged:
            weight += lora._delta(name)
        module.weight.copy_(weight)
    if not merged:
        del _MERGED[module]


class LoRA(nn.Module):
    """Low-rank updates on named modules of one model: a domain adapter, a MotionLoRA or an image LoRA.

    Not a child of the model: train it with `torch.optim.AdamW(lora.parameters())`. Its layers are created
    on the targets' device and dtype (move the model first, or `lora.to(...)` too). `scale` and `enabled`
    may change at any time; while merged, a change re-merges (rewrites the weights from the pristine copy).
    """

    def __init__(self, name: str = "lora"):
        super().__init__()
        self.name, self.format = name, "minianimate"
        self.layers = nn.ModuleDict()  # module name with '.' -> '__'  ->  LowRank
        self.targets: dict[str, nn.Module] = {}  # module name -> target module (owned by the model)
        self._handles = []
        self._scale, self._enabled, self.merged = 1.0, True, False

    # --- construction -------------------------------------------------------------------------------
    @classmethod
    def inject(cls, model: nn.Module, targets: list[str], rank: int = 4, alpha: float | None = None,
               name: str = "lora") -> "LoRA":
        """Attach fresh layers to the Linear/Conv2d modules whose whole name matches a regex of `targets`
        (re.fullmatch; e.g. SPATIAL_ATTENTION, MOTION_ATTENTION). up = 0, so outputs are unchanged.
        `alpha=None` means alpha = rank (the update is up @ down)."""
        checks.whole("rank", rank)
        if alpha is not None:
            checks.finite("alpha", alpha, low=0, low_open=True)
        lora = cls(checks.text("name", name))
        for module_name, module in _match(model, targets).items():
            lora._attach(module_name, module, LowRank(module, rank, rank if alpha is None else alpha))
        return lora

    @classmethod
    def load(cls, model: nn.Module, source, format: str = "auto", scale: float = 1.0,
             name: str | None = None) -> "LoRA":
        """Attach the LoRA of a file (.safetensors, or a .ckpt/.pt pickle) or state dict to `model`.

        The format ('minianimate', 'official', 'kohya', 'diffusers') is detected from the keys and kept in
        `lora.format` (of a diffusers folder, its `pytorch_lora_weights.safetensors` is read); rank and alpha are
        read per module. Keys that do not fit the model raise a ValueError naming them.
        """
        checks.choice("format", format, ("auto", *FORMATS))
        checks.finite("scale", scale)
        if name is not None:
            checks.text("name", name)
        state, metadata = read_state_dict(source, metadata=True)
        try:  # errors about what the file holds name the file
            found = detect_lora_format(state)
            if format not in ("auto", found):
                raise ValueError(f"format={format!r} but the file looks like the {found} format; "
                                 f"pass format='{found}' or 'auto'")
            layers = to_layers(state, found, model, metadata)
        except ValueError as e:
            raise CheckpointError(f"{'LoRA state dict' if isinstance(source, dict) else source}: {e}") from None
        modules = dict(model.named_modules())
        lora = cls(name or metadata.get("name") or (found if isinstance(source, dict) else Path(source).stem))
        for module_name, (down, up, alpha) in layers.items():
            layer = LowRank(modules[module_name], down.shape[0], alpha)
            with torch.no_grad():  # reshape: a 1x1 conv's matrix fits a Linear target and the reverse
                layer.down.weight.copy_(down.reshape(layer.down.weight.shape))
                layer.up.weight.copy_(up.reshape(layer.up.weight.shape))
            lora._attach(module_name, modules[module_name], layer)
        lora.format, lora.scale = found, scale
        return lora

    def _attach(self, module_name: str, module: nn.Module, layer: LowRank) -> None:
        self.layers[module_name.replace(".", "__")] = layer
        self.targets[module_name] = module
        self._handles.append(module.register_forward_hook(partial(self._hook, layer)))

    def _hook(self, layer: LowRank, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        """Forward hook of a target: its output + scale * (alpha / rank) * up(down(input))."""
        if self.merged or not self._enabled or self._scale == 0:
            return output  # merged: the update is already in the weight
        return output + self._scale * layer(inputs[0])

    def layer(self, module_name: str) -> LowRank:
        """The LowRank layer attached to the module `module_name`."""
        return self.layers[module_name.replace(".", "__")]

    # --- strength -----------------------------------------------------------------------------------
    @property
    def scale(self) -> float:
        """Multiplier of the update (the paper lowers the domain adapter's at inference)."""
        return self._scale

    @scale.setter
    def scale(self, value: float) -> None:
        self._scale = float(value)
        self._remerge()

    @property
    def enabled(self) -> bool:
        """False: the model behaves as without this LoRA (hooks add nothing, merged weights exclude it)."""
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._enabled = bool(value)
        self._remerge()

    # --- merging ------------------------------------------------------------------------------------
    def _delta(self, module_name: str) -> torch.Tensor:
        """scale * (alpha / rank) * up @ down for one target, shaped like its weight (0 when disabled)."""
        return self.layer(module_name).delta_weight() * (self._scale if self._enabled else 0.0)

    def merge(self) -> "LoRA":
        """Fold the update into the target weights (inference without hook cost); hooks then add nothing.

        The first LoRA merged into a module keeps a pristine copy of its weight, so `unmerge` is exact.
        Do not train or load other weights into the model while merged.
        """
        if not self._handles:
            raise RuntimeError(f"LoRA {self.name!r} was detached; load or inject it again")
        if not self.merged:
            self.merged = True
            for name, module in self.targets.items():
                _MERGED.setdefault(module, (module.weight.detach().clone(), []))[1].append((self, name))
                _rewrite(module)
        return self

    def unmerge(self) -> "LoRA":
        """Take the update out of the weights: W = pristine + deltas of the other LoRAs still merged."""
        if self.merged:
            self.merged = False
            for name, module in self.targets.items():
                _MERGED[module][1].remove((self, name))
                _rewrite(module)
        return self

    def _remerge(self) -> None:
        if self.merged:
            for module in self.targets.values():
                _rewrite(module)

    def detach(self) -> None:
        """Unmerge and remove the hooks: the model is exactly as before `inject`/`load`."""
        self.unmerge()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # --- parameters and files -------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        """The down/up weights that require grad (what the optimizer gets; the model stays frozen)."""
        return [p for p in self.parameters() if p.requires_grad]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def rank(self) -> int:
        """The rank of the layers (the largest, if a loaded file mixes ranks)."""
        return max((layer.rank for layer in self.layers.values()), default=0)

    def save(self, path, format: str = "minianimate") -> Path:
        """Write the layers as a 'minianimate', 'official', 'kohya' or 'diffusers' file (see `lora_formats`),
        atomically.

        .safetensors by suffix, any other suffix a torch pickle. 'official' takes only attention
        projections and has no alpha: alpha / rank is multiplied into `up`. 'diffusers' is what diffusers'
        `save_lora_weights` writes (`load_lora_weights` reads it): a .safetensors file, or a folder given for `path`
        gets `pytorch_lora_weights.safetensors`; alphas in its header. `scale` is never saved.
        """
        layers = {name: LowRankWeights(self.layer(name).down.weight, self.layer(name).up.weight,
                                       self.layer(name).alpha) for name in self.targets}
        state, metadata = from_layers(layers, format), {"format": format, "name": self.name, "rank": str(self.rank)}
        if format == "diffusers":
            path, metadata = diffusers_file(path), {**metadata, **diffusers_metadata(layers, self.targets)}
        return save_lora_file(state, path, metadata)

    def __repr__(self) -> str:  # one line: the default would print every layer
        kind = "motion" if any(map(is_motion_key, self.targets)) else "spatial"
        return (f"LoRA(name={self.name!r}, format={self.format!r}, {len(self.targets)} {kind} modules, "
                f"rank={self.rank}, parameters={self.num_parameters():,}, scale={self.scale}, "
                f"enabled={self.enabled}, merged={self.merged})")


def _match(model: nn.Module, patterns: list[str]) -> dict[str, nn.Module]:
    """{name: module} of the Linear/Conv2d modules whose whole name matches one of `patterns`.

    Each pattern must match something; otherwise a ValueError shows what the model's names look like.
    """
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    found = {}
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        hits = {n: m for n, m in layers.items() if re.fullmatch(pattern, n)}
        if not hits:
            hint = ("; the model has no motion modules: inflate it with MotionUNet first"
                    if "motion_modules" in pattern and not any(map(is_motion_key, layers)) else "")
            raise ValueError(f"target pattern {pattern!r} matches no Linear/Conv2d module{hint}. Patterns must "
                             f"match the whole name (re.fullmatch); the model has {len(layers)}: "
                             f"{', '.join(_menu(layers)[:12])}, ... (N an index)")
        found.update(hits)
    return found


def _menu(names) -> list[str]:
    """Module names with indices as N, siblings grouped: 'down_blocks.N.attentions.N.{proj_in,proj_out}'."""
    groups = {}
    for name in names:
        parts = re.sub(r"\.\d+(?=\.|$)", ".N", name).split(".")
        k = 2 if parts[-1] == "N" else 1  # keep `to_out.N` together
        groups.setdefault(".".join(parts[:-k]), {})[".".join(parts[-k:])] = None
    return [f"{parent + '.' if parent else ''}{{{','.join(leaves)}}}" for parent, leaves in groups.items()]
