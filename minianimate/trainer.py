"""The training loop every stage shares: AdamW, warm-up + cosine decay, grad clipping, EMA, tqdm, checkpoints.

A stage supplies `loss_fn(step, generator) -> scalar loss` and the modules it trains. Randomness of step
`s` comes from a generator seeded by (seed, s), so a run resumed from a checkpoint continues exactly as
an uninterrupted run would. Checkpoints are written atomically; a NaN/inf loss stops training before the
optimizer touches the weights and leaves the last good checkpoint in place.

Data-parallel training: launched with `torchrun --nproc_per_node N -m minianimate train ...` (multi-node:
`--nnodes`, `--rdzv-endpoint`), the loss runs inside torch's `DistributedDataParallel` (gloo on CPU, nccl on
GPUs), which starts every replica from rank 0's weights and averages gradients in the backward pass. Each
step draws one global batch of N x `batch` from the step's generator and every process takes its own
slice of it (`shard`), so N processes train exactly as one process with batch N x `batch`; rank 0 alone
writes checkpoints and shows progress. `cfg.device`/`cfg.dtype`: see `minianimate.device` (autocast, fp32
master weights; float16 adds a gradient scaler).
"""
import os
import copy
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from minianimate.checkpoint import atomic_write, read_state_dict, save_safetensors, save_torch
from minianimate.device import autocast, pick_device, pick_dtype


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
    device: str = "auto"  # may change on --resume
    dtype: str = "float32"  # or bfloat16 / float16 autocast


def load_config(path, cls=TrainConfig):
    """A config dataclass (`TrainConfig` or a stage's subclass of it) from a yaml file; a key the class does
    not have is an error that names it and the allowed keys."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    allowed = [f.name for f in fields(cls)]
    unknown = sorted(set(raw) - set(allowed)) if isinstance(raw, dict) else ["(not `key: value` lines)"]
    if unknown:
        raise ValueError(f"{path}: unknown key{'s' * (len(unknown) > 1)} {', '.join(unknown)} for {cls.__name__}; "
                         f"allowed: {', '.join(allowed)}")
    return cls(**raw)


def check_resume(run, cfg, source="this config") -> None:
    """A ValueError naming both if the config saved in the run folder `run` differs from `cfg` but in steps
    (and device); a field the class gained since the run was saved counts as its default there."""
    path, now = Path(run) / "config.json", json.loads(json.dumps(asdict(cfg)))
    saved = {**json.loads(json.dumps(asdict(type(cfg)()))), **(json.loads(path.read_text()) if path.exists() else now)}
    differ = [f"{k} {saved.get(k)!r} there, {now.get(k)!r} here" for k in sorted(set(saved) | set(now))
              if k not in ("steps", "device") and saved.get(k, ()) != now.get(k, ())]
    if differ:
        raise ValueError(f"cannot resume {run}: its config ({path}) differs from {source} in {'; '.join(differ[:4])}; "
                         f"only steps may change. Resume with that config, or train into another --run folder")


class NonFiniteLoss(RuntimeError):
    """Raised when the loss is NaN or inf; the last good checkpoint is left untouched."""


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random stream of one training step: the same for a resumed run and an uninterrupted one, and for
    every DDP process (each takes its `shard` of what it draws)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def shard(x: torch.Tensor) -> torch.Tensor:
    """This process's slice of a global batch (N x batch, ...) along dim 0; all of it without DDP."""
    rank, n = world()
    return x.chunk(n)[rank] if n > 1 else x


