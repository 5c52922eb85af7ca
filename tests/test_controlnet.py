"""ControlNet: keys and outputs of diffusers' ControlNetModel, the UNet fed its residuals, from_unet, files,
per-frame control of clips."""
import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel

from minianimate import ControlNet, MotionUNet, UNet
from minianimate.controlnet import ControlledUNet

BASE = dict(block_out_channels=(16, 32), layers_per_block=1, attention_head_dim=2, cross_attention_dim=16,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), norm_num_groups=8)
CONFIGS = [
    dict(BASE, conditioning_embedding_out_channels=(8, 16)),  # factor 2
    dict(BASE, block_out_channels=(16, 32, 32), down_block_types=("CrossAttnDownBlock2D",) * 2 + ("DownBlock2D",),
         layers_per_block=2, conditioning_embedding_out_channels=(8, 8, 16)),  # factor 4 (the toy VAE's)
    dict(BASE, attention_head_dim=(2, 4), use_linear_projection=True, transformer_layers_per_block=2,
         conditioning_embedding_out_channels=(4, 8, 8, 16)),  # factor 8 (SD1.5's)
]
UNET_OF = {"up_block_types": None}


def randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def inputs(config, batch=2, size=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    factor = 2 ** (len(config["conditioning_embedding_out_channels"]) - 1)
    return (torch.randn(batch, 4, size, size, generator=g), torch.tensor([10, 700][:batch]),
            torch.randn(batch, 5, 16, generator=g), torch.rand(batch, 3, size * factor, size * factor, generator=g))


@pytest.mark.parametrize("config", CONFIGS)
def test_keys_and_outputs_match_diffusers_controlnet_model(config):
    reference = randomize(ControlNetModel(**config))
    ours = ControlNet(dict(reference.config))
    assert list(ours.state_dict()) == list(reference.state_dict())
    ours.load_state_dict(reference.state_dict())
    x, t, context, cond = inputs(config)
    with torch.no_grad():
        down, mid = ours(x, t, context, cond, scale=0.7)
        theirs = reference(x, t, context, cond, conditioning_scale=0.7, return_dict=False)
    assert len(down) == len(theirs[0])
    for a, b in zip(down, theirs[0]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
    torch.testing.assert_close(mid, theirs[1], rtol=0, atol=1e-4)


def test_the_unet_fed_our_residuals_equals_diffusers_unet_fed_diffusers_residuals():
    config = CONFIGS[1]
    unet_config = {k: v for k, v in config.items() if k != "conditioning_embedding_out_channels"}
    reference_unet = randomize(UNet2DConditionModel(**unet_config, up_block_types=(
        "UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")), seed=2)
    reference = randomize(ControlNetModel.from_unet(reference_unet, conditioning_embedding_out_channels=(8, 8, 16)))
    unet, controlnet = UNet.from_diffusers(reference_unet).eval(), ControlNet(dict(reference.config))
    controlnet.load_state_dict(reference.state_dict())
    x, t, context, cond = inputs(config)
    with torch.no_grad():
        down, mid = reference(x, t, context, cond, return_dict=False)
        expected = reference_unet(x, t, context, down_block_additional_residuals=down,
                                  mid_block_additional_residual=mid).sample
        got = ControlledUNet(unet, controlnet)(x, t, context, control=cond)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    assert (got - unet(x, t, context)).abs().max() > 1e-3, "the control did something"


def test_from_unet_copies_the_encoder_and_starts_as_no_control(tmp_path):
    torch.manual_seed(0)
    unet = randomize(UNet({**{k: v for k, v in CONFIGS[1].items() if k != "conditioning_embedding_out_channels"},
                           "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")}))
    controlnet = ControlNet.from_unet(unet, (8, 8, 16))
    assert torch.equal(controlnet.down_blocks[0].resnets[0].conv1.weight, unet.down_blocks[0].resnets[0].conv1.weight)
    x, t, context, cond = inputs(CONFIGS[1])
    with torch.no_grad():
        down, mid = controlnet(x, t, context, cond)
        assert all(not r.any() for r in down) and not mid.any(), "zero convs: no residual before training"
        assert torch.equal(ControlledUNet(unet, controlnet)(x, t, context, control=cond), unet(x, t, context))
    reference = ControlNetModel.from_unet(UNet2DConditionModel(**unet.config), conditioning_embedding_out_channels=(8, 8, 16))
    assert set(controlnet.state_dict()) == set(reference.state_dict())
    controlnet.save_pretrained(tmp_path / "cn")
    again = ControlNetModel.from_pretrained(tmp_path / "cn")  # diffusers reads our folder
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in controlnet.state_dict().items())
    assert all(torch.equal(v, ControlNet.from_pretrained(tmp_path / "cn").state_dict()[k])
               for k, v in controlnet.state_dict().items())


