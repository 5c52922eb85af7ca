"""Image LoRAs in diffusers' layout, both ways: a minianimate LoRA saved with format='diffusers' loads with
diffusers' `load_lora_weights` and gives the same UNet outputs; a PEFT LoRA made on diffusers' UNet and saved with
`save_lora_weights` loads with `LoRA.load`, the same again. Alphas other than the rank, conv LoRAs (LoCon) and
per-module ranks and alphas included."""
import json

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from transformers import CLIPTextModel, CLIPTokenizer

from minianimate.lora import RESNET_CONVS, SPATIAL_ALL, LoRA
from minianimate.lora_formats import LowRankWeights, from_layers
from minianimate.toy.tiny_sd import UNET, write_tiny_sd
from minianimate.unet import UNet

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return write_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


def randomize(params, seed=0, std=0.05):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:  # non-zero everywhere: LoRA ups (zero at init) and zero-initialised layers too
            p.copy_(torch.randn(p.shape, generator=generator) * std)


def pipeline(sd):
    """diffusers' pipeline of the tiny SD folder's parts, its UNet's weights random and non-zero."""
    parts = dict(vae=AutoencoderKL, text_encoder=CLIPTextModel, tokenizer=CLIPTokenizer, unet=UNet2DConditionModel,
                 scheduler=DDIMScheduler)
    pipe = StableDiffusionPipeline(**{name: kind.from_pretrained(sd / name, local_files_only=True)
                                      for name, kind in parts.items()},
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    randomize(pipe.unet.parameters())
    return pipe


def run(unet, diffusers=False):
    """The UNet's output on fixed inputs: (2, 4, 8, 8)."""
    generator = torch.Generator().manual_seed(1)
    x, context = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 5, 32, generator=generator)
    with torch.no_grad():
        out = unet(x, torch.tensor([10, 700]), context)
    return out.sample if diffusers else out


def mixed_lora(model):
    """A LoRA on attention, feed-forward and proj_in/out (rank 4, alpha 2) and the resnet convs, conv_in and
    conv_out (3x3 LoCon, rank 2, alpha 5), random, one module with its own alpha: ranks and alphas both vary."""
    linear = LoRA.inject(model, SPATIAL_ALL, rank=4, alpha=2.0)
    convs = LoRA.inject(model, RESNET_CONVS, rank=2, alpha=5.0)
    randomize([*linear.parameters(), *convs.parameters()], seed=2, std=0.2)
    layers = {name: LowRankWeights(lora.layer(name).down.weight.detach(), lora.layer(name).up.weight.detach(),
                                   lora.layer(name).alpha) for lora in (linear, convs) for name in lora.targets}
    odd = "up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v"
    layers[odd] = layers[odd]._replace(alpha=7.0)
    linear.detach(), convs.detach()
    return LoRA.load(model, from_layers(layers, "minianimate"), name="style")


def test_our_lora_saved_as_diffusers_loads_with_load_lora_weights(sd, tmp_path):
    pipe = pipeline(sd)
    ours = UNet.from_diffusers(pipe.unet).eval()
    lora = mixed_lora(ours)
    expected = run(ours)
    assert not torch.allclose(expected, run(pipe.unet, diffusers=True), atol=1e-3)  # the LoRA changes the output
    lora.save(tmp_path / "style", format="diffusers")
    assert (tmp_path / "style" / "pytorch_lora_weights.safetensors").is_file()  # save_lora_weights' file name

    pipe.load_lora_weights(tmp_path / "style", adapter_name="style")
    assert torch.allclose(run(pipe.unet, diffusers=True), expected, atol=1e-5)


def test_a_diffusers_lora_loads_with_our_load(sd, tmp_path):
    pipe = pipeline(sd)
    ours = UNet.from_diffusers(pipe.unet).eval()
    config = LoraConfig(r=4, lora_alpha=3.0, target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in",
                                                             "proj_out", "ff.net.2", "conv1", "conv2"],
                        rank_pattern={"conv1": 2}, alpha_pattern={"to_k": 8.0})
    pipe.unet.add_adapter(config, adapter_name="style")
    randomize([p for n, p in pipe.unet.named_parameters() if "lora_" in n], seed=3, std=0.2)
    expected = run(pipe.unet, diffusers=True)
    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=get_peft_model_state_dict(
        pipe.unet, adapter_name="style"), unet_lora_adapter_metadata=pipe.unet.peft_config["style"].to_dict())

    lora = LoRA.load(ours, tmp_path / "pytorch_lora_weights.safetensors")
    assert lora.format == "diffusers" and {layer.rank for layer in lora.layers.values()} == {2, 4}
    assert {layer.alpha for layer in lora.layers.values()} == {3.0, 8.0}
    assert torch.allclose(run(ours), expected, atol=1e-5)


def test_without_a_header_alpha_is_the_rank_as_in_diffusers(sd, tmp_path):
    pipe = pipeline(sd)
    ours = UNet.from_diffusers(pipe.unet).eval()
    lora = mixed_lora(ours)
    path = lora.save(tmp_path / "style.safetensors", format="diffusers")
    with safe_open(str(path), "pt") as f:  # the same tensors, no LoraConfig in the header
        state = {k: f.get_tensor(k) for k in f.keys()}
    lora.detach()
    LoRA.load(ours, state)
    pipe.load_lora_weights(state)
    assert torch.allclose(run(ours), run(pipe.unet, diffusers=True), atol=1e-5)


def test_the_file_has_diffusers_keys_and_the_lora_config_in_its_header(tmp_path):
    model = UNet(UNET)  # the tiny SD folder's UNet config
    path = mixed_lora(model).save(tmp_path / "s.safetensors", format="diffusers")
    with safe_open(str(path), "pt") as f:
        keys, header = list(f.keys()), f.metadata()
    assert "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight" in keys
    assert "unet.conv_in.lora_B.weight" in keys and all(k.startswith("unet.") for k in keys)
    config = json.loads(header["lora_adapter_metadata"])
    assert header["format"] == "pt" and config["unet.r"] == 4 and config["unet.lora_alpha"] == 2.0
    assert config["unet.rank_pattern"]["^conv_in"] == 2 and config["unet.alpha_pattern"]["^conv_in"] == 5.0


def test_a_diffusers_lora_must_be_safetensors(tmp_path):
    model = UNet(UNET)  # the tiny SD folder's UNet config
    with pytest.raises(ValueError, match="alphas live in the header"):
        LoRA.inject(model, SPATIAL_ALL).save(tmp_path / "s.ckpt", format="diffusers")


def test_a_conv_peft_cannot_reproduce_is_refused(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=2, dilation=2))
    with pytest.raises(ValueError, match="cannot express a LoRA on a dilated"):
        LoRA.inject(model, ["0"]).save(tmp_path / "s.safetensors", format="diffusers")
