"""Motion lab: the motion stage (stage 2) one rung at a time, in short, equal arms with learning curves.

The ladder (`RUNGS`): rung 1 one combination ("a red circle moving right"); rung 2 one colour and shape in
four directions plus still prompts; rung 3 the full set with the held-out combinations. Every arm starts
from fresh (identity) motion modules on the frozen shipped base (or from another arm's module: `init`),
with the same seed, the same clips of its rung and the same evaluation; only its levers differ.

Every 500 steps the arm is evaluated on its rung's fixed set (16 frames, DDIM 25, CFG 7.5, adapter off;
>= 24 moving clips per group): direction, jerk, visible frames, displacement against real clips of the
same prompts, and the share of *steady* clips (`metrics.steady`: visible in >= 95% of frames, no
frame-to-frame jump over 4 px, travel 50-150% of the real clips') that go the prompted way. A rung meets
its aims when >= 90% of its moving clips are steady and go the prompted way and mean jerk <= 1.5.

    python benchmarks/motion_lab.py --arms r1-slow --out runs/lab      # one arm (resumes if stopped)
    python benchmarks/motion_lab.py --table --out runs/lab             # the table of every arm so far

Run two arms side by side, one thread each (`--threads 1`, the default): about twice the work of one
two-thread arm. Clip latents are cached in `OUT/cache/`. Results: `OUT/ARM.json` (levers, curve) and
`OUT/table.md`; the arms measured are kept in `benchmarks/results/motion_lab/`.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from minianimate.autoencoder import encode_clips
from minianimate.checkpoint import read_state_dict, save_safetensors
from minianimate.inflation import is_motion_key
from minianimate.lora import LoRA
from minianimate.pipeline import AnimationPipeline
from minianimate.sampling import frame_noise
from minianimate.trainer import Trainer, TrainConfig
from minianimate.toy import metrics
from minianimate.toy import shapeworld as sw
from minianimate.toy.datasets import HELD_OUT, clip_set, combos
from minianimate.toy.models import CHECKPOINTS, FILES, TOY_MOTION, load_motion_unet, load_text_encoder, load_vae, toy_ddim

EVAL_EVERY, SEED, FRAMES = 500, 0, 16
FAST = (1.5, 2.5)  # px/frame: the world's speed before issue 23 (travel 22-38 px over 16 frames), the "plain" arms'
SLOW = (0.6, 1.0)  # px/frame: the slower world (travel 9-15 px), ShapeWorld's speed since issue 23
# The ladder's evaluation is fixed from its first rung: direction "still" below 0.5 px/frame, the threshold
# of the 1.5-2.5 px world (the library's `metrics.STILL_SPEED` followed the world to 0.2). Clips that move
# 0.2-0.5 px/frame travel 3-7.5 px, under half the slower world's 11.9 px, so they fail `steady` either way.
LADDER_STILL_SPEED = 0.5
metrics.STILL_SPEED = LADDER_STILL_SPEED
RED_CIRCLE = [("red", "circle", d) for d in sw.DIRECTIONS]
RUNGS = {  # clips drawn from `only` (None: every combination not held out); evaluation groups
    1: dict(only=[("red", "circle", "right")], still=0.0, clips=400),
    2: dict(only=RED_CIRCLE, still=0.1, clips=800),
    3: dict(only=None, still=0.1, clips=2000),
}
LEVERS = dict(rung=1, steps=2000, batch=4, lr=1e-3, decay="constant", warmup=100, ema=0.0, speed=FAST,
              noise_share=0.0, high_t=0.0, weighting="eps", text_dropout=0.1, freeze16="none", init=None,
              temporal="attention", eval_every=EVAL_EVERY, watermark=False, adapter=0.0,
              adapter_file=None, switch=0.0, backgrounds=0.0, personalized=False)
# watermark: clips with the video-domain defects; adapter: the shipped domain adapter attached (frozen) during training
# at this scale, or "mixed" (a scale drawn uniformly from [0, 1] at every step); evaluation is always adapter off.
# adapter_file: another adapter (a path under OUT), e.g. an attention-only one: `python -m minianimate train adapter
# --config C --out OUT/attention_adapter` on a copy of the checkpoint folder, C = configs/adapter.yaml with
# `targets: spatial_attention`.
# switch: that many clips again (a fraction of the rung's clips) whose colour switches at a random frame, captioned per
# frame (`switch_clips`), the prompt-travel lever; init "shipped": start from the shipped motion module.
# backgrounds: that fraction of the clips repainted on a random uniform RGB background (`repaint`): video data whose
# backgrounds vary, as WebVid's do (ShapeWorld's are all near-black); personalized: each evaluation adds the outlined
# and pastel rows of `eval` (24 clips each) with the arm's module.
ARMS = {  # name -> the levers that differ from LEVERS
    "r1-plain": {},
    "r1-slow": {"speed": SLOW},
    "r1-slow-shared0.3": {"speed": SLOW, "noise_share": 0.3},
    "r1-slow-shared0.5": {"speed": SLOW, "noise_share": 0.5},
    "r1-slow-shared0.8": {"speed": SLOW, "noise_share": 0.8},
    "r1-slow-high-t": {"speed": SLOW, "high_t": 0.7},
    "r1-slow-cosine": {"speed": SLOW, "decay": "cosine"},
    "r1-slow-lr3e-4": {"speed": SLOW, "lr": 3e-4},
    "r1-slow-ema": {"speed": SLOW, "ema": 0.999},
    "r1-slow-batch8": {"speed": SLOW, "batch": 8},
    "r1-slow-freeze16": {"speed": SLOW, "freeze16": "both"},
    "r1-slow-ema-cosine": {"speed": SLOW, "ema": 0.999, "decay": "cosine"},
    "r1-slow-x0-weight": {"speed": SLOW, "weighting": "x0"},
    "r1-slow-conv": {"speed": SLOW, "temporal": "conv"},
    "r1-slow-x0-ema": {"speed": SLOW, "weighting": "x0", "ema": 0.999, "steps": 3000},
    "r1-slow-x0-cosine": {"speed": SLOW, "weighting": "x0", "decay": "cosine", "steps": 3000},
    "r1-slow-dropout0.3": {"speed": SLOW, "text_dropout": 0.3},
    "r1-slow-x0-watermark": {"speed": SLOW, "weighting": "x0", "watermark": True, "steps": 3000},
    "r1-slow-x0-adapter": {"speed": SLOW, "weighting": "x0", "watermark": True, "adapter": 1.0, "steps": 3000},
    "r1-slow-x0-adapter-mixed": {"speed": SLOW, "weighting": "x0", "watermark": True, "adapter": "mixed", "steps": 3000},
    "r1-slow-x0-attn-adapter": {"speed": SLOW, "weighting": "x0", "watermark": True, "adapter": 1.0, "steps": 3000,
                                "adapter_file": "attention_adapter/domain_adapter.safetensors"},
    "r2-slow": {"rung": 2, "speed": SLOW},
    "r2-slow-ema-cosine": {"rung": 2, "speed": SLOW, "ema": 0.999, "decay": "cosine"},
    "r2-slow-from-r1": {"rung": 2, "speed": SLOW, "init": "r1-slow"},
    "r2-slow-freeze16": {"rung": 2, "speed": SLOW, "freeze16": "both"},
    "r2-slow-freeze16-down": {"rung": 2, "speed": SLOW, "freeze16": "down"},
    "r2-slow-no-dropout": {"rung": 2, "speed": SLOW, "text_dropout": 0.0},
    "r2-slow-batch8": {"rung": 2, "speed": SLOW, "batch": 8},
    "r2-slow-high-t": {"rung": 2, "speed": SLOW, "high_t": 0.7},
    "r2-slow-dropout0.3": {"rung": 2, "speed": SLOW, "text_dropout": 0.3},
    "r2-slow-x0-weight": {"rung": 2, "speed": SLOW, "weighting": "x0"},
    "r2-slow-x0-cosine": {"rung": 2, "speed": SLOW, "weighting": "x0", "decay": "cosine", "steps": 3000},  # rung 3's two levers
    "r3-slow": {"rung": 3, "speed": SLOW},
    "r3-slow-x0-weight": {"rung": 3, "speed": SLOW, "weighting": "x0", "steps": 10000, "eval_every": 2000},  # long run
    # the long run's 10,000-step module, then 3,000 more steps with the learning rate decayed (cosine, to 1/20 of it;
    # fresh AdamW state): the shipped recipe (the constant rate was flat from 10,000 to 16,000 steps)
    "r3-slow-x0-decay": {"rung": 3, "speed": SLOW, "weighting": "x0", "init": "r3-slow-x0-weight", "decay": "cosine",
                         "steps": 3000, "eval_every": 1000},
    # prompt travel (issue 23 item 5): the 13,000-step module (r3-slow-x0-decay's, shipped when it starts) fine-tuned
    # with colour-switch clips beside rung 3's; travel clips 58% -> 100% switched and one object, direction kept: the
    # shipped module since (`--ship r3-switch` after `--ship r3-slow-x0-decay`, as `make checkpoints` runs them)
    "r3-switch": {"rung": 3, "speed": SLOW, "weighting": "x0", "init": "shipped", "lr": 1e-4, "switch": 0.25,
                  "steps": 1500, "eval_every": 500},
    # pastel / outlined direction (issue 23 item 4): the shipped module fine-tuned with half the clips on random
    # backgrounds (the pastel LoRA's light background is far from anything the module saw). Stopped after its
    # 500-step evaluation: loss 0.112 (r3-switch's 0.023), base direction 58% / 75%, jerk 16-19, pastel 4%
    "r3-backgrounds": {"rung": 3, "speed": SLOW, "weighting": "x0", "init": "shipped", "lr": 1e-4, "backgrounds": 0.5,
                       "personalized": True, "steps": 1000, "eval_every": 500},
}
BINS = ((0, 200), (200, 400), (400, 600), (600, 800), (800, 1000))


def eval_groups(rung: int) -> dict:
    """name -> (colour, shape, direction) targets of the rung's fixed evaluation ('still' clips apart)."""
    if rung == 1:
        return {"moving": [("red", "circle", "right")] * 24}
    if rung == 2:
        return {"moving": [x for x in RED_CIRCLE for _ in range(6)], "still": [("red", "circle", "still")] * 4}
    return {"held_out": [x for x in HELD_OUT for _ in range(4)], "trained": balanced_targets(24),
            "still": [(c, s, "still") for c, s, _ in balanced_targets(4, seed=1)]}