def init_distributed() -> tuple[int, int]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1; gloo on CPU, nccl on GPUs).
    Returns (rank, world size); (0, 1) for a plain single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return world()


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train_device(cfg: TrainConfig) -> torch.device:
    """cfg.device resolved; under torchrun on GPUs, this process's own GPU (LOCAL_RANK)."""
    device = pick_device(cfg.device)
    if device.type == "cuda" and world()[1] > 1:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio` (or constant)."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    if cfg.decay == "constant":
        return 1.0
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


class Trainer:
    """Trains `modules` (name -> nn.Module; only parameters with requires_grad are optimised). Writes
    `out/weights.safetensors` (+ `out/ema.safetensors`), `out/trainer_state.pt` and `out/config.json`."""

    def __init__(self, modules: dict[str, nn.Module], cfg: TrainConfig, out, params=None):
        self.modules, self.cfg, self.out = modules, cfg, Path(out)
        self.params = list(params) if params is not None else [
            p for m in modules.values() for p in m.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("nothing to train: no parameter requires grad")
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(cfg, s))
        self.rank, self.world = world()
        self.device, self.dtype = train_device(cfg), pick_dtype(cfg.dtype)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.ema = {n: copy.deepcopy(m).requires_grad_(False) for n, m in modules.items()} if cfg.ema else None
        self.step, self.losses = 0, []

    # --- state --------------------------------------------------------------------------------------
    def trained_state(self, modules=None) -> dict:
        """name.key -> tensor of every module's trainable tensors (all tensors of modules that train)."""
        return {f"{n}.{k}": v for n, m in (modules or self.modules).items() for k, v in m.state_dict().items()}

    def save(self) -> None:
        """Write the checkpoint (rank 0 only; other DDP processes wait for it)."""
        if self.rank == 0:
            self._save()
        if self.world > 1:
            dist.barrier()

    def _save(self) -> None:
        meta = {"step": str(self.step)}
        save_safetensors(self.trained_state(), self.out / "weights.safetensors", meta)
        if self.ema:
            save_safetensors(self.trained_state(self.ema), self.out / "ema.safetensors", meta)
        save_torch({"step": self.step, "losses": self.losses, "optimizer": self.opt.state_dict(),
                    "scheduler": self.sched.state_dict()}, self.out / "trainer_state.pt")
        config = json.dumps(asdict(self.cfg), indent=2)
        atomic_write(self.out / "config.json", lambda tmp: Path(tmp).write_text(config))

    def resume(self) -> bool:
        """Load the checkpoint in `out` if there is one; True if it did (not if saved with another config)."""
        if not (state_path := self.out / "trainer_state.pt").exists():
            return False
        check_resume(self.out, self.cfg)
        fix = f"delete {self.out} or start without --resume"
        state = read_state_dict(state_path, raw=True, fix=fix)
        if state["step"] > self.cfg.steps:
            raise ValueError(f"cannot resume {self.out}: it is at step {state['step']}, beyond steps: "
                             f"{self.cfg.steps} of this config; raise steps or start without --resume")
        self._load(self.modules, self.out / "weights.safetensors", state["step"], fix)
        if self.ema:
            self._load(self.ema, self.out / "ema.safetensors", state["step"], fix)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.step, self.losses = state["step"], state["losses"]
        for group, base in zip(self.opt.param_groups, self.sched.base_lrs):  # the schedule of *this* config
            group["lr"] = base * lr_factor(self.cfg, self.step)
        return True

    def _load(self, modules, path, step, fix) -> None:
        weights, meta = read_state_dict(path, metadata=True, expected=self.trained_state(modules), fix=fix)
        if int(meta.get("step", -1)) != step:
            raise RuntimeError(f"{path} is from another step than trainer_state.pt: {fix}")
        for name, module in modules.items():
            module.load_state_dict({k[len(name) + 1:]: v for k, v in weights.items() if k.startswith(name + ".")})

    # --- the loop -----------------------------------------------------------------------------------
    def fit(self, loss_fn, on_checkpoint=None, desc: str = "train", progress: bool = True) -> list[float]:
        """Run `loss_fn(step, generator)` until cfg.steps; return the loss curve."""
        cfg = self.cfg
        objective = _Objective(self.modules, loss_fn)
        if self.world > 1:  # broadcasts rank 0's weights now, averages gradients in every backward
            ids = [self.device.index] if self.device.type == "cuda" else None
            objective = DistributedDataParallel(objective, device_ids=ids)
        bar = tqdm(range(self.step, cfg.steps), desc=desc, disable=not progress or self.rank != 0,
                   initial=self.step, total=cfg.steps)
        for step in bar:
            self.step = step
            with autocast(self.device, self.dtype):
                loss = objective(step, step_generator(cfg.seed, step)).float()
            shared = loss.detach().clone()
            if self.world > 1:  # every replica must see a bad loss, or the others would wait forever
                dist.all_reduce(shared)
                shared /= self.world
            if not torch.isfinite(shared):
                raise NonFiniteLoss(f"loss is {shared.item()} at step {step}; stopped without saving (the last "
                                    f"good checkpoint in {self.out} is kept). Try a lower lr or check the data.")
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            self.scaler.step(self.opt)
            self.scaler.update()
            self.sched.step()
            if self.ema:
                self._update_ema()
            self.losses.append(shared.item())
            self.step = step + 1
            if self.step % cfg.log_every == 0:
                bar.set_postfix(loss=f"{sum(self.losses[-cfg.log_every:]) / cfg.log_every:.4f}")
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.save()
                if on_checkpoint and self.rank == 0:
                    on_checkpoint(self)
        return self.losses

    @torch.no_grad()
    def use_ema(self) -> None:
        """The EMA's weights into the live modules (none without `cfg.ema`), which a stage then exports."""
        for name, module in (self.ema or {}).items():
            self.modules[name].load_state_dict(module.state_dict())

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.cfg.ema, (1 + self.step) / (10 + self.step))  # warm-up of the EMA
        for name, module in self.modules.items():
            for e, p in zip(self.ema[name].parameters(), module.parameters()):
                e.lerp_(p, 1 - decay)


class _Objective(nn.Module):
    """The trained modules and the loss as one module, the form `DistributedDataParallel` wraps."""

    def __init__(self, modules: dict, loss_fn):
        super().__init__()
        self.parts, self.loss_fn = nn.ModuleDict(modules), loss_fn

    def forward(self, step: int, generator: torch.Generator) -> torch.Tensor:
        return self.loss_fn(step, generator)
