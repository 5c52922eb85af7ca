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

Every arm trains through the library's stage 2 (`minianimate.toy.stages.train_motion`, what `python -m minianimate
train motion` runs): the lab chooses the clips (its rungs) and the evaluation; the loss, the optimizer, the adapter
and the checkpoints are the stage's. An arm's levers are the stage's config fields (`stage_config`) plus the data's.
`--checkpoints DIR` trains on another checkpoint folder (a retrained base); an arm that finishes its recipe exports
its module to `OUT/modules/ARM.safetensors`, where an arm with `init: ARM` starts.

Run two arms side by side, one thread each (`--threads 1`, the default): about twice the work of one
two-thread arm. Clip latents are cached in `OUT/cache/`. Results: `OUT/ARM.json` (levers, curve) and
`OUT/table.md`; the arms measured are kept in `benchmarks/results/motion_lab/`.
"""
import argparse
import json
import time
from types import SimpleNamespace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from minianimate.autoencoder import encode_clips
from minianimate.checkpoint import read_state_dict, save_safetensors
from minianimate.inflation import is_motion_key
from minianimate.lora import LoRA
from minianimate.motion_io import save_motion_module
from minianimate.pipeline import AnimationPipeline
from minianimate.sampling import frame_noise
from minianimate.toy import bases, metrics
from minianimate.toy import shapeworld as sw
from minianimate.toy.datasets import HELD_OUT, clip_set, combos, switch_set
from minianimate.toy.models import CHECKPOINTS, FILES, TOY_MOTION, load_motion_unet, load_text_encoder, load_vae, toy_ddim
from minianimate.toy.provenance import provenance
from minianimate.toy.segmentation import background_color
from minianimate.toy.stages import MotionStage, train_motion

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
              noise_share=0.0, weighting="eps", text_dropout=0.1, init=None,
              temporal="attention", eval_every=EVAL_EVERY, watermark=False, adapter=0.0,
              adapter_file=None, switch=0.0, background=None, personalized=False, palette=0.0, bases=None)
# watermark: clips with the video-domain defects; adapter: the domain adapter attached (frozen) during training
# at this scale, or "mixed" (a scale drawn uniformly from [0, 1] at every step); evaluation is always adapter off.
# adapter_file: another adapter (a path under OUT), e.g. an attention-only one: `python -m minianimate train adapter
# --config C --out OUT/attention_adapter` on a copy of the checkpoint folder, C = configs/adapter.yaml with
# `targets: spatial_attention`.
# switch: that many clips again (a fraction of the rung's clips) whose colour switches at a random frame, captioned per
# frame (`datasets.switch_set`), the prompt-travel lever; init "shipped": start from the checkpoint folder's motion
# module, an arm's name: from that arm's exported module. background: the clips' backgrounds (None: near-black;
# "random": the wider world's, `shapeworld.random_background`); personalized: each evaluation adds the outlined and
# pastel rows of `eval` (24 clips each) with the arm's module. palette: a fraction of the clips with their shape in
# another palette (`shapeworld.palette_rgb`: the colour's hue, deep, dark or bright shades; never outlined or pastel).
# bases: looks (`shapeworld.LOOKS`) whose LoRAs (the checkpoint folder's looks/, `train look`) the module trains across
# besides the base, each on 500 clips of its look (`minianimate.toy.bases`; the stage's `bases`).
# Retired levers, measured with the lab's own training loop before it trained through the library's stage (their
# arms' jsons stay in results/motion_lab/): high_t (70% of timesteps from t >= 500: r1-slow-high-t, r2-slow-high-t),
# freeze16 (the 16x16 modules frozen: r1-slow-freeze16, r2-slow-freeze16, r2-slow-freeze16-down) and backgrounds
# (clips repainted on uniform RGB backgrounds: r3-backgrounds), none of which helped.
WIDE = {"rung": 3, "speed": SLOW, "weighting": "x0", "background": "random", "steps": 3000, "personalized": True}
ARMS = {  # name -> the levers that differ from LEVERS
    "r1-plain": {},
    "r1-slow": {"speed": SLOW},
    "r1-slow-shared0.3": {"speed": SLOW, "noise_share": 0.3},
    "r1-slow-shared0.5": {"speed": SLOW, "noise_share": 0.5},
    "r1-slow-shared0.8": {"speed": SLOW, "noise_share": 0.8},
    "r1-slow-cosine": {"speed": SLOW, "decay": "cosine"},
    "r1-slow-lr3e-4": {"speed": SLOW, "lr": 3e-4},
    "r1-slow-ema": {"speed": SLOW, "ema": 0.999},
    "r1-slow-batch8": {"speed": SLOW, "batch": 8},
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
    "r2-slow-no-dropout": {"rung": 2, "speed": SLOW, "text_dropout": 0.0},
    "r2-slow-batch8": {"rung": 2, "speed": SLOW, "batch": 8},
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
    # issue 42's transfer levers, on the wider world's checkpoints (`--checkpoints data_samples/wide`), from scratch,
    # 3,000 steps, the outlined and pastel rows in every evaluation: its clips on every background kind; the paper's
    # chain (the clips' defects, the domain adapter attached at 1, or at a scale mixed per step); other palettes
    "r3-wide": WIDE,
    "r3-wide-chain": {**WIDE, "watermark": True, "adapter": 1.0},
    "r3-wide-chain-mixed": {**WIDE, "watermark": True, "adapter": "mixed"},
    "r3-wide-palettes": {**WIDE, "palette": 0.5},
    "r3-wide-bases": {**WIDE, "bases": "ink,neon"},
    # the frames' noise partly shared in training and sampling (PYoCo's mixed prior, as r1-slow-shared*): on the wider
    # world's backgrounds the 2,000-step modules change the background's colour from frame to frame
    "r3-wide-shared0.5": {**WIDE, "noise_share": 0.5},
    # the long run (issue 42 item 4): the paper's chain (item 2 ships a module trained on stage 1), resumed from
    # r3-wide-chain's 3,000-step run folder and curve (copied), evaluated every 1,000 steps
    "r3-wide-chain-long": {**WIDE, "watermark": True, "adapter": 1.0, "steps": 10000, "eval_every": 1000},
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


def cached_clips(vae, out: Path, levers: dict, checkpoints: Path = CHECKPOINTS):
    rung = RUNGS[levers["rung"]]
    speed = levers["speed"]
    cache = "cache" if checkpoints == CHECKPOINTS else f"cache-{checkpoints.name}"  # latents of that folder's VAE
    path = out / cache / f"rung{levers['rung']}_n{rung['clips']}_speed{speed[0]}-{speed[1]}{'_wm' * levers['watermark']}.pt"
    if levers["switch"]:
        path = path.with_name(f"{path.stem}_switch{levers['switch']}.pt")
    if levers["background"]:
        path = path.with_name(f"{path.stem}_bg-{levers['background']}.pt")
    if levers["palette"]:
        path = path.with_name(f"{path.stem}_palette{levers['palette']}.pt")
    if path.exists():
        data = torch.load(path, weights_only=False)
        return data["latents"], data["captions"]
    clips, captions = clip_set(rung["clips"], SEED + 2000, FRAMES, still=rung["still"], watermark=levers["watermark"],
                               only=rung["only"], speed_range=levers["speed"], background=levers["background"],
                               palette=levers["palette"])
    if levers["switch"]:
        if tuple(levers["speed"]) != sw.SPEED_RANGE:
            raise SystemExit("error: colour-switch clips move at the world's speed: use switch with speed SLOW")
        more, switched = switch_set(round(levers["switch"] * rung["clips"]), SEED + 3000, FRAMES,
                                    background=levers["background"])
        clips, captions = np.concatenate([clips, more]), captions + switched
    latents = encode_clips(vae, clips)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"latents": latents, "captions": captions}, path)
    return latents, captions


