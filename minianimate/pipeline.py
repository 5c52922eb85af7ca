"""The animation pipeline: text encoder + VAE + inflated UNet (`MotionUNet`) + DDIM -> a uint8 video.

Plug and play, as in the paper: the motion module is trained once on the base model; loading a
personalized model swaps only the spatial weights and keeps the motion modules. Load order (the
authors'): motion module -> personalized (DreamBooth) weights -> image LoRA -> domain adapter ->
MotionLoRAs. The domain adapter and MotionLoRAs stay as LoRA hooks, so their scales change per call.

    pipe = AnimationPipeline.from_pretrained(model="pastel")
    video = pipe.generate("a red circle moving left", frames=16, seed=0)   # uint8 (16, 64, 64, 3)
"""
from pathlib import Path

import numpy as np
import torch

from minianimate import t2i
from minianimate.context import ContextWindows
from minianimate.ddim import DDIM
from minianimate.inflation import MotionUNet
from minianimate.lora import LoRA
from minianimate.sampling import sample
from minianimate.unet import UNet
from minianimate.vae import decode, to_uint8

SPATIAL_FACTOR = 16  # pixels per latent pixel (VAE: 4) times the UNet's two downsamplings (4)


def parse_motion_lora(spec) -> tuple[str, float]:
    """`zoom-in`, `zoom-in:0.8`, `path/to/file.safetensors:0.5` or (name, scale) -> (name, scale)."""
    if isinstance(spec, (tuple, list)):
        return str(spec[0]), float(spec[1])
    name, _, scale = str(spec).rpartition(":") if ":" in str(spec) else (spec, "", "1")
    try:
        return name, float(scale)
    except ValueError:
        raise ValueError(f"bad MotionLoRA spec {spec!r}: expected NAME_OR_PATH[:SCALE], e.g. zoom-in:0.8") from None


