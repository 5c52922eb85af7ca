"""minianimate: AnimateDiff in a few readable files. The public API, as diffusers exposes its models:

    from minianimate import UNet, MotionUNet, DDIM, AnimationPipeline, load_motion_module
"""
from minianimate.controlnet import ControlNet
from minianimate.ddim import DDIM
from minianimate.inflation import MotionConfig, MotionUNet
from minianimate.lora import LoRA
from minianimate.motion_io import load_motion_module, save_motion_module
from minianimate.motion_module import MotionModule
from minianimate.pipeline import AnimationPipeline, ImagePipeline
from minianimate.stages import diffusion_loss, train_domain_adapter, train_motion_lora, train_motion_module
from minianimate.trainer import Trainer, TrainConfig
from minianimate.unet import UNet

__all__ = ["AnimationPipeline", "ControlNet", "DDIM", "ImagePipeline", "LoRA", "MotionConfig", "MotionModule",
           "MotionUNet", "TrainConfig", "Trainer", "UNet", "diffusion_loss", "load_motion_module", "save_motion_module",
           "train_domain_adapter", "train_motion_lora", "train_motion_module"]
