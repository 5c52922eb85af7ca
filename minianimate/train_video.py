"""Training stages on video: 1 the domain adapter, 2 the motion module (on the frozen toy T2I).

    python -m minianimate train adapter --config configs/adapter.yaml   # LoRA on the spatial attention
    python -m minianimate train motion  --config configs/motion.yaml    # only motion-module parameters
    torchrun --nproc_per_node 2 -m minianimate train motion --config configs/motion.yaml   # DDP

Clips come from ShapeWorld's video domain (moving shapes with watermark, blur and noise). By default a
stage renders them in memory (`extra.clips`, the fast path on a CPU); `extra.data: FOLDER` reads a
WebVid-layout folder with `VideoDataset` instead (the path for your own videos). Either way the clips are
encoded once by the frozen VAE and training runs on latents (B, 4, F, 16, 16).
Some colour/shape/direction combinations (`HELD_OUT`) never appear in the motion stage's clips, so
direction accuracy can be reported on prompts the motion module never saw.
"""
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from tqdm.auto import tqdm

from minianimate import shapeworld as sw
from minianimate import t2i
from minianimate.ddim import DDIM
from minianimate.inflation import MotionUNet
from minianimate.lora import SPATIAL_ALL, SPATIAL_ATTENTION, LoRA
from minianimate.trainer import Trainer, TrainConfig, init_distributed
from minianimate.unet import UNet
from minianimate.vae import encode, to_tensor

# Held out of the motion stage: closed under the left-right flip (a flipped `left` clip is a `right` one).
HELD_OUT = (("red", "triangle", "left"), ("red", "triangle", "right"), ("green", "circle", "up"),
            ("blue", "square", "down"), ("yellow", "square", "left"), ("yellow", "square", "right"))
TOY_MOTION = dict(heads=4, max_frames=32)  # the toy's motion modules (v3-like: no mid-block module)
ADAPTER_TARGETS = {"spatial_attention": SPATIAL_ATTENTION, "spatial_all": SPATIAL_ALL,
                   "spatial_all+conv": SPATIAL_ALL + [r"(down|mid|up)_blocks?.*resnets\.\d+\.(conv1|conv2)",
                                                      r"conv_in|conv_out"]}
ADAPTER_FILE = "domain_adapter.safetensors"
MOTION_FILE = "motion_module.safetensors"


def combos(held_out: bool | None = None) -> list[tuple[str, str, str]]:
    """All (colour, shape, direction) combinations; only the held-out ones (True) or only the trained ones
    (False)."""
    every = [(c, s, d) for c in sw.COLORS for s in sw.SHAPES for d in sw.DIRECTIONS]
    return every if held_out is None else [x for x in every if (x in HELD_OUT) == held_out]


def clip_set(n: int, seed: int, frames: int = 16, exclude=HELD_OUT, watermark: bool = True, still: float = 0.0):
    """n video-domain clips whose (colour, shape, direction) is not in `exclude`: uint8 (n, F, 64, 64, 3)
    and captions `a red circle moving left`; a fraction `still` are still shapes (`a red circle`)."""
    rng = np.random.default_rng(seed)
    allowed = [x for x in combos() if x not in set(exclude)]
    clips, captions = [], []
    for _ in tqdm(range(n), desc="rendering clips", leave=False):
        color, shape, direction = allowed[rng.integers(len(allowed))]
        direction = "still" if rng.random() < still else direction
        clip, text, _ = sw.render_clip(rng, frames, color, shape, direction, watermark=watermark)
        clips.append(clip)
        captions.append(text)
    return np.stack(clips), captions


def folder_set(root, frames: int = 16, stride: int = 1, seed: int = 0):
    """Every clip of a WebVid-layout folder, read by `VideoDataset` (with its random flip): float
    (n, F, 3, 64, 64) in [-1, 1] and captions."""
    from minianimate.data import VideoDataset

    data = VideoDataset(root, frames=frames, stride=stride, seed=seed)
    items = [data[i] for i in tqdm(range(len(data)), desc=f"reading {root}", leave=False)]
    return torch.stack([x["pixel_values"] for x in items]), [x["text"] for x in items]


