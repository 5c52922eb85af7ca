"""LoRA, the domain adapter and MotionLoRA: hooks leave the model's keys alone, merge is exact, files round-trip."""
import pytest
import torch
from torch import nn

from minianimate.inflation import MotionConfig, MotionUNet
from minianimate.lora import MOTION_ATTENTION, SPATIAL_ALL, SPATIAL_ATTENTION, LoRA
from minianimate.unet import UNet

CFG = dict(sample_size=16, block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=4,
           down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
           up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=24, norm_num_groups=8)
MOTION = MotionConfig(heads=2, max_frames=24)
CONVS = [r"down_blocks\.0\.resnets\.0\.conv1", r"down_blocks\.0\.downsamplers\.0\.conv"]  # 3x3, stride 1 and 2


def randomize(module, seed=0, std=0.05):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():  # non-zero everywhere: zero-initialised proj_out and LoRA up included
            p.normal_(0, std)
    return module.eval() if isinstance(module, nn.Module) else module


def unet(seed=0):
    return randomize(UNet(CFG), seed)


def motion_unet(seed=0):
    return randomize(MotionUNet(CFG, MOTION), seed)


def run(model):
    torch.manual_seed(1)
    if isinstance(model, MotionUNet):
        x = torch.randn(1, 4, 3, 8, 8)
    else:
        x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        return model(x, 500, torch.randn(x.shape[0], 3, 24))


def linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 6)), torch.randn(5, 8)


def test_fresh_lora_leaves_outputs_unchanged():
    model = unet()
    before = run(model)
    LoRA.inject(model, SPATIAL_ALL + CONVS, rank=4)
    assert torch.equal(run(model), before)


def test_scale_zero_equals_no_lora():
    model = unet()
    before = run(model)
    lora = randomize(LoRA.inject(model, SPATIAL_ATTENTION))
    assert not torch.allclose(run(model), before)
    lora.scale = 0.0
    assert torch.equal(run(model), before)


def test_output_is_linear_in_scale():
    model, x = linear()
    lora = randomize(LoRA.inject(model, ["0"], rank=2, alpha=1.0))
    outs = {}
    for s in (0.0, 1.0, 2.0):
        lora.scale = s
        outs[s] = model(x).detach()
    assert torch.allclose(outs[2.0] - outs[0.0], 2 * (outs[1.0] - outs[0.0]), atol=1e-6)


def test_two_loras_with_different_scales_add_up():
    model, x = linear()
    a = randomize(LoRA.inject(model, ["0"], rank=2, name="a"), seed=1)
    b = randomize(LoRA.inject(model, ["0"], rank=3, name="b"), seed=2)
    a.scale, b.scale = 0.7, -1.5
    both = model(x)
    b.enabled = False
    only_a = model(x)
    a.enabled, b.enabled = False, True
    only_b = model(x)
    b.enabled = False
    base = model(x)
    assert torch.allclose(both - base, (only_a - base) + (only_b - base), atol=1e-6)


def test_model_state_dict_keys_unchanged_after_inject():
    model = motion_unet()
    keys = list(model.state_dict())
    lora = LoRA.inject(model, SPATIAL_ALL + MOTION_ATTENTION + CONVS)
    assert list(model.state_dict()) == keys
    lora.merge()
    assert list(model.state_dict()) == keys
    model.load_spatial_state_dict(UNet(CFG).state_dict())  # still loads a plain image UNet


def test_merged_forward_equals_hooked_forward():
    model = unet()
    lora = randomize(LoRA.inject(model, SPATIAL_ATTENTION + CONVS, rank=4, alpha=2.0), std=0.2)
    lora.scale = 0.8
    hooked = run(model)
    lora.merge()
    merged = run(model)
    assert not torch.allclose(hooked, run(unet()), atol=1e-3)  # the LoRA does change the output
    assert torch.allclose(merged, hooked, atol=1e-5), (merged - hooked).abs().max()


def test_changing_scale_while_merged_remerges():
    model = unet()
    lora = randomize(LoRA.inject(model, SPATIAL_ATTENTION), std=0.2).merge()
    lora.scale = 0.3
    merged = run(model)
    lora.unmerge()
    assert torch.allclose(merged, run(model), atol=1e-5)


