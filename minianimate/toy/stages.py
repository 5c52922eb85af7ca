"""The toy world's training stages: `vae`, `base` (in `image_stages.py`), `outlined` (DreamBooth), `pastel` (LoRA;
those two in `personalization.py`), then AnimateDiff's `adapter`, `motion` and `motion-lora` (the core's `minianimate.stages` on
ShapeWorld data).

    python -m minianimate train STAGE --config configs/STAGE.yaml [--resume]

Each stage has a config dataclass (the shared `TrainConfig` fields plus its own; a yaml key it does not know
is an error), trains with the shared `Trainer` in `runs/<stage>-<config>/` (checkpoints, `--resume`) and exports its
result into the checkpoint folder (`data_samples/checkpoints/` by default) in the formats the rest of
minianimate loads; minutes and final loss go to `training_log.json` there.
"""
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from einops import rearrange

from minianimate import stages
from minianimate.autoencoder import encode_clips
from minianimate.checkpoint import atomic_write
from minianimate.lora import LoRA
from minianimate.motion_io import load_motion_module, save_motion_module
from minianimate.pipeline import AnimationPipeline
from minianimate.trainer import TrainConfig, check_resume, init_distributed, load_config
from minianimate.unet import UNet
from minianimate.toy import bases, datasets
from minianimate.toy.control import ControlNetStage, controlnet_stage
from minianimate.toy.evaluation import held_out_check
from minianimate.toy.models import (CHECKPOINTS, FILES, TOY_MOTION, check_config, check_stage_inputs, default_run,
                                    load_motion_unet, load_text_encoder, load_vae, read_json, toy_ddim)
from minianimate.toy.provenance import provenance
from minianimate.toy.image_stages import BaseStage, VAEStage, base_stage, vae_stage  # noqa: F401  (re-exported)
from minianimate.toy.personalization import (LORA_TARGETS, LookStage, OutlinedStage, PastelStage, look_stage,
                                             outlined_stage, pastel_stage)

ADAPTER_TARGETS = LORA_TARGETS  # the domain adapter's choices are the image LoRA's
BETA_SCHEDULES = ("linear", "scaled_linear")  # a motion stage's choices (`minianimate.ddim.make_betas`)


@dataclass
class VideoData:
    data: str | None = None  # a WebVid-layout folder instead of rendered clips
    stride: int = 1  # frame stride when reading `data`
    frames: int = 16
    text_dropout: float = 0.1
    watermark: bool = True  # rendered clips carry the video-domain defects (False: clean clips)
    background: str | None = None  # rendered clips' backgrounds: None (near-black) or "random" (the wider world)
    palette: float = 0.0  # a fraction of the rendered clips whose shape is drawn in other shades (`datasets.clip_set`)


@dataclass
class AdapterStage(TrainConfig, VideoData):
    clips: int = 600
    frames: int = 4  # frames per clip used as single training images
    targets: str = "spatial_attention"  # a key of ADAPTER_TARGETS
    rank: int = 8


@dataclass
class MotionStage(TrainConfig, VideoData):
    clips: int = 2000
    still: float = 0.1  # fraction of still shapes (`a red circle`), so a still prompt stays still
    adapter_scale: float = 1.0  # the domain adapter during training (the paper: 1)
    gradient_checkpointing: bool = False
    init: str | None = None  # continue from a motion-module file (in the checkpoint folder, or a path)
    adapter_file: str | None = None  # another domain adapter (in the checkpoint folder, or a path)
    adapter_mix: bool = False  # the adapter's scale drawn uniformly from [0, adapter_scale] at every step
    switch: float = 0.0  # that many clips again (a fraction) whose colour switches mid-clip, captioned per frame
    temporal: str = "attention"  # or "conv": the parameter-matched TemporalConv (the paper's ablation)
    heads: int = TOY_MOTION["heads"]
    max_frames: int = TOY_MOTION["max_frames"]
    check: bool = True  # the held-out check at each checkpoint
    noise_share: float = 0.0  # fraction of the noise's variance shared by the frames (PYoCo), also at sampling
    weighting: str = "eps"  # the loss over timesteps: "eps" or "x0" (see minianimate.stages.diffusion_loss)
    positional: bool = True  # the motion modules' frame-position encoding (False: the ablation without it)
    bases: str | None = None  # looks (comma-separated, `shapeworld.LOOKS`) to train across besides the base: `bases.py`
    bases_clips: int = 500  # clips in each look
    beta_schedule: str = "linear"  # the noise schedule it trains and samples on: the base's "linear" (as the paper's
    # motion stage) or "scaled_linear" (the ablation; written to motion_module.json, which `generate` follows)


