"""The toy models and their shipped checkpoints: configs, file names and loaders (one place for all of them).

AnimateDiff starts from a frozen T2I latent diffusion model and personalized derivatives of it. Here that
base is trained on ShapeWorld images (16x16x4 latents), with two personalized models the motion module
never sees: `outlined` (DreamBooth-style full fine-tune) and `pastel` (a LoRA). One noise schedule (the
paper's `linear` betas) from the base to the motion stage.
"""
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import torch

from minianimate import checks
from minianimate.checkpoint import CheckpointError, describe_keys, read_state_dict
from minianimate.controlnet import ControlNet
from minianimate.ddim import DDIM
from minianimate.inflation import MotionUNet, is_motion_key
from minianimate.lora import LoRA
from minianimate.lora_formats import detect_lora_format
from minianimate.motion_io import load_motion_module
from minianimate.pipeline import AnimationPipeline, ImagePipeline, parse_motion_lora
from minianimate.toy.shapeworld import CAMERA_MOTIONS, MAX_HOLE, MAX_MARGIN
from minianimate.toy.inference import PLAN_CANDIDATES, plan_path
from minianimate.toy.text_encoder import ToyTextEncoder
from minianimate.unet import UNet

CHECKPOINTS = Path(__file__).resolve().parents[2] / "data_samples" / "checkpoints"
# 16x16x4 latents -> 8x8 -> 4x4; cross-attention to the text at 8x8 and 4x4 (4.1 M parameters).
TOY_UNET = dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64, 128), layers_per_block=1,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=4,
                cross_attention_dim=64, norm_num_groups=16)
TOY_SCHEDULE = dict(beta_schedule="linear", beta_start=0.00085, beta_end=0.012)
TOY_MOTION = dict(heads=4, max_frames=32)  # the toy's motion modules (v3-like: no mid-block module)
# The shipped files, relative to the checkpoint folder.
SHIP_DTYPE = torch.float16  # shipped weights are stored in fp16 (half the size) and loaded as fp32
FILES = {"vae": "vae", "text_encoder": "text_encoder", "base": "unet_base", "outlined": "unet_outlined",
         "pastel": "lora_pastel.safetensors", "adapter": "domain_adapter.safetensors",
         "motion": "motion_module.safetensors", "motion_config": "motion_module.json", "motion_loras": "motion_loras",
         "controlnet": "controlnet", "looks": "looks"}  # looks/: training-only variants of the base (never shipped)
PERSONALIZED = ("base", "outlined", "pastel")
# The command (after `python -m minianimate`) that makes each shipped file.
MAKES = {"vae": "train vae --config configs/vae.yaml", "text_encoder": "train base --config configs/base.yaml",
         "base": "train base --config configs/base.yaml", "outlined": "train outlined --config configs/outlined.yaml",
         "pastel": "train pastel --config configs/pastel.yaml",
         "adapter": "train adapter --config configs/adapter.yaml",
         "motion": "train motion --config configs/motion.yaml",
         "motion_config": "train motion --config configs/motion.yaml",
         "motion_loras": "train motion-lora --config configs/motion_lora_zoom_in.yaml",
         "controlnet": "train controlnet --config configs/controlnet.yaml",
         "looks": "train look --config configs/wide/look_ink.yaml"}

# The shipped files each training stage starts from (its result goes into the same folder).
NEEDS = {"vae": (), "base": ("vae",), **{s: ("vae", "text_encoder", "base") for s in
                                          ("outlined", "pastel", "look", "adapter", "motion", "controlnet")},
         "motion-lora": ("vae", "text_encoder", "base", "motion", "motion_config")}


def toy_ddim(beta_schedule: str = TOY_SCHEDULE["beta_schedule"]) -> DDIM:
    """The toy's DDIM; `beta_schedule` 'scaled_linear' only for a motion stage trained on it (the ablation)."""
    return DDIM(**{**TOY_SCHEDULE, "beta_schedule": beta_schedule})


def shipped(name: str, root=CHECKPOINTS) -> Path:
    """Path of a shipped file ('vae', 'base', 'motion', ... see FILES); if absent, an error naming the folder
    and the command that makes the file."""
    path = Path(root) / FILES[name]
    if not path.exists():
        where = f"{root} does not exist" if not Path(root).is_dir() else f"{path} is missing"
        raise FileNotFoundError(f"{where}: {remake(name, root)}")
    return path


def remake(name: str, root=CHECKPOINTS) -> str:
    """What to do about a missing or damaged shipped file: the command that makes it."""
    if Path(root) == CHECKPOINTS:
        return f"make it with `python -m minianimate {MAKES[name]}` (`make checkpoints` rebuilds them all)"
    return f"make it with `python -m minianimate {MAKES[name]} --out {root}`"


def read_shipped(name: str, root, load):
    """`load(path)` of a shipped file; a CheckpointError about the file also names the command that makes it."""
    try:
        return load(shipped(name, root))
    except CheckpointError as e:
        raise CheckpointError(f"{e}, or {remake(name, root)}") from None