def cached_looks(vae, out: Path, cfg: MotionStage, checkpoints: Path) -> dict:
    """look -> (latents, captions) of the stage's `bases` (`bases.look_clips`), cached beside the rung's clips."""
    looks = {}
    for look in bases.parse(cfg.bases):
        path = out / f"cache-{checkpoints.name}" / f"look-{look}_n{cfg.bases_clips}{'_wm' * cfg.watermark}.pt"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(dict(zip(("latents", "captions"), bases.look_clips(vae, cfg, look, cfg.bases_clips,
                                                                          encode_clips))), path)
        data = torch.load(path, weights_only=False)
        looks[look] = data["latents"], data["captions"]
    return looks


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


def personalized_figures(unet, checkpoints: Path = CHECKPOINTS, **generate_kwargs) -> dict:
    """The outlined and pastel rows of `eval` (24 clips each, 16 frames, DDIM 25, CFG 7.5, adapter 0) with this
    module in the checkpoint folder's pipeline; generate_kwargs to every clip's `generate` (e.g. free_init)."""
    from minianimate.toy.evaluation import eval_table
    from minianimate.toy.models import load_pipeline

    if (checkpoints / FILES["motion"]).exists():
        pipe = load_pipeline(root=checkpoints)
    else:  # a folder whose motion module is not trained yet (the wider world's): the arm's modules on its base
        pipe = AnimationPipeline(load_vae(checkpoints), load_text_encoder(checkpoints),
                                 load_motion_unet(checkpoints, motion=unet.motion_config).eval(), toy_ddim())
    pipe.unet.load_state_dict(unet.motion_state_dict(), strict=False)
    rows = ("outlined (never seen in training)", "pastel (never seen in training)")
    table = eval_table(checkpoints, per_row=24, rows=rows, progress=False, pipe=pipe, **generate_kwargs)
    keep = ("direction", "color", "shape", "style", "jerk", "visible", "displacement", "n")
    return {r["row"].split()[0]: {**{k: round(float(r[k]), 4) for k in keep}, "bg_step": background_step(r["clips"])}
            for r in table}


