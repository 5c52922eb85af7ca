"""The pipelines: text encoder + VAE + UNet + DDIM -> images, and with an inflated UNet (`MotionUNet`) -> videos.

Plug and play, as in the paper: the motion module is trained once on the base model; loading a
personalized model swaps only the spatial weights and keeps the motion modules. Load order (the
authors'): motion module -> personalized (DreamBooth) weights -> image LoRA -> domain adapter ->
MotionLoRAs. The domain adapter and MotionLoRAs stay as LoRA hooks, so their scales change per call.
Nothing here knows the toy world: latent channels come from the UNet's config, the spatial factor and
latent scaling from the VAE's (`minianimate.autoencoder`), the text encoder is anything with
`encode_prompt(list of str) -> (B, L, D)` (`TextEncoder`).

    pipe = AnimationPipeline(vae, text_encoder, motion_unet, DDIM(beta_schedule="linear"))
    video = pipe.generate("a red circle moving left", frames=16, seed=0)   # uint8 (16, H, W, 3)
"""
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from einops import rearrange

from minianimate import checks
from minianimate.autoencoder import decode, spatial_factor, to_uint8
from minianimate.context import FUSE, ONE_AFTER_ANOTHER, SCHEDULES, ContextWindows, continue_windows, window_inputs
from minianimate.context import free_noise as free_noise_of, planned
from minianimate.controlnet import ControlledUNet
from minianimate.ddim import DDIM
from minianimate.device import autocast, pick_device, pick_dtype
from minianimate.inflation import MotionUNet
from minianimate.free_init import check_options, lowpass, reinitialize
from minianimate.lora import LoRA
from minianimate.motion_io import load_motion_module
from minianimate.pretrained import check_sd_folder, load_sd_folder, motion_config_of, save_pipeline
from minianimate.sampling import frame_noise, sample
from minianimate.travel import travel_context
from minianimate.unet import UNet


class TextEncoder(Protocol):
    """What a pipeline needs of a text encoder (the toy one, or CLIP behind a tokenizer)."""

    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> context (B, L, D) for the UNet's cross-attention."""


def parse_motion_lora(spec, arg: str = "motion_loras") -> tuple[str, float]:
    """`zoom-in`, `zoom-in:0.8`, `path/to/file.safetensors:0.5` or (name, scale) -> (name, scale), the scale
    finite; errors name `arg`, the argument the spec came in."""
    if isinstance(spec, (tuple, list)):
        if len(spec) != 2:
            raise ValueError(f"{arg} entry {spec!r}: expected a (name, scale) pair, e.g. ('zoom-in', 0.8)")
        return str(spec[0]), checks.finite(f"{arg} {spec[0]!r} scale", spec[1])
    if ":" not in str(spec):
        return str(spec), 1.0
    name, _, scale = str(spec).rpartition(":")
    try:
        value = float(scale)
    except ValueError:  # no scale: fine if the colon belongs to a path (C:\\models\\zoom.ckpt)
        if not name or not any(sep in scale for sep in "/\\"):
            raise ValueError(f"{arg} {spec!r}: expected NAME_OR_PATH[:SCALE], e.g. zoom-in:0.8") from None
        return str(spec), 1.0
    return name, checks.finite(f"{arg} {spec!r} scale", value)


def parse_motion_loras(specs) -> list[tuple[str, float]]:
    """`motion_loras`: a list of specs (`parse_motion_lora`) -> [(name, scale), ...]; a lone string is refused."""
    if not isinstance(specs, (list, tuple)):
        raise TypeError(f"motion_loras must be a list of NAME_OR_PATH[:SCALE] strings or (name, scale) pairs, "
                        f"got {checks.show(specs)}")
    return [parse_motion_lora(spec) for spec in specs]