@dataclass
class MotionLoRAStage(TrainConfig, VideoData):
    camera: str = "zoom-in"
    references: int = 50
    rank: int = 8
    adapter_scale: float = 1.0
    weighting: str = "eps"  # the loss over timesteps, as MotionStage's
    zoom: float | None = None  # the references' zoom: the most zoomed frame shows 1/zoom of it (None: ZOOM_SCALE)


# a stage's name in training_log.json (its first word) -> FILES it writes
WROTE = {"vae": ("vae",), "base": ("base", "text_encoder"), "outlined": ("outlined",), "pastel": ("pastel",),
         "adapter": ("adapter",), "motion": ("motion", "motion_config"), "motion-lora": ("motion_loras",),
         "controlnet": ("controlnet",), "look": ("looks",)}


def report(stage: str, out: Path, started: float, trainer=None, **numbers) -> None:
    """Add the stage's minutes, final loss (mean of the last 50) and `numbers` to out/training_log.json."""
    if trainer is not None:
        last = trainer.losses[-50:]
        numbers = {"final_loss": sum(last) / max(1, len(last)), "steps": trainer.step, **numbers}
    record = {"stage": stage, "minutes": round((time.time() - started) / 60, 2), **numbers}
    log = out / "training_log.json"
    history = json.loads(log.read_text()) if log.exists() else {}
    history[stage] = record
    wrote = WROTE.get(stage.split()[0], ())  # the commit and the hashes of the files the stage wrote, beside its record
    history.setdefault("provenance", {"by_section": {}})["by_section"][stage] = provenance(*wrote, root=out)
    log.write_text(json.dumps(history, indent=2))
    print(f"{stage}: {record}")


def training_clips(vae, cfg: VideoData, exclude=datasets.HELD_OUT, clips: int = 2000, still: float = 0.0,
                   speed_range=None):
    """The stage's clips as latents (n, 4, F, 16, 16) and captions (`cfg.data` folder, or rendered; their shapes
    moving at `speed_range` px/frame, default `shapeworld.SPEED_RANGE`)."""
    if cfg.data:
        pixels, captions = datasets.folder_set(cfg.data, cfg.frames, cfg.stride, cfg.seed)
        return encode_clips(vae, pixels), captions
    pixels, captions = datasets.clip_set(clips, cfg.seed + 2000, cfg.frames, exclude, watermark=cfg.watermark,
                                         still=still, speed_range=speed_range, background=cfg.background,
                                         palette=cfg.palette)
    return encode_clips(vae, pixels), captions


def adapter_stage(cfg: AdapterStage, out: Path, run: Path, resume: bool, progress: bool):
    """Stage 1: the domain adapter on single frames of watermarked clips (their full captions). Written in the
    official LoRA layout where the targets allow it (attention only)."""
    vae, text_encoder = load_vae(out), load_text_encoder(out)
    unet = UNet.from_pretrained(out / FILES["base"])
    clips, captions = training_clips(vae, cfg, exclude=(), clips=cfg.clips)
    frames = rearrange(clips, "n c f h w -> (n f) c h w")  # every frame of every clip, caption repeated
    frame_captions = [c for c in captions for _ in range(clips.shape[2])]
    lora, trainer = stages.train_domain_adapter(unet, text_encoder, frames, frame_captions, toy_ddim(), cfg, run,
                                                ADAPTER_TARGETS[cfg.targets], cfg.rank, resume=resume,
                                                progress=progress, text_dropout=cfg.text_dropout)
    trainer.use_ema()  # with `ema`, its weights are exported
    if trainer.rank == 0:
        lora.save(out / FILES["adapter"], format="official" if cfg.targets == "spatial_attention" else "minianimate")
    return {"trainer": trainer, "lora_parameters": lora.num_parameters(), "clips": len(clips)}


def _adapter(unet, out: Path, scale: float, file: str | None = None) -> LoRA | None:
    """The shipped domain adapter (or `file`, in `out` or a path) attached (frozen) at `scale`; None at scale 0 or
    without one."""
    path = out / (file or FILES["adapter"])
    if not scale or not path.exists():
        return None
    return LoRA.load(unet, path, scale=scale).requires_grad_(False)