def background_step(clips) -> float:
    """Median over clips of the mean RGB distance between consecutive frames' background colours (the border's
    median, `segmentation.background_color`): 0 for ShapeWorld's clips, whose background never changes."""
    bg = background_color(np.asarray(clips, dtype=np.float32))  # (N, F, 3)
    return round(float(np.median(np.linalg.norm(np.diff(bg, axis=1), axis=-1).mean(1))), 2)


def group_figures(clips, targets, reference: float) -> dict:
    """Direction, jerk, visible, displacement, colour, steady and 'ok' (steady and the prompted way) rates."""
    ds = metrics.describe_all(clips)
    colors, _, directions = zip(*targets)
    f = metrics.score(ds, dict(direction=directions, color=colors))
    steady = [metrics.steady(d, reference) for d in ds]
    ok = [s and d["direction"] == want for s, d, want in zip(steady, ds, directions)]
    out = {k: round(float(f[k]), 4) for k in ("direction", "jerk", "visible", "displacement", "color")}
    out.update(steady=round(float(np.mean(steady)), 4), ok=round(float(np.mean(ok)), 4),
               max_jump=round(float(np.median([d["max_jump"] for d in ds])), 2), reference=round(reference, 2),
               bg_step=background_step(clips))
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


def init_module(name: str, out: Path, checkpoints: Path) -> Path:
    """The motion-module file an arm starts from (its `init`): "shipped" (the checkpoint folder's), or the module an arm
    NAME exported when it finished its recipe (OUT/modules/NAME.safetensors)."""
    if name == "shipped":
        return checkpoints / FILES["motion"]
    module = out / "modules" / f"{name}.safetensors"
    if not module.exists():
        raise SystemExit(f"error: this arm starts from {name}'s module, and {module} does not exist: run --arms {name} "
                         "to the end of its recipe first")
    return module.resolve()


def stage_config(levers: dict, init: Path | None) -> MotionStage:
    """The library stage's config for an arm's levers (its clips are the lab's: `cached_clips`)."""
    mixed = levers["adapter"] == "mixed"
    return MotionStage(bases=levers["bases"], watermark=levers["watermark"], background=levers["background"],
                       palette=levers["palette"],
                       steps=levers["steps"], batch=levers["batch"], lr=levers["lr"], warmup=levers["warmup"],
                       decay=levers["decay"], ema=levers["ema"], checkpoint_every=EVAL_EVERY, seed=SEED,
                       text_dropout=levers["text_dropout"], noise_share=levers["noise_share"],
                       weighting=levers["weighting"], temporal=levers["temporal"], init=str(init) if init else None,
                       adapter_scale=1.0 if mixed else float(levers["adapter"]), adapter_mix=mixed,
                       adapter_file=levers["adapter_file"], check=False, frames=FRAMES)


