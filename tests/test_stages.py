"""The training stages: held-out data, the clip loss, the noise prior, resume, gradient checkpointing, typed
configs and DDP (2 gloo processes)."""
import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from minianimate.toy import shapeworld as sw
from minianimate.ddim import DDIM
from minianimate.inflation import MotionUNet
from minianimate.toy.text_encoder import ToyTextEncoder
from minianimate.sampling import frame_noise
from minianimate.stages import diffusion_loss, fit
from minianimate.toy.datasets import HELD_OUT, LORA_HELD_OUT, clip_set, combos, reference_set
from minianimate.trainer import TrainConfig, Trainer, load_config

TINY = dict(sample_size=8, block_out_channels=(16, 32), layers_per_block=1, attention_head_dim=2,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=16, norm_num_groups=8)
MOTION = dict(heads=2, max_frames=8)
CAPTIONS = ["a red square moving left", "a blue circle moving up", "a green triangle moving right",
            "a yellow square moving down"] * 2


def tiny_stage(seed=0):
    """A tiny motion stage: MotionUNet with only motion parameters trainable, fixed latents (8, 4, 4, 8, 8)."""
    torch.manual_seed(seed)
    unet = MotionUNet(TINY, MOTION).requires_grad_(False)
    for p in unet.motion_parameters():
        p.requires_grad_(True)
    encoder = ToyTextEncoder(dim=16, layers=1, heads=2).requires_grad_(False)
    latents = torch.randn(8, 4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    latents = latents.cumsum(2) / 2  # frames that depend on each other: something for the motion modules
    loss = lambda step, g: diffusion_loss(unet, encoder, latents, CAPTIONS, DDIM(beta_schedule="linear"), g, 4)  # noqa
    return unet, loss


def test_held_out_combinations_never_appear_in_training_clips():
    assert set(combos(True)) == set(HELD_OUT) and not set(combos(False)) & set(HELD_OUT)
    assert len(combos(True)) + len(combos(False)) == len(sw.COLORS) * len(sw.SHAPES) * len(sw.DIRECTIONS)
    flipped = {(c, s, {"left": "right", "right": "left"}.get(d, d)) for c, s, d in HELD_OUT}
    assert flipped == set(HELD_OUT), "held-out set must be closed under the left-right flip augmentation"
    clips, captions = clip_set(40, seed=0, frames=4)
    assert clips.shape == (40, 4, 64, 64, 3) and clips.dtype.name == "uint8"
    seen = {tuple(sw.parse_caption(c).values()) for c in captions}
    assert not seen & set(HELD_OUT) and len(seen) > 10


def test_x0_weighting_is_each_clips_eps_error_times_clamped_inverse_snr():
    """weighting="x0": per-clip eps MSE times clamp(1/SNR(t), 1, 20), recomputed from what the UNet was given."""
    ddim, seen = DDIM(beta_schedule="linear"), {}
    x0 = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(2))  # one clip: every draw picks it

    class Recorder(torch.nn.Linear):  # a "UNet" that keeps its inputs and answers fixed random eps
        def forward(self, xt, t, context):
            seen.update(xt=xt, t=t, eps=torch.randn(xt.shape, generator=torch.Generator().manual_seed(3)))
            return seen["eps"]

    unet = Recorder(1, 1)

    encoder = ToyTextEncoder(dim=16, layers=1, heads=2)
    for seed in range(3):
        plain = diffusion_loss(unet, encoder, x0, CAPTIONS[:1], ddim, torch.Generator().manual_seed(seed), 6)
        weighted = diffusion_loss(unet, encoder, x0, CAPTIONS[:1], ddim, torch.Generator().manual_seed(seed), 6,
                                  weighting="x0")
        abar = ddim.alphas_cumprod[seen["t"]].view(-1, 1, 1, 1, 1)
        noise = (seen["xt"] - abar.sqrt() * x0) / (1 - abar).sqrt()
        per_clip = ((seen["eps"] - noise) ** 2).mean((1, 2, 3, 4))
        weight = torch.clamp((1 - abar.flatten()) / abar.flatten(), 1.0, 20.0)
        assert torch.allclose(plain, per_clip.mean(), rtol=1e-4)
        assert torch.allclose(weighted, (per_clip * weight).mean(), rtol=1e-4)
        assert weight.min() >= 1 and (weight > 1).any() and (weighted > plain)


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    unet, _ = tiny_stage()
    encoder = ToyTextEncoder(dim=16, layers=1, heads=2)
    latents = torch.randn(2, 4, 4, 8, 8, generator=torch.Generator().manual_seed(1)).cumsum(2) / 2
    opt = torch.optim.AdamW(unet.motion_parameters(), lr=3e-3)
    ddim = DDIM(beta_schedule="linear")

    def fixed_loss():  # the same noise and timesteps every time
        return diffusion_loss(unet, encoder, latents, CAPTIONS[:2], ddim, torch.Generator().manual_seed(5), 2, 0.0)

    before = fixed_loss().item()
    for _ in range(15):
        opt.zero_grad()
        fixed_loss().backward()
        opt.step()
    assert fixed_loss().item() < 0.9 * before
    frozen = [p for n, p in unet.named_parameters() if "motion_modules" not in n]
    assert all(p.grad is None for p in frozen), "only the motion modules may train"