def train_motion(cfg: MotionStage, out: Path, run: Path, resume: bool, progress: bool, data=None, on_check=None):
    """Stage 2 as `train motion` trains it, without the export: base UNet and domain adapter frozen, only the motion
    modules train, on clip latents. data: (latents (n, 4, F, 16, 16), captions) instead of the config's clips (the
    motion lab's rungs). At each checkpoint a few held-out clips are generated (adapter off; `cfg.check`) and
    `on_check(trainer, unet, adapter)` runs (its dict joins the check's row); the checks so far are kept in
    run/checks.json (a resumed run goes on with them). With `cfg.bases`, data may be a dict (None: the base's, a
    look: its (latents, captions)); missing looks' clips are rendered. Returns (unet, trainer, checks, number of
    clips)."""
    looks = bases.parse(cfg.bases, cfg.adapter_mix)
    vae, text_encoder = load_vae(out), load_text_encoder(out)
    unet = load_motion_unet(out, {"heads": cfg.heads, "max_frames": cfg.max_frames, "temporal": cfg.temporal,
                                  "positional": cfg.positional})
    if cfg.init:
        load_motion_module(unet, out / cfg.init, verbose=False)
    adapter = _adapter(unet, out, cfg.adapter_scale, cfg.adapter_file)
    data = data if isinstance(data, dict) else {None: data}
    latents, captions = data.get(None) or training_clips(vae, cfg, clips=cfg.clips, still=cfg.still)
    if data.get(None) is None and cfg.switch:  # prompt travel: clips whose colour switches mid-clip, captioned per frame
        clips, switched = datasets.switch_set(round(cfg.switch * len(latents)), cfg.seed + 3000, cfg.frames,
                                              background=cfg.background)
        latents, captions = torch.cat([latents, encode_clips(vae, clips)]), captions + switched
    several = looks and bases.SeveralBases(unet, out, {None: (latents, captions), **{
        look: data.get(look) or bases.look_clips(vae, cfg, look, cfg.bases_clips, encode_clips) for look in looks}},
        cfg.seed)
    ddim, log = toy_ddim(cfg.beta_schedule), run / "checks.json"
    history = [row for row in json.loads(log.read_text()) if resume] if log.exists() else []

    def check(trainer):
        history[:] = [row for row in history if row["step"] < trainer.step]
        unet.eval()
        last = trainer.losses[-50:]
        row = {"step": trainer.step, "loss": sum(last) / len(last)}
        if adapter is not None:
            adapter.enabled = False
        if several:  # the base alone (the step after attaches its own)
            several.off()
        if cfg.check:
            pipe = AnimationPipeline(vae, text_encoder, unet, ddim)
            pipe.noise_share = cfg.noise_share
            row.update(held_out_check(pipe, cfg.frames))
            print(f"step {trainer.step}: loss {row['loss']:.4f}, held-out direction "
                  f"{row['held_out_direction']:.2f}, colour {row['color']:.2f}")
        row.update((on_check(trainer, unet, adapter) if on_check else None) or {})
        if adapter is not None:
            adapter.scale, adapter.enabled = cfg.adapter_scale, True
        unet.train()
        history.append(row)
        if trainer.rank == 0:
            atomic_write(log, lambda tmp: Path(tmp).write_text(json.dumps(history, indent=1)))

    def mix_adapter(step):  # the adapter's scale drawn from [0, adapter_scale] at every step, from the step alone
        adapter.scale = cfg.adapter_scale * float(torch.rand(1, generator=torch.Generator().manual_seed(
            cfg.seed * 1_000_003 + step)))

    trainer = stages.train_motion_module(unet, text_encoder, latents, captions, ddim, cfg, run,
                                         cfg.gradient_checkpointing, resume=resume, progress=progress,
                                         on_checkpoint=check if cfg.check or on_check else None,
                                         before_step=several or (mix_adapter if cfg.adapter_mix and adapter else None),
                                         text_dropout=cfg.text_dropout, noise_share=cfg.noise_share,
                                         weighting=cfg.weighting)
    return unet, trainer, history, len(latents)


def motion_stage(cfg: MotionStage, out: Path, run: Path, resume: bool, progress: bool):
    """Stage 2 (`train_motion`), exported: motion_module.safetensors (official layout) and motion_module.json (its
    shape, config and checks); with `init` naming the shipped module, the json's earlier phases and checks go first."""
    unet, trainer, history, clips = train_motion(cfg, out, run, resume, progress)
    trainer.use_ema()
    if trainer.rank == 0:
        before = read_json(out / FILES["motion_config"]) if cfg.init == FILES["motion"] and (
            out / FILES["motion_config"]).exists() else {}
        earlier = before.get("phases") or ([{"source": before.get("source"), "steps": before["steps"]}] if before else [])
        phases = earlier + [{"config": asdict(cfg), "steps": trainer.step}]
        offset = sum(phase["steps"] for phase in phases[:-1])
        checks = before.get("checks", []) + [{**row, "step": row["step"] + offset, "phase": len(phases)}
                                             for row in history]
        save_motion_module(unet, out / FILES["motion"], "official")
        atomic_write(out / FILES["motion_config"], lambda tmp: Path(tmp).write_text(json.dumps(
            {"motion": {"heads": cfg.heads, "max_frames": cfg.max_frames, "positional": cfg.positional},
             "frames": cfg.frames, "noise_share": cfg.noise_share, "beta_schedule": cfg.beta_schedule,
             "held_out": datasets.HELD_OUT, "steps": offset + trainer.step, "phases": phases, "checks": checks,
             "provenance": provenance("vae", "text_encoder", "base", root=out)}, indent=1)))
    return {"trainer": trainer, "clips": clips,
            "motion_parameters": sum(p.numel() for p in unet.motion_parameters())}