def test_unmerge_restores_weights_exactly():
    model = unet()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    lora = randomize(LoRA.inject(model, SPATIAL_ATTENTION + CONVS), std=0.3).merge()
    conv1 = "down_blocks.0.resnets.0.conv1.weight"
    assert not torch.equal(model.state_dict()[conv1], weights[conv1])  # merged: the weight did change
    lora.unmerge()
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("first_out", ["a", "b"])
def test_unmerge_two_merged_loras_in_either_order(first_out):
    model = unet()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    loras = {"a": randomize(LoRA.inject(model, SPATIAL_ATTENTION), seed=1, std=0.3),
             "b": randomize(LoRA.inject(model, SPATIAL_ALL), seed=2, std=0.3)}
    other = "b" if first_out == "a" else "a"
    loras["a"].merge(), loras["b"].merge()
    loras[first_out].unmerge()
    only_other = {k: v.clone() for k, v in model.state_dict().items()}
    loras[other].unmerge()
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    loras[other].merge()  # the state with one LoRA merged does not depend on the history
    assert all(torch.equal(v, only_other[k]) for k, v in model.state_dict().items())


def test_detach_removes_hooks_and_unmerges():
    model = unet()
    before = run(model)
    lora = randomize(LoRA.inject(model, SPATIAL_ATTENTION)).merge()
    lora.detach()
    assert torch.equal(run(model), before)
    with pytest.raises(RuntimeError, match="detached"):
        lora.merge()


def test_training_changes_only_lora_weights():
    model = unet()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    lora = LoRA.inject(model, SPATIAL_ATTENTION, rank=2)
    start = [p.detach().clone() for p in lora.parameters()]
    optimizer = torch.optim.AdamW(lora.trainable_parameters(), lr=1e-2)
    x, context = torch.randn(1, 4, 8, 8), torch.randn(1, 3, 24)
    for _ in range(2):
        loss = model(x, 500, context).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert lora.num_parameters() == sum(p.numel() for p in start)
    assert all(not torch.equal(p, s) for p, s in zip(lora.parameters(), start))
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


def test_spatial_attention_targets_no_motion_modules():
    lora = LoRA.inject(motion_unet(), SPATIAL_ATTENTION)
    assert lora.targets and not any("motion_modules" in n for n in lora.targets)
    assert all(n.endswith(("to_q", "to_k", "to_v", "to_out.0")) for n in lora.targets)


# --- files -------------------------------------------------------------------------------------------
ROUND_TRIPS = {"minianimate": SPATIAL_ALL + CONVS, "official": SPATIAL_ATTENTION, "kohya": SPATIAL_ALL + CONVS}


@pytest.mark.parametrize("fmt", list(ROUND_TRIPS))
def test_save_load_round_trip(fmt, tmp_path):
    model = unet()
    lora = randomize(LoRA.inject(model, ROUND_TRIPS[fmt], rank=4, alpha=2.0, name="style"), std=0.2)
    expected = run(model)
    path = lora.save(tmp_path / "style.safetensors", format=fmt)
    lora.detach()
    fresh = unet()  # same seed: the same base weights in a new model
    loaded = LoRA.load(fresh, path)
    assert loaded.format == fmt and loaded.name == "style" and set(loaded.targets) == set(lora.targets)
    assert torch.allclose(run(fresh), expected, atol=1e-5)


@pytest.mark.parametrize("fmt", ["official", "kohya"])
def test_loaded_file_merges_as_its_format_defines(fmt):
    """official: W += scale * up @ down (the AnimateDiff code); kohya: W += scale * alpha / rank * up @ down."""
    model = unet()
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0"
    torch.manual_seed(3)
    down, up = torch.randn(4, 32), torch.randn(32, 4)
    if fmt == "official":
        prefix, factor = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora", 1.0
        state = {f"{prefix}.down.weight": down, f"{prefix}.up.weight": up}
    else:
        prefix, factor = "lora_unet_" + name.replace(".", "_"), 2.0 / 4
        state = {f"{prefix}.lora_down.weight": down, f"{prefix}.lora_up.weight": up,
                 f"{prefix}.alpha": torch.tensor(2.0)}
    weight = model.get_submodule(name).weight.detach().clone()
    lora = LoRA.load(model, state, scale=0.6).merge()
    assert list(lora.targets) == [name]
    assert torch.allclose(model.get_submodule(name).weight, weight + 0.6 * factor * up @ down, atol=1e-6)


def test_kohya_keys_and_conv_shapes(tmp_path):
    from safetensors.torch import load_file

    model = unet()  # use_linear_projection=False: proj_in is a 1x1 Conv2d
    LoRA.inject(model, SPATIAL_ALL + CONVS, rank=4).save(tmp_path / "k.safetensors", format="kohya")
    state = load_file(tmp_path / "k.safetensors")
    prefix = "lora_unet_down_blocks_0_attentions_0_"
    assert state[prefix + "proj_in.lora_down.weight"].shape == (4, 32, 1, 1)
    assert state[prefix + "proj_in.lora_up.weight"].shape == (32, 4, 1, 1)
    assert state["lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight"].shape == (4, 32, 3, 3)
    assert state[prefix + "transformer_blocks_0_attn1_to_out_0.lora_up.weight"].shape == (32, 4)
    assert state[prefix + "proj_in.alpha"].shape == ()