@torch.no_grad()
def encode_clips(vae, clips) -> torch.Tensor:
    """uint8 (n, F, H, W, 3) or float (n, F, 3, H, W) clips -> scaled latents (n, 4, F, H/4, W/4)."""
    x = to_tensor(clips) if isinstance(clips, np.ndarray) else clips
    n = x.shape[0]
    frames = rearrange(x, "n f c h w -> (n f) c h w")
    latents = torch.cat([encode(vae, chunk) for chunk in tqdm(frames.split(512), desc="encoding", leave=False)])
    return rearrange(latents, "(n f) c h w -> n c f h w", n=n)


def training_clips(vae, cfg: TrainConfig, exclude=HELD_OUT):
    """The stage's clips as latents (n, 4, F, 16, 16) and captions (`extra.data` folder or rendered)."""
    frames = cfg.extra.get("frames", 16)
    if cfg.extra.get("data"):
        pixels, captions = folder_set(cfg.extra["data"], frames, cfg.extra.get("stride", 1), cfg.seed)
        return encode_clips(vae, pixels), captions
    clips, captions = clip_set(cfg.extra.get("clips", 2000), cfg.seed + 2000, frames, exclude,
                               still=cfg.extra.get("still", 0.0))
    return encode_clips(vae, clips), captions


def video_loss(unet: MotionUNet, text_encoder, latents, captions, ddim: DDIM, generator, batch: int,
               text_dropout: float = 0.1) -> torch.Tensor:
    """Epsilon MSE on a random batch of clip latents (N, 4, F, h, w): one timestep per clip, independent
    noise per frame, captions dropped to "" with probability `text_dropout` (for CFG)."""
    idx = torch.randint(0, len(latents), (batch,), generator=generator)
    x0 = latents[idx]
    drop = torch.rand(batch, generator=generator) < text_dropout
    prompts = ["" if d else captions[i] for i, d in zip(idx.tolist(), drop.tolist())]
    noise = torch.randn(x0.shape, generator=generator)
    t = torch.randint(0, ddim.num_train_timesteps, (batch,), generator=generator)
    return F.mse_loss(unet(ddim.add_noise(x0, noise, t), t, text_encoder.encode_prompt(prompts)), noise)


def _report(stage: str, out: Path, started: float, **numbers) -> None:
    from minianimate.train_t2i import _report as report

    report(stage, out, started, **numbers)


# --------------------------------------------------------------------------------------------------
# Stage 1: the domain adapter

def train_adapter_stage(cfg: TrainConfig, out: Path, run: Path, resume: bool = False, progress: bool = True):
    """A LoRA on the frozen base UNet, trained on single frames of watermarked clips (their full captions).
    Writes `domain_adapter.safetensors` (official LoRA layout where the targets allow it)."""
    started = time.time()
    init_distributed()
    torch.manual_seed(cfg.seed)
    vae, text_encoder = t2i.load_vae(out), t2i.load_text_encoder(out)
    unet = UNet.from_pretrained(out / "unet_base").requires_grad_(False)
    clips, captions = training_clips(vae, cfg, exclude=())
    frames = rearrange(clips, "n c f h w -> (n f) c h w")  # every frame of every clip, caption repeated
    frame_captions = [c for c in captions for _ in range(clips.shape[2])]
    target = cfg.extra.get("targets", "spatial_attention")
    lora = LoRA.inject(unet, ADAPTER_TARGETS[target], rank=cfg.extra.get("rank", 8), name="domain_adapter")
    ddim = DDIM(**t2i.TOY_SCHEDULE)
    trainer = Trainer({"lora": lora}, cfg, run)
    if resume and trainer.resume():
        print(f"resumed from step {trainer.step}")
    trainer.fit(lambda step, g: t2i.diffusion_loss(unet, text_encoder, frames, frame_captions, ddim, g, cfg.batch,
                                                   cfg.extra.get("text_dropout", 0.1)),
                desc="adapter", progress=progress)
    if trainer.rank == 0:
        lora.save(out / ADAPTER_FILE, format="official" if target == "spatial_attention" else "minianimate")
        _report("adapter", out, started, final_loss=sum(trainer.losses[-50:]) / len(trainer.losses[-50:]), steps=trainer.step,
                lora_parameters=lora.num_parameters(), clips=len(clips))