def balanced_targets(n: int, seed: int = 0) -> list:
    """n trained (colour, shape, direction) combinations, every direction equally often."""
    rng = np.random.default_rng(seed)
    by_dir = {d: [x for x in combos(False) if x[2] == d] for d in sw.DIRECTIONS}
    return [by_dir[d][i] for k in range(n) for d in [sw.DIRECTIONS[k % 4]]
            for i in [int(rng.integers(len(by_dir[d])))]]


def timesteps(batch: int, generator, high_t: float, T: int = 1000) -> torch.Tensor:
    """Uniform timesteps, except a fraction `high_t` drawn from the upper half (t >= T/2)."""
    t = torch.randint(0, T, (batch,), generator=generator)
    high = torch.randint(T // 2, T, (batch,), generator=generator)
    return torch.where(torch.rand(batch, generator=generator) < high_t, high, t)


def frame_prompts(caption, frames: int = FRAMES) -> list[str]:
    """A clip's caption per frame: a caption for all, or (before, after, k): `before` until frame k - 1, then `after`."""
    if isinstance(caption, str):
        return [caption] * frames
    before, after, k = caption
    return [before] * k + [after] * (frames - k)


def switch_clips(n: int, seed: int, speed) -> tuple[np.ndarray, list]:
    """n clean clips of one trained shape and direction whose colour switches at frame k (4-12), the same path drawn
    twice in two colours and cut at k: uint8 (n, F, 64, 64, 3) and captions (before, after, k), as prompt travel asks."""
    rng = np.random.default_rng(seed)
    allowed = [x for x in combos() if x not in set(HELD_OUT)]
    clips, captions = [], []
    for _ in range(n):
        _, shape, direction = allowed[rng.integers(len(allowed))]
        before, after = (str(c) for c in rng.choice(list(sw.COLORS), 2, replace=False))
        k, state = int(rng.integers(4, 13)), int(rng.integers(2**31))
        a, first, _ = sw.render_clip(np.random.default_rng(state), FRAMES, before, shape, direction, watermark=False,
                                     speed_range=speed)
        b, second, _ = sw.render_clip(np.random.default_rng(state), FRAMES, after, shape, direction, watermark=False,
                                      speed_range=speed)
        clips.append(np.concatenate([a[:k], b[k:]]))
        captions.append((first, second, k))
    return np.stack(clips), captions


def repaint(clips: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A `fraction` of clean clips uint8 (n, F, H, W, 3) with their near-black background swapped for a random RGB
    colour, one per clip: each pixel's coverage a = |pixel - bg| / max over the clip (the shape's own colour is the
    farthest), then pixel + (1 - a) (new - bg), so edges and motion streaks blend into the new background."""
    rng = np.random.default_rng(seed)
    out = clips.astype(np.float32)
    bg = np.array(sw.BACKGROUND, np.float32)
    for i in np.flatnonzero(rng.random(len(clips)) < fraction):
        dist = np.linalg.norm(out[i] - bg, axis=-1, keepdims=True)
        a = dist / max(float(dist.max()), 1e-6)
        out[i] = out[i] + (1 - a) * (rng.uniform(0, 255, 3).astype(np.float32) - bg)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def lab_loss(unet, text_encoder, latents, captions, ddim, generator, levers, adapter=None):
    batch = levers["batch"]
    if levers["adapter"] == "mixed":
        adapter.scale = float(torch.rand(1, generator=generator))
    idx = torch.randint(0, len(latents), (batch,), generator=generator)
    x0 = latents[idx]
    drop = torch.rand(batch, generator=generator) < levers["text_dropout"]
    prompts = ["" if d else captions[i] for i, d in zip(idx.tolist(), drop.tolist())]
    noise = frame_noise(x0.shape, generator, levers["noise_share"])
    t = timesteps(batch, generator, levers["high_t"])
    if any(not isinstance(p, str) for p in prompts):  # colour-switch clips: a prompt per frame, (B*F, L, D)
        context = text_encoder.encode_prompt([q for p in prompts for q in frame_prompts(p, x0.shape[2])])
    else:
        context = text_encoder.encode_prompt(prompts)
    eps = unet(ddim.add_noise(x0, noise, t), t, context)
    per_clip = ((eps - noise) ** 2).mean(dim=(1, 2, 3, 4))
    snr = ddim.alphas_cumprod[t] / (1 - ddim.alphas_cumprod[t])
    if levers["weighting"] == "min-snr":  # Min-SNR-5 for epsilon prediction: min(snr, 5) / snr
        per_clip = per_clip * torch.clamp(snr, max=5.0) / snr
    elif levers["weighting"] == "x0":  # toward the clip (x0) error at high t, where layout and motion are decided:
        per_clip = per_clip * torch.clamp(1 / snr, min=1.0, max=20.0)  # eps error = snr * x0 error; weight <= 20
    return per_clip.mean()


def cached_clips(vae, out: Path, levers: dict):
    rung = RUNGS[levers["rung"]]
    speed = levers["speed"]
    path = out / "cache" / f"rung{levers['rung']}_n{rung['clips']}_speed{speed[0]}-{speed[1]}{'_wm' * levers['watermark']}.pt"
    if levers["switch"]:
        path = path.with_name(f"{path.stem}_switch{levers['switch']}.pt")
    if levers["backgrounds"]:
        path = path.with_name(f"{path.stem}_bg{levers['backgrounds']}.pt")
    if path.exists():
        data = torch.load(path, weights_only=False)
        return data["latents"], data["captions"]
    clips, captions = clip_set(rung["clips"], SEED + 2000, FRAMES, still=rung["still"], watermark=levers["watermark"],
                               only=rung["only"], speed_range=levers["speed"])
    if levers["switch"]:
        more, switched = switch_clips(round(levers["switch"] * rung["clips"]), SEED + 3000, levers["speed"])
        clips, captions = np.concatenate([clips, more]), captions + switched
    if levers["backgrounds"]:
        clips = repaint(clips, levers["backgrounds"], SEED + 4000)
    latents = encode_clips(vae, clips)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"latents": latents, "captions": captions}, path)
    return latents, captions


def frozen16(unet, which: str) -> list:
    """The motion modules at the 16x16 level: 'down' (no text reaches its features), 'both' (+ the last up
    block), 'none'."""
    blocks = {"none": [], "down": [unet.down_blocks[0]], "both": [unet.down_blocks[0], unet.up_blocks[-1]]}[which]
    return [p for b in blocks for p in b.motion_modules.parameters()]


def reference_displacement(targets, speed, n: int = 4) -> float:
    """Mean start-to-end displacement (px) of real clean clips of the moving targets (n each)."""
    rng = np.random.default_rng(SEED + 77)
    clips = [sw.render_clip(rng, FRAMES, c, s, d, watermark=False, speed_range=speed)[0]
             for c, s, d in targets for _ in range(n) if d != "still"]
    return float(np.mean([metrics.describe(x)["displacement"] for x in clips])) if clips else 0.0


def generate(unet, vae, text_encoder, targets, share, seed=1, batch=8):
    pipe = AnimationPipeline(vae, text_encoder, unet, toy_ddim())
    prompts = [sw.caption(c, s, None if d == "still" else d) for c, s, d in targets]
    return np.concatenate([pipe.generate(prompts[i:i + batch], frames=FRAMES, steps=25, guidance=7.5,
                                         seed=seed + i, noise_share=share, progress=False)
                           for i in range(0, len(prompts), batch)])


def travel_figures(unet, vae, text_encoder, steps: int = 25) -> dict:
    """Prompt travel as `benchmarks/inference_tricks.py` measures it (12 clips whose colour switches at keyframe 8):
    the share switched, one object, and both."""
    from minianimate.toy.inference import travel_clips, travel_scores

    pipe = AnimationPipeline(vae, text_encoder, unet, toy_ddim())
    rows = [travel_scores(pipe.generate(case["keyframes"], frames=FRAMES, steps=steps, seed=i, progress=False), case)
            for i, case in enumerate(travel_clips(12))]
    return {k: round(float(np.mean([r[k] for r in rows])), 4) for k in ("switched", "one_object")} | {
        "both": round(float(np.mean([r["switched"] and r["one_object"] for r in rows])), 4),
        "colors": [" ".join((c or "-")[:2] for c in r["colors"]) for r in rows]}


def personalized_figures(unet) -> dict:
    """The outlined and pastel rows of `eval` (24 clips each, 16 frames, DDIM 25, CFG 7.5, adapter 0) with this
    module in the shipped pipeline."""
    from minianimate.toy.evaluation import eval_table
    from minianimate.toy.models import load_pipeline

    pipe = load_pipeline()
    pipe.unet.load_state_dict(unet.motion_state_dict(), strict=False)
    rows = ("outlined (never seen in training)", "pastel (never seen in training)")
    table = eval_table(per_row=24, rows=rows, progress=False, pipe=pipe)
    keep = ("direction", "color", "shape", "style", "jerk", "visible", "displacement", "n")
    return {r["row"].split()[0]: {k: round(float(r[k]), 4) for k in keep} for r in table}


def group_figures(clips, targets, reference: float) -> dict:
    """Direction, jerk, visible, displacement, colour, steady and 'ok' (steady and the prompted way) rates."""
    ds = metrics.describe_all(clips)
    colors, _, directions = zip(*targets)
    f = metrics.score(ds, dict(direction=directions, color=colors))
    steady = [metrics.steady(d, reference) for d in ds]
    ok = [s and d["direction"] == want for s, d, want in zip(steady, ds, directions)]
    out = {k: round(float(f[k]), 4) for k in ("direction", "jerk", "visible", "displacement", "color")}
    out.update(steady=round(float(np.mean(steady)), 4), ok=round(float(np.mean(ok)), 4),
               max_jump=round(float(np.median([d["max_jump"] for d in ds])), 2), reference=round(reference, 2))
    if directions[0] != "still":
        out["meets"] = bool(out["ok"] >= 0.9 and out["jerk"] <= 1.5)
    return out


class swapped:
    """Context manager: the EMA weights of the motion modules in the UNet (if the trainer keeps an EMA)."""

    def __init__(self, trainer, unet):
        self.trainer, self.unet = trainer, unet

    def __enter__(self):
        if self.trainer.ema:
            self.saved = {k: v.clone() for k, v in self.unet.motion_state_dict().items()}
            self.unet.load_state_dict(self.trainer.ema["unet"].motion_state_dict(), strict=False)

    def __exit__(self, *exc):
        if self.trainer.ema:
            self.unet.load_state_dict(self.saved, strict=False)


@torch.no_grad()
def bin_losses(unet, text_encoder, latents, captions, ddim, share, n=32, seed=123) -> dict:
    """Epsilon MSE per timestep bin on the first n clips, same noise for every arm; modules on and zeroed."""
    g = torch.Generator().manual_seed(seed)
    x0, context = latents[:n], text_encoder.encode_prompt(list(captions[:n]))
    noise = frame_noise(x0.shape, g, share)
    saved = {k: v.clone() for k, v in unet.motion_state_dict().items()}
    zero = {k: torch.zeros_like(v) if ".proj_out." in k else v for k, v in saved.items()}
    out = {}
    for lo, hi in BINS:
        t = torch.randint(lo, hi, (n,), generator=g)
        xt = ddim.add_noise(x0, noise, t)
        row = {}
        for label, state in (("modules", saved), ("zeroed", zero)):
            unet.load_state_dict(state, strict=False)
            row[label] = round(sum(F.mse_loss(unet(xt[i:i + 8], t[i:i + 8], context[i:i + 8]), noise[i:i + 8]).item()
                                   for i in range(0, n, 8)) / (n // 8), 5)
        out[f"{lo}-{hi - 1}"] = row
    unet.load_state_dict(saved, strict=False)
    return out


def run_step(run: Path) -> int:
    """The step a run's checkpoint (OUT/runs/ARM) is at."""
    return torch.load(run / "trainer_state.pt", weights_only=False)["step"]


def init_run(name: str, out: Path) -> Path:
    """The run an arm starts from (its `init`): OUT/runs/NAME, which must have finished that arm's recipe."""
    run = out / "runs" / name
    if not (run / "weights.safetensors").exists():
        raise SystemExit(f"error: this arm starts from {name}'s module, and {run} has none: run --arms {name} first")
    if name in ARMS and run_step(run) != {**LEVERS, **ARMS[name]}["steps"]:
        raise SystemExit(f"error: {run} is at step {run_step(run)}, {name}'s recipe ends at "
                         f"{ {**LEVERS, **ARMS[name]}['steps'] }: start from the end of its recipe")
    return run


def run_arm(name: str, levers: dict, out: Path, steps: int | None = None) -> dict:
    levers = {**LEVERS, **levers, **({"steps": steps} if steps else {})}
    started = time.time()
    torch.manual_seed(SEED)
    vae, text_encoder = load_vae(CHECKPOINTS), load_text_encoder(CHECKPOINTS)
    unet = load_motion_unet(CHECKPOINTS, {**TOY_MOTION, "temporal": levers["temporal"]}).requires_grad_(False)
    if levers["init"] == "shipped":
        unet.load_state_dict(load_motion_unet(CHECKPOINTS).motion_state_dict(), strict=False)
    elif levers["init"]:
        weights = read_state_dict(init_run(levers["init"], out) / "weights.safetensors")
        unet.load_state_dict({k[5:]: v for k, v in weights.items() if is_motion_key(k)}, strict=False)
    adapter = None
    if levers["adapter"]:
        scale = 1.0 if levers["adapter"] == "mixed" else float(levers["adapter"])
        file = out / levers["adapter_file"] if levers["adapter_file"] else CHECKPOINTS / FILES["adapter"]
        adapter = LoRA.load(unet, file, scale=scale).requires_grad_(False)
    frozen = {id(p) for p in frozen16(unet, levers["freeze16"])}
    params = [p for p in unet.motion_parameters() if id(p) not in frozen]
    for p in params:
        p.requires_grad_(True)
    latents, captions = cached_clips(vae, out, levers)
    ddim = toy_ddim()
    cfg = TrainConfig(steps=levers["steps"], batch=levers["batch"], lr=levers["lr"], warmup=levers["warmup"],
                      decay=levers["decay"], ema=levers["ema"], checkpoint_every=EVAL_EVERY, seed=SEED)
    trainer = Trainer({"unet": unet}, cfg, out / "runs" / name, params=params)
    result_path = out / f"{name}.json"
    old = json.loads(result_path.read_text()) if result_path.exists() else {}
    result = {"arm": name, "levers": levers, "curve": old.get("curve", []), "train_minutes": old.get("train_minutes", 0.0)}
    if trainer.resume():
        result["curve"] = [row for row in result["curve"] if row["step"] <= trainer.step]
    groups = eval_groups(levers["rung"])
    references = {g: reference_displacement(t, levers["speed"]) for g, t in groups.items()}
    clock = {"train": time.time()}

    def evaluate(tr):
        if tr.step % levers["eval_every"]:  # checkpointed every EVAL_EVERY steps, evaluated every eval_every
            return
        result["train_minutes"] = round(result["train_minutes"] + (time.time() - clock["train"]) / 60, 2)
        t0 = time.time()
        unet.eval()
        row = {"step": tr.step, "loss": round(float(np.mean(tr.losses[-levers["eval_every"]:])), 5)}
        if adapter is not None:
            adapter.enabled = False
        with swapped(tr, unet):
            for g, targets in groups.items():
                clips = generate(unet, vae, text_encoder, targets, levers["noise_share"])
                row[g] = group_figures(clips, targets, references[g])
                np.save(out / "clips" / f"{name}_{g}.npy", clips[:8])
            if levers["switch"]:
                row["travel"] = travel_figures(unet, vae, text_encoder)
            if levers["personalized"]:
                row.update(personalized_figures(unet))
        row["eval_minutes"] = round((time.time() - t0) / 60, 2)
        result["curve"].append(row)
        result_path.write_text(json.dumps(result, indent=1))
        print(json.dumps(row), flush=True)
        if adapter is not None:
            adapter.enabled = True
        unet.train()
        clock["train"] = time.time()

    (out / "clips").mkdir(parents=True, exist_ok=True)
    unet.train()
    trainer.fit(lambda step, g: lab_loss(unet, text_encoder, latents, captions, ddim, g, levers, adapter),
                on_checkpoint=evaluate, desc=name, progress=False)
    unet.eval()
    with swapped(trainer, unet):
        result["bins"] = bin_losses(unet, text_encoder, latents, captions, ddim, levers["noise_share"])
    result["minutes"] = round((time.time() - started) / 60, 2)
    result_path.write_text(json.dumps(result, indent=1))
    return result


def guidance_probe(name: str, out: Path, scales=(0.0, 1.0, 3.0, 7.5, 12.0)) -> dict:
    """An arm's last checkpoint sampled at several guidance scales (same clips, same seeds): is it the module, or
    classifier-free guidance's extrapolation eps_u + s (eps_c - eps_u), that breaks the clips apart?"""
    levers = {**LEVERS, **ARMS[name]}
    vae, text_encoder = load_vae(CHECKPOINTS), load_text_encoder(CHECKPOINTS)
    unet = load_motion_unet(CHECKPOINTS, {**TOY_MOTION, "temporal": levers["temporal"]}).eval()
    run = out / "runs" / name
    weights, meta = read_state_dict(run / f"{'ema' if levers['ema'] else 'weights'}.safetensors", metadata=True)
    unet.load_state_dict({k[5:]: v for k, v in weights.items() if is_motion_key(k)}, strict=False)
    groups = {g: t for g, t in eval_groups(levers["rung"]).items() if g != "still"}
    pipe = AnimationPipeline(vae, text_encoder, unet, toy_ddim())
    result = {"arm": name, "step": int(meta["step"]), "scales": {}}
    for scale in scales:
        for g, targets in groups.items():
            prompts = [sw.caption(*x) for x in targets]
            clips = np.concatenate([pipe.generate(prompts[i:i + 8], frames=FRAMES, steps=25, guidance=scale, seed=1 + i,
                                                  noise_share=levers["noise_share"], progress=False)
                                    for i in range(0, len(prompts), 8)])
            result["scales"].setdefault(str(scale), {})[g] = group_figures(
                clips, targets, reference_displacement(targets, levers["speed"]))
        print(scale, json.dumps(result["scales"][str(scale)]), flush=True)
    (out / f"guidance_{name}.json").write_text(json.dumps(result, indent=1))
    return result


KEPT = Path(__file__).parent / "results" / "motion_lab"  # the arms' jsons and table; `runs/`: long runs' state


def keep_run(name: str, out: Path, kept: Path = KEPT / "runs") -> None:
    """Copy a run's checkpoint for the next session (runs/ is not in git): the motion weights only (the frozen image
    weights are the shipped base's), the optimizer state and the config."""
    src, dest = out / "runs" / name, kept / name
    dest.mkdir(parents=True, exist_ok=True)
    for file in ("weights", "ema"):
        if (src / f"{file}.safetensors").exists():
            weights, meta = read_state_dict(src / f"{file}.safetensors", metadata=True)
            save_safetensors({k: v for k, v in weights.items() if is_motion_key(k)}, dest / f"{file}.safetensors", meta)
    for file in ("trainer_state.pt", "config.json"):
        (dest / file).write_bytes((src / file).read_bytes())


def restore_run(name: str, out: Path, kept: Path = KEPT / "runs") -> None:
    """The inverse of `keep_run`: the full checkpoint in out/runs/name (shipped base + kept motion weights), so the
    arm resumes where it stopped."""
    levers, src, dest = {**LEVERS, **ARMS[name]}, kept / name, out / "runs" / name
    dest.mkdir(parents=True, exist_ok=True)
    unet = load_motion_unet(CHECKPOINTS, {**TOY_MOTION, "temporal": levers["temporal"]})
    base = {f"unet.{k}": v for k, v in unet.state_dict().items()}
    for file in ("weights", "ema"):
        if (src / f"{file}.safetensors").exists():
            weights, meta = read_state_dict(src / f"{file}.safetensors", metadata=True)
            save_safetensors({**base, **weights}, dest / f"{file}.safetensors", meta)
    for file in ("trainer_state.pt", "config.json"):
        (dest / file).write_bytes((src / file).read_bytes())


def recipe_chain(name: str) -> list[str]:
    """The arms a shipped module is trained by, in order: NAME's `init` chain back to a fresh start."""
    chain = [name]
    while ARMS[chain[0]].get("init") and ARMS[chain[0]]["init"] != "shipped":  # "shipped": see `ship`
        if ARMS[chain[0]]["init"] not in ARMS:
            raise SystemExit(f"error: {chain[0]} starts from {ARMS[chain[0]]['init']}, not an arm: not a shippable recipe")
        chain.insert(0, ARMS[chain[0]]["init"])
    return chain


def ship(name: str, out: Path, root: Path = CHECKPOINTS, allow_unevaluated: bool = False) -> None:
    """Write ARM's last checkpoint as the shipped motion module (official layout, as `train motion` writes it) and
    motion_module.json: the module's shape, its recipe (every arm of its `init` chain, in order), the learning curve
    (steps counted from the fresh start) and the minutes."""
    from minianimate.motion_io import save_motion_module

    chain, run = recipe_chain(name), out / "runs" / name
    phases, curve, minutes, offset, source = [], [], 0.0, 0, ""
    if ARMS[chain[0]].get("init") == "shipped":  # a fine-tune of the shipped module: its recipe and curve go first
        shipped = json.loads((root / FILES["motion_config"]).read_text())
        if any(phase["arm"] in chain for phase in shipped["recipe"]):
            raise SystemExit(f"error: the shipped module already has {chain[0]} in its recipe: rebuild it first")
        phases, curve, minutes, offset = shipped["recipe"], shipped["checks"], shipped["train_minutes"], shipped["steps"]
        source = shipped["source"].removesuffix(" (make checkpoints)") + "; then "
    for arm in chain:
        levers = {**LEVERS, **ARMS[arm]}
        if levers["temporal"] != "attention" or levers["noise_share"] or levers["rung"] != 3:
            raise SystemExit(f"error: {arm} is not a shippable recipe (rung 3, temporal attention, i.i.d. noise)")
        result = json.loads((out / f"{arm}.json").read_text())
        end = run_step(out / "runs" / arm) if arm == name else levers["steps"]
        rows = [r for r in result["curve"] if r["step"] <= end]
        if not rows or (rows[-1]["step"] != end and not allow_unevaluated):
            raise SystemExit(f"error: {out / 'runs' / arm} is at step {end}, its last evaluation at "
                             f"{rows[-1]['step'] if rows else None}: ship an evaluated checkpoint (wait for the next one)")
        if arm != name:
            init_run(arm, out)  # the next phase started from the end of this one's recipe
            if len(rows) != len(result["curve"]):
                raise SystemExit(f"error: {out / arm}.json goes on past {arm}'s recipe ({end} steps): its minutes are not"
                                 " the recipe's")
        curve += [{**r, "step": r["step"] + offset, "phase": arm} for r in rows]
        minutes += result["train_minutes"]
        phases.append({"arm": arm, **levers, "steps": end, "clips": RUNGS[levers["rung"]], "watermark": False, "adapter": None})
        offset += end
    unet = load_motion_unet(root, TOY_MOTION)
    weights = {k[5:]: v for k, v in read_state_dict(run / "weights.safetensors").items() if is_motion_key(k)}
    missing, unexpected = unet.load_state_dict(weights, strict=False)
    if unexpected or any(is_motion_key(k) for k in missing):
        raise SystemExit(f"error: {run} does not match the motion modules ({len(unexpected)} unexpected keys)")
    save_motion_module(unet, root / FILES["motion"], "official")
    commands = "; ".join(f"python benchmarks/motion_lab.py --arms {arm} --out runs/lab" for arm in chain)
    (root / FILES["motion_config"]).write_text(json.dumps(
        {"motion": dict(TOY_MOTION), "frames": FRAMES, "noise_share": 0.0, "held_out": HELD_OUT,
         "source": f"{source}{commands}; then --ship {name} (make checkpoints)",
         "recipe": phases, "steps": offset, "train_minutes": round(minutes, 2),
         "evaluation": "16 frames, DDIM 25, CFG 7.5, adapter off; direction 'still' below "
                       f"{LADDER_STILL_SPEED} px/frame (the ladder's threshold)",
         "checks": curve}, indent=1))
    log_path = root / "training_log.json"
    log = {k: v for k, v in json.loads(log_path.read_text()).items() if not k.startswith("motion ")}
    arms = [phase["arm"] for phase in phases]
    log["motion"] = {"stage": f"motion (benchmarks/motion_lab.py, arms {' then '.join(arms)})",
                     "minutes": round(minutes, 2), "final_loss": curve[-1]["loss"], "steps": offset,
                     "clips": RUNGS[3]["clips"], "motion_parameters": sum(p.numel() for p in unet.motion_parameters())}
    log_path.write_text(json.dumps(log, indent=2))
    print(f"wrote {root / FILES['motion']} and {FILES['motion_config']} from {' then '.join(arms)} at step {offset}")


def table(out: Path) -> str:
    rows = ["| arm | rung | levers | step | group | ok (steady, prompted way) | direction | jerk | visible | "
            "displacement / real px | colour |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(out.glob("*.json")):
        r = json.loads(path.read_text())
        if "curve" not in r:
            continue
        lev = ", ".join(f"{k}={v}" for k, v in r["levers"].items() if k not in ("rung", "steps") and LEVERS[k] != v
                        and not (k == "speed" and v is not None and tuple(v) == tuple(LEVERS[k] or ())))
        for row in r["curve"]:
            for g, f in row.items():
                if isinstance(f, dict) and "ok" in f:
                    rows.append(f"| {r['arm']} | {r['levers']['rung']} | {lev or 'plain'} | {row['step']} | {g} | "
                                f"{f['ok']:.2f} | {f['direction']:.2f} | {f['jerk']:.1f} | {f['visible']:.2f} | "
                                f"{f['displacement']:.1f} / {f['reference']:.1f} | {f['color']:.2f} |")
    text = "\n".join(rows)
    (out / "table.md").write_text(text + "\n")
    return text


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arms", default="r1-slow", help=f"comma-separated, from {sorted(ARMS)}")
    p.add_argument("--steps", type=int, default=None, help="override every arm's steps (default: its own)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/lab")
    p.add_argument("--table", action="store_true")
    p.add_argument("--guidance-probe", metavar="ARM", help="sample ARM's last checkpoint at guidance 0, 1, 3, 7.5, 12")
    p.add_argument("--keep-run", metavar="ARM", help=f"copy ARM's checkpoint (motion weights) to {KEPT}/runs/")
    p.add_argument("--restore-run", metavar="ARM", help="put ARM's kept checkpoint back into OUT/runs/ (then resume)")
    p.add_argument("--ship", metavar="ARM", help="write ARM's last checkpoint as the shipped motion module (+ json)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.guidance_probe:
        guidance_probe(args.guidance_probe, out)
        return
    if args.ship:
        ship(args.ship, out)
        return
    if args.keep_run or args.restore_run:
        (keep_run if args.keep_run else restore_run)(args.keep_run or args.restore_run, out)
        return
    if not args.table:
        names = args.arms.split(",")
        unknown = [n for n in names if n not in ARMS]
        if unknown:
            raise SystemExit(f"error: unknown arm {unknown[0]!r}; use one of {sorted(ARMS)}")
        for name in names:
            run_arm(name, ARMS[name], out, args.steps)
    print(table(out))


if __name__ == "__main__":
    main()
