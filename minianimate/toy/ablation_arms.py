"""One arm of an ablation (`minianimate.toy.ablations`): trained through the library's stage, measured as every arm is.

A motion arm trains through stage 2 (`stages.train_motion`, what `train motion` runs) and is measured at each of its
checkpoints (its learning curve): its motion modules in a fresh pipeline of the checkpoint folder, `per_row` clips a
row, FRAMES frames, CFG 7.5, sampled with DDIM `sampling`. A MotionLoRA arm trains through stage 3
(`stages.motion_lora_stage`, in a view of the checkpoint folder where it writes its file) and is measured at the end.
Every figure comes from `minianimate.toy.metrics`, read off the clips once.
"""
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minianimate.checkpoint import save_safetensors
from minianimate.lora import LoRA
from minianimate.pipeline import AnimationPipeline
from minianimate.toy import metrics
from minianimate.toy import shapeworld as sw
from minianimate.toy.datasets import HELD_OUT, LORA_HELD_OUT
from minianimate.toy.evaluation import balanced_prompts, evaluate_clips
from minianimate.toy.models import FILES, load_motion_unet, load_pipeline, toy_ddim
from minianimate.toy.provenance import sha256
from minianimate.toy.stages import MotionLoRAStage, MotionStage, motion_lora_stage, train_motion, training_clips

FRAMES, GUIDANCE, SEED = 16, 7.5, 0  # the motion rows' clips: length, classifier-free guidance, first seed


@dataclass(frozen=True)
class Budget:
    """How long the arms of an ablation train and how they are measured: `steps` each, motion arms measured every
    `every` steps, `per_row` clips a row sampled with DDIM `sampling`; `clips`: the motion arms' training clips (None:
    the recipe's)."""
    steps: int
    every: int = 500
    per_row: int = 24
    sampling: int = 25
    clips: int | None = None


@dataclass(frozen=True)
class Arm:
    """One arm: the recipe's fields it changes (`change`) and the speed of a motion arm's clips (px/frame; None: the
    world's). `train` False: measured untrained (a motion arm: fresh identity modules, i.e. the base alone on each
    frame from its own noise; a MotionLoRA arm: the checkpoint folder's motion module without a MotionLoRA)."""
    name: str
    change: dict = field(default_factory=dict)
    speed: tuple[float, float] | None = None
    train: bool = True


def frame_difference(clips: np.ndarray) -> float:
    """Mean absolute change between neighbouring frames of clips uint8 (N, F, H, W, 3), in uint8 levels (0: every
    frame alike)."""
    return float(np.abs(np.diff(clips.astype(np.float32), axis=1)).mean())