class AnimationPipeline:
    """generate(prompt) -> uint8 video (F, H, W, 3); a list of prompts -> (B, F, H, W, 3)."""

    def __init__(self, vae, text_encoder, unet: MotionUNet, ddim: DDIM | None = None, adapter: LoRA | None = None,
                 root=t2i.CHECKPOINTS):
        self.vae, self.text_encoder, self.unet = vae, text_encoder, unet
        self.ddim = ddim or DDIM(**t2i.TOY_SCHEDULE)
        self.adapter, self.root = adapter, Path(root)
        self.model, self._image_lora = "base", None
        self.motion_loras: dict[str, LoRA] = {}
        self._base_state = {k: v.clone() for k, v in unet.spatial_state_dict().items()}

    @classmethod
    def from_pretrained(cls, root=t2i.CHECKPOINTS, model: str = "base") -> "AnimationPipeline":
        """The shipped toy checkpoints: base UNet + motion module + domain adapter, then `model`
        ('base', 'outlined', 'pastel', a diffusers UNet folder or an image LoRA file)."""
        from minianimate.train_video import ADAPTER_FILE, load_motion_unet

        root = Path(root)
        if not (root / "motion_module.safetensors").exists():
            raise FileNotFoundError(f"no motion module in {root}; train one with `python -m minianimate train "
                                    f"motion --config configs/motion.yaml --out {root}`")
        unet = load_motion_unet(root).eval().requires_grad_(False)
        pipe = cls(t2i.load_vae(root), t2i.load_text_encoder(root), unet, root=root)
        if (root / ADAPTER_FILE).exists():
            pipe.adapter = LoRA.load(unet, root / ADAPTER_FILE, scale=0.0).requires_grad_(False)
        pipe.load_personalized(model)
        return pipe

    # --- what is plugged in -----------------------------------------------------------------------------
    def load_personalized(self, model: str = "base") -> "AnimationPipeline":
        """Swap the spatial weights for a personalized model of the same base; the motion modules stay.

        model: 'base', 'outlined' (shipped DreamBooth UNet), 'pastel' (shipped image LoRA), a diffusers UNet
        folder, or an image LoRA file (ours / official / kohya), merged into the base weights."""
        if self._image_lora is not None:
            self._image_lora.detach()
            self._image_lora = None
        shipped = {"outlined": self.root / "unet_outlined", "pastel": self.root / "lora_pastel.safetensors"}
        path = shipped.get(model, Path(model)) if model != "base" else None
        if path is None:
            self.unet.load_spatial_state_dict(self._base_state)
        elif path.is_dir():
            self.unet.load_spatial_state_dict(UNet.from_pretrained(path).state_dict())
        elif path.is_file():
            self.unet.load_spatial_state_dict(self._base_state)
            self._image_lora = LoRA.load(self.unet, path, name=Path(model).stem).merge()
        else:
            raise FileNotFoundError(f"personalized model {model!r} not found: use base, outlined, pastel, a "
                                    f"diffusers UNet folder or an image LoRA file")
        self.model = model
        return self

    def load_motion_lora(self, name_or_path: str, scale: float = 1.0) -> LoRA:
        """Attach a MotionLoRA (a shipped name such as 'zoom-in', or a file in our or the official format)."""
        if name_or_path not in self.motion_loras:
            path = Path(name_or_path)
            if not path.suffix:
                path = self.root / "motion_loras" / f"{name_or_path}.safetensors"
            if not path.is_file():
                shipped = sorted(p.stem for p in (self.root / "motion_loras").glob("*.safetensors"))
                raise FileNotFoundError(f"MotionLoRA {name_or_path!r} not found; shipped ones: {shipped}, or "
                                        f"give a .safetensors path")
            self.motion_loras[name_or_path] = LoRA.load(self.unet, path, name=path.stem).requires_grad_(False)
        lora = self.motion_loras[name_or_path]
        lora.scale = scale
        return lora

    # --- generation -----------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompt, negative_prompt: str = "", frames: int = 16, steps: int = 25, guidance: float = 7.5,
                 seed: int = 0, adapter_scale: float = 0.0, motion_loras=(), eta: float = 0.0, height: int = 64,
                 width: int = 64, context: int | None = None, overlap: int | None = None,
                 progress: bool = True) -> np.ndarray:
        """Text -> video. prompt: a string (-> (F, H, W, 3)) or a list (-> (B, F, H, W, 3)), uint8.

        adapter_scale: the domain adapter's LoRA scale (1 draws the video domain's watermark, 0 removes it).
        motion_loras: `name[:scale]` strings or (name, scale) pairs; loaded MotionLoRAs not listed are off.
        context, overlap: sliding context windows (`minianimate.context`) of `context` frames overlapping by
        `overlap` (default a quarter) for clips longer than the motion module's positional encoding.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if height % SPATIAL_FACTOR or width % SPATIAL_FACTOR:
            raise ValueError(f"height and width must be multiples of {SPATIAL_FACTOR} (VAE x4, UNet x4), got "
                             f"{height}x{width}; try {height // SPATIAL_FACTOR * SPATIAL_FACTOR or SPATIAL_FACTOR}x"
                             f"{width // SPATIAL_FACTOR * SPATIAL_FACTOR or SPATIAL_FACTOR}")
        longest = self.unet.motion_config.max_frames
        if frames > longest and (context is None or context > longest):
            raise ValueError(f"{frames} frames is longer than the motion module's positional encoding "
                             f"({longest}); use sliding context windows, e.g. context=16 (--context 16)")
        self._set_loras(adapter_scale, motion_loras)
        cond = self.text_encoder.encode_prompt(prompts)
        uncond = self.text_encoder.encode_prompt([negative_prompt] * len(prompts))
        model = self.unet
        if context is not None:
            model = ContextWindows(self.unet, context, context // 4 if overlap is None else overlap)
        shape = (len(prompts), 4, frames, height // 4, width // 4)
        latents = sample(model, shape, cond, uncond, self.ddim, steps, guidance, seed, eta, progress=progress)
        video = to_uint8(decode(self.vae, latents.transpose(1, 2).flatten(0, 1)))  # frame by frame
        video = video.reshape(len(prompts), frames, *video.shape[1:])
        return video[0] if isinstance(prompt, str) else video

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