def test_motion_stage_resume_equals_uninterrupted(tmp_path):
    def run(out, crash=None):
        unet, loss = tiny_stage()
        cfg = TrainConfig(steps=5, batch=4, lr=1e-3, warmup=1, checkpoint_every=2, log_every=1)
        trainer = Trainer({"unet": unet}, cfg, out, params=unet.motion_parameters())
        trainer.resume()

        def maybe_crash(step, g):
            if step == crash:
                raise KeyboardInterrupt
            return loss(step, g)
        return trainer, trainer.fit(maybe_crash, progress=False)

    _, expected = run(tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "split", crash=3)
    trainer, losses = run(tmp_path / "split")
    assert losses == expected
    assert (tmp_path / "split" / "weights.safetensors").exists()


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        unet, loss = tiny_stage()
        unet.enable_gradient_checkpointing(checkpointing)
        loss(0, torch.Generator().manual_seed(0)).backward()
        grads.append(torch.cat([p.grad.flatten() for p in unet.motion_parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def test_gradient_checkpointing_reaches_the_mid_block(monkeypatch):
    import minianimate.unet as unet_module

    calls = []
    original = unet_module.checkpoint
    monkeypatch.setattr(unet_module, "checkpoint", lambda fn, *a, **k: calls.append(fn.__self__) or original(fn, *a, **k))
    torch.manual_seed(0)
    unet = MotionUNet(TINY, {**MOTION, "mid_block": True}).enable_gradient_checkpointing()
    unet(torch.randn(1, 4, 2, 8, 8), 10, torch.randn(1, 3, 16)).sum().backward()
    assert unet.mid_block in calls and len(set(map(id, calls))) == 5  # 2 down, mid, 2 up blocks


def test_frame_noise_shares_the_prescribed_variance():
    g = torch.Generator().manual_seed(0)
    assert torch.equal(frame_noise((2, 4, 3, 8, 8), g, 0.0), torch.randn((2, 4, 3, 8, 8), generator=torch.Generator().manual_seed(0)))
    noise = frame_noise((64, 4, 2, 16, 16), g, 0.5)
    assert abs(noise.var().item() - 1) < 0.03
    a, b = noise[:, :, 0].flatten(), noise[:, :, 1].flatten()
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item() - 0.5) < 0.03


def test_a_config_key_the_stage_does_not_know_is_an_error(tmp_path):
    from minianimate.toy.stages import MotionStage

    path = tmp_path / "motion.yaml"
    path.write_text("steps: 3\nclips: 4\nadapter_scal: 0.5\n")
    with pytest.raises(ValueError, match=r"unknown key adapter_scal for MotionStage; allowed: .*adapter_scale"):
        load_config(path, MotionStage)
    path.write_text("steps: 3\nclips: 4\n")
    cfg = load_config(path, MotionStage)
    assert (cfg.steps, cfg.clips, cfg.frames) == (3, 4, 16)


def _ddp_train(out, batch, seed=0):
    """3 steps of the tiny motion stage (batch per process); returns (motion weights, losses)."""
    unet, _ = tiny_stage(seed=seed)
    torch.manual_seed(0)  # the frozen text encoder is the same everywhere (as a loaded one would be)
    encoder = ToyTextEncoder(dim=16, layers=1, heads=2).requires_grad_(False)
    latents = torch.randn(8, 4, 4, 8, 8, generator=torch.Generator().manual_seed(1)).cumsum(2) / 2
    cfg = TrainConfig(steps=3, batch=batch, lr=1e-3, warmup=1, checkpoint_every=3, log_every=1, device="cpu")
    trainer = fit({"unet": unet}, unet, encoder, latents, CAPTIONS, DDIM(beta_schedule="linear"), cfg, out,
                  params=unet.motion_parameters(), progress=False)
    return [p.detach().clone() for p in unet.motion_parameters()], trainer.losses


def _ddp_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from minianimate.trainer import init_distributed

    assert init_distributed() == (rank, world)
    weights, losses = _ddp_train(out, batch=2, seed=rank)  # other initial weights on rank 1: DDP broadcasts rank 0's
    torch.save({"weights": weights, "losses": losses}, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_ddp_two_gloo_processes_train_as_one_process_with_the_doubled_batch(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path / "ddp")), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / "ddp" / f"rank{r}.pt") for r in (0, 1))
    for a, b in zip(r0["weights"], r1["weights"]):
        assert torch.equal(a, b), "replicas stay equal"
    assert (tmp_path / "ddp" / "weights.safetensors").exists()  # rank 0 wrote the checkpoint
    single, losses = _ddp_train(tmp_path / "single", batch=4)
    fresh, _ = tiny_stage(seed=0)
    assert any(not torch.equal(a, b) for a, b in zip(single, fresh.motion_parameters())), "it trained"
    for a, b in zip(r0["weights"], single):  # fp32 sums in another order; Adam's g / sqrt(v) turns the rounding
        torch.testing.assert_close(a, b, rtol=0, atol=5e-5)  # of near-zero gradients into steps of up to ~lr
    assert r0["losses"] == pytest.approx(losses, rel=1e-4), "the logged loss is the mean over the global batch"


