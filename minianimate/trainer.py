"""The training loop every stage shares: AdamW, warm-up + cosine decay, grad clipping, EMA, tqdm, checkpoints.

A stage supplies `loss_fn(step, generator) -> scalar loss` and the modules it trains. Randomness of step
`s` comes from a generator seeded by (seed, s), so a run resumed from a checkpoint continues exactly as
an uninterrupted run would. Checkpoints are written atomically; a NaN/inf loss stops training before the
optimizer touches the weights and leaves the last good checkpoint in place.
"""
import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from minianimate.checkpoint import save_safetensors, save_torch


@dataclass
class TrainConfig:
    steps: int = 1000
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    warmup: int = 50
    decay: str = "cosine"  # or "constant"
    min_lr_ratio: float = 0.05
    ema: float = 0.0  # EMA decay of the trained weights (0 = off)
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 50
    extra: dict = field(default_factory=dict)  # stage-specific settings, saved with the checkpoint


class NonFiniteLoss(RuntimeError):
    """Raised when the loss is NaN or inf; the last good checkpoint is left untouched."""


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random stream of one training step: the same for a resumed run and an uninterrupted one."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio` (or constant)."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    if cfg.decay == "constant":
        return 1.0
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


class Trainer:
    """Trains `modules` (name -> nn.Module; only parameters with requires_grad are optimised).

    Writes `out/weights.safetensors` (+ `out/ema.safetensors`), `out/trainer_state.pt` and `out/config.json`.
    """

    def __init__(self, modules: dict[str, nn.Module], cfg: TrainConfig, out, params=None):
        self.modules, self.cfg, self.out = modules, cfg, Path(out)
        self.params = list(params) if params is not None else [
            p for m in modules.values() for p in m.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("nothing to train: no parameter requires grad")
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(cfg, s))
        self.ema = {n: copy.deepcopy(m).requires_grad_(False) for n, m in modules.items()} if cfg.ema else None
        self.step, self.losses = 0, []

    # --- state --------------------------------------------------------------------------------------
    def trained_state(self, modules=None) -> dict:
        """name.key -> tensor of every module's trainable tensors (all tensors of modules that train)."""
        modules = modules or self.modules
        return {f"{n}.{k}": v for n, m in modules.items() for k, v in m.state_dict().items()}

    def save(self) -> None:
        meta = {"step": str(self.step)}
        save_safetensors(self.trained_state(), self.out / "weights.safetensors", meta)
        if self.ema:
            save_safetensors(self.trained_state(self.ema), self.out / "ema.safetensors", meta)
        save_torch({"step": self.step, "losses": self.losses, "optimizer": self.opt.state_dict(),
                    "scheduler": self.sched.state_dict()}, self.out / "trainer_state.pt")
        (self.out / "config.json").write_text(json.dumps(asdict(self.cfg), indent=2))

    def resume(self) -> bool:
        """Load the checkpoint in `out` if there is one; True if it did."""
        state_path = self.out / "trainer_state.pt"
        if not state_path.exists():
            return False
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        self._load(self.modules, self.out / "weights.safetensors", state["step"])
        if self.ema:
            self._load(self.ema, self.out / "ema.safetensors", state["step"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.step, self.losses = state["step"], state["losses"]
        for group, base in zip(self.opt.param_groups, self.sched.base_lrs):  # the schedule of *this* config
            group["lr"] = base * lr_factor(self.cfg, self.step)
        return True

    @staticmethod
    def _load(modules, path, step) -> None:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            if int(f.metadata().get("step", -1)) != step:
                raise RuntimeError(f"{path} is from another step than trainer_state.pt: delete the folder "
                                   f"or start without --resume")
        weights = load_file(path)
        for name, module in modules.items():
            module.load_state_dict({k[len(name) + 1:]: v for k, v in weights.items() if k.startswith(name + ".")})

    # --- the loop -----------------------------------------------------------------------------------
    def fit(self, loss_fn, on_checkpoint=None, desc: str = "train", progress: bool = True) -> list[float]:
        """Run `loss_fn(step, generator)` until cfg.steps; return the loss curve."""
        cfg = self.cfg
        bar = tqdm(range(self.step, cfg.steps), desc=desc, disable=not progress, initial=self.step, total=cfg.steps)
        for step in bar:
            self.step = step
            loss = loss_fn(step, step_generator(cfg.seed, step))
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"loss is {loss.item()} at step {step}; stopped without saving (the last "
                                    f"good checkpoint in {self.out} is kept). Try a lower lr or check the data.")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            self.opt.step()
            self.sched.step()
            if self.ema:
                self._update_ema()
            self.losses.append(loss.item())
            self.step = step + 1
            if self.step % cfg.log_every == 0:
                bar.set_postfix(loss=f"{sum(self.losses[-cfg.log_every:]) / cfg.log_every:.4f}")
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.save()
                if on_checkpoint:
                    on_checkpoint(self)
        return self.losses

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.cfg.ema, (1 + self.step) / (10 + self.step))  # warm-up of the EMA
        for name, module in self.modules.items():
            for e, p in zip(self.ema[name].parameters(), module.parameters()):
                e.lerp_(p, 1 - decay)