def run_arm(name: str, levers: dict, out: Path, steps: int | None = None, checkpoints: Path = CHECKPOINTS) -> dict:
    levers = {**LEVERS, **levers, **({"steps": steps} if steps else {})}
    if levers["adapter_file"]:
        levers["adapter_file"] = str((out / levers["adapter_file"]).resolve())
    started = time.time()
    torch.manual_seed(SEED)
    vae, text_encoder = load_vae(checkpoints), load_text_encoder(checkpoints)
    latents, captions = cached_clips(vae, out, levers, checkpoints)
    cfg = stage_config(levers, init_module(levers["init"], out, checkpoints) if levers["init"] else None)
    data = {None: (latents, captions), **cached_looks(vae, out, cfg, checkpoints)}
    result_path = out / f"{name}.json"
    old = json.loads(result_path.read_text()) if result_path.exists() else {}
    frozen = [k for k in ("vae", "text_encoder", "base", "outlined", "pastel", "adapter")
              if (checkpoints / FILES[k]).exists()]
    result = {"arm": name, "levers": levers, "checkpoints": str(checkpoints), "curve": old.get("curve", []),
              "train_minutes": old.get("train_minutes", 0.0),
              "provenance": provenance(*frozen, root=checkpoints, note="the frozen models the arm trained on and "
                                       "evaluated with; its own module is in OUT/runs/ARM")}
    groups = eval_groups(levers["rung"])
    references = {g: reference_displacement(t, levers["speed"]) for g, t in groups.items()}
    clock = {"train": time.time()}

    def evaluate(tr, unet, adapter):  # the stage's on_check: adapter off, EMA weights in
        if tr.step % levers["eval_every"]:  # checkpointed every EVAL_EVERY steps, evaluated every eval_every
            return {}
        result["curve"] = [row for row in result["curve"] if row["step"] < tr.step]  # a resumed run redoes its rows
        result["train_minutes"] = round(result["train_minutes"] + (time.time() - clock["train"]) / 60, 2)
        t0 = time.time()
        row = {"step": tr.step, "loss": round(float(np.mean(tr.losses[-levers["eval_every"]:])), 5)}
        with swapped(tr, unet):
            for g, targets in groups.items():
                clips = generate(unet, vae, text_encoder, targets, levers["noise_share"])
                row[g] = group_figures(clips, targets, references[g])
                np.save(out / "clips" / f"{name}_{g}.npy", clips[:8])
            if levers["switch"]:
                row["travel"] = travel_figures(unet, vae, text_encoder)
            if levers["personalized"]:
                row.update(personalized_figures(unet, checkpoints, noise_share=levers["noise_share"]))
        row["eval_minutes"] = round((time.time() - t0) / 60, 2)
        result["curve"].append(row)
        result_path.write_text(json.dumps(result, indent=1))
        print(json.dumps(row), flush=True)
        clock["train"] = time.time()
        return {g: f for g, f in row.items() if g not in ("step", "loss")}

    (out / "clips").mkdir(parents=True, exist_ok=True)
    state = out / "runs" / name / "trainer_state.pt"
    if state.exists():  # a run stopped after saving a checkpoint, before evaluating it: evaluate that checkpoint first
        saved = torch.load(state, weights_only=False, map_location="cpu")
        if saved["step"] % levers["eval_every"] == 0 and saved["step"] not in [r["step"] for r in result["curve"]]:
            pipe, _ = arm_pipeline(name, out, checkpoints)  # its EMA weights where the arm keeps one
            evaluate(SimpleNamespace(step=saved["step"], losses=saved["losses"], ema=None), pipe.unet, None)
    unet, trainer, _, _ = train_motion(cfg, checkpoints, out / "runs" / name, resume=True, progress=False,
                                       data=data, on_check=evaluate)
    unet.eval()
    with swapped(trainer, unet):
        result["bins"] = bin_losses(unet, text_encoder, latents, captions, toy_ddim(), levers["noise_share"])
        if trainer.step == levers["steps"]:  # the recipe's end: the module an arm with `init: NAME` starts from
            save_motion_module(unet, out / "modules" / f"{name}.safetensors", "official")
    result["minutes"] = round((time.time() - started) / 60, 2)
    result_path.write_text(json.dumps(result, indent=1))
    return result


