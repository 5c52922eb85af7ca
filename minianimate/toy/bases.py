"""The motion module trained across several bases at once, as AnimateDiff-Lightning trains across base models.

The bases are the base itself and training-only variants of it: LoRAs of looks (`shapeworld.LOOKS`: a background kind
and the shapes' shades, never outlined's or pastel's), each made by `python -m minianimate train look` and kept in the
checkpoint folder's looks/. Each variant trains on clips in its own look, as a personalized model draws its own domain.
Every training step draws one base from the step alone (equally often), attaches that variant's LoRA alone and takes
its batch from that base's clips: the module learns motion that holds whatever the frozen image layers draw, not
one base's features. The evaluation (outlined, pastel, the base) never sees a look.
"""
from pathlib import Path

import torch

from minianimate.lora import LoRA
from minianimate.toy import datasets
from minianimate.toy.models import FILES


def parse(text: str | None, adapter_mix: bool = False) -> list[str]:
    """The looks of a stage's `bases` ("ink,neon"; None: none), or a ValueError naming the unknown one."""
    looks = [look.strip() for look in (text or "").split(",") if look.strip()]
    unknown = [look for look in looks if look not in datasets.sw.LOOKS]
    if unknown:
        raise ValueError(f"bases: unknown look {unknown[0]!r}; expected looks of {', '.join(datasets.sw.LOOKS)}, "
                         "comma-separated")
    if looks and adapter_mix:
        raise ValueError("bases and adapter_mix both draw something per step: use one of them")
    return looks


def look_clips(vae, cfg, look: str, n: int, encode) -> tuple[torch.Tensor, list[str]]:
    """n clips of the stage's kind (`cfg`: frames, watermark, seed; held-out combinations excluded) in `look`, as
    latents (n, 4, F, 16, 16) and captions; `encode(vae, pixels)` the stage's encoder."""
    seed = cfg.seed + 5000 + sorted(datasets.sw.LOOKS).index(look)
    pixels, captions = datasets.clip_set(n, seed, cfg.frames, watermark=cfg.watermark, still=cfg.still, look=look)
    return encode(vae, pixels), captions


class SeveralBases:
    """The bases a motion stage trains across: `data` maps None (the base) and each look to its (latents, captions);
    each look's LoRA (root/looks/LOOK.safetensors) is attached to `unet`, frozen and off. Called with a step (the
    stage's `before_step`), it attaches the step's base alone and returns its clips; `off()` detaches every look
    (the base alone, as the evaluation samples)."""

    def __init__(self, unet, root: Path, data: dict, seed: int):
        files = {look: Path(root) / FILES["looks"] / f"{look}.safetensors" for look in data if look}
        missing = [look for look, file in files.items() if not file.exists()]
        if missing:
            raise FileNotFoundError(f"no LoRA for the look(s) {', '.join(missing)} in {Path(root) / FILES['looks']}: "
                                    f"make each with `python -m minianimate train look --config "
                                    f"configs/wide/look_{missing[0]}.yaml --out {root}`")
        self.data, self.seed, self.names = data, seed, list(data)
        self.loras = {look: LoRA.load(unet, file).requires_grad_(False) for look, file in files.items()}
        self.off()

    def off(self) -> None:
        for lora in self.loras.values():
            lora.enabled = False

    def __call__(self, step: int) -> tuple[torch.Tensor, list[str]]:
        pick = self.names[int(torch.randint(len(self.names), (1,),
                                            generator=torch.Generator().manual_seed(self.seed * 7919 + step)))]
        for look, lora in self.loras.items():
            lora.enabled = look == pick
        return self.data[pick]
