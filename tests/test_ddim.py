"""DDIM equals diffusers' DDIMScheduler configured as Stable Diffusion 1.5's."""
import pytest
import torch
from diffusers import DDIMScheduler

from minianimate.ddim import DDIM, classifier_free_guidance


def sd15_reference(**kw):
    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1, **kw)


@pytest.mark.parametrize("n", [1, 10, 25, 50, 999])
def test_timesteps_match_diffusers(n):
    ref = sd15_reference()
    ref.set_timesteps(n)
    assert torch.equal(DDIM().set_timesteps(n), ref.timesteps)


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear"])
def test_schedules_match_diffusers(schedule):
    ref = DDIMScheduler(beta_schedule=schedule, beta_start=0.00085, beta_end=0.012)
    ours = DDIM(beta_schedule=schedule)
    assert torch.allclose(ours.alphas_cumprod, ref.alphas_cumprod, atol=1e-7)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_25_step_loop_matches_diffusers(eta):
    ref, ours = sd15_reference(), DDIM()
    ref.set_timesteps(25)
    ours.set_timesteps(25)
    x = torch.randn(2, 4, 8, 8)
    a, b = x.clone(), x.clone()
    ga, gb = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    model = lambda x, t: torch.sin(3 * x + t / 100.0)  # any deterministic stand-in for a denoiser
    for t in ours.timesteps:
        a = ref.step(model(a, t), t, a, eta=eta, generator=ga).prev_sample
        b = ours.step(model(b, t), t, b, eta=eta, generator=gb)
    assert torch.allclose(a, b, atol=1e-5)


def test_add_noise_matches_diffusers():
    x0, noise, t = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8), torch.tensor([0, 500, 999])
    assert torch.allclose(DDIM().add_noise(x0, noise, t), sd15_reference().add_noise(x0, noise, t), atol=1e-6)


def test_eta_zero_is_deterministic_and_inverts_a_perfect_denoiser():
    """With the true noise as prediction, one DDIM pass recovers x_0 exactly."""
    ddim = DDIM()
    ddim.set_timesteps(10)
    x0, noise = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    t0 = int(ddim.timesteps[0])
    x = ddim.add_noise(x0, noise, t0)
    for t in ddim.timesteps:
        x = ddim.step(noise, t, x)  # x_t stays on the same noise direction
    abar0 = ddim.final_alpha_cumprod
    assert torch.allclose(x, abar0.sqrt() * x0 + (1 - abar0).sqrt() * noise, atol=1e-4)


def test_classifier_free_guidance():
    u, c = torch.zeros(2), torch.ones(2)
    assert torch.equal(classifier_free_guidance(u, c, 7.5), torch.full((2,), 7.5))
    assert torch.equal(classifier_free_guidance(u, c, 1.0), c)


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="beta_schedule 'cosine'"):
        DDIM(beta_schedule="cosine")
    with pytest.raises(ValueError, match="num_inference_steps"):
        DDIM().set_timesteps(0)