def guidance_probe(name: str, out: Path, scales=(0.0, 1.0, 3.0, 7.5, 12.0), checkpoints: Path = CHECKPOINTS) -> dict:
    """An arm's last checkpoint sampled at several guidance scales (same clips, same seeds): is it the module, or
    classifier-free guidance's extrapolation eps_u + s (eps_c - eps_u), that breaks the clips apart?"""
    levers = {**LEVERS, **ARMS[name]}
    pipe, step = arm_pipeline(name, out, checkpoints)
    groups = {g: t for g, t in eval_groups(levers["rung"]).items() if g != "still"}
    result = {"arm": name, "step": step, "scales": {}}
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


def arm_pipeline(name: str, out: Path, checkpoints: Path):
    """An arm's last checkpoint in the checkpoint folder's pipeline (domain adapter attached at scale 0, if the folder
    has one), sampling with the arm's noise prior; returns (pipe, step)."""
    levers = {**LEVERS, **ARMS[name]}
    unet = load_motion_unet(checkpoints, {**TOY_MOTION, "temporal": levers["temporal"]}).eval().requires_grad_(False)
    weights, meta = read_state_dict(out / "runs" / name / f"{'ema' if levers['ema'] else 'weights'}.safetensors",
                                    metadata=True)
    unet.load_state_dict({k[5:]: v for k, v in weights.items() if is_motion_key(k)}, strict=False)
    pipe = AnimationPipeline(load_vae(checkpoints), load_text_encoder(checkpoints), unet, toy_ddim())
    pipe.noise_share = levers["noise_share"]
    if (checkpoints / FILES["adapter"]).exists():
        pipe.adapter = LoRA.load(unet, checkpoints / FILES["adapter"], scale=0.0).requires_grad_(False)
    return pipe, int(meta["step"])


PROBES = {  # name -> (eval rows, {arm of the probe: generate options}) run on an arm's last checkpoint
    # FreeInit at inference on the personalized models (a transfer lever that trains nothing), butterworth defaults
    "free-init": (("outlined (never seen in training)", "pastel (never seen in training)"),
                  {"free_init 0": {}, "free_init 3": {"free_init": 3}}),
    # the domain adapter at 0 and at 1 (issue 42 item 2: watermark leakage at 1 >= 5x that at 0; motion at 0)
    "adapter": (("base, trained prompts", "base, adapter scale 1"), {"": {}}),
}


def probe(kind: str, name: str, out: Path, checkpoints: Path = CHECKPOINTS) -> dict:
    """An arm's last checkpoint on a PROBES kind's `eval` rows (24 clips each, the rows' own seeds), once per option
    set. Writes OUT/probe_KIND_ARM.json."""
    from minianimate.toy.evaluation import eval_table

    rows, options = PROBES[kind]
    pipe, step = arm_pipeline(name, out, checkpoints)
    keep = ("direction", "color", "shape", "style", "jerk", "visible", "displacement", "leakage", "n")
    result = {"arm": name, "step": step, "probe": kind, "checkpoints": str(checkpoints), "rows": {},
              "provenance": provenance("vae", "text_encoder", "base", "outlined", "pastel", "adapter",
                                       root=checkpoints)}
    for label, kwargs in options.items():
        started = time.time()
        for r in eval_table(checkpoints, per_row=24, rows=rows, progress=False, pipe=pipe, **kwargs):
            result["rows"][f"{r['row']} {label}".strip()] = {
                **{k: round(float(r[k]), 4) for k in keep if k in r}, "bg_step": background_step(r["clips"])}
        result["rows"][f"minutes {label}".strip()] = round((time.time() - started) / 60, 2)
        print(label, json.dumps(result["rows"]), flush=True)
        (out / f"probe_{kind}_{name}.json").write_text(json.dumps(result, indent=1))
    if kind == "adapter":
        result["real"] = real_leakage(pipe)
        print("real", json.dumps(result["real"]), flush=True)
        (out / f"probe_{kind}_{name}.json").write_text(json.dumps(result, indent=1))
    return result


