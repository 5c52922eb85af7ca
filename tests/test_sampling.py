"""The shared denoising loop: deterministic from the seed, guidance 1 equals no guidance."""
import torch

from minianimate.ddim import DDIM
from minianimate.sampling import sample


def toy_model(x, t, context):  # eps depends on the sample, the step and the prompt
    return 0.1 * x + context.mean(dim=(1, 2)).reshape(-1, *[1] * (x.ndim - 1)) * (t / 1000)


def test_same_seed_same_latents_and_guidance_one_is_unguided():
    ctx, uncond = torch.ones(2, 3, 4), torch.zeros(2, 3, 4)
    a = sample(toy_model, (2, 4, 8, 8), ctx, uncond, DDIM(), steps=5, guidance=1.0, seed=3, progress=False)
    b = sample(toy_model, (2, 4, 8, 8), ctx, None, DDIM(), steps=5, seed=3, progress=False)
    c = sample(toy_model, (2, 4, 8, 8), ctx, uncond, DDIM(), steps=5, guidance=5.0, seed=3, progress=False)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert torch.equal(c, sample(toy_model, (2, 4, 8, 8), ctx, uncond, DDIM(), steps=5, guidance=5.0, seed=3,
                                 progress=False))


def test_clips_use_the_same_loop():
    ctx = torch.ones(1, 3, 4)
    out = sample(toy_model, (1, 4, 6, 8, 8), ctx, torch.zeros(1, 3, 4), DDIM(), steps=3, progress=False)
    assert out.shape == (1, 4, 6, 8, 8)
