"""The Python API checks its arguments as the command line does: a bad one is refused before any work, in one
sentence that names it, raised by minianimate's own check (never an error from deep inside torch or numpy)."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import minianimate
from minianimate import checks
from minianimate.controlnet import ControlNet
from minianimate.free_init import lowpass
from minianimate.lora import SPATIAL_ATTENTION, LoRA
from minianimate.motion_io import load_motion_module, save_motion_module
from minianimate.pipeline import AnimationPipeline, ImagePipeline
from minianimate.pretrained import NEEDED
from minianimate.stages import (diffusion_loss, train_controlnet, train_domain_adapter, train_motion_lora,
                                train_motion_module)
from minianimate.toy import cli, models
from minianimate.toy.text_encoder import ToyTextEncoder
from minianimate.trainer import TrainConfig
from minianimate.travel import frame_weights

PACKAGE = Path(minianimate.__file__).resolve().parent
NAN, INF = float("nan"), float("inf")
CFG = dict(steps=2, batch=2, warmup=1)


@pytest.fixture(scope="module")
def c(tmp_path_factory):
    """The shipped toy models (clip and image pipelines, a ControlNet), tiny latents and a Stable Diffusion folder
    of empty files (`from_pretrained` never gets to read them): what the calls need."""
    sd = tmp_path_factory.mktemp("sd")
    for sub, names in NEEDED.items():
        (sd / sub).mkdir()
        for name in names:
            (sd / sub / name).touch()
    pipe = models.load_pipeline("base")
    pipe.controlnet = models.load_controlnet()
    t2i = ImagePipeline(pipe.vae, pipe.text_encoder, models.load_unet("base"), models.toy_ddim())
    return SimpleNamespace(pipe=pipe, t2i=t2i, unet=t2i.unet, motion=pipe.unet, text=pipe.text_encoder,
                           ddim=models.toy_ddim(), images=torch.zeros(2, 4, 4, 4), clips=torch.zeros(2, 4, 3, 4, 4),
                           conditions=torch.zeros(2, 3, 16, 16), captions=["a red circle", "a blue square"],
                           mm=models.shipped("motion"), lora=models.shipped("adapter"), sd=sd)


@pytest.fixture
def no_work(monkeypatch, tmp_path):
    """Sampling, text encoding, reading a checkpoint or training fails the test: the arguments come first (and
    nothing a missing check lets through is written into the repository)."""
    monkeypatch.chdir(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("work began before the arguments were checked")

    for target, name in [("minianimate.pipeline", "sample"), ("minianimate.pipeline", "travel_context"),
                         ("minianimate.pipeline", "load_sd_folder"), ("minianimate.motion_io", "read_state_dict"),
                         ("minianimate.lora", "read_state_dict"), ("minianimate.stages", "fit")]:
        monkeypatch.setattr(f"{target}.{name}", refuse)
    monkeypatch.setattr(ToyTextEncoder, "encode_prompt", refuse)
    monkeypatch.setattr(ControlNet, "__init__", refuse)


def clip(c, prompt="a red circle", **kwargs):
    return c.pipe.generate(prompt, progress=False, **kwargs)


def image(c, prompts=("a red circle",), **kwargs):
    return c.t2i.generate(prompts, **kwargs)


def loss(c, **kwargs):
    args = dict(latents=c.images, captions=c.captions, ddim=c.ddim, generator=torch.Generator(), batch=2)
    return diffusion_loss(c.unet, c.text, **{**args, **kwargs})


def motion(c, cfg=None, unet=None, **kwargs):
    args = dict(clips=c.clips, captions=c.captions, ddim=c.ddim, cfg=cfg or TrainConfig(**CFG), run="run")
    return train_motion_module(unet or c.motion, c.text, **{**args, **kwargs})


def uint8(*shape):
    return np.zeros(shape, np.uint8)


# (call, exception, the argument its message names)
BAD = {
    # AnimationPipeline.generate
    "frames 0": (lambda c: clip(c, frames=0), ValueError, "frames"),
    "frames -3": (lambda c: clip(c, frames=-3), ValueError, "frames"),
    "frames 2.5": (lambda c: clip(c, frames=2.5), TypeError, "frames"),
    "frames True": (lambda c: clip(c, frames=True), TypeError, "frames"),
    "frames '16'": (lambda c: clip(c, frames="16"), TypeError, "frames"),
    "steps 0": (lambda c: clip(c, steps=0), ValueError, "steps"),
    "steps 1001": (lambda c: clip(c, steps=1001), ValueError, "steps"),
    "steps 2.0": (lambda c: clip(c, steps=2.0), TypeError, "steps"),
    "guidance nan": (lambda c: clip(c, guidance=NAN), ValueError, "guidance"),
    "guidance inf": (lambda c: clip(c, guidance=INF), ValueError, "guidance"),
    "guidance -1": (lambda c: clip(c, guidance=-1), ValueError, "guidance"),
    "guidance '7.5'": (lambda c: clip(c, guidance="7.5"), TypeError, "guidance"),
    "seed -1": (lambda c: clip(c, seed=-1), ValueError, "seed"),
    "seed 1.5": (lambda c: clip(c, seed=1.5), TypeError, "seed"),
    "eta 2": (lambda c: clip(c, eta=2), ValueError, "eta"),
    "eta nan": (lambda c: clip(c, eta=NAN), ValueError, "eta"),
    "negative_prompt None": (lambda c: clip(c, negative_prompt=None), TypeError, "negative_prompt"),
    "negative_prompt a list": (lambda c: clip(c, negative_prompt=["blurry"]), TypeError, "negative_prompt"),
    "prompt None": (lambda c: clip(c, None), TypeError, "prompt"),
    "prompt []": (lambda c: clip(c, []), ValueError, "prompt"),
    "prompt list with a number": (lambda c: clip(c, ["a red circle", 3]), TypeError, "prompt"),
    "prompt travel {}": (lambda c: clip(c, {}), ValueError, "prompt"),
    "travel keyframe past the clip": (lambda c: clip(c, {0: "a red circle", 8: "a blue circle"}, frames=8),
                                      ValueError, "prompt"),
    "travel keyframe -1": (lambda c: clip(c, {-1: "a red circle"}, frames=8), ValueError, "prompt"),
    "travel keyframe '0'": (lambda c: clip(c, {"0": "a red circle"}, frames=8), TypeError, "prompt"),
    "travel prompt 3": (lambda c: clip(c, {0: 3}, frames=8), TypeError, "prompt"),
    "height 0": (lambda c: clip(c, height=0), ValueError, "height"),
    "height -64": (lambda c: clip(c, height=-64), ValueError, "height"),
    "height 64.0": (lambda c: clip(c, height=64.0), TypeError, "height"),
    "width 70 (not a multiple)": (lambda c: clip(c, width=70), ValueError, "width"),
    "context 0": (lambda c: clip(c, context=0), ValueError, "context"),
    "context past the positional encoding": (lambda c: clip(c, context=33), ValueError, "context"),
    "overlap without context": (lambda c: clip(c, overlap=2), ValueError, "overlap"),
    "overlap = context": (lambda c: clip(c, context=8, overlap=8), ValueError, "overlap"),
    "overlap -1": (lambda c: clip(c, context=8, overlap=-1), ValueError, "overlap"),
    "fuse unknown": (lambda c: clip(c, context=8, fuse="mean"), ValueError, "fuse"),
    "context_schedule unknown": (lambda c: clip(c, context_schedule="spiral"), ValueError, "context_schedule"),
    "context_strength 0": (lambda c: clip(c, context_strength=0), ValueError, "context_strength"),
    "context_strength 1.5": (lambda c: clip(c, context_strength=1.5), ValueError, "context_strength"),
    "free_noise 'yes'": (lambda c: clip(c, free_noise="yes"), TypeError, "free_noise"),
    "adapter_scale nan": (lambda c: clip(c, adapter_scale=NAN), ValueError, "adapter_scale"),
    "adapter_scale '1'": (lambda c: clip(c, adapter_scale="1"), TypeError, "adapter_scale"),
    "motion_loras a string": (lambda c: clip(c, motion_loras="zoom-in"), TypeError, "motion_loras"),
    "motion_loras bad spec": (lambda c: clip(c, motion_loras=["zoom-in:fast"]), ValueError, "motion_loras"),
    "motion_loras scale inf": (lambda c: clip(c, motion_loras=[("zoom-in", INF)]), ValueError, "motion_loras"),
    "motion_loras scale nan": (lambda c: clip(c, motion_loras=["zoom-in:nan"]), ValueError, "motion_loras"),
    "motion_loras not a pair": (lambda c: clip(c, motion_loras=[("zoom-in",)]), ValueError, "motion_loras"),
    "noise_share 1.5": (lambda c: clip(c, noise_share=1.5), ValueError, "noise_share"),
    "noise_share nan": (lambda c: clip(c, noise_share=NAN), ValueError, "noise_share"),
    "control_scale -1": (lambda c: clip(c, control_scale=-1), ValueError, "control_scale"),
    "control_start 1.5": (lambda c: clip(c, control_start=1.5), ValueError, "control_start"),
    "control_start after control_end": (lambda c: clip(c, control_start=0.8, control_end=0.2), ValueError,
                                        "control_end"),
    "control video of the wrong length": (lambda c: clip(c, frames=4, control=uint8(6, 64, 64, 3)), ValueError,
                                          "control"),
    "control of the wrong size": (lambda c: clip(c, frames=4, control=uint8(4, 32, 32, 3)), ValueError, "control"),
    "control not uint8": (lambda c: clip(c, frames=4, control=np.zeros((4, 64, 64, 3))), ValueError, "control"),
    "free_init -1": (lambda c: clip(c, free_init=-1), ValueError, "free_init"),
    "free_init 1.5": (lambda c: clip(c, free_init=1.5), TypeError, "free_init"),
    "free_init_filter unknown": (lambda c: clip(c, free_init=1, free_init_filter="box"), ValueError,
                                 "free_init_filter"),
    "free_init_cutoff 0": (lambda c: clip(c, free_init=1, free_init_cutoff=0), ValueError, "free_init_cutoff"),
    "free_init_cutoff 1.5": (lambda c: clip(c, free_init_cutoff=1.5), ValueError, "free_init_cutoff"),
    "free_init_temporal_cutoff nan": (lambda c: clip(c, free_init_temporal_cutoff=NAN), ValueError,
                                      "free_init_temporal_cutoff"),
    # ImagePipeline.generate
    "image prompts []": (lambda c: image(c, []), ValueError, "prompts"),
    "image prompts None": (lambda c: image(c, None), TypeError, "prompts"),
    "image steps 0": (lambda c: image(c, steps=0), ValueError, "steps"),
    "image guidance nan": (lambda c: image(c, guidance=NAN), ValueError, "guidance"),
    "image width 0": (lambda c: image(c, width=0), ValueError, "width"),
    "image eta -0.5": (lambda c: image(c, eta=-0.5), ValueError, "eta"),
    "image control_scale inf": (lambda c: image(c, control_scale=INF), ValueError, "control_scale"),
    # AnimationPipeline.from_pretrained
    "from_pretrained incomplete folder": (lambda c: AnimationPipeline.from_pretrained("sd", c.mm), FileNotFoundError,
                                          "folder"),
    "from_pretrained missing motion_module": (lambda c: AnimationPipeline.from_pretrained(c.sd, "nope.ckpt"),
                                              FileNotFoundError, "motion_module"),
    "from_pretrained heads 0": (lambda c: AnimationPipeline.from_pretrained(c.sd, c.mm, heads=0), ValueError,
                                "heads"),
    "from_pretrained motion_loras a string": (lambda c: AnimationPipeline.from_pretrained(
        c.sd, c.mm, motion_loras="zoom.safetensors"), TypeError, "motion_loras"),
    "from_pretrained missing MotionLoRA": (lambda c: AnimationPipeline.from_pretrained(
        c.sd, c.mm, motion_loras=["nope.safetensors:0.5"]), FileNotFoundError, "motion_loras"),
    "from_pretrained dtype float64": (lambda c: AnimationPipeline.from_pretrained(c.sd, c.mm, dtype="float64"),
                                      ValueError, "dtype"),
    # motion-module files
    "load_motion_module format unknown": (lambda c: load_motion_module(c.motion, c.mm, format="kohya"), ValueError,
                                          "format"),
    "load_motion_module into an image UNet": (lambda c: load_motion_module(c.unet, c.mm), TypeError, "model"),
    "save_motion_module format unknown": (lambda c: save_motion_module(c.motion, "mm.pt", format="ckpt"),
                                          ValueError, "format"),
    "save_motion_module of an image UNet": (lambda c: save_motion_module(c.unet, "mm.ckpt"), TypeError, "model"),
    # LoRA
    "LoRA.load format unknown": (lambda c: LoRA.load(c.unet, c.lora, format="peft"), ValueError, "format"),
    "LoRA.load scale nan": (lambda c: LoRA.load(c.unet, c.lora, scale=NAN), ValueError, "scale"),
    "LoRA.load scale '1'": (lambda c: LoRA.load(c.unet, c.lora, scale="1"), TypeError, "scale"),
    "LoRA.load name 3": (lambda c: LoRA.load(c.unet, c.lora, name=3), TypeError, "name"),
    "LoRA.inject rank 0": (lambda c: LoRA.inject(c.unet, SPATIAL_ATTENTION, rank=0), ValueError, "rank"),
    "LoRA.inject alpha -1": (lambda c: LoRA.inject(c.unet, SPATIAL_ATTENTION, alpha=-1.0), ValueError, "alpha"),
    # diffusion_loss
    "loss latents 3-d": (lambda c: loss(c, latents=torch.zeros(2, 4, 4)), ValueError, "latents"),
    "loss latents a numpy array": (lambda c: loss(c, latents=np.zeros((2, 4, 4, 4))), TypeError, "latents"),
    "loss latents empty": (lambda c: loss(c, latents=torch.zeros(0, 4, 4, 4), captions=[]), ValueError, "latents"),
    "loss one caption for two latents": (lambda c: loss(c, captions=["a red circle"]), ValueError, "captions"),
    "loss captions a string": (lambda c: loss(c, captions="a red circle"), TypeError, "captions"),
    "loss captions numbers": (lambda c: loss(c, captions=[1, 2]), TypeError, "captions"),
    "loss batch 0": (lambda c: loss(c, batch=0), ValueError, "batch"),
    "loss text_dropout 1.5": (lambda c: loss(c, text_dropout=1.5), ValueError, "text_dropout"),
    "loss offset_noise nan": (lambda c: loss(c, offset_noise=NAN), ValueError, "offset_noise"),
    "loss noise_share -0.1": (lambda c: loss(c, noise_share=-0.1), ValueError, "noise_share"),
    "loss weighting 'v'": (lambda c: loss(c, weighting="v"), ValueError, "weighting"),
    "loss conditions for 3 latents": (lambda c: loss(c, conditions=torch.zeros(3, 3, 16, 16)), ValueError,
                                      "conditions"),
    "loss conditions 3-d": (lambda c: loss(c, conditions=torch.zeros(2, 16, 16)), ValueError, "conditions"),
    # the training stages
    "cfg steps 0": (lambda c: motion(c, TrainConfig(**{**CFG, "steps": 0})), ValueError, "steps"),
    "cfg batch 0": (lambda c: motion(c, TrainConfig(**{**CFG, "batch": 0})), ValueError, "batch"),
    "cfg lr 0": (lambda c: motion(c, TrainConfig(**CFG, lr=0.0)), ValueError, "lr"),
    "cfg lr nan": (lambda c: motion(c, TrainConfig(**CFG, lr=NAN)), ValueError, "lr"),
    "cfg lr '1e-3'": (lambda c: motion(c, TrainConfig(**CFG, lr="1e-3")), ValueError, "lr"),
    "cfg ema 1": (lambda c: motion(c, TrainConfig(**CFG, ema=1.0)), ValueError, "ema"),
    "cfg warmup -1": (lambda c: motion(c, TrainConfig(**{**CFG, "warmup": -1})), ValueError, "warmup"),
    "cfg decay unknown": (lambda c: motion(c, TrainConfig(**CFG, decay="linear")), ValueError, "decay"),
    "cfg dtype unknown": (lambda c: motion(c, TrainConfig(**CFG, dtype="float64")), ValueError, "dtype"),
    "cfg a dict": (lambda c: motion(c, CFG), TypeError, "cfg"),
    "motion stage on an image UNet": (lambda c: motion(c, unet=c.unet), TypeError, "unet"),
    "motion stage on images": (lambda c: motion(c, clips=c.images), ValueError, "clips"),
    "motion stage one caption short": (lambda c: motion(c, captions=c.captions[:1]), ValueError, "captions"),
    "adapter stage on clips": (lambda c: train_domain_adapter(c.unet, c.text, c.clips, c.captions, c.ddim,
                                                              TrainConfig(**CFG), "run"), ValueError, "frames"),
    "adapter stage rank 0": (lambda c: train_domain_adapter(c.unet, c.text, c.images, c.captions, c.ddim,
                                                            TrainConfig(**CFG), "run", rank=0), ValueError, "rank"),
    "MotionLoRA stage rank 0": (lambda c: train_motion_lora(c.motion, c.text, c.clips, c.captions, c.ddim,
                                                            TrainConfig(**CFG), "run", rank=0), ValueError, "rank"),
    "MotionLoRA stage name None": (lambda c: train_motion_lora(c.motion, c.text, c.clips, c.captions, c.ddim,
                                                               TrainConfig(**CFG), "run", name=None), TypeError,
                                   "name"),
    "ControlNet stage one condition short": (lambda c: train_controlnet(
        c.unet, None, c.text, c.images, c.captions, c.conditions[:1], c.ddim, TrainConfig(**CFG), "run"),
        ValueError, "conditions"),
    # ControlNet.from_unet
    "ControlNet channels ()": (lambda c: ControlNet.from_unet(c.unet, ()), ValueError,
                               "conditioning_embedding_out_channels"),
    "ControlNet channel 0": (lambda c: ControlNet.from_unet(c.unet, (16, 0)), ValueError,
                             "conditioning_embedding_out_channels[1]"),
    "ControlNet channels 16": (lambda c: ControlNet.from_unet(c.unet, 16), TypeError,
                               "conditioning_embedding_out_channels"),
    "ControlNet from a dict": (lambda c: ControlNet.from_unet(dict(c.unet.config)), TypeError, "unet"),
    # the travel and FreeInit pieces on their own
    "frame_weights keyframe past the clip": (lambda c: frame_weights({0: "a", 9: "b"}, 8), ValueError, "keyframes"),
    "frame_weights frames 0": (lambda c: frame_weights({0: "a"}, 0), ValueError, "frames"),
    "lowpass filter unknown": (lambda c: lowpass((8, 4, 4), "box"), ValueError, "free_init_filter"),
    "lowpass cutoff nan": (lambda c: lowpass((8, 4, 4), cutoff=NAN), ValueError, "free_init_cutoff"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_argument_is_refused_by_minianimate_before_any_work_naming_it(case, c, no_work):
    call, error, name = BAD[case]
    with pytest.raises(error) as caught:
        call(c)
    message = str(caught.value)
    assert name in message and "\n" not in message, message
    where = Path(caught.traceback[-1].path).resolve()
    assert where.is_relative_to(PACKAGE), f"raised in {where}, not by minianimate's own check"


CLI = ["generate", "--prompt", "a red circle", "--out", "clip.gif"]
SAME = {"frames 0": ("frames", "0", {}), "frames -3": ("frames", "-3", {}), "steps 0": ("steps", "0", {}),
        "steps 1001": ("steps", "1001", {}), "guidance nan": ("guidance", "nan", {}),
        "guidance inf": ("guidance", "inf", {}), "guidance -1": ("guidance", "-1", {}), "seed -1": ("seed", "-1", {}),
        "adapter-scale nan": ("adapter_scale", "nan", {}), "context 0": ("context", "0", {}),
        "overlap -1": ("overlap", "-1", {"context": 8}), "control-scale -1": ("control_scale", "-1", {})}


@pytest.mark.parametrize("case", SAME)
def test_the_command_line_and_the_api_say_the_same(case, c, no_work):
    """`--frames 0` -> `--frames: must be >= 1, got 0`; `generate(frames=0)` -> `frames must be >= 1, got 0`."""
    name, text, extra = SAME[case]
    option = "--" + name.replace("_", "-")
    argv = CLI + [option, text] + [a for k, v in extra.items() for a in (f"--{k}", str(v))]
    with pytest.raises(cli.UsageError) as line:
        cli.build_parser().parse_args(argv)
    value = float(text) if name in ("guidance", "adapter_scale", "control_scale") else int(text)
    with pytest.raises(ValueError) as api:
        clip(c, **{name: value, **extra})
    assert str(line.value) == f"{option}: " + str(api.value).removeprefix(f"{name} ")


def test_numpy_numbers_are_fine_and_come_back_as_python_ones():
    assert checks.whole("frames", np.int64(16)) == 16 and type(checks.whole("frames", np.int32(3))) is int
    assert checks.finite("guidance", np.float32(7.5), low=0) == 7.5
    assert checks.prompts("prompt", "a red circle") == ["a red circle"]
    assert checks.strings("captions", ("a", "b"), 2) == ["a", "b"]


def test_a_numpy_frame_count_generates(c):
    video = clip(c, frames=np.int64(2), steps=np.int64(1), seed=np.int64(0), guidance=np.float64(1.0))
    assert video.shape == (2, 64, 64, 3)
