"""AnimateDiff's three training stages, as functions that take their data and callbacks.

1. **Domain adapter**: a LoRA on the frozen image UNet, trained on single video frames so that the video
   data set's defects (watermarks, blur, noise) go into the adapter (`train_domain_adapter`).
2. **Motion module**: the inflated UNet (`MotionUNet`) with the image weights (and adapter) frozen; only the
   motion modules train, on clips (`train_motion_module`).
3. **MotionLoRA**: a LoRA on the motion modules' temporal attention, trained on ~50 reference clips of one
   camera motion (`train_motion_lora`).

All three minimise the same epsilon MSE (`diffusion_loss`, or its "x0" weighting) on latents encoded once, with the
shared `Trainer` (checkpoints in `run`, `resume`, NaN guard, DDP under torchrun). Where the data come from
(a WebVid folder, ShapeWorld) is the caller's business.
"""
import torch
import torch.nn.functional as F

from minianimate import checks
from minianimate.controlnet import ControlledUNet
from minianimate.ddim import DDIM
from minianimate.inflation import MotionUNet
from minianimate.lora import MOTION_ATTENTION, SPATIAL_ATTENTION, LoRA
from minianimate.sampling import frame_noise
from minianimate.trainer import Trainer, TrainConfig, shard, train_device, world


X0_WEIGHT_CAP = 20.0  # the "x0" weighting's largest weight (the toy's schedule: from t = 665 on; SNR = 1 at t = 284)


def diffusion_loss(unet, text_encoder, latents: torch.Tensor, captions: list[str], ddim: DDIM,
                   generator: torch.Generator, batch: int, text_dropout: float = 0.1, offset_noise: float = 0.0,
                   noise_share: float = 0.0, conditions: torch.Tensor | None = None,
                   weighting: str = "eps") -> torch.Tensor:
    """Epsilon MSE on a random batch of latents: images (N, C, h, w) for a UNet, clips (N, C, F, h, w) for a
    MotionUNet. One timestep per sample; captions dropped to "" with probability `text_dropout` (so the
    model also learns the unconditional prediction that classifier-free guidance needs). A clip's caption may be a
    list of F captions, one per frame (`frame_captions`), as prompt travel samples.

    offset_noise: a per-sample, per-channel constant added to the noise, so a model can learn images whose
    mean brightness is far from its training data's. noise_share: see `frame_noise` (clips only).
    conditions: ControlNet conditions (N, 3, H, W) beside the latents, for a `ControlledUNet`.
    weighting: "eps" (the epsilon MSE, as the paper) or "x0": each sample's epsilon MSE times
    clamp(1 / SNR(t), 1, X0_WEIGHT_CAP), i.e. the error of the clean clip x0 it implies at high t (where layout and
    motion are decided; eps error = SNR x0 error) and the plain eps error where SNR >= 1.
    Under DDP the draws are those of the global batch (processes x batch) and this process keeps its `shard`.
    """
    checks.tensor("latents", latents, "(N, C, h, w)", "(N, C, F, h, w)")
    captions = frame_captions(captions, len(latents), latents.shape[2] if latents.ndim == 5 else None)
    checks.whole("batch", batch)
    checks.probability("text_dropout", text_dropout)
    checks.finite("offset_noise", offset_noise, low=0)
    checks.probability("noise_share", noise_share)
    checks.choice("weighting", weighting, ("eps", "x0"))
    if conditions is not None:
        checks.tensor("conditions", conditions, "(N, 3, H, W)")
        checks.same_count("conditions", len(conditions), len(latents), "latent")
    batch *= world()[1]
    idx = torch.randint(0, len(latents), (batch,), generator=generator)
    x0 = latents[idx]
    drop = torch.rand(batch, generator=generator) < text_dropout
    prompts = ["" if d else captions[i] for i, d in zip(idx.tolist(), drop.tolist())]
    noise = frame_noise(x0.shape, generator, noise_share)
    if offset_noise:
        noise = noise + offset_noise * torch.randn(*x0.shape[:2], *[1] * (x0.ndim - 2), generator=generator)
    t = torch.randint(0, ddim.num_train_timesteps, (batch,), generator=generator)
    x0, noise, t, keep = shard(x0), shard(noise), shard(t), shard(torch.arange(batch)).tolist()
    device = next(unet.parameters()).device
    control = {} if conditions is None else {"control": conditions[shard(idx)].to(device)}
    prompts = [prompts[i] for i in keep]
    if any(not isinstance(p, str) for p in prompts):  # a prompt per frame: context (B*F, L, D)
        prompts = [q for p in prompts for q in ([p] * x0.shape[2] if isinstance(p, str) else p)]
    eps = unet(ddim.add_noise(x0, noise, t).to(device), t.to(device), text_encoder.encode_prompt(prompts), **control)
    if weighting == "eps":
        return F.mse_loss(eps, noise.to(device))
    per_sample = ((eps - noise.to(device)) ** 2).flatten(1).mean(1)
    snr = ddim.alphas_cumprod[t] / (1 - ddim.alphas_cumprod[t])
    return (per_sample * torch.clamp(1 / snr, min=1.0, max=X0_WEIGHT_CAP).to(device)).mean()


def frame_captions(captions, count: int, frames: int | None) -> list:
    """`count` captions, each a string or, for clips of `frames` frames, a list of `frames` strings (a caption per
    frame) -> list; a one-line error otherwise."""
    if frames is None or all(isinstance(c, str) for c in captions):
        return checks.strings("captions", captions, count, "latent")
    checks.same_count("captions", len(captions), count, "clip")
    bad = next((c for c in captions if not isinstance(c, str) and (len(c) != frames or not all(
        isinstance(q, str) for q in c))), None)
    if bad is not None:
        checks.fail("captions", f"must hold a string or a list of {frames} strings (one per frame) per clip",
                    checks.show(bad), TypeError)
    return [c if isinstance(c, str) else list(c) for c in captions]


