"""The paper's ablations as numbers: `python -m minianimate ablate NAME [--quick] [--resume]`.

An ablation is a few arms that differ in one lever. Every arm of an ablation starts from the same seed and trains on
the same clips for the same steps (the ablation's one budget) through the library's stages, never a copy of a loop
(`minianimate.toy.ablation_arms`): motion arms through stage 2 on the shipped recipe (configs/motion.yaml) with the
arm's fields changed, MotionLoRA arms through stage 3 on configs/motion_lora_zoom_{in,out}.yaml. Every arm is measured
the same way:

- a motion arm every 500 steps (its learning curve) and at the end: its modules in a fresh pipeline of the checkpoint
  folder, 24 clips a row (trained prompts, every direction equally often; the held-out combinations), 16 frames,
  DDIM 25, CFG 7.5, domain adapter 0 (at the end also the ablation's other adapter scales): direction, steady
  (`metrics.steady` against real clips of the same prompts), jerk, travel (start-to-end displacement, px), colour,
  watermark leakage and the mean frame-to-frame difference (uint8 levels), the real clips' figures beside them;
- a MotionLoRA arm at the end (its curve is the loss): the LoRA at 1.0 on the MotionLoRA held-out prompts
  (`datasets.LORA_HELD_OUT`), 24 clips at the references' length (8 frames), DDIM 25, CFG 7.5: zoom accuracy, colour,
  shape, and the file's size.

| NAME | arms (budget: every arm's steps) |
|---|---|
| adapter-scale | watermarked clips, domain adapter at 1 / clean clips, none; sampled at adapter 0-1 by 0.25 (3,000) |
| temporal-layer | motion module / parameter-matched TemporalConv / none: the base alone, frames independent (3,000) |
| positional-encoding | with / without the frame-position encoding (3,000) |
| schedule | `linear` / `scaled_linear` betas, each sampled on its own (3,000) |
| speed | shapes at 0.6-1.0 px/frame (the world's) / at 1.5-2.5 (the world before the motion lab) (3,000) |
| x0-weighting | the eps loss / the x0-weighted loss (3,000) |
| motion-lora-rank | ranks 1, 2, 4, 8, 32 on zoom-in and zoom-out; no MotionLoRA (200) |
| motion-lora-references | 5, 10, 25, 50, 100 references on zoom-in and zoom-out; no MotionLoRA (200) |

`speed` and `x0-weighting` are the motion lab's levers. Its recorded arms (benchmarks/results/motion_lab/) measured them
on one prompt (rung 1) or one shape (rung 2) with its own loop and evaluation, not on this recipe: re-run here.

Writes data_samples/ablations/NAME.json after each arm: every arm's config, steps, minutes, curve and final rows, the
commit, the sha256 of the checkpoints read and of each arm's trained file, and the command. Arms train in
runs/ablations/NAME/ARM/; `--resume` continues a stopped arm from its last checkpoint and keeps the finished ones.
`--quick` runs the same code for a few steps on a few clips in a temporary folder, and never writes into data_samples/.
On one free CPU thread (measured: 1.1 s a motion step, 0.7 s a MotionLoRA step, 6 s a 16-frame clip at DDIM 25) a
motion arm takes about 1.5 hours (55 minutes training, 30 measuring), a motion ablation about 3 hours (adapter-scale
3.3, temporal-layer 2.8), a MotionLoRA ablation about 40 minutes.
"""
import json
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from minianimate.checkpoint import atomic_write
from minianimate.toy import shapeworld as sw
from minianimate.toy.ablation_arms import FRAMES, GUIDANCE, SEED, Arm, Budget, lora_arm, motion_arm, rounded, summary
from minianimate.toy.models import (CHECKPOINTS, NEEDS, check_config, check_stage_inputs, load_text_encoder,
                                    load_vae, shipped)
from minianimate.toy.provenance import provenance
from minianimate.toy.stages import BETA_SCHEDULES, MotionLoRAStage, MotionStage
from minianimate.trainer import load_config

RESULTS = CHECKPOINTS.parent / "ablations"  # data_samples/ablations/
CONFIGS = CHECKPOINTS.parents[1] / "configs"
QUICK = Budget(steps=4, every=2, per_row=2, sampling=4, clips=8)  # --quick: every code path, in minutes
FAST = (1.5, 2.5)  # px/frame: the world's speed before the motion lab slowed it to shapeworld.SPEED_RANGE


@dataclass(frozen=True)
class Ablation:
    """The paper's `claim` (its words), the `stage` its arms train ("motion" or "motion-lora"), the `steps` every arm
    trains, the domain adapter's `scales` every motion arm is sampled at in the end, and a `note` on what the toy's
    arms mean."""
    claim: str
    stage: str
    arms: tuple[Arm, ...]
    steps: int
    scales: tuple[float, ...] = (0.0,)
    note: str = ""