# --- stage 3: MotionLoRA -----------------------------------------------------------------------------

def _trained_motion_lora(unet, seed=0):
    from minianimate.lora import MOTION_ATTENTION, LoRA

    lora = LoRA.inject(unet, MOTION_ATTENTION, rank=4, name="zoom-in")
    with torch.no_grad():
        for p in lora.parameters():
            p.normal_(0, 0.3, generator=torch.Generator().manual_seed(seed))
    return lora


def test_motion_lora_targets_only_temporal_attention_and_scale_zero_is_no_lora():
    unet, _ = tiny_stage()
    with torch.no_grad():
        for p in unet.motion_parameters():
            p.normal_(0, 0.05)
    x, ctx = torch.randn(1, 4, 4, 8, 8), torch.randn(1, 3, 16)
    with torch.no_grad():
        plain = unet(x, 10, ctx)
        lora = _trained_motion_lora(unet)
        assert lora.targets and all("motion_modules" in n and n.split(".")[-2 if n.endswith(".0") else -1]
                                    in ("to_q", "to_k", "to_v", "to_out") for n in lora.targets)
        assert not torch.allclose(unet(x, 10, ctx), plain, atol=1e-4)
        lora.scale = 0.0
        assert torch.equal(unet(x, 10, ctx), plain)
        lora.scale = 0.7
        hooked = unet(x, 10, ctx)
        before = {k: v.clone() for k, v in unet.state_dict().items()}
        lora.merge()
        torch.testing.assert_close(unet(x, 10, ctx), hooked, atol=1e-5, rtol=1e-5)
        lora.unmerge()
        assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())