class ImagePipeline:
    """generate(prompts) -> uint8 images (B, H, W, 3): the text-to-image model AnimateDiff starts from."""

    def __init__(self, vae, text_encoder: TextEncoder, unet: UNet, ddim: DDIM | None = None, device=None,
                 dtype=None):
        self.vae, self.text_encoder, self.unet = vae, text_encoder, unet
        self.ddim = ddim or DDIM()  # Stable Diffusion 1.5's schedule unless told otherwise
        self.factor, self.vae_batch = spatial_factor(vae), 4  # frames per VAE decode: flat memory in clip length
        self.controlnet = None  # a ControlNet of this UNet, for `generate(control=...)`
        self.device, self.dtype = next(unet.parameters()).device, torch.float32  # the models stay where they are
        if device is not None or dtype is not None:
            self.to(device or self.device, dtype)

    def to(self, device="auto", dtype=None):
        """Move the models to `device` ('auto': cuda, else mps, else cpu) and sample with `dtype` autocast
        (float32, bfloat16, float16; weights stay float32; the VAE always decodes in float32)."""
        self.device, self.dtype = pick_device(device), pick_dtype(dtype)
        for model in (self.vae, self.text_encoder, self.unet):
            model.to(self.device)
        return self

    def enable_vae_slicing(self, frames: int = 1):
        """Decode `frames` images at a time (diffusers' name): less peak memory for long or large clips."""
        self.vae_batch = frames
        return self

    def latent_shape(self, batch: int, height: int | None, width: int | None, frames: int | None = None) -> tuple:
        """(B, C, h, w), or (B, C, F, h, w) for clips; height/width default to the UNet's sample size."""
        height = None if height is None else checks.whole("height", height, low=self.factor)
        width = None if width is None else checks.whole("width", width, low=self.factor)
        height = height or self.unet.config["sample_size"] * self.factor
        width = width or self.unet.config["sample_size"] * self.factor
        if height % self.factor or width % self.factor:
            raise ValueError(f"height and width must be multiples of the VAE's factor {self.factor}, got "
                             f"{height}x{width}; try {max(self.factor, height // self.factor * self.factor)}x"
                             f"{max(self.factor, width // self.factor * self.factor)}")
        size = (height // self.factor, width // self.factor)
        return (batch, self.unet.config["in_channels"], *(() if frames is None else (frames,)), *size)

    def controlled(self, model, control, shape: tuple, scale: float = 1.0, start: float = 0.0, end: float = 1.0,
                   steps: int = 25):
        """(`model` steered by `self.controlnet`: (x, t, context, control) -> eps, the conditions in [0, 1]).

        control, uint8 of the output's size: for images (H, W, 3), or one per image (B, H, W, 3); for clips
        (H, W, 3) for every frame, a video (F, H, W, 3) for every clip, or one video per clip (B, F, H, W, 3).
        It acts on the steps i / steps in [start, end] (diffusers' control_guidance_start / _end)."""
        if self.controlnet is None:
            raise ValueError("control= needs a ControlNet: set pipe.controlnet = ControlNet.from_pretrained(folder)")
        self.controlnet.to(self.device)
        control, clips = np.asarray(control), len(shape) == 5
        size, lead = (shape[-2] * self.factor, shape[-1] * self.factor), control.shape[:-3]
        if (control.dtype != np.uint8 or control.ndim < 3 or control.shape[-1] != 3 or control.shape[-3:-1] != size
                or len(lead) > 1 + clips):
            raise ValueError(f"control must be uint8 images or videos (..., H, W, 3) of the output size {size}, got "
                             f"{control.shape} of {control.dtype}; resize it (the CLI's --control does)")
        if clips and lead and lead[-1] != shape[2]:
            raise ValueError(f"the control video has {lead[-1]} frames for a clip of {shape[2]}: give one "
                             f"condition frame per generated frame, or one image for all")
        if len(lead) == 1 + clips and lead[0] != shape[0]:
            raise ValueError(f"{lead[0]} controls for a batch of {shape[0]}: give one, or one per prompt")
        cond = torch.from_numpy(control).float() / 255  # [0, 1]
        cond = cond[None] if len(lead) < 1 + clips else cond  # (B', [F,] H, W, 3)
        cond = rearrange(cond, "b ... h w c -> b c ... h w")
        timesteps = self.ddim.set_timesteps(steps).tolist()
        active = {t for i, t in enumerate(timesteps) if start <= i / steps and (i + 1) / steps <= end}
        return ControlledUNet(model, self.controlnet, scale, active), cond

    def _check_sampling(self, negative_prompt, steps, guidance, seed, eta, control_scale) -> tuple:
        """The arguments both `generate`s share, checked before any work (`minianimate.checks`, as the CLI's):
        (steps, guidance, seed, eta, control_scale) as Python numbers."""
        checks.text("negative_prompt", negative_prompt)
        return (checks.whole("steps", steps, 1, self.ddim.num_train_timesteps), checks.finite("guidance", guidance, 0),
                checks.whole("seed", seed, 0), checks.probability("eta", eta),  # eta: DDIM 0 .. DDPM-like 1
                checks.finite("control_scale", control_scale, 0))

    @torch.no_grad()
    def denoise(self, model, shape: tuple, prompts: list[str], negative_prompt: str = "", steps: int = 25,
                guidance: float = 7.5, seed: int = 0, eta: float = 0.0, latents=None, progress: bool = False,
                first_step: int = 0, known=None):
        """The one generation path (images, clips, context windows): prompts -> latents of `shape`. prompts: a
        list of strings, or their embeddings (B, L, D) / one per frame (B*F, L, D) (prompt travel).
        first_step, known: `sampling.sample`'s (a start part of the way, frames held: SDEdit, inpainting)."""
        cond = self.text_encoder.encode_prompt(prompts) if isinstance(prompts, list) else prompts
        uncond = self.text_encoder.encode_prompt([negative_prompt] * len(cond))
        with autocast(self.device, self.dtype):
            return sample(model, shape, cond, uncond, self.ddim, steps, guidance, seed, eta, latents, progress,
                          first_step, known)

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents (B, C, h, w) -> uint8 (B, H, W, 3); clips (B, C, F, h, w) -> (B, F, H, W, 3), frame by frame."""
        if latents.ndim == 4:
            return to_uint8(decode(self.vae, latents, self.vae_batch))
        frames = to_uint8(decode(self.vae, rearrange(latents, "b c f h w -> (b f) c h w"), self.vae_batch))
        return rearrange(frames, "(b f) h w c -> b f h w c", b=latents.shape[0])

    def generate(self, prompts, negative_prompt: str = "", steps: int = 25, guidance: float = 7.5, seed: int = 0,
                 eta: float = 0.0, height: int | None = None, width: int | None = None, control=None,
                 control_scale: float = 1.0, progress: bool = False) -> np.ndarray:
        """Text -> images: a list of prompts -> uint8 (B, H, W, 3). The same seed gives the same images.
        control: a condition image (H, W, 3), or one per prompt, for `self.controlnet` (see `controlled`)."""
        prompts = checks.prompts("prompts", prompts)
        steps, guidance, seed, eta, control_scale = self._check_sampling(negative_prompt, steps, guidance, seed, eta,
                                                                         control_scale)
        shape = self.latent_shape(len(prompts), height, width)
        model = self.unet
        if control is not None:
            steered, cond = self.controlled(self.unet, control, shape, control_scale, steps=steps)
            model = partial(steered, control=cond)
        return self.decode(self.denoise(model, shape, prompts, negative_prompt, steps, guidance, seed, eta,
                                        progress=progress))


DEFAULT_CONTEXT = 16  # frames per context window of a longer clip: the length AnimateDiff's motion modules train on


class AnimationPipeline(ImagePipeline):
    """generate(prompt) -> uint8 video (F, H, W, 3); a list of prompts -> (B, F, H, W, 3)."""

    def __init__(self, vae, text_encoder: TextEncoder, unet: MotionUNet, ddim: DDIM | None = None,
                 adapter: LoRA | None = None, device=None, dtype=None):
        super().__init__(vae, text_encoder, unet, ddim, device, dtype)
        self.adapter, self.model, self._image_lora = adapter, "base", None
        self.motion_loras: dict[str, LoRA] = {}
        self.motion_lora_folder: Path | None = None  # where names like 'zoom-in' are looked up
        self.noise_share = 0.0  # default of `generate`: the noise prior the motion module was trained with
        self.planner, self.candidates = None, 1  # path planning (`context.planned`) and `generate(candidates=)`'s default
        self._base_state = {k: v.cpu().clone() for k, v in unet.spatial_state_dict().items()}

    @classmethod
    def from_pretrained(cls, folder, motion_module, personalized=None, image_lora=None, adapter=None,
                        motion_loras=(), heads: int | None = None, device="auto", dtype=None) -> "AnimationPipeline":
        """Stable Diffusion 1.5 (a diffusers folder, `minianimate.pretrained`) + a motion module file or
        MotionAdapter folder, then in the authors' load order: `personalized` (a DreamBooth UNet folder or an
        image LoRA file, official or kohya), `image_lora` (a LoRA file on top), the domain `adapter` (a LoRA
        file; its scale is `generate(adapter_scale=...)`), `motion_loras` (files, `path[:scale]`)."""
        check_sd_folder(folder)  # every file named here exists, before any loads
        for name, path in [("motion_module", motion_module), ("personalized", personalized),
                           ("image_lora", image_lora), ("adapter", adapter),
                           *(("motion_loras", p) for p, _ in parse_motion_loras(motion_loras))]:
            if path is not None and not Path(path).exists():
                raise FileNotFoundError(f"{name} {path} not found; download it (README: real weights) or leave it out")
        if heads is not None:
            checks.whole("heads", heads)
        pick_device(device), pick_dtype(dtype)  # a device this machine has, a dtype autocast knows
        vae, text_encoder, unet, ddim = load_sd_folder(folder)
        model = MotionUNet.from_unet(unet, motion_config_of(motion_module, heads)).eval().requires_grad_(False)
        load_motion_module(model, motion_module)
        pipe = cls(vae, text_encoder, model, ddim, device=device, dtype=dtype)
        if personalized is not None:
            pipe.load_personalized(personalized)
        if image_lora is not None:
            LoRA.load(model, image_lora, name="image_lora").merge()
        if adapter is not None:
            pipe.adapter = LoRA.load(model, adapter, name="domain_adapter", scale=0.0).requires_grad_(False)
        for spec in motion_loras:
            pipe.load_motion_lora(*parse_motion_lora(spec))
        return pipe

    def save_pretrained(self, folder) -> Path:
        """A diffusers `AnimateDiffPipeline` folder (`minianimate.pretrained.save_pipeline`)."""
        return save_pipeline(self, folder)

    # --- what is plugged in -----------------------------------------------------------------------------
    def load_personalized(self, model="base", name: str | None = None) -> "AnimationPipeline":
        """Swap the spatial weights for a personalized model of the same base; the motion modules stay.

        model: 'base', a diffusers UNet folder (DreamBooth) or an image LoRA file (ours / official / kohya),
        merged into the base weights."""
        if self._image_lora is not None:
            self._image_lora.detach()
            self._image_lora = None
        path = None if model == "base" else Path(model)
        if path is None:
            self.unet.load_spatial_state_dict(self._base_state)
        elif path.is_dir():
            self.unet.load_spatial_state_dict(UNet.from_pretrained(path).state_dict())
        elif path.is_file():
            self.unet.load_spatial_state_dict(self._base_state)
            self._image_lora = LoRA.load(self.unet, path, name=path.stem).merge()
        else:
            raise FileNotFoundError(f"personalized model {model!r} not found: use 'base', a diffusers UNet folder "
                                    f"or an image LoRA file")
        self.model = name or str(model)
        return self

    def load_motion_lora(self, name_or_path: str, scale: float = 1.0) -> LoRA:
        """Attach a MotionLoRA: a file in our or the official format, or a name in `motion_lora_folder`."""
        if name_or_path not in self.motion_loras:
            path = Path(name_or_path)
            if not path.suffix and self.motion_lora_folder is not None:
                path = self.motion_lora_folder / f"{name_or_path}.safetensors"
            if not path.is_file():
                folder = self.motion_lora_folder
                known = sorted(p.stem for p in folder.glob("*.safetensors")) if folder else []
                raise FileNotFoundError(f"MotionLoRA {name_or_path!r} not found; known names: {known}, or give a "
                                        f".safetensors path")
            self.motion_loras[name_or_path] = LoRA.load(self.unet, path, name=path.stem).requires_grad_(False)
        lora = self.motion_loras[name_or_path]
        lora.scale = scale
        return lora

    # --- generation -----------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompt, negative_prompt: str = "", frames: int = 16, steps: int = 25, guidance: float = 7.5,
                 seed: int = 0, adapter_scale: float = 0.0, motion_loras=(), eta: float = 0.0,
                 height: int | None = None, width: int | None = None, context: int | None = None,
                 overlap: int | None = None, fuse: str = "pyramid", context_schedule: str = "continued",
                 context_strength: float = 0.84, free_noise: bool = False,
                 noise_share: float | None = None, control=None, control_scale: float = 1.0,
                 control_start: float = 0.0, control_end: float = 1.0, free_init: int = 0,
                 free_init_filter: str = "butterworth", free_init_cutoff: float = 0.25,
                 free_init_temporal_cutoff: float = 0.25, candidates: int | None = None,
                 progress: bool = True) -> np.ndarray:
        """Text -> video. prompt: a string (-> (F, H, W, 3)), a list (-> (B, F, H, W, 3)), uint8, or prompt travel
        {frame: prompt} (`minianimate.travel`: embeddings interpolated between keyframes) (-> (F, H, W, 3)).

        adapter_scale: the domain adapter's LoRA scale (1 draws the video domain's defects, 0 removes them).
        motion_loras: `name[:scale]` strings or (name, scale) pairs; loaded MotionLoRAs not listed are off.
        context, overlap: context windows (`minianimate.context`) of `context` frames overlapping by `overlap`, for
        clips longer than the motion module's training length (default: 16 frames, `DEFAULT_CONTEXT`, for a clip
        longer than that; one window otherwise). context_schedule: 'continued' (windows denoised one after another,
        each continuing the one before from its last frame, noised `context_strength` of the way: one path;
        overlap default half the window), 'centred' (the same from the middle window outwards), or side by side,
        their predictions fused 'pyramid' or 'flat' (`fuse`), laid out 'uniform' or 'looped' (windows wrap around the
        end: a seamless loop; overlap default a quarter).
        free_noise: FreeNoise's noise (`context.free_noise`): every window starts from the first window's noise.
        noise_share: the fraction of the initial noise's variance the frames share (`frame_noise`); None:
        `self.noise_share`, the prior the motion module was trained with.
        control: per-frame control by `self.controlnet` (`controlled`): a video (F, H, W, 3), one condition per
        frame (or one per prompt), or one image (H, W, 3) for all; control_scale/_start/_end as diffusers has them.
        free_init: FreeInit iterations after the first pass (`minianimate.free_init`; 0: plain sampling), with
        its low-pass filter ('butterworth', 'gaussian', 'ideal') and spatial / temporal cut-offs in (0, 1].
        candidates: path planning of 'continued' / 'centred' clips (`context.planned`): each window drawn up to this
        many times until `self.planner` accepts it (None: `self.candidates`; 1, or no planner: none).
        """
        longest = self.unet.motion_config.max_frames  # every argument first, before any work (`minianimate.checks`)
        frames = checks.whole("frames", frames)
        if context is None and frames > DEFAULT_CONTEXT:
            context = min(DEFAULT_CONTEXT, longest)
        if frames > longest and context is None:
            raise ValueError(f"{frames} frames is longer than the motion module's positional encoding "
                             f"({longest}); use sliding context windows, e.g. context=16 (--context 16)")
        if isinstance(prompt, dict):
            checks.keyframes("prompt", prompt, frames)
        else:
            checks.prompts("prompt", prompt)
        steps, guidance, seed, eta, control_scale = self._check_sampling(negative_prompt, steps, guidance, seed, eta,
                                                                         control_scale)
        adapter_scale, motion_loras = checks.finite("adapter_scale", adapter_scale), parse_motion_loras(motion_loras)
        context = None if context is None else checks.whole("context", context)
        if context is not None and context > longest:
            raise ValueError(f"context {context} is longer than the motion module's positional encoding "
                             f"({longest} frames)")
        overlap = None if overlap is None else checks.whole("overlap", overlap, 0)
        if overlap is not None and (context is None or overlap >= context):
            raise ValueError(f"overlap {overlap} needs context, and must be smaller than it (context={context})")
        checks.choice("fuse", fuse, FUSE)
        checks.choice("context_schedule", context_schedule, SCHEDULES)
        context_strength = checks.finite("context_strength", context_strength, 0, 1, low_open=True)
        if not isinstance(free_noise, bool):
            raise TypeError(f"free_noise must be True or False, got {checks.show(free_noise)}")
        noise_share = None if noise_share is None else checks.probability("noise_share", noise_share)
        control_start, control_end = (checks.probability("control_start", control_start),
                                      checks.probability("control_end", control_end))
        if control_start > control_end:
            raise ValueError(f"control_start must be <= control_end, got {control_start} > {control_end}")
        free_init = checks.whole("free_init", free_init, 0)
        candidates = checks.whole("candidates", self.candidates if candidates is None else candidates)
        free_init_filter, free_init_cutoff, free_init_temporal_cutoff = check_options(
            free_init_filter, free_init_cutoff, free_init_temporal_cutoff)
        single = isinstance(prompt, (str, dict))
        prompts = travel_context(self.text_encoder, prompt, frames) if isinstance(prompt, dict) else (
            [prompt] if single else list(prompt))
        batch = 1 if isinstance(prompt, dict) else len(prompts)
        self._set_loras(adapter_scale, motion_loras)
        shape = self.latent_shape(batch, height, width, frames)
        model, cond = self.unet, None
        if control is not None:  # inside the windows: each window gets its frames' conditions
            model, cond = self.controlled(model, control, shape, control_scale, control_start, control_end, steps)
        continued = context is not None and context < frames and context_schedule in ONE_AFTER_ANOTHER
        if overlap is None and context is not None:
            overlap = context // 2 if context_schedule in ONE_AFTER_ANOTHER else context // 4
        if context is not None and not continued:
            model = ContextWindows(model, context, overlap, fuse, context_schedule)
        kwargs = {} if cond is None else {"control": cond}
        share = self.noise_share if noise_share is None else noise_share
        generator = torch.Generator().manual_seed(seed)
        noise = frame_noise(shape, generator, share) if share or free_init or continued or free_noise else None
        if free_noise and context is not None:
            noise = free_noise_of(noise, context, overlap, generator)
        embeddings = self.text_encoder.encode_prompt(prompts) if isinstance(prompts, list) else prompts

        def sample_window(idx, latents, first_step, known):  # the frames `idx` of the clip, for continue_windows
            window_context, window_kwargs = window_inputs(idx, batch, frames, embeddings, kwargs)
            return self.denoise(partial(model, **window_kwargs), (*shape[:2], len(idx), *shape[3:]), window_context,
                                negative_prompt, steps, guidance, seed, eta, latents, progress, first_step, known)

        plan = None if candidates == 1 or self.planner is None or isinstance(prompt, dict) else planned(
            self.planner, self.decode, prompts, frames, candidates, lambda size: frame_noise(size, generator, share))

        def one_pass(start):
            if continued:
                return continue_windows(sample_window, start, self.ddim, steps, context, overlap, context_strength,
                                        context_schedule, plan)
            return self.denoise(partial(model, **kwargs), shape, embeddings, negative_prompt, steps, guidance, seed,
                                eta, start, progress)

        latents = one_pass(noise)
        if free_init:
            mask, generator = lowpass(shape, free_init_filter, free_init_cutoff, free_init_temporal_cutoff), \
                torch.Generator().manual_seed(seed + 1)
            for _ in range(free_init):
                latents = one_pass(reinitialize(latents, noise, self.ddim, generator, mask))
        video = self.decode(latents)
        return video[0] if single else video

    def _set_loras(self, adapter_scale: float, motion_loras) -> None:
        if self.adapter is not None:
            self.adapter.scale = adapter_scale
            self.adapter.enabled = adapter_scale != 0
        elif adapter_scale:
            raise ValueError(f"adapter_scale={adapter_scale} but no domain adapter is loaded")
        wanted = dict(parse_motion_lora(spec) for spec in motion_loras)
        for name, scale in wanted.items():
            self.load_motion_lora(name, scale).enabled = True
        for name, lora in self.motion_loras.items():
            if name not in wanted:
                lora.enabled = False