def _lora_arms(lever: str, values) -> tuple[Arm, ...]:
    """A MotionLoRA arm per camera and value of `lever` ('rank' or 'references'), then the module without one."""
    return tuple(Arm(f"{camera}-{lever}{value}", {"camera": camera, lever: value})
                 for camera in ("zoom-in", "zoom-out") for value in values) + (Arm("no-lora", train=False),)


LAB = "The motion lab measured this lever on {} with its own loop and evaluation, not on this recipe."
ABLATIONS = {
    "adapter-scale": Ablation(
        "Lowering the domain adapter's scale from 1 to 0 removes the video data's watermark and raises quality.",
        "motion", (Arm("adapter", {"watermark": True, "adapter_scale": 1.0}),
                   Arm("no-adapter", {"watermark": False, "adapter_scale": 0.0})), 3000,
        scales=(0.0, 0.25, 0.5, 0.75, 1.0),
        note="adapter: stage 2 the paper's way, on watermarked clips with the shipped domain adapter (stage 1) "
             "attached at 1; no-adapter: clean clips, no adapter. Both are sampled at every scale with that adapter."),
    "temporal-layer": Ablation(
        "A parameter-matched 1D temporal convolution in place of the temporal transformer aligns all frames and "
        "learns almost no motion.",
        "motion", (Arm("motion-module", {"temporal": "attention"}), Arm("temporal-conv", {"temporal": "conv"}),
                   Arm("none", train=False)), 3000,
        note="none: no temporal layer, the base alone on each frame from its own noise (the floor, untrained). "
             "frame_difference: the mean |frame t+1 - frame t| (uint8 levels); 'real' holds the real clips'."),
    "positional-encoding": Ablation(
        "The motion module adds a sinusoidal encoding of each frame's position to its temporal attention's input.",
        "motion", (Arm("with", {"positional": True}), Arm("without", {"positional": False})), 3000,
        note="without: the encoding's buffers zeroed (MotionConfig positional=False): the attention tells the frames "
             "apart by their content alone."),
    "schedule": Ablation(
        "Training the motion module on linear betas (0.00085-0.012) rather than the image model's scaled_linear "
        "gives smoother, better-saturated motion.",
        "motion", (Arm("linear", {"beta_schedule": "linear"}),
                   Arm("scaled_linear", {"beta_schedule": "scaled_linear"})), 3000,
        note="The toy's base was trained on linear betas, so here linear matches the base and scaled_linear departs "
             "from it; the paper's pair is the other way round (SD1.5 trained on scaled_linear, its motion module on "
             "linear). Each arm is sampled on its own schedule: in the scaled_linear arm the frozen base also meets "
             "noise levels it never trained on."),
    "speed": Ablation(
        "The motion lab's lever: the world's speed (the shapes' px/frame).",
        "motion", (Arm("slow", speed=sw.SPEED_RANGE), Arm("fast", speed=FAST)), 3000,
        note="Steady is read against real clips at each arm's own speed. " + LAB.format(
            "rung 1, one prompt (r1-slow in benchmarks/results/motion_lab/; its faster arm r1-plain was not kept)")),
    "x0-weighting": Ablation(
        "The motion lab's lever: the loss weighted toward the clean clip's error at high noise "
        "(`minianimate.stages.diffusion_loss`, weighting 'x0').",
        "motion", (Arm("eps", {"weighting": "eps"}), Arm("x0", {"weighting": "x0"})), 3000,
        note=LAB.format("rung 1, one prompt, and rung 2, one shape (benchmarks/results/motion_lab/: "
                        "r1-slow / r1-slow-x0-weight, r2-slow / r2-slow-x0-weight)")),
    "motion-lora-rank": Ablation(
        "MotionLoRA learns a new camera motion at a small rank (efficient in parameters).",
        "motion-lora", _lora_arms("rank", (1, 2, 4, 8, 32)), 200),
    "motion-lora-references": Ablation(
        "MotionLoRA learns a new camera motion from about 50 reference videos; with a handful, quality drops.",
        "motion-lora", _lora_arms("references", (5, 10, 25, 50, 100)), 200,
        note="A smaller arm's references are the first of a larger one's (the same seed)."),
}


# --- configs: the recipe with the arm's fields changed, checked before anything loads ------------------------------
def recipe(ablation: Ablation, arm: Arm) -> Path:
    """The shipped config an arm changes: configs/motion.yaml, or its camera's MotionLoRA config."""
    if ablation.stage == "motion":
        return CONFIGS / "motion.yaml"
    return CONFIGS / f"motion_lora_{arm.change.get('camera', 'zoom-in').replace('-', '_')}.yaml"