def test_clips_get_one_condition_per_frame_exactly_as_frame_by_frame_images():
    config = CONFIGS[1]
    unet_config = {**{k: v for k, v in config.items() if k != "conditioning_embedding_out_channels"},
                   "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")}
    motion = randomize(MotionUNet(unet_config, dict(heads=2, max_frames=8)))
    controlnet = randomize(ControlNet.from_unet(motion, (8, 8, 16)), seed=3)
    g = torch.Generator().manual_seed(4)
    x, context, cond = torch.randn(1, 4, 3, 8, 8, generator=g), torch.randn(1, 5, 16, generator=g), torch.rand(
        1, 3, 3, 32, 32, generator=g)
    with torch.no_grad():
        down, mid = controlnet(x[0].transpose(0, 1), 500, context.expand(3, -1, -1), cond[0].transpose(0, 1))
        expected = motion(x, 500, context, down_block_additional_residuals=down, mid_block_additional_residual=mid)
        got = ControlledUNet(motion, controlnet)(x, 500, context, control=cond)
        same_image = ControlledUNet(motion, controlnet)(x, 500, context, control=cond[:, :, 0])
        per_frame_image = ControlledUNet(motion, controlnet)(x, 500, context, control=cond[:, :, :1].expand(-1, -1, 3, -1, -1))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(same_image, per_frame_image, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"the condition must be \(B=3, 3, 32, 32\)"):
        controlnet(x[0].transpose(0, 1), 500, context.expand(3, -1, -1), torch.rand(3, 3, 16, 16))


@pytest.fixture(scope="module")
def pipe():
    """The shipped toy VAE and text encoder around a tiny random MotionUNet, with a ControlNet of it."""
    from minianimate import AnimationPipeline
    from minianimate.toy.models import load_text_encoder, load_vae

    config = dict(sample_size=16, block_out_channels=(16, 32), layers_per_block=1, attention_head_dim=2,
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=64, norm_num_groups=8)
    torch.manual_seed(0)
    pipe = AnimationPipeline(load_vae(), load_text_encoder(), MotionUNet(config, dict(heads=2, max_frames=8)).eval())
    pipe.controlnet = ControlNet.from_unet(pipe.unet, (8, 8, 16)).eval()  # factor 4, the toy VAE's
    return pipe


def silhouettes(frames=6):
    video = torch.zeros(frames, 64, 64, 3, dtype=torch.uint8)
    for i in range(frames):
        video[i, 20:40, 5 + 6 * i:25 + 6 * i] = 255
    return video.numpy()


def test_generate_with_fresh_zero_convs_is_generate_without_control(pipe):
    kwargs = dict(frames=6, steps=2, seed=1, progress=False)
    plain = pipe.generate("a red circle moving right", **kwargs)
    assert (pipe.generate("a red circle moving right", control=silhouettes(), **kwargs) == plain).all()


def test_control_frames_follow_the_context_windows(pipe):
    import numpy as np

    controlnet = pipe.controlnet
    pipe.controlnet = randomize(ControlNet.from_unet(pipe.unet, (8, 8, 16)), seed=5)
    try:
        kwargs = dict(frames=6, steps=2, seed=1, progress=False, control=silhouettes())
        whole = pipe.generate("a red circle moving right", **kwargs)
        windowed = pipe.generate("a red circle moving right", context=6, **kwargs)  # one window: the same call
        assert (whole == windowed).all()
        sliding = pipe.generate("a red circle moving right", context=4, overlap=2, **kwargs)
        assert sliding.shape == whole.shape
        late = pipe.generate("a red circle moving right", control_start=0.5, **kwargs)  # control on step 2 only
        off = pipe.generate("a red circle moving right", control_scale=0.0, **kwargs)
        plain = pipe.generate("a red circle moving right", frames=6, steps=2, seed=1, progress=False)
        assert not (late == whole).all() and not (late == off).all()
        assert np.abs(off.astype(int) - plain.astype(int)).max() <= 1
    finally:
        pipe.controlnet = controlnet


def test_a_control_of_the_wrong_size_or_length_is_a_clear_error(pipe):
    with pytest.raises(ValueError, match=r"the control video has 6 frames for a clip of 4"):
        pipe.generate("a red circle", frames=4, steps=1, control=silhouettes(6), progress=False)
    with pytest.raises(ValueError, match=r"output size \(64, 64\), got \(6, 32, 32, 3\)"):
        pipe.generate("a red circle", frames=6, steps=1, control=silhouettes(6)[:, :32, :32], progress=False)