def motion_lora_stage(cfg: MotionLoRAStage, out: Path, run: Path, resume: bool, progress: bool):
    """Stage 3: a MotionLoRA on ~50 references of one camera motion (`camera`); written in the official
    MotionLoRA layout to motion_loras/{camera}.safetensors."""
    vae, text_encoder = load_vae(out), load_text_encoder(out)
    unet = load_motion_unet(out)
    _adapter(unet, out, cfg.adapter_scale)
    if cfg.data:
        latents, captions = training_clips(vae, cfg)
    else:
        clips, captions = datasets.reference_set(cfg.camera, cfg.references, cfg.seed + 3000, cfg.frames,
                                                  watermark=cfg.watermark, zoom=cfg.zoom)
        latents = encode_clips(vae, clips)
    lora, trainer = stages.train_motion_lora(unet, text_encoder, latents, captions, toy_ddim(), cfg, run, cfg.rank,
                                             cfg.camera, resume=resume, progress=progress,
                                             text_dropout=cfg.text_dropout, weighting=cfg.weighting)
    trainer.use_ema()
    if trainer.rank != 0:
        return None
    path = lora.save(out / FILES["motion_loras"] / f"{cfg.camera}.safetensors", format="official")
    return {"trainer": trainer, "references": len(latents), "rank": lora.rank,
            "lora_parameters": lora.num_parameters(), "file_bytes": path.stat().st_size,
            "motion_module_bytes": (out / FILES["motion"]).stat().st_size}


STAGES = {"vae": (vae_stage, VAEStage), "base": (base_stage, BaseStage), "outlined": (outlined_stage, OutlinedStage),
          "pastel": (pastel_stage, PastelStage), "look": (look_stage, LookStage),
          "adapter": (adapter_stage, AdapterStage),
          "motion": (motion_stage, MotionStage), "motion-lora": (motion_lora_stage, MotionLoRAStage),
          "controlnet": (controlnet_stage, ControlNetStage)}


def run_stage(stage: str, config, out=CHECKPOINTS, resume: bool = False, progress: bool = True, run=None,
              device=None, dtype=None, steps=None) -> None:
    """Train one stage. config: a yaml path or the stage's config dataclass. `out` holds the checkpoints the
    stage starts from and receives what it trains; `run` its training checkpoints, by default
    runs/<stage>-<config file's stem> (a dataclass: runs/<stage>-<hash of its fields but steps>). Inputs are
    checked before any model loads; `resume` refuses a run folder saved with another config (but `steps`, which
    replaces the config's: a run resumed to more steps)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    function, kind = STAGES[stage]
    where = "config" if isinstance(config, TrainConfig) else config
    cfg = config if isinstance(config, TrainConfig) else load_config(config, kind)
    overrides = dict(device=device, dtype=dtype, steps=steps)  # --device, --dtype, --steps
    cfg = check_config(replace(cfg, **{k: v for k, v in overrides.items() if v is not None}), where)
    out, run = Path(out), Path(run or default_run(stage, config, cfg))
    check_stage_inputs(stage, cfg, out, where, {"targets": ADAPTER_TARGETS, "beta_schedule": BETA_SCHEDULES,
                                               "look": tuple(datasets.sw.LOOKS)})
    if resume:
        check_resume(run, cfg, where)
    elif (run / "trainer_state.pt").exists():
        print(f"starting {run} over: its checkpoint is replaced at the first save (--resume would continue it)")
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    init_distributed()
    torch.manual_seed(cfg.seed)
    numbers = function(cfg, out, run, resume, progress)
    if numbers is not None:
        name = (f"motion-lora {cfg.camera}" if stage == "motion-lora" else f"look {cfg.look}" if stage == "look" else
                "vae decoder" if getattr(cfg, "decoder_only", False) else stage)
        report(name, out, started, **numbers)
