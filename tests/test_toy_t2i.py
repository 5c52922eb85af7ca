"""The shipped toy text-to-image models load and sample; the command line writes images."""
import numpy as np
import pytest
import torch

from minianimate.toy.cli import main
from minianimate.toy.models import CHECKPOINTS, load_t2i

needs_checkpoints = pytest.mark.skipif(not (CHECKPOINTS / "unet_base").exists(),
                                       reason="shipped checkpoints not built (make checkpoints)")


@needs_checkpoints
def test_sample_images_command_writes_pngs_and_a_contact_sheet(tmp_path):
    assert main(["sample-images", "--model", "base", "--prompt", "a red square", "--n", "2", "--steps", "3",
                 "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000.png", "001.png", "contact_sheet.png"]


@needs_checkpoints
def test_generation_is_deterministic_for_a_seed():
    model = load_t2i("base")
    a = model.generate(["a blue circle"], steps=3, seed=5)
    assert a.shape == (1, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, model.generate(["a blue circle"], steps=3, seed=5))


@needs_checkpoints
def test_personalized_models_share_the_base_architecture():
    base, outlined, pastel = (load_t2i(m) for m in ("base", "outlined", "pastel"))
    assert list(base.unet.state_dict()) == list(outlined.unet.state_dict()) == list(pastel.unet.state_dict())
    changed = [k for k, v in base.unet.state_dict().items() if not torch.equal(v, outlined.unet.state_dict()[k])]
    assert changed  # DreamBooth changed the weights themselves


def test_missing_checkpoints_say_how_to_build_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"vae is missing: make it with `python -m minianimate train vae"):
        load_t2i("base", root=tmp_path)


def test_partly_controlled_steers_only_a_fraction_of_the_samples():
    from minianimate.controlnet import ControlledUNet, ControlNet
    from minianimate.toy.control import CONTROL_CHANNELS
    from minianimate.toy.models import TOY_UNET
    from minianimate.toy.personalization import PartlyControlled
    from minianimate.unet import UNet

    torch.manual_seed(0)
    unet = UNet(TOY_UNET).eval()
    controlnet = ControlNet.from_unet(unet, CONTROL_CHANNELS).eval()
    for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
        torch.nn.init.normal_(conv.weight, std=0.1)  # zero convs at zero would steer nothing
    x, t, context = torch.randn(6, 4, 16, 16), torch.tensor([10, 200, 500, 900, 300, 700]), torch.randn(6, 8, 64)
    cond = torch.rand(6, 3, 64, 64)
    with torch.no_grad():
        plain, steered = unet(x, t, context), ControlledUNet(unet, controlnet)(x, t, context, cond)
        assert not torch.allclose(plain, steered, atol=1e-4)
        assert torch.allclose(PartlyControlled(unet, controlnet, 0.0)(x, t, context, cond), plain, atol=1e-5)
        assert torch.allclose(PartlyControlled(unet, controlnet, 1.0)(x, t, context, cond), steered, atol=1e-5)
        half = PartlyControlled(unet, controlnet, 0.5, seed=1)(x, t, context, cond)
    which = [torch.allclose(h, s, atol=1e-5) for h, s in zip(half, steered)]
    assert all(w or torch.allclose(h, p, atol=1e-5) for w, h, p in zip(which, half, plain)) and 0 < sum(which) < 6


@needs_checkpoints
@pytest.mark.parametrize("stage,extra", [("outlined", "prior: 0.5\nmax_t: 600\n"),
                                         ("outlined", "control: 0.5\nmargin: 4\nema: 0.9\nhole: 1.5\n"),
                                         ("pastel", "rank: 2\ntargets: spatial_attention\ncontrol: 0.5\n")])
def test_personalized_stages_train_with_prior_images_and_control(tmp_path, stage, extra):
    import shutil

    out = tmp_path / "ckpt"
    shutil.copytree(CHECKPOINTS, out)
    config = tmp_path / "cfg.yaml"
    config.write_text(f"steps: 2\nbatch: 2\ncheckpoint_every: 2\nimages: 4\n{extra}")
    assert main(["train", stage, "--config", str(config), "--out", str(out), "--run", str(tmp_path / "run")]) == 0
    exported = out / {"outlined": "unet_outlined/diffusion_pytorch_model.safetensors",
                      "pastel": "lora_pastel.safetensors"}[stage]
    assert exported.stat().st_mtime > (CHECKPOINTS / "unet_base" / "config.json").stat().st_mtime
    assert load_t2i(stage, out).generate(["a red square"], steps=2).shape == (1, 64, 64, 3)