# --------------------------------------------------------------------------------------------------
# Stage 2: the motion module

def load_motion_unet(root=t2i.CHECKPOINTS, motion=None) -> MotionUNet:
    """The base UNet inflated with motion modules: the shipped ones (`motion_module.safetensors`) unless
    `motion` gives a config for fresh modules."""
    from minianimate.motion_io import load_motion_module

    root = Path(root)
    unet = UNet.from_pretrained(root / "unet_base")
    if motion is not None:
        return MotionUNet.from_unet(unet, motion)
    config = json.loads((root / "motion_module.json").read_text())
    model = MotionUNet.from_unet(unet, config["motion"])
    load_motion_module(model, root / MOTION_FILE, verbose=False)
    return model


def train_motion_stage(cfg: TrainConfig, out: Path, run: Path, resume: bool = False, progress: bool = True):
    """Stage 2: base UNet and domain adapter frozen, only the motion modules train, on clip latents."""
    from minianimate.motion_io import save_motion_module

    started = time.time()
    rank, _ = init_distributed()
    torch.manual_seed(cfg.seed)
    vae, text_encoder = t2i.load_vae(out), t2i.load_text_encoder(out)
    motion = {**TOY_MOTION, **cfg.extra.get("motion", {})}
    unet = load_motion_unet(out, motion).requires_grad_(False)
    if cfg.extra.get("init"):  # continue from a motion module (a file in `out`, or a path)
        from minianimate.motion_io import load_motion_module

        load_motion_module(unet, out / cfg.extra["init"], verbose=False)
    for p in unet.motion_parameters():
        p.requires_grad_(True)
    if cfg.extra.get("gradient_checkpointing"):
        unet.enable_gradient_checkpointing()
    adapter = None
    if cfg.extra.get("adapter_scale", 1.0) and (out / ADAPTER_FILE).exists():  # the paper trains with it at 1
        adapter = LoRA.load(unet, out / ADAPTER_FILE, scale=cfg.extra.get("adapter_scale", 1.0))
        adapter.requires_grad_(False)
    latents, captions = training_clips(vae, cfg)
    ddim = DDIM(**t2i.TOY_SCHEDULE)
    trainer = Trainer({"unet": unet}, cfg, run, params=unet.motion_parameters())
    if resume and trainer.resume():
        print(f"resumed from step {trainer.step}")
    history = []

    def check(tr):  # a few held-out clips at each checkpoint (adapter off): is direction being learned?
        from minianimate.evaluate import evaluate_clips
        from minianimate.pipeline import AnimationPipeline

        unet.eval()
        pipe = AnimationPipeline(vae, text_encoder, unet, ddim, adapter=adapter, root=out)
        result = evaluate_clips(pipe, HELD_OUT, per_combo=1, frames=latents.shape[2], steps=15, seed=1)
        if adapter is not None:
            adapter.scale, adapter.enabled = cfg.extra.get("adapter_scale", 1.0), True
        unet.train()
        history.append({"step": tr.step, "loss": sum(tr.losses[-50:]) / 50, "held_out_direction": result["direction"],
                        "color": result["color"]})
        print(f"step {tr.step}: loss {history[-1]['loss']:.4f}, held-out direction {result['direction']:.2f}, "
              f"colour {result['color']:.2f}")

    unet.train()
    trainer.fit(lambda step, g: video_loss(unet, text_encoder, latents, captions, ddim, g, cfg.batch,
                                           cfg.extra.get("text_dropout", 0.1)),
                on_checkpoint=check if cfg.extra.get("check", True) else None, desc="motion", progress=progress)
    if rank == 0:
        save_motion_module(unet, out / MOTION_FILE, "official")
        (out / "motion_module.json").write_text(json.dumps(
            {"motion": motion, "frames": latents.shape[2], "held_out": HELD_OUT, "checks": history}, indent=2))
        _report("motion", out, started, final_loss=sum(trainer.losses[-50:]) / len(trainer.losses[-50:]), steps=trainer.step,
                clips=len(latents), motion_parameters=sum(p.numel() for p in unet.motion_parameters()))


