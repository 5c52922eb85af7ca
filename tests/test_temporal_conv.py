"""TemporalConv: the parameter-matched 1D temporal convolution the ablation puts where the motion module goes."""
import pytest
import torch

from minianimate.inflation import MotionConfig, MotionUNet
from minianimate.motion_io import save_motion_module
from minianimate.unet import UNet

CFG = dict(sample_size=16, block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=4,
           down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
           up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=24, norm_num_groups=8)
ATTENTION, CONV = MotionConfig(heads=2), MotionConfig(heads=2, temporal="conv")


def test_conv_modules_match_the_motion_modules_parameter_count():
    attention, conv = (sum(p.numel() for p in MotionUNet(CFG, mc).motion_parameters()) for mc in (ATTENTION, CONV))
    assert abs(conv - attention) / attention < 0.01, (conv, attention)


def test_fresh_conv_modules_keep_the_image_model():
    torch.manual_seed(0)
    unet = UNet(CFG).eval()
    model = MotionUNet.from_unet(unet, CONV).eval()
    x, context = torch.randn(1, 4, 5, 16, 16), torch.randn(1, 3, 24)
    with torch.no_grad():
        frames = torch.stack([unet(x[:, :, i], 200, context) for i in range(5)], dim=2)
        assert torch.allclose(model(x, 200, context), frames, atol=1e-5)


def test_conv_modules_mix_only_neighbouring_frames():
    """Two 3-tap convolutions per module reach 2 frames each way; attention would reach all of them. (Far frames
    still feel a change through the GroupNorm's statistics, which span the clip: a small effect.)"""
    torch.manual_seed(0)
    model = MotionUNet(dict(CFG, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D",) * 2),
                       CONV).eval()
    with torch.no_grad():
        for p in model.motion_parameters():
            p.normal_(0, 0.05)
        x, context = torch.randn(1, 4, 24, 16, 16), torch.randn(1, 3, 24)
        changed = x.clone()
        changed[:, :, 0] += 1.0
        delta = (model(changed, 100, context) - model(x, 100, context)).abs().amax(dim=(0, 1, 3, 4))  # (F,)
    assert delta[1] > 1e-4 and delta[-1] < delta[1] / 50  # 4 modules x 2 frames each: frame 23 is out of reach


def test_conv_modules_have_no_checkpoint_format(tmp_path):
    with pytest.raises(ValueError, match="no official motion-module format"):
        save_motion_module(MotionUNet(CFG, CONV), tmp_path / "mm.safetensors")
    with pytest.raises(ValueError, match="temporal must be"):
        MotionUNet(CFG, {"temporal": "lstm"})