@needs_checkpoints
def test_a_pastel_lora_trained_with_ema_ships_its_ema_weights(tmp_path):
    """With `ema`, the exported LoRA holds the EMA's weights (the run folder's ema.safetensors), not the last
    step's, as the outlined UNet does."""
    import shutil

    from safetensors.torch import load_file

    from minianimate.lora import LoRA

    out, run = tmp_path / "ckpt", tmp_path / "run"
    shutil.copytree(CHECKPOINTS, out)
    config = tmp_path / "cfg.yaml"
    config.write_text("steps: 3\nbatch: 2\ncheckpoint_every: 3\nimages: 4\nrank: 2\ntargets: spatial_attention\n"
                      "ema: 0.5\nlr: 0.01\nwarmup: 0\n")
    assert main(["train", "pastel", "--config", str(config), "--out", str(out), "--run", str(run)]) == 0
    lora = LoRA.load(load_t2i("base", out).unet, out / "lora_pastel.safetensors")
    shipped = {k: v.float() for k, v in lora.state_dict().items()}
    ema, last = load_file(run / "ema.safetensors"), load_file(run / "weights.safetensors")
    ups = [k for k in shipped if k.endswith("up.weight")]
    assert ups and all(torch.allclose(shipped[k], ema[f"lora.{k}"].float(), atol=1e-3) for k in ups)
    assert not all(torch.allclose(shipped[k], last[f"lora.{k}"].float(), atol=1e-3) for k in ups)


def test_max_t_cuts_the_training_timesteps_and_is_checked_first():
    from minianimate.toy.personalization import OutlinedStage, PastelStage, _ddim

    ddim = _ddim(PastelStage(max_t=600))
    assert ddim.num_train_timesteps == 600 and len(ddim.alphas_cumprod) == 1000  # noise levels unchanged
    for bad in (0, 1001):
        with pytest.raises(ValueError, match="max_t must be in 1..1000"):
            _ddim(OutlinedStage(max_t=bad))


def test_vae_decoder_phase_trains_the_decoder_alone(tmp_path):
    """`decoder_only` starts from the folder's VAE and changes only its decoder: the encoder, and so every latent
    a later stage was trained on, and the scaling factor stay as they were; it refuses a folder with no VAE."""
    from minianimate.toy import stages
    from minianimate.toy.models import load_vae

    small = dict(batch=2, warmup=1, checkpoint_every=2, pool=8, crop=16)
    with pytest.raises(FileNotFoundError, match=r"none does not exist: make it with `python -m minianimate train vae"):
        stages.run_stage("vae", stages.VAEStage(steps=2, decoder_only=True, **small), out=tmp_path / "none",
                         run=tmp_path / "r0", progress=False)
    stages.run_stage("vae", stages.VAEStage(steps=2, **small), out=tmp_path / "ck", run=tmp_path / "r1", progress=False)
    first = load_vae(tmp_path / "ck")
    before, scaling = first.state_dict(), first.config.scaling_factor
    # other frames (seed 1) than the first phase's: a recomputed scaling factor would differ
    stages.run_stage("vae", stages.VAEStage(steps=2, decoder_only=True, seed=1, **{**small, "crop": 64}),
                     out=tmp_path / "ck", run=tmp_path / "r2", progress=False)
    after = load_vae(tmp_path / "ck")
    changed = {k for k, v in after.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith(("decoder.", "post_quant_conv.")) for k in changed)
    assert after.config.scaling_factor == scaling
    log = (tmp_path / "ck" / "training_log.json").read_text()
    assert '"vae"' in log and '"vae decoder"' in log


def test_an_outlined_unet_trained_with_ema_ships_its_ema_weights(tmp_path):
    """With `ema`, the exported outlined UNet holds the EMA's weights (ema.safetensors), not the last step's."""
    import shutil

    from safetensors.torch import load_file

    out, run = tmp_path / "ckpt", tmp_path / "run"
    shutil.copytree(CHECKPOINTS, out)
    config = tmp_path / "cfg.yaml"
    config.write_text("steps: 3\nbatch: 2\ncheckpoint_every: 3\nimages: 4\nema: 0.5\nlr: 0.01\nwarmup: 0\n")
    assert main(["train", "outlined", "--config", str(config), "--out", str(out), "--run", str(run)]) == 0
    shipped = {k: v.float() for k, v in load_t2i("outlined", out).unet.state_dict().items()}
    ema, last = load_file(run / "ema.safetensors"), load_file(run / "weights.safetensors")
    convs = [k for k in shipped if k.endswith("conv1.weight")]
    assert convs and all(torch.allclose(shipped[k], ema[f"unet.{k}"].float(), atol=1e-3) for k in convs)
    assert not all(torch.allclose(shipped[k], last[f"unet.{k}"].float(), atol=1e-3) for k in convs)