def test_motion_lora_official_file_round_trip(tmp_path):
    from safetensors.torch import load_file

    from minianimate.lora import LoRA

    unet, _ = tiny_stage()
    lora = _trained_motion_lora(unet)
    path = lora.save(tmp_path / "zoom-in.safetensors", format="official")
    keys = list(load_file(path))
    assert all(".temporal_transformer." in k and ".attention_blocks." in k and ".processor.to_" in k for k in keys)
    x, ctx = torch.randn(1, 4, 4, 8, 8), torch.randn(1, 3, 16)
    with torch.no_grad():
        expected = unet(x, 10, ctx)
        lora.detach()
        loaded = LoRA.load(unet, path)
        assert loaded.format == "official"
        torch.testing.assert_close(unet(x, 10, ctx), expected, atol=1e-6, rtol=1e-5)


def test_motion_lora_references_zoom_and_leave_out_held_out_prompts():
    from minianimate.toy import metrics

    clips, captions = reference_set("zoom-in", 12, seed=0, frames=8)
    assert clips.shape == (12, 8, 64, 64, 3)
    assert not {tuple(sw.parse_caption(c).values())[:2] for c in captions} & set(LORA_HELD_OUT)
    assert all(sw.parse_caption(c)["direction"] is None for c in captions)
    assert metrics.zoom_accuracy(clips, ["zoom-in"] * len(clips)) == 1.0


def test_the_shards_of_a_global_batch_average_to_its_gradient(monkeypatch):
    import minianimate.stages as stages_module
    import minianimate.trainer as trainer_module
    from minianimate.trainer import step_generator

    unet, _ = tiny_stage()
    encoder = ToyTextEncoder(dim=16, layers=1, heads=2).requires_grad_(False)
    latents = torch.randn(8, 4, 4, 8, 8, generator=torch.Generator().manual_seed(1)).cumsum(2) / 2

    def gradients(rank, world, batch):
        monkeypatch.setattr(trainer_module, "world", lambda: (rank, world))
        monkeypatch.setattr(stages_module, "world", lambda: (rank, world))
        unet.zero_grad()
        diffusion_loss(unet, encoder, latents, CAPTIONS, DDIM(beta_schedule="linear"), step_generator(0, 0),
                       batch).backward()
        return [p.grad.clone() for p in unet.motion_parameters()]

    whole = gradients(0, 1, 4)
    halves = [gradients(rank, 2, 2) for rank in (0, 1)]
    for g, a, b in zip(whole, *halves):
        torch.testing.assert_close((a + b) / 2, g, rtol=0, atol=1e-7)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_training_keeps_fp32_master_weights(tmp_path, dtype):
    unet, loss = tiny_stage()
    cfg = TrainConfig(steps=2, batch=2, lr=1e-3, warmup=1, checkpoint_every=2, device="cpu", dtype=dtype)
    before = [p.detach().clone() for p in unet.motion_parameters()]
    trainer = Trainer({"unet": unet}, cfg, tmp_path, params=unet.motion_parameters())
    losses = trainer.fit(loss, progress=False)
    assert len(losses) == 2 and all(map(math.isfinite, losses))
    assert all(p.dtype == torch.float32 for p in unet.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, unet.motion_parameters()))


def test_an_unknown_device_or_dtype_is_a_clear_error():
    from minianimate.device import pick_device, pick_dtype

    with pytest.raises(ValueError, match="dtype 'float8' is not supported; use one of float32, bfloat16, float16"):
        pick_dtype("float8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU; use --device cpu"):
            pick_device("cuda")
    assert pick_device("cpu") == torch.device("cpu")
