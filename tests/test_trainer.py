"""The shared training loop: resume equals an uninterrupted run, NaN stops without harm, atomic files."""
import pytest
import torch

from minianimate.ddim import DDIM
from minianimate.stages import diffusion_loss
from minianimate.toy.text_encoder import ToyTextEncoder
from minianimate.trainer import NonFiniteLoss, TrainConfig, Trainer
from minianimate.unet import UNet

TINY = dict(sample_size=8, block_out_channels=(16, 32), layers_per_block=1, attention_head_dim=2,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=16, norm_num_groups=8)
CAPTIONS = ["a red square", "a blue circle", "a green triangle", "a yellow square"] * 4


def make_run(tmp, steps, ema=0.0):
    torch.manual_seed(0)
    unet, encoder = UNet(TINY), ToyTextEncoder(dim=16, layers=1, heads=2)
    cfg = TrainConfig(steps=steps, batch=4, lr=1e-3, warmup=2, ema=ema, checkpoint_every=3, log_every=1)
    trainer = Trainer({"unet": unet, "text_encoder": encoder}, cfg, tmp)
    latents = torch.randn(16, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    loss = lambda step, g: diffusion_loss(unet, encoder, latents, CAPTIONS, DDIM(beta_schedule="linear"), g, 4)  # noqa
    return trainer, loss


def test_resumed_run_gives_the_same_loss_curve_as_an_uninterrupted_one(tmp_path):
    full, loss = make_run(tmp_path / "full", 6, ema=0.9)
    expected = full.fit(loss, progress=False)

    first, loss = make_run(tmp_path / "split", 6, ema=0.9)

    def crash_at_4(step, g):
        if step == 4:
            raise KeyboardInterrupt  # interrupted after the checkpoint of step 3
        return loss(step, g)

    with pytest.raises(KeyboardInterrupt):
        first.fit(crash_at_4, progress=False)
    second, loss = make_run(tmp_path / "split", 6, ema=0.9)
    assert second.resume() and second.step == 3
    assert second.fit(loss, progress=False) == expected
    for a, b in zip(full.modules["unet"].parameters(), second.modules["unet"].parameters()):
        assert torch.equal(a, b)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer, loss = make_run(tmp_path, 6)
    bad = lambda step, g: loss(step, g) * (float("nan") if step == 4 else 1.0)  # noqa: E731
    with pytest.raises(NonFiniteLoss, match="at step 4"):
        trainer.fit(bad, progress=False)
    saved = (tmp_path / "weights.safetensors").read_bytes()
    fresh, _ = make_run(tmp_path, 6)
    assert fresh.resume() and fresh.step == 3  # the checkpoint of step 3 is intact
    assert all(torch.isfinite(p).all() for p in fresh.modules["unet"].parameters())
    assert (tmp_path / "weights.safetensors").read_bytes() == saved


def test_checkpoint_files_are_written_atomically(tmp_path):
    trainer, loss = make_run(tmp_path, 3)
    trainer.fit(loss, progress=False)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["config.json", "trainer_state.pt", "weights.safetensors"]  # no temp files left


def test_nothing_to_train_is_a_clear_error(tmp_path):
    frozen = UNet(TINY).requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to train"):
        Trainer({"unet": frozen}, TrainConfig(), tmp_path)


def test_use_ema_puts_the_ema_weights_into_the_trained_modules(tmp_path):
    """After `use_ema` the live modules hold the EMA's weights (what a stage then exports); without `ema` it
    changes nothing."""
    trainer, loss = make_run(tmp_path / "ema", 4, ema=0.9)
    trainer.fit(loss, progress=False)
    live, ema = trainer.modules["unet"], trainer.ema["unet"]
    assert not all(torch.equal(p, e) for p, e in zip(live.parameters(), ema.parameters()))
    trainer.use_ema()
    assert all(torch.equal(p, e) for p, e in zip(live.parameters(), ema.parameters()))
    plain, loss = make_run(tmp_path / "plain", 2)
    plain.fit(loss, progress=False)
    before = [p.clone() for p in plain.modules["unet"].parameters()]
    plain.use_ema()
    assert all(torch.equal(a, b) for a, b in zip(before, plain.modules["unet"].parameters()))


def test_a_run_saved_before_its_config_gained_a_field_resumes_at_the_default_and_not_otherwise(tmp_path):
    import json
    from dataclasses import asdict, dataclass

    from minianimate.trainer import check_resume

    @dataclass
    class Grown(TrainConfig):
        added: float = 0.5  # a field the class gained after the run was saved

    saved = {k: v for k, v in asdict(Grown(steps=4)).items() if k != "added"}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    check_resume(tmp_path, Grown(steps=8))  # the default: the run was trained as if with it
    with pytest.raises(ValueError, match="added 0.5 there, 0.7 here"):
        check_resume(tmp_path, Grown(steps=8, added=0.7))
    with pytest.raises(ValueError, match="lr 0.001 there, 0.01 here"):
        check_resume(tmp_path, Grown(steps=8, lr=0.01))
