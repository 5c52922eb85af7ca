"""The from-scratch UNet equals diffusers' UNet2DConditionModel: same keys, same outputs."""
import json

import pytest
import torch
from diffusers import UNet2DConditionModel

from minianimate.unet import SD15, UNet

TINY = {
    "attn-conv": dict(sample_size=16, block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=4,
                      down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                      up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=24, norm_num_groups=8),
    "linear-perblock-heads": dict(
        sample_size=16, in_channels=3, out_channels=5, block_out_channels=(16, 32, 48), layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4, 8),
        cross_attention_dim=16, norm_num_groups=8, use_linear_projection=True, flip_sin_to_cos=False,
        freq_shift=1),
    "sd-like": dict(sample_size=8, block_out_channels=(32, 32, 64, 64), layers_per_block=1, attention_head_dim=2,
                    cross_attention_dim=32, norm_num_groups=16, norm_eps=1e-6, transformer_layers_per_block=2),
}


def random_diffusers(cfg, seed=0):
    torch.manual_seed(seed)
    ref = UNet2DConditionModel(**cfg).eval()
    with torch.no_grad():
        for p in ref.parameters():  # no zero biases, no unit norms: every weight matters
            p.normal_(0, 0.05)
    return ref


@pytest.mark.parametrize("name", list(TINY))
def test_keys_and_outputs_match_diffusers(name):
    cfg = TINY[name]
    ref = random_diffusers(cfg)
    ours = UNet.from_diffusers(ref).eval()
    assert list(ours.state_dict()) == list(ref.state_dict())
    size = cfg["sample_size"]
    x = torch.randn(2, ref.config.in_channels, size, size)
    context = torch.randn(2, 7, cfg["cross_attention_dim"])
    t = torch.tensor([3, 871])
    with torch.no_grad():
        expected = ref(x, t, context).sample
        got = ours(x, t, context)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()


def test_scalar_timestep_and_odd_size_match_diffusers():
    cfg = TINY["attn-conv"]
    ref = random_diffusers(cfg)
    ours = UNet.from_diffusers(ref).eval()
    x, context = torch.randn(1, 4, 10, 14), torch.randn(1, 3, 24)  # 10x14 -> 5x7: upsample to skip size
    with torch.no_grad():
        assert torch.allclose(ours(x, 500, context), ref(x, 500, context).sample, atol=1e-4)


def test_controlnet_residuals_match_diffusers():
    cfg = TINY["attn-conv"]
    ref = random_diffusers(cfg)
    ours = UNet.from_diffusers(ref).eval()
    x, context = torch.randn(2, 4, 16, 16), torch.randn(2, 5, 24)
    with torch.no_grad():
        skips = [torch.randn(2, 32, 16, 16)] * 2 + [torch.randn(2, 32, 8, 8), torch.randn(2, 64, 8, 8)]
        mid = torch.randn(2, 64, 8, 8)
        expected = ref(x, 10, context, down_block_additional_residuals=skips,
                       mid_block_additional_residual=mid).sample
        got = ours(x, 10, context, down_block_additional_residuals=skips, mid_block_additional_residual=mid)
    assert torch.allclose(got, expected, atol=1e-4)


def test_sd15_has_859_520_964_parameters():
    with torch.device("meta"):
        model = UNet(SD15)
    assert sum(p.numel() for p in model.parameters()) == 859_520_964


def test_save_and_from_pretrained_round_trip_with_diffusers(tmp_path):
    ref = random_diffusers(TINY["linear-perblock-heads"])
    ref.save_pretrained(tmp_path / "pipe" / "unet")
    ours = UNet.from_pretrained(tmp_path / "pipe")  # a pipeline folder with unet/
    for k, v in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v)
    ours.save_pretrained(tmp_path / "ours")
    back = UNet2DConditionModel.from_pretrained(tmp_path / "ours", local_files_only=True)
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["_class_name"] == "UNet2DConditionModel"
    for k, v in ours.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)


def test_unsupported_config_field_is_named():
    with pytest.raises(ValueError, match="class_embed_type"):
        UNet({**TINY["attn-conv"], "class_embed_type": "timestep"})
    with pytest.raises(ValueError, match="foo_bar"):
        UNet({**TINY["attn-conv"], "foo_bar": 3})
    with pytest.raises(ValueError, match="block type 'SimpleDown'"):
        UNet({**TINY["attn-conv"], "down_block_types": ("SimpleDown", "DownBlock2D")})
    with pytest.raises(ValueError, match="up_block_types has 1 entries"):
        UNet({**TINY["attn-conv"], "up_block_types": ("UpBlock2D",)})


def test_wrong_input_shapes_give_clear_errors():
    model = UNet(TINY["attn-conv"])
    with pytest.raises(ValueError, match=r"sample must be \(B, 4, H, W\).*video"):
        model(torch.randn(1, 4, 2, 16, 16), 1, torch.randn(1, 3, 24))
    with pytest.raises(ValueError, match="context must be"):
        model(torch.randn(1, 4, 16, 16), 1, torch.randn(1, 3, 25))


def test_from_pretrained_missing_folder_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a diffusers UNet folder"):
        UNet.from_pretrained(tmp_path)