def read_json(path) -> dict:
    """A JSON file, or a ValueError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def default_run(stage: str, config, cfg) -> Path:
    """The run folder of a stage: runs/<stage>-<config file's stem>, or for a config dataclass
    runs/<stage>-<hash of its fields but steps> (so two configs never share a folder, and --resume finds it)."""
    if isinstance(config, (str, Path)):
        return Path("runs") / f"{stage}-{Path(config).stem}"
    fields = json.dumps({k: v for k, v in asdict(cfg).items() if k != "steps"}, sort_keys=True)
    return Path("runs") / f"{stage}-{hashlib.sha1(fields.encode()).hexdigest()[:8]}"


def check_config(cfg, where="config"):
    """`cfg`, or a ValueError naming the first field of the wrong type or range (`minianimate.checks.config`,
    which the core's training stages call too)."""
    return checks.config(cfg, where)


def check_stage_inputs(stage: str, cfg, root, where, choices: dict) -> None:
    """Before a stage loads anything: each field of `choices` (name -> allowed values) has an allowed value,
    its `data` folder and `init` file exist, and the files it starts from are in `root`."""
    for field, allowed in {"camera": CAMERA_MOTIONS, **choices}.items():
        if hasattr(cfg, field) and getattr(cfg, field) not in allowed:
            raise ValueError(f"{where}: {field} must be one of {', '.join(allowed)}, got {getattr(cfg, field)!r}")
    for field, limit in (("margin", MAX_MARGIN), ("hole", MAX_HOLE)):  # the styled images' picks (`render_image`)
        if getattr(cfg, field, 0) >= limit:
            raise ValueError(f"{where}: {field} must be below {limit:.2f} px (no ShapeWorld image has more), "
                             f"got {getattr(cfg, field)!r}")
    if getattr(cfg, "zoom", None) is not None and cfg.zoom < 1:
        raise ValueError(f"{where}: zoom must be at least 1 (the most zoomed frame shows 1/zoom of the frame), "
                         f"got {cfg.zoom!r}")
    data, init = getattr(cfg, "data", None), getattr(cfg, "init", None)
    if data and not (Path(data) / "videos.csv").is_file():
        raise FileNotFoundError(f"{where}: data: {data} is not a WebVid-layout folder (no videos.csv); make one "
                                f"with `python -m minianimate make-data --out {data}`")
    if init and not (Path(root) / init).is_file():
        raise FileNotFoundError(f"{where}: init: {Path(root) / init} not found (a motion-module file, relative "
                                f"to the checkpoint folder)")
    starts_from = ("vae",) if getattr(cfg, "decoder_only", False) else ()  # the VAE's decoder phase
    starts_from += ("controlnet",) if getattr(cfg, "control", 0) else ()  # personalized, trained partly controlled
    for name in NEEDS[stage] + starts_from:
        shipped(name, root)


def check_personalized(model: str, root=CHECKPOINTS, lora_ok: bool = True) -> None:
    """A personalized model is 'base', 'outlined', 'pastel', a diffusers UNet folder or (lora_ok) an image LoRA
    file; an error saying which it is not (a MotionLoRA, a damaged file) otherwise."""
    if model in PERSONALIZED:
        if model != "base":
            shipped(model, root)
        return
    path = Path(model)
    if path.is_dir():
        if not ((path / "config.json").is_file() or (path / "unet" / "config.json").is_file()):
            raise FileNotFoundError(f"model {path}: not a diffusers UNet folder (no config.json)")
        return
    if not path.is_file() or not lora_ok:
        raise FileNotFoundError(f"model {model}: not 'base', 'outlined', 'pastel', a diffusers UNet folder"
                                + (" or an image LoRA file" if lora_ok else "")
                                + ("" if path.exists() else " (no such file or folder)"))
    state = read_state_dict(path)
    if any(map(is_motion_key, state)):
        raise ValueError(f"model {path}: holds motion-module weights, not an image model (a MotionLoRA? "
                         f"pass it as --motion-lora)")
    try:
        detect_lora_format(state)
    except ValueError as e:
        raise CheckpointError(f"model {path}: {e}") from None


def check_motion_lora(spec, root=CHECKPOINTS) -> tuple[str, float]:
    """A MotionLoRA `NAME_OR_PATH[:SCALE]` -> (name or path, scale): a name in root/motion_loras or a LoRA
    file whose keys target the motion modules (not an image LoRA, not a motion module)."""
    name, scale = parse_motion_lora(spec, "--motion-lora")  # a finite scale
    folder = Path(root) / FILES["motion_loras"]
    path = folder / f"{name}.safetensors" if not Path(name).suffix else Path(name)
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.safetensors"))
        raise FileNotFoundError(f"MotionLoRA {name}: not found (known in {folder}: {', '.join(known) or 'none'}; "
                                f"or give a .safetensors path)")
    state = read_state_dict(path)
    kind = describe_keys(state)
    if "LoRA" not in kind or not any(map(is_motion_key, state)):
        use = "an image LoRA goes to --model" if "LoRA" in kind else "a MotionLoRA holds LoRA weights"
        raise ValueError(f"MotionLoRA {path}: holds no LoRA on the motion modules (it looks like {kind}); {use}")
    return name, scale


def load_vae(root=CHECKPOINTS):
    """The toy VAE (a diffusers AutoencoderKL built from its config.json; weights through `read_state_dict`)."""
    from diffusers import AutoencoderKL

    folder = shipped("vae", root)
    vae = AutoencoderKL.from_config(read_json(folder / "config.json"))
    vae.load_state_dict(read_state_dict(folder, expected=vae.state_dict(), fix=remake("vae", root)))
    return vae.float().eval().requires_grad_(False)


def load_text_encoder(root=CHECKPOINTS) -> ToyTextEncoder:
    folder = shipped("text_encoder", root)
    encoder = ToyTextEncoder(**read_json(folder / "config.json"))
    encoder.load_state_dict(read_state_dict(folder / "model.safetensors", expected=encoder.state_dict(),
                                            fix=remake("text_encoder", root)))
    return encoder.eval().requires_grad_(False)


def load_unet(model: str = "base", root=CHECKPOINTS) -> UNet:
    """The image UNet of 'base', 'outlined', 'pastel' (base + LoRA merged) or a diffusers UNet folder."""
    if model in PERSONALIZED:
        unet = read_shipped("outlined" if model == "outlined" else "base", root, UNet.from_pretrained)
    else:
        unet = UNet.from_pretrained(model)
    unet.eval().requires_grad_(False)
    if model == "pastel":
        read_shipped("pastel", root, lambda path: LoRA.load(unet, path)).merge()
    return unet


def load_t2i(model: str = "base", root=CHECKPOINTS) -> ImagePipeline:
    """The shipped toy text-to-image model: `load_t2i('pastel').generate(['a red square'])` -> (1, 64, 64, 3)."""
    return ImagePipeline(load_vae(root), load_text_encoder(root), load_unet(model, root), toy_ddim())


def load_controlnet(root=CHECKPOINTS) -> ControlNet:
    """The shipped toy ControlNet (silhouette -> shape, trained on base-model images), a diffusers folder."""
    return read_shipped("controlnet", root, ControlNet.from_pretrained).eval().requires_grad_(False)


def load_motion_unet(root=CHECKPOINTS, motion=None) -> MotionUNet:
    """The base UNet inflated with motion modules: the shipped ones unless `motion` gives a config (dict of
    MotionConfig fields) for fresh ones."""
    unet = read_shipped("base", root, UNet.from_pretrained)
    if motion is not None:
        return MotionUNet.from_unet(unet, motion)
    config = read_json(shipped("motion_config", root))
    model = MotionUNet.from_unet(unet, config["motion"])
    read_shipped("motion", root, lambda path: load_motion_module(model, path, verbose=False))
    return model


def load_pipeline(model: str = "base", root=CHECKPOINTS, device=None, dtype=None) -> AnimationPipeline:
    """The shipped toy checkpoints as the paper plugs them: base UNet + motion module + domain adapter (scale 0
    until asked), then the personalized `model` ('base', 'outlined', 'pastel', a UNet folder or LoRA file). On the CPU
    unless `device` says otherwise ('auto', 'cuda', ...), with `dtype` autocast (`minianimate.device`)."""
    unet, config = load_motion_unet(root).eval().requires_grad_(False), read_json(shipped("motion_config", root))
    ddim = toy_ddim(config.get("beta_schedule", TOY_SCHEDULE["beta_schedule"]))  # the motion stage's schedule
    pipe = AnimationPipeline(load_vae(root), load_text_encoder(root), unet, ddim, device=device, dtype=dtype)
    pipe.motion_lora_folder = Path(root) / FILES["motion_loras"]
    pipe.noise_share = config.get("noise_share", 0.0)
    pipe.planner, pipe.candidates = plan_path, PLAN_CANDIDATES  # long clips' path planning (`toy.inference`)
    if (Path(root) / FILES["adapter"]).exists():
        pipe.adapter = read_shipped("adapter", root, lambda path: LoRA.load(unet, path, scale=0.0))
        pipe.adapter.requires_grad_(False)
    return load_personalized(pipe, model, root)


def load_personalized(pipe: AnimationPipeline, model: str, root=CHECKPOINTS) -> AnimationPipeline:
    """`pipe.load_personalized` with the shipped names ('outlined', 'pastel') resolved."""
    if model in ("outlined", "pastel"):
        return read_shipped(model, root, lambda path: pipe.load_personalized(path, name=model))
    return pipe.load_personalized(model, name=model)