def real_leakage(pipe, n: int = 24, seed: int = 0) -> dict:
    """Watermark leakage of ShapeWorld's own clips for eval's trained prompts (the arms' world: random backgrounds,
    the slower speed), clean and with the video defects, raw and round-tripped through the pipeline's VAE: the
    figures the adapter's leakage at 0 and at 1 are read against."""
    from minianimate.toy.evaluation import balanced_prompts

    rng, out = np.random.default_rng(seed), {}
    targets = balanced_prompts(n, False, seed)
    for watermark in (False, True):
        clips = np.stack([sw.render_clip(rng, FRAMES, c, s, d, watermark=watermark, speed_range=SLOW,
                                         background="random")[0] for c, s, d in targets])
        with torch.no_grad():
            trip = pipe.decode(encode_clips(pipe.vae, clips))
        key = "video defects" if watermark else "clean"
        out[key] = {"raw": round(metrics.watermark_leakage(clips), 4),
                    "vae round trip": round(metrics.watermark_leakage(trip), 4)}
    return out


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
    for file in ("trainer_state.pt", "config.json", "checks.json"):
        if (src / file).exists():
            (dest / file).write_bytes((src / file).read_bytes())


def restore_run(name: str, out: Path, kept: Path = KEPT / "runs", checkpoints: Path = CHECKPOINTS) -> None:
    """The inverse of `keep_run`: the full checkpoint in out/runs/name (the folder's base + kept motion weights), so
    the arm resumes where it stopped."""
    levers, src, dest = {**LEVERS, **ARMS[name]}, kept / name, out / "runs" / name
    dest.mkdir(parents=True, exist_ok=True)
    unet = load_motion_unet(checkpoints, {**TOY_MOTION, "temporal": levers["temporal"]})
    base = {f"unet.{k}": v for k, v in unet.state_dict().items()}
    for file in ("weights", "ema"):
        if (src / f"{file}.safetensors").exists():
            weights, meta = read_state_dict(src / f"{file}.safetensors", metadata=True)
            save_safetensors({**base, **weights}, dest / f"{file}.safetensors", meta)
    for file in ("trainer_state.pt", "config.json", "checks.json"):
        if (src / file).exists():
            (dest / file).write_bytes((src / file).read_bytes())


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
    p.add_argument("--probe", nargs=2, metavar=("KIND", "ARM"), help=f"ARM's last checkpoint on a probe's eval rows "
                   f"(KIND: {', '.join(PROBES)})")
    p.add_argument("--keep-run", metavar="ARM", help=f"copy ARM's checkpoint (motion weights) to {KEPT}/runs/")
    p.add_argument("--restore-run", metavar="ARM", help="put ARM's kept checkpoint back into OUT/runs/ (then resume)")
    p.add_argument("--checkpoints", default=str(CHECKPOINTS), help="the checkpoint folder the arms train on")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out, checkpoints = Path(args.out), Path(args.checkpoints)
    out.mkdir(parents=True, exist_ok=True)
    if args.guidance_probe:
        guidance_probe(args.guidance_probe, out, checkpoints=checkpoints)
        return
    if args.probe:
        if args.probe[0] not in PROBES or args.probe[1] not in ARMS:
            raise SystemExit(f"error: --probe KIND ARM: KIND one of {', '.join(PROBES)}, ARM one of {sorted(ARMS)}")
        probe(*args.probe, out, checkpoints)
        return
    if args.keep_run:
        keep_run(args.keep_run, out)
        return
    if args.restore_run:
        restore_run(args.restore_run, out, checkpoints=checkpoints)
        return
    if not args.table:
        names = args.arms.split(",")
        unknown = [n for n in names if n not in ARMS]
        if unknown:
            raise SystemExit(f"error: unknown arm {unknown[0]!r}; use one of {sorted(ARMS)}")
        for name in names:
            run_arm(name, ARMS[name], out, args.steps, checkpoints)
    print(table(out))


if __name__ == "__main__":
    main()