# --------------------------------------------------------------------------------------------------
# Stage 3: MotionLoRA

# Colour/shape pairs no MotionLoRA reference shows: zoom accuracy is measured on these prompts.
LORA_HELD_OUT = (("red", "triangle"), ("blue", "circle"), ("yellow", "square"))
MOTION_LORAS = "motion_loras"


def reference_set(camera: str, n: int, seed: int, frames: int = 16, exclude=LORA_HELD_OUT):
    """n MotionLoRA references: still shapes seen by a rule-based camera motion (`shapeworld.camera_augment`),
    with the video domain's defects; colour/shape pairs in `exclude` left out. uint8 (n, F, 64, 64, 3), the
    still captions (`a red circle`: the camera motion is not in the caption)."""
    rng = np.random.default_rng(seed)
    pairs = [(c, s) for c in sw.COLORS for s in sw.SHAPES if (c, s) not in set(exclude)]
    items = [sw.render_camera_clip(rng, camera, frames, *pairs[i % len(pairs)]) for i in range(n)]
    return np.stack([x[0] for x in items]), [x[1] for x in items]


def train_motion_lora_stage(cfg: TrainConfig, out: Path, run: Path, resume: bool = False, progress: bool = True):
    """Stage 3: a LoRA on the motion modules' attention (to_q/k/v/out of both temporal attentions), everything
    else frozen, trained on ~50 references of one camera motion (`extra.camera`). Writes
    `motion_loras/{camera}.safetensors` in the official MotionLoRA layout."""
    from minianimate.lora import MOTION_ATTENTION

    started = time.time()
    rank_, _ = init_distributed()
    torch.manual_seed(cfg.seed)
    camera = cfg.extra.get("camera", "zoom-in")
    vae, text_encoder = t2i.load_vae(out), t2i.load_text_encoder(out)
    unet = load_motion_unet(out).requires_grad_(False)
    adapter = None
    if cfg.extra.get("adapter_scale", 1.0) and (out / ADAPTER_FILE).exists():
        adapter = LoRA.load(unet, out / ADAPTER_FILE, scale=cfg.extra.get("adapter_scale", 1.0)).requires_grad_(False)
    if cfg.extra.get("data"):
        latents, captions = training_clips(vae, cfg)
    else:
        clips, captions = reference_set(camera, cfg.extra.get("references", 50), cfg.seed + 3000,
                                        cfg.extra.get("frames", 16))
        latents = encode_clips(vae, clips)
    lora = LoRA.inject(unet, MOTION_ATTENTION, rank=cfg.extra.get("rank", 8), name=camera)
    ddim = DDIM(**t2i.TOY_SCHEDULE)
    trainer = Trainer({"lora": lora}, cfg, run)
    if resume and trainer.resume():
        print(f"resumed from step {trainer.step}")
    unet.train()
    trainer.fit(lambda step, g: video_loss(unet, text_encoder, latents, captions, ddim, g, cfg.batch,
                                           cfg.extra.get("text_dropout", 0.1)),
                desc=f"motion-lora {camera}", progress=progress)
    if rank_ == 0:
        path = lora.save(out / MOTION_LORAS / f"{camera}.safetensors", format="official")
        _report(f"motion-lora {camera}", out, started, final_loss=sum(trainer.losses[-50:]) / len(trainer.losses[-50:]), steps=trainer.step,
                references=len(latents), rank=lora.rank, lora_parameters=lora.num_parameters(),
                file_bytes=path.stat().st_size, motion_module_bytes=(out / MOTION_FILE).stat().st_size)


STAGES = {"adapter": train_adapter_stage, "motion": train_motion_stage, "motion-lora": train_motion_lora_stage}