def rounded(x):
    """Floats rounded to 4 places (NaN -> None), through dicts and lists: what a json holds."""
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [rounded(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if np.isnan(x) else round(float(x), 4)
    return x


# --- measuring ------------------------------------------------------------------------------------------------------
def clip_row(pipe, prompts, adapter_scale: float, budget: Budget, speed, background) -> dict:
    """One motion row: clips of `prompts` [(colour, shape, direction)] (`evaluate_clips`) with their direction, steady
    rate, jerk, travel ('displacement', px), colour, leakage, frame_difference, ..., and under 'real' the travel and
    frame difference of real clean clips of the same prompts (at `speed` px/frame), which `steady` reads against."""
    result = evaluate_clips(pipe, prompts, frames=FRAMES, steps=budget.sampling, guidance=GUIDANCE, seed=SEED,
                            adapter_scale=adapter_scale)
    rng = np.random.default_rng(SEED + 77)
    real = np.stack([sw.render_clip(rng, FRAMES, c, s, d, watermark=False, speed_range=speed, background=background)[0]
                     for c, s, d in prompts])  # (N, F, 64, 64, 3)
    travel = float(np.mean([metrics.describe(x)["displacement"] for x in real]))
    steady = [metrics.steady(d, travel) for d in metrics.describe_all(result["clips"])]
    keep = ("direction", "jerk", "displacement", "color", "leakage", "consistency", "visible", "n")
    return {**{k: result[k] for k in keep}, "steady": float(np.mean(steady)),
            "frame_difference": frame_difference(result["clips"]),
            "real": {"displacement": travel, "frame_difference": frame_difference(real)}}


def motion_rows(weights: dict, cfg: MotionStage, scales, budget: Budget, root: Path, models, speed) -> dict:
    """The rows of one set of motion-module `weights`, in a fresh pipeline of `root` (its base; its domain adapter at
    each row's scale; `cfg`'s modules, schedule and noise prior): trained prompts (every direction equally often),
    held-out prompts, and trained prompts at each nonzero adapter scale of `scales`. models: (vae, text encoder)."""
    unet = load_motion_unet(root, {"heads": cfg.heads, "max_frames": cfg.max_frames, "temporal": cfg.temporal,
                                   "positional": cfg.positional}).eval().requires_grad_(False)
    unet.load_state_dict({k: v.cpu() for k, v in weights.items()}, strict=False)
    adapter = LoRA.load(unet, root / FILES["adapter"], scale=0.0).requires_grad_(False) if any(scales) else None
    pipe = AnimationPipeline(*models, unet, toy_ddim(cfg.beta_schedule), adapter=adapter)
    pipe.noise_share = cfg.noise_share
    trained = balanced_prompts(budget.per_row, False, SEED)
    plan = {"trained prompts": (trained, 0.0),
            "held-out prompts": ([HELD_OUT[i % len(HELD_OUT)] for i in range(budget.per_row)], 0.0),
            **{f"trained prompts, adapter {s:g}": (trained, s) for s in scales if s}}
    return {row: clip_row(pipe, prompts, scale, budget, speed or sw.SPEED_RANGE, cfg.background)
            for row, (prompts, scale) in plan.items()}


def zoom_rows(pipe, loras: list[str], cameras, frames: int, budget: Budget) -> dict:
    """A row per camera of `cameras`: clips of the MotionLoRA held-out prompts (`datasets.LORA_HELD_OUT`) with `loras`
    (['zoom-in:1.0']), `frames` long: zoom accuracy against that camera, colour, shape, what the zoom read as, n."""
    targets = [LORA_HELD_OUT[i % len(LORA_HELD_OUT)] for i in range(budget.per_row)]
    prompts = [sw.caption(c, s) for c, s in targets]
    clips = np.concatenate([pipe.generate(prompts[i:i + 8], frames=frames, steps=budget.sampling, guidance=GUIDANCE,
                                          seed=SEED + i, motion_loras=loras, progress=False)
                            for i in range(0, len(prompts), 8)])  # (N, frames, 64, 64, 3)
    described = metrics.describe_all(clips)
    colors, shapes = zip(*targets)
    read = dict(Counter(str(d["zoom"]) for d in described))
    rows = {}
    for camera in cameras:
        figures = metrics.score(described, dict(zoom=[camera] * len(clips), color=colors, shape=shapes))
        rows[camera] = {k: figures[k] for k in ("zoom", "color", "shape")} | {"read": read, "n": len(clips)}
    return rows


def summary(rows: dict) -> str:
    """One line of an arm's rows: the figures a reader looks at first."""
    keys = ("direction", "steady", "jerk", "leakage", "frame_difference", "zoom", "color")
    return "; ".join(f"{row}: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items() if k in keys and v is not None)
                     for row, figures in rows.items())


# --- training -------------------------------------------------------------------------------------------------------
def motion_arm(arm: Arm, cfg: MotionStage, budget: Budget, scales, root: Path, folder: Path, resume: bool,
               models) -> dict:
    """Train a motion arm in `folder` through `train_motion`, measured at each checkpoint (the adapter `scales` at the
    last), and export its modules; or measure an untrained arm. Returns steps, minutes, curve, rows, checkpoint."""
    def measure(weights, scales):
        return motion_rows(weights, cfg, scales, budget, root, models, arm.speed)

    if not arm.train:
        started = time.time()
        rows = measure(load_motion_unet(root, {"heads": cfg.heads, "max_frames": cfg.max_frames}).motion_state_dict(),
                       scales)
        return {"steps": 0, "minutes": {"train": 0.0, "eval": (time.time() - started) / 60}, "curve": [], "rows": rows}
    clock = [time.time()]

    def on_check(trainer, unet, adapter):  # a point of the curve: the two plain rows, every row at the last step
        started = time.time()
        rows = measure((trainer.ema or trainer.modules)["unet"].motion_state_dict(),
                       scales if trainer.step == cfg.steps else (0.0,))
        point = {"train_minutes": (started - clock[0]) / 60, "eval_minutes": (time.time() - started) / 60, "rows": rows}
        print(f"{arm.name} step {trainer.step}: {summary(rows)}", flush=True)
        clock[0] = time.time()
        return rounded(point)

    data = training_clips(models[0], cfg, clips=cfg.clips, still=cfg.still, speed_range=arm.speed) if arm.speed \
        else None  # a speed arm's clips; every other arm's are the stage's own
    unet, trainer, curve, _ = train_motion(cfg, root, folder, resume, progress=False, data=data, on_check=on_check)
    trainer.use_ema()
    path = save_safetensors(unet.motion_state_dict(), folder / "motion_module.safetensors")
    minutes = {"train": sum(p["train_minutes"] for p in curve), "eval": sum(p["eval_minutes"] for p in curve)}
    return {"steps": trainer.step, "minutes": minutes, "seconds_per_step": 60 * minutes["train"] / trainer.step,
            "curve": curve, "rows": curve[-1]["rows"], "checkpoint": {"file": str(path), "sha256": sha256(path)}}


def checkpoint_view(root: Path, view: Path) -> Path:
    """A checkpoint folder `view` of links to root's files (copies where links cannot be made) with a motion_loras/ of
    its own, where a MotionLoRA arm's stage writes its file."""
    (view / FILES["motion_loras"]).mkdir(parents=True, exist_ok=True)
    for name, file in FILES.items():
        source, link = (root / file).resolve(), view / file
        if name == "motion_loras" or not source.exists() or link.exists():
            continue
        try:
            link.symlink_to(source, target_is_directory=source.is_dir())
        except OSError:
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, link)
    return view


def lora_arm(arm: Arm, cfg: MotionLoRAStage, budget: Budget, root: Path, folder: Path, resume: bool) -> dict:
    """Train a MotionLoRA arm in `folder` through `motion_lora_stage` and measure it; or measure the folder's motion
    module without one, against both cameras. Returns steps, minutes, curve (the loss), rows, the file's size."""
    started = time.time()
    if not arm.train:
        rows = zoom_rows(load_pipeline(root=root), [], ("zoom-in", "zoom-out"), cfg.frames, budget)
        return {"steps": 0, "minutes": {"train": 0.0, "eval": (time.time() - started) / 60}, "curve": [], "rows": rows}
    view = checkpoint_view(root, folder / "checkpoints")
    numbers = motion_lora_stage(cfg, view, folder / "run", resume, progress=False)
    trained = time.time()
    rows = zoom_rows(load_pipeline(root=view), [f"{cfg.camera}:1.0"], (cfg.camera,), cfg.frames, budget)
    losses, every = numbers["trainer"].losses, cfg.log_every
    path = view / FILES["motion_loras"] / f"{cfg.camera}.safetensors"
    curve = [{"step": min(i + every, len(losses)), "loss": float(np.mean(losses[i:i + every]))}
             for i in range(0, len(losses), every)]
    return {"steps": numbers["trainer"].step, "minutes": {"train": (trained - started) / 60,
                                                          "eval": (time.time() - trained) / 60},
            "seconds_per_step": (trained - started) / numbers["trainer"].step, "curve": curve, "rows": rows,
            **{k: numbers[k] for k in ("rank", "references", "lora_parameters", "file_bytes")},
            "checkpoint": {"file": str(path), "sha256": sha256(path)}}