def test_conv_1x1_lora_loads_into_a_linear_projection_unet():
    """A kohya LoRA on 1x1-conv proj_in/proj_out fits a use_linear_projection UNet (the same matrices)."""
    conv_model = unet()
    linear_model = UNet(dict(CFG, use_linear_projection=True)).eval()
    shapes = {k: v.shape for k, v in linear_model.state_dict().items()}
    linear_model.load_state_dict({k: v.reshape(shapes[k]) for k, v in conv_model.state_dict().items()})
    lora = randomize(LoRA.inject(conv_model, SPATIAL_ALL), std=0.2)
    LoRA.load(linear_model, from_lora(lora, "kohya"))
    assert torch.allclose(run(linear_model), run(conv_model), atol=1e-5)


def test_kohya_text_encoder_keys_are_ignored_with_a_warning(tmp_path):
    model = unet()
    state = from_lora(LoRA.inject(model, SPATIAL_ATTENTION), "kohya")
    state["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = torch.zeros(4, 8)
    state["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"] = torch.zeros(8, 4)
    with pytest.warns(UserWarning, match="ignored 2 text-encoder"):
        LoRA.load(unet(), state)


def from_lora(lora, fmt):
    from minianimate.lora_formats import LowRankWeights, from_layers

    return from_layers({n: LowRankWeights(lora.layer(n).down.weight.detach(), lora.layer(n).up.weight.detach(),
                                          lora.layer(n).alpha) for n in lora.targets}, fmt)


def test_motion_lora_official_format_round_trip(tmp_path):
    model = motion_unet()
    lora = randomize(LoRA.inject(model, MOTION_ATTENTION, rank=2, name="zoom"), std=0.2)
    expected = run(model)
    lora.save(tmp_path / "zoom.ckpt", format="official")
    lora.detach()
    state = torch.load(tmp_path / "zoom.ckpt", weights_only=True)
    assert ("down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0"
            ".processor.to_q_lora.down.weight") in state
    assert all(".motion_modules." in k and ".attention_blocks." in k for k in state)
    assert len(state) == 2 * 8 * 6  # (down, up) x (q, k, v, out) x 2 attentions x 6 motion modules
    fresh = motion_unet()
    loaded = LoRA.load(fresh, {"state_dict": state}, scale=1.0)  # the official files' optional wrapper
    assert loaded.format == "official" and loaded.rank == 2
    assert torch.allclose(run(fresh), expected, atol=1e-5)


# --- errors --------------------------------------------------------------------------------------------
def test_error_targets_match_nothing():
    with pytest.raises(ValueError, match=r"matches no Linear/Conv2d.*no motion modules.*attn1\.\{to_q"):
        LoRA.inject(unet(), MOTION_ATTENTION)


def test_error_unknown_keys():
    state = from_lora(LoRA.inject(unet(), SPATIAL_ATTENTION), "minianimate")
    state["mid_block.attentions.0.proj_in.lora_mid.weight"] = torch.zeros(4, 4)
    with pytest.raises(ValueError, match=r"1 unknown keys.*lora_mid.*LyCORIS"):
        LoRA.load(unet(), state)


def test_error_motion_lora_into_image_unet():
    state = from_lora(LoRA.inject(motion_unet(), MOTION_ATTENTION), "official")
    with pytest.raises(ValueError, match=r"48 modules not in the model.*load into a MotionUNet"):
        LoRA.load(unet(), state)


def test_error_shape_mismatch():
    other = dict(CFG, block_out_channels=(16, 32))
    state = from_lora(LoRA.inject(randomize(UNet(other)), SPATIAL_ATTENTION), "kohya")
    with pytest.raises(ValueError, match=r"mis-shaped.*shapes differ: a LoRA for another base model"):
        LoRA.load(unet(), state)


def test_error_down_without_up():
    state = from_lora(LoRA.inject(unet(), SPATIAL_ATTENTION), "official")
    del state["down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_k_lora.up.weight"]
    with pytest.raises(ValueError, match=r"1 incomplete.*attn1\.to_k"):
        LoRA.load(unet(), state)


def test_error_wrong_format_requested():
    state = from_lora(LoRA.inject(unet(), SPATIAL_ATTENTION), "kohya")
    with pytest.raises(ValueError, match="looks like the kohya format"):
        LoRA.load(unet(), state, format="official")
