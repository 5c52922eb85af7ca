"""Inflation and the motion module: exact with diffusers UNetMotionModel, plug-and-play, every format."""
import pytest
import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

from minianimate.checkpoint import read_state_dict
from minianimate.inflation import MotionConfig, MotionUNet
from minianimate.motion_io import (diffusers_to_official, load_motion_module, official_to_diffusers,
                                   save_motion_module)
from minianimate.unet import SD15, UNet

CFG = dict(sample_size=16, block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=4,
           down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
           up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=24, norm_num_groups=8)
CFG3 = dict(sample_size=16, block_out_channels=(16, 32, 32), layers_per_block=2, attention_head_dim=2,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=8,
            norm_num_groups=8, use_linear_projection=True)
TOY = MotionConfig(heads=2, max_frames=24, mid_block=True)


def randomize(model, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # non-zero everywhere, proj_out included
            p.normal_(0, 0.05)
    return model.eval()


def diffusers_motion_model(cfg, mid, heads=2, seed=0):
    torch.manual_seed(seed)
    adapter = MotionAdapter(block_out_channels=cfg["block_out_channels"], motion_layers_per_block=cfg["layers_per_block"],
                            motion_num_attention_heads=heads, motion_norm_num_groups=cfg["norm_num_groups"],
                            motion_max_seq_length=24, use_motion_mid_block=mid)
    return randomize(UNetMotionModel.from_unet2d(UNet2DConditionModel(**cfg), adapter), seed)


@pytest.mark.parametrize("cfg,mid", [(CFG, True), (CFG, False), (CFG3, True)])
def test_outputs_and_keys_match_diffusers_unet_motion_model(cfg, mid):
    ref = diffusers_motion_model(cfg, mid)
    ours = MotionUNet.from_diffusers(ref).eval()
    assert list(ours.state_dict()) == list(ref.state_dict())
    x, context, t = torch.randn(2, 4, 6, 16, 16), torch.randn(2, 5, cfg["cross_attention_dim"]), torch.tensor([9, 700])
    with torch.no_grad():
        expected = ref(x, t, context.repeat_interleave(6, dim=0)).sample  # diffusers wants context per frame
        got = ours(x, t, context)
        per_frame = ours(x, t, context.repeat_interleave(6, dim=0))  # a prompt per frame: same here
    assert got.shape == (2, 4, 6, 16, 16)
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
    assert torch.allclose(per_frame, got, atol=1e-6)


def test_fresh_motion_modules_keep_the_image_model_frame_by_frame():
    """Zero-initialised proj_out: the inflated model equals the image model on every frame."""
    unet = randomize(UNet(CFG))
    model = MotionUNet.from_unet(unet, TOY).eval()
    x, context = torch.randn(1, 4, 5, 16, 16), torch.randn(1, 3, 24)
    with torch.no_grad():
        video = model(x, 200, context)
        frames = torch.stack([unet(x[:, :, i], 200, context) for i in range(5)], dim=2)
    assert torch.allclose(video, frames, atol=1e-5)


def test_motion_modules_mix_frames_once_trained():
    model = randomize(MotionUNet(CFG, TOY))
    x, context = torch.randn(1, 4, 4, 16, 16), torch.randn(1, 3, 24)
    changed = x.clone()
    changed[:, :, 0] += 1.0  # perturb frame 0 only
    with torch.no_grad():
        delta = (model(changed, 100, context) - model(x, 100, context))[:, :, 3].abs().max()
    assert delta > 1e-4  # frame 3 saw frame 0 through temporal attention


def test_motion_parameters_are_only_the_motion_modules():
    model = MotionUNet(CFG, TOY)
    names = {id(p) for p in model.motion_parameters()}
    assert all(("motion_modules." in n) == (id(p) in names) for n, p in model.named_parameters())
    assert set(model.spatial_state_dict()) == set(UNet(CFG).state_dict())


@pytest.mark.parametrize("version,millions", [("v1", 417.14), ("v2", 453.21), ("v3", 417.14)])
def test_sd15_motion_module_sizes(version, millions):
    with torch.device("meta"):
        model = MotionUNet(SD15, version)
    assert round(sum(p.numel() for p in model.motion_parameters()) / 1e6, 2) == millions


def test_key_renaming_is_a_bijection():
    model = MotionUNet(CFG, TOY)
    for key in model.motion_state_dict():
        official = diffusers_to_official(key)
        assert ".temporal_transformer." in official
        assert official_to_diffusers(official) == key
    assert diffusers_to_official("up_blocks.1.motion_modules.1.transformer_blocks.0.norm3.weight") == \
        "up_blocks.1.motion_modules.1.temporal_transformer.transformer_blocks.0.ff_norm.weight"


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_official_file_round_trip(tmp_path, suffix):
    src = randomize(MotionUNet(CFG, TOY))
    path = save_motion_module(src, tmp_path / f"mm{suffix}", format="official")
    state = read_state_dict(path)
    assert all(".temporal_transformer." in k and not k.endswith(".pe") for k in state)
    dst = MotionUNet(CFG, TOY)
    assert load_motion_module(dst, path) == "official"
    for k, v in src.motion_state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_official_with_state_dict_wrapper_and_pe_buffers_loads(tmp_path):
    src = randomize(MotionUNet(CFG, TOY))
    state = {diffusers_to_official(k).replace("pos_embed", "pos_encoder"): v for k, v in src.motion_state_dict().items()}
    assert any(k.endswith("pos_encoder.pe") for k in state)  # as in older official files
    torch.save({"state_dict": state, "global_step": 10}, tmp_path / "old.ckpt")
    dst = MotionUNet(CFG, TOY)
    load_motion_module(dst, tmp_path / "old.ckpt", verbose=False)
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in src.motion_state_dict().items())


