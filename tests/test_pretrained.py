"""Stable Diffusion folders in, diffusers folders out: a tiny *random* SD-shaped set written here (CLIP text
model and tokenizer, an AutoencoderKL of factor 8, a small UNet), minianimate's pipeline against diffusers'
`AnimateDiffPipeline` on the same initial latents, both ways round."""
import pytest
import torch
from diffusers import AnimateDiffPipeline, AutoencoderKL, DDIMScheduler, MotionAdapter, UNet2DConditionModel
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPTokenizer

from minianimate import AnimationPipeline
from minianimate.pretrained import convert_motion_module, ddim_from_config, motion_config_of
from minianimate.toy.tiny_sd import SCHEDULER, write_random_motion_module, write_tiny_sd

PROMPT, FRAMES, STEPS, GUIDANCE = "a red circle moving left", 6, 4, 7.5


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return write_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


def initial_latents():
    return torch.randn(1, 4, FRAMES, 8, 8, generator=torch.Generator().manual_seed(3))


def ours(pipe):
    shape = pipe.latent_shape(1, None, None, FRAMES)
    return pipe.denoise(pipe.unet, shape, [PROMPT], "", STEPS, GUIDANCE, latents=initial_latents())


def theirs(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPT, negative_prompt="", num_frames=FRAMES, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                latents=initial_latents(), output_type="latent").frames


def test_a_minianimate_pipeline_saved_for_diffusers_generates_the_same_latents(sd, tmp_path):
    pipe = AnimationPipeline.from_pretrained(sd, write_random_motion_module(tmp_path / "mm", "diffusers"), device="cpu")
    assert pipe.factor == 8 and pipe.unet.motion_config.mid_block
    mine = ours(pipe)
    exported = pipe.save_pretrained(tmp_path / "export")
    reference = theirs(AnimateDiffPipeline.from_pretrained(exported, local_files_only=True))
    assert reference.shape == mine.shape == (1, 4, FRAMES, 8, 8)
    assert (reference - mine).abs().max() <= 1e-4
    assert (mine[:, :, 1:] - mine[:, :, :-1]).abs().mean() > 1e-3, "frames differ: the motion modules did act"


def test_official_files_in_diffusers_out_give_the_same_latents(sd, tmp_path):
    official = write_random_motion_module(tmp_path / "mm_tiny.ckpt", "official")
    mine = ours(AnimationPipeline.from_pretrained(sd, official, device="cpu"))
    converted = convert_motion_module(official, tmp_path / "adapter", to="diffusers", groups=8)
    adapter = MotionAdapter.from_pretrained(converted, local_files_only=True)
    scheduler = DDIMScheduler.from_pretrained(sd / "scheduler")
    reference = AnimateDiffPipeline(  # diffusers' own parts, from the SD folder and the converted adapter
        vae=AutoencoderKL.from_pretrained(sd / "vae"), text_encoder=CLIPTextModel.from_pretrained(sd / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(sd / "tokenizer"), unet=UNet2DConditionModel.from_pretrained(sd / "unet"),
        motion_adapter=adapter, scheduler=scheduler)
    assert (theirs(reference) - mine).abs().max() <= 1e-4
    back = convert_motion_module(converted, tmp_path / "again.safetensors", to="official")
    assert motion_config_of(converted) == motion_config_of(official, groups=8)
    assert set(torch.load(official)["state_dict"]) == set(load_file(back)), "and back to the official keys"


def test_a_missing_part_of_the_sd_folder_is_named_with_what_to_put_there(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(FileNotFoundError, match=r"missing unet/config.json, .*tokenizer/tokenizer_config.json.*put its unet/"):
        AnimationPipeline.from_pretrained(tmp_path, tmp_path / "mm.ckpt")


def test_the_scheduler_config_gives_diffusers_timesteps_and_refuses_what_ddim_lacks():
    for spacing in ("leading", "linspace", "trailing"):
        theirs_ = DDIMScheduler(**{**SCHEDULER, "timestep_spacing": spacing})
        theirs_.set_timesteps(25)
        mine = ddim_from_config(dict(theirs_.config))
        assert torch.equal(mine.set_timesteps(25), theirs_.timesteps)
    with pytest.raises(ValueError, match="prediction_type='v_prediction' \\(only 'epsilon'\\)"):
        ddim_from_config({**SCHEDULER, "prediction_type": "v_prediction"})