def fit(modules: dict, unet, text_encoder, latents, captions, ddim: DDIM, cfg: TrainConfig, run, params=None,
        resume: bool = False, progress: bool = True, on_checkpoint=None, desc: str = "train", before_step=None,
        **loss_options) -> Trainer:
    """Train `modules` (name -> nn.Module, what the checkpoints hold) on `diffusion_loss` of `unet`.
    loss_options: text_dropout, offset_noise, noise_share, conditions, weighting. before_step(step): run before each
    step's loss (to draw an adapter's scale, a base); a (latents, captions) it returns is that step's data instead.
    The models move to `cfg.device` first; the latents stay on the CPU and go over a batch at a time."""
    device = train_device(cfg)
    for module in (unet, text_encoder, *modules.values()):
        module.to(device)
    trainer = Trainer(modules, cfg, run, params=params)
    if resume and trainer.resume():
        print(f"resumed from step {trainer.step} ({run})")

    def loss(step, generator):
        data = before_step(step) if before_step is not None else None
        return diffusion_loss(unet, text_encoder, *(data or (latents, captions)), ddim, generator, cfg.batch,
                              **loss_options)

    trainer.fit(loss, on_checkpoint=on_checkpoint, desc=desc, progress=progress)
    return trainer


def train_domain_adapter(unet, text_encoder, frames: torch.Tensor, captions, ddim: DDIM, cfg: TrainConfig, run,
                         targets=SPATIAL_ATTENTION, rank: int = 8, **fit_options) -> tuple[LoRA, Trainer]:
    """Stage 1: a LoRA (`targets`, `rank`) on the frozen image `unet`, trained on video frames (N, C, h, w)."""
    checks.config(cfg, "cfg")
    checks.tensor("frames", frames, "(N, C, h, w)")
    checks.strings("captions", captions, len(frames), "frame")
    checks.whole("rank", rank)
    unet.requires_grad_(False)
    lora = LoRA.inject(unet, targets, rank=rank, name="domain_adapter")
    trainer = fit({"lora": lora}, unet, text_encoder, frames, captions, ddim, cfg, run, desc="adapter",
                  **fit_options)
    return lora, trainer


def train_motion_module(unet: MotionUNet, text_encoder, clips: torch.Tensor, captions, ddim: DDIM,
                        cfg: TrainConfig, run, gradient_checkpointing: bool = False, **fit_options) -> Trainer:
    """Stage 2: only the motion modules of `unet` train, on clip latents (N, C, F, h, w); the image weights
    (and a domain adapter attached to them) stay frozen."""
    checks.instance("unet", unet, MotionUNet, " (inflate the image UNet first: MotionUNet.from_unet)")
    checks.config(cfg, "cfg")
    checks.tensor("clips", clips, "(N, C, F, h, w)")
    frame_captions(captions, len(clips), clips.shape[2])
    unet.requires_grad_(False)
    params = unet.motion_parameters()
    for p in params:
        p.requires_grad_(True)
    unet.enable_gradient_checkpointing(gradient_checkpointing)
    unet.train()
    return fit({"unet": unet}, unet, text_encoder, clips, captions, ddim, cfg, run, params=params, desc="motion",
               **fit_options)


def train_motion_lora(unet: MotionUNet, text_encoder, clips: torch.Tensor, captions, ddim: DDIM,
                      cfg: TrainConfig, run, rank: int = 8, name: str = "motion_lora",
                      **fit_options) -> tuple[LoRA, Trainer]:
    """Stage 3: a MotionLoRA (rank `rank`) on the motion modules' attention, everything else frozen, trained
    on reference clips (N, C, F, h, w) of one motion."""
    checks.instance("unet", unet, MotionUNet, " (inflate the image UNet first: MotionUNet.from_unet)")
    checks.config(cfg, "cfg")
    checks.tensor("clips", clips, "(N, C, F, h, w)")
    checks.strings("captions", captions, len(clips), "clip")
    checks.whole("rank", rank)
    checks.text("name", name)
    unet.requires_grad_(False)
    lora = LoRA.inject(unet, MOTION_ATTENTION, rank=rank, name=name)
    unet.train()
    trainer = fit({"lora": lora}, unet, text_encoder, clips, captions, ddim, cfg, run, desc=f"motion-lora {name}",
                  **fit_options)
    return lora, trainer


def train_controlnet(unet, controlnet, text_encoder, latents: torch.Tensor, captions, conditions: torch.Tensor,
                     ddim: DDIM, cfg: TrainConfig, run, **fit_options) -> Trainer:
    """A ControlNet (ControlNet paper; not an AnimateDiff stage) on the frozen image `unet`, trained on images:
    latents (N, C, h, w) with their condition images (N, 3, H, W) in [0, 1]."""
    checks.config(cfg, "cfg")
    checks.tensor("latents", latents, "(N, C, h, w)")
    checks.strings("captions", captions, len(latents), "latent")
    checks.tensor("conditions", conditions, "(N, 3, H, W)")
    checks.same_count("conditions", len(conditions), len(latents), "latent")
    unet.requires_grad_(False)
    controlnet.requires_grad_(True).train()
    return fit({"controlnet": controlnet}, ControlledUNet(unet, controlnet), text_encoder, latents, captions, ddim,
               cfg, run, desc="controlnet", conditions=conditions, **fit_options)