def test_official_to_ours_to_diffusers_to_ours_is_lossless(tmp_path):
    src = randomize(MotionUNet(CFG, TOY))
    save_motion_module(src, tmp_path / "mm.ckpt", format="official")
    a = MotionUNet(CFG, TOY)
    load_motion_module(a, tmp_path / "mm.ckpt", verbose=False)
    save_motion_module(a, tmp_path / "adapter", format="diffusers")
    adapter = MotionAdapter.from_pretrained(tmp_path / "adapter", local_files_only=True)  # diffusers itself reads it
    b = MotionUNet(CFG, TOY)
    assert load_motion_module(b, adapter.state_dict(), verbose=False) == "diffusers"
    c = MotionUNet(CFG, TOY)
    load_motion_module(c, tmp_path / "adapter", verbose=False)
    for k, v in src.motion_state_dict().items():
        assert torch.equal(b.state_dict()[k], v) and torch.equal(c.state_dict()[k], v), k


def test_diffusers_motion_adapter_drives_our_model_like_diffusers(tmp_path):
    ref = diffusers_motion_model(CFG, mid=True)
    ours = MotionUNet(CFG, MotionConfig(heads=2, max_frames=24, mid_block=True))
    ours.load_spatial_state_dict({k: v for k, v in ref.state_dict().items() if "motion_modules" not in k})
    adapter_state = {k: v for k, v in ref.state_dict().items() if "motion_modules" in k}
    load_motion_module(ours, adapter_state, format="diffusers", verbose=False)
    x, context = torch.randn(1, 4, 3, 16, 16), torch.randn(1, 2, 24)
    with torch.no_grad():
        assert torch.allclose(ours.eval()(x, 5, context), ref(x, 5, context.repeat_interleave(3, 0)).sample,
                              atol=1e-4)


def test_version_mismatch_errors_name_the_cause(tmp_path):
    v2 = randomize(MotionUNet(CFG, MotionConfig(heads=2, mid_block=True)))
    v3 = MotionUNet(CFG, MotionConfig(heads=2, mid_block=False))
    with pytest.raises(ValueError, match="mid-block motion modules \\(a v2 file\\)"):
        load_motion_module(v3, v2.motion_state_dict(), verbose=False)
    with pytest.raises(ValueError, match="the file lacks"):
        load_motion_module(v2, v3.motion_state_dict(), verbose=False)


def test_wrong_base_model_error_names_shapes():
    small = MotionUNet(CFG, MotionConfig(heads=2))
    other = MotionUNet({**CFG, "block_out_channels": (16, 32)}, MotionConfig(heads=2))
    with pytest.raises(ValueError, match="mis-shaped.*another base model"):
        load_motion_module(small, other.motion_state_dict(), verbose=False)


def test_non_motion_files_are_refused_clearly(tmp_path):
    model = MotionUNet(CFG, TOY)
    with pytest.raises(ValueError, match="image UNet checkpoint"):
        load_motion_module(model, UNet(CFG).state_dict())
    lora = {"down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0"
            ".processor.to_q_lora.down.weight": torch.zeros(4, 32)}
    with pytest.raises(ValueError, match="LoRA"):
        load_motion_module(model, lora)
    with pytest.raises(ValueError, match="looks like the diffusers format"):
        load_motion_module(model, model.motion_state_dict(), format="official")
    with pytest.raises(FileNotFoundError):
        load_motion_module(model, tmp_path / "nope.ckpt")


def test_too_many_frames_points_to_context_windows():
    model = MotionUNet(CFG, MotionConfig(heads=2, max_frames=8))
    with pytest.raises(ValueError, match="context windows"):
        model(torch.randn(1, 4, 9, 16, 16), 1, torch.randn(1, 2, 24))


def test_bad_inputs_and_configs_are_clear():
    model = MotionUNet(CFG, TOY)
    with pytest.raises(ValueError, match=r"clips \(B, C, F, H, W\)"):
        model(torch.randn(1, 4, 16, 16), 1, torch.randn(1, 2, 24))
    with pytest.raises(ValueError, match="one prompt per frame"):
        model(torch.randn(2, 4, 3, 16, 16), 1, torch.randn(4, 2, 24))
    with pytest.raises(ValueError, match="unknown motion-module preset"):
        MotionUNet(CFG, "v4")
    with pytest.raises(ValueError, match="unknown motion config fields"):
        MotionUNet(CFG, {"heads": 2, "frames": 3})


def test_forward_chunking_gives_the_same_output_with_less_at_once():
    from minianimate import MotionUNet

    config = dict(sample_size=8, block_out_channels=(16, 32), layers_per_block=1, attention_head_dim=2,
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16, norm_num_groups=8)
    torch.manual_seed(0)
    unet = MotionUNet(config, dict(heads=2, max_frames=8, mid_block=True)).eval()
    for p in unet.motion_parameters():
        torch.nn.init.normal_(p, 0, 0.1)
    x, context = torch.randn(2, 4, 5, 8, 8), torch.randn(2, 3, 16)
    with torch.no_grad():
        whole = unet(x, 10, context)
        chunked = unet.enable_forward_chunking(7)(x, 10, context)  # 7 does not divide the 2*8*8 pixels
    assert all(m.chunk == 7 for m in unet.modules() if hasattr(m, "temporal"))
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)