def arm_config(ablation: Ablation, arm: Arm, budget: Budget, root: Path):
    """The arm's stage config (a MotionStage or MotionLoRAStage), or a one-line error naming its recipe."""
    path = recipe(ablation, arm)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: ablate trains on the shipped recipes in {CONFIGS} (a checkout)")
    cfg = replace(load_config(path, MotionStage if ablation.stage == "motion" else MotionLoRAStage), **arm.change,
                  steps=budget.steps)
    if ablation.stage == "motion":
        cfg = replace(cfg, checkpoint_every=budget.every, check=False, clips=budget.clips or cfg.clips)
        if arm.speed and cfg.switch:
            raise ValueError(f"{path}: switch clips move at the world's speed; the speed ablation needs no switch")
    check_stage_inputs(ablation.stage, check_config(cfg, str(path)), root, str(path), {"beta_schedule": BETA_SCHEDULES})
    return cfg


def budget_of(ablation: Ablation, quick: bool) -> Budget:
    """The ablation's budget (QUICK's with `quick`); a MotionLoRA arm is measured once, at the end."""
    budget = QUICK if quick else Budget(ablation.steps)
    return budget if ablation.stage == "motion" else replace(budget, every=budget.steps, clips=None)


def inputs(ablation: Ablation, budget: Budget, root: Path) -> tuple[str, ...]:
    """The checkpoint files (keys of FILES) an ablation reads, each checked to be in `root`, as every arm's config."""
    configs = [arm_config(ablation, arm, budget, root) for arm in ablation.arms]
    adapter = any(ablation.scales) or any(getattr(cfg, "adapter_scale", 0) for cfg in configs)
    names = NEEDS[ablation.stage] + ("adapter",) * adapter
    for name in names:
        shipped(name, root)
    return names


# --- the command ----------------------------------------------------------------------------------------------------
def run_ablation(name: str, quick: bool = False, resume: bool = False, root=CHECKPOINTS, out=None) -> Path:
    """Train and measure every arm of ablation `name` (a key of ABLATIONS) on the checkpoint folder `root`; write
    OUT/NAME.json after each arm (OUT: data_samples/ablations/, or with `quick` a new temporary folder) and return its
    path. Arms train in runs/ablations/NAME/ARM/ (quick: OUT/runs/NAME/ARM/); `resume` continues them. Every arm's
    config and the files it reads are checked before any model loads."""
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; choose one of {', '.join(ABLATIONS)}")
    if quick and out and Path(out).resolve().is_relative_to(RESULTS.parent.resolve()):
        raise ValueError(f"--quick makes a trial run, not results: give --out a folder outside {RESULTS.parent}")
    if quick and resume and not out:
        raise ValueError("--resume --quick continues a quick run: give its folder as --out DIR")
    flags = ["--quick"] * quick + ["--resume"] * resume + [f"--checkpoints {root}"] * (Path(root) != CHECKPOINTS)
    command = " ".join(["python -m minianimate ablate", name, *flags, *[f"--out {out}"] * bool(out)])
    ablation, root, started = ABLATIONS[name], Path(root), time.time()
    budget = budget_of(ablation, quick)
    names = inputs(ablation, budget, root)
    out = Path(out or (tempfile.mkdtemp(prefix=f"ablate-{name}-") if quick else RESULTS))
    runs = (out / "runs" if quick else Path("runs") / "ablations") / name
    models = load_vae(root), load_text_encoder(root)
    frames = FRAMES if ablation.stage == "motion" else arm_config(ablation, ablation.arms[0], budget, root).frames
    result = {"ablation": name, "claim": ablation.claim, "note": ablation.note, "command": command, "quick": quick,
              "budget": {**asdict(budget), "frames": frames, "guidance": GUIDANCE, "seed": SEED},
              "provenance": provenance(*names, root=root), "arms": [], "complete": False}
    path = out / f"{name}.json"
    for arm in ablation.arms:
        cfg, folder = arm_config(ablation, arm, budget, root), runs / arm.name
        config, done = json.loads(json.dumps(asdict(cfg))), folder / "result.json"
        kept = json.loads(done.read_text()) if resume and done.exists() else {}
        if kept.get("config") != config:  # not finished before with this config: train (or resume) and measure
            print(f"{name}: arm {arm.name}, {budget.steps if arm.train else 0} steps", flush=True)
            torch.manual_seed(cfg.seed)
            numbers = (motion_arm(arm, cfg, budget, ablation.scales, root, folder, resume, models)
                       if ablation.stage == "motion" else lora_arm(arm, cfg, budget, root, folder, resume))
            kept = rounded({"arm": arm.name, "change": arm.change, "speed": arm.speed, "trained": arm.train,
                            "recipe": recipe(ablation, arm).relative_to(CONFIGS.parent).as_posix(), "config": config,
                            **numbers})
            atomic_write(done, lambda tmp: Path(tmp).write_text(json.dumps(kept, indent=1)))
        print(f"{name}: arm {arm.name}: {summary(kept['rows'])}", flush=True)
        result["arms"].append(kept)
        result.update(complete=len(result["arms"]) == len(ablation.arms),
                      minutes=round((time.time() - started) / 60, 2))
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1) + "\n"))
    print(f"wrote {path} ({result['minutes']:.1f} minutes)")
    return path
