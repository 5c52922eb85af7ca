"""Long clips (issue 46): continued context windows, FreeNoise's noise, the held frames of inpainting, the defaults."""
from types import SimpleNamespace

import numpy as np
import torch

from minianimate.context import context_windows, continue_windows, free_noise
from minianimate.ddim import DDIM
from minianimate.sampling import sample

from test_pipeline import pipe  # noqa: F401  (the tiny random pipeline fixture)


def test_continued_windows_are_laid_out_as_uniform_ones():
    for frames in (17, 40, 48, 64):
        assert context_windows(frames, 16, 8, "continued") == context_windows(frames, 16, 8, "uniform")


def test_free_noise_is_diffusers_shuffle_context():
    from diffusers.pipelines.free_noise_utils import AnimateDiffFreeNoiseMixin

    shape, window, stride = (1, 2, 40, 3, 3), 16, 12
    fake = SimpleNamespace(_free_noise_context_length=window, _free_noise_context_stride=stride,
                           _free_noise_noise_type="shuffle_context", vae_scale_factor=1)
    theirs = AnimateDiffFreeNoiseMixin._prepare_latents_free_noise(
        fake, 1, 2, 40, 3, 3, torch.float32, "cpu", torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    ours = free_noise(torch.randn(shape, generator=generator), window, window - stride, generator)
    assert torch.equal(ours, theirs)


def test_free_noise_keeps_the_first_window_and_shuffles_it_into_the_next_ones():
    noise = torch.arange(40.0).reshape(1, 1, 40, 1, 1)
    out = free_noise(noise, 16, 4, torch.Generator().manual_seed(0)).flatten()
    assert torch.equal(out[:16], noise.flatten()[:16])
    assert sorted(out[16:28].tolist()) == list(range(12)) and out[16:28].tolist() != list(range(12))
    assert set(out[28:40].tolist()) <= set(range(16))  # later blocks: still the first window's frames


def test_sample_holds_known_frames_to_their_clean_latents_noised_to_each_step():
    ddim, seen = DDIM(), []

    def model(x, t, context):  # records what it was given
        seen.append((t, x.clone()))
        return 0.1 * x

    g = torch.Generator().manual_seed(0)
    shape = (1, 2, 5, 3, 3)
    clean, noise = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    mask = torch.tensor([True, True, False, False, False])
    sample(model, shape, torch.zeros(1, 1, 4), None, ddim, steps=4, latents=noise, progress=False,
           known=(mask, clean, noise))
    assert len(seen) == 4
    for t, x in seen:
        torch.testing.assert_close(x[:, :, mask], ddim.add_noise(clean[:, :, mask], noise[:, :, mask], t))


def test_sample_from_a_first_step_runs_only_the_later_timesteps():
    ddim, seen = DDIM(), []
    sample(lambda x, t, c: seen.append(t) or 0 * x, (1, 2, 3, 3), torch.zeros(1, 1, 4), None, ddim, steps=5,
           progress=False, first_step=2)
    assert seen == ddim.set_timesteps(5)[2:].tolist()


def test_each_continued_window_starts_from_the_last_known_frame_and_holds_the_ones_before():
    ddim, calls = DDIM(), []

    def sample_window(idx, latents, first_step, known):  # a "sampler" whose clean frames are their indices
        calls.append((idx, latents, first_step, known))
        return torch.tensor(idx, dtype=torch.float32).reshape(1, 1, -1, 1, 1).expand(1, 2, -1, 2, 2)

    noise = torch.randn(1, 2, 24, 2, 2, generator=torch.Generator().manual_seed(0))
    clean = continue_windows(sample_window, noise, ddim, steps=25, window=16, overlap=8, strength=0.84)
    assert [c[0] for c in calls] == context_windows(24, 16, 8)
    assert calls[0][2] == 0 and calls[0][3] is None and torch.equal(calls[0][1], noise[:, :, :16])
    idx, latents, first, (known, held, window_noise) = calls[1]
    assert first == 4 and known.tolist() == [True] * 8 + [False] * 8
    assert torch.equal(held[:, :, :8], clean[:, :, 8:16]) and torch.equal(window_noise, noise[:, :, 8:24])
    last = torch.full((1, 2, 16, 2, 2), 15.0)  # frame 15, the last one the first window made, held still
    torch.testing.assert_close(latents, ddim.add_noise(last, noise[:, :, 8:24], int(ddim.set_timesteps(25)[4])))
    assert clean[0, 0, :, 0, 0].tolist() == list(range(24))


def test_a_clip_longer_than_16_frames_is_continued_windows_by_default(pipe):  # noqa: F811
    kwargs = dict(frames=18, steps=1, seed=0, progress=False)
    video = pipe.generate("a red circle moving left", **kwargs)  # max_frames 8 here: windows of 8
    same = pipe.generate("a red circle moving left", context=8, overlap=4, context_schedule="continued", **kwargs)
    side_by_side = pipe.generate("a red circle moving left", context=8, context_schedule="uniform", **kwargs)
    assert video.shape == (18, 64, 64, 3) and np.array_equal(video, same) and not np.array_equal(video, side_by_side)


def test_free_noise_changes_the_starting_noise_of_side_by_side_windows(pipe):  # noqa: F811
    kwargs = dict(frames=12, steps=1, seed=0, context=8, overlap=4, context_schedule="uniform", progress=False)
    plain = pipe.generate("a red circle moving left", **kwargs)
    assert not np.array_equal(plain, pipe.generate("a red circle moving left", free_noise=True, **kwargs))


def test_centred_windows_start_in_the_middle_and_grow_outwards_each_touching_the_ones_done():
    from minianimate.context import window_order

    windows = context_windows(48, 16, 8, "centred")
    order = window_order(windows, 48, "centred")
    assert [w[0] for w in order] == [16, 8, 24, 0, 32] and sorted(order) == sorted(windows)
    assert window_order(windows, 48, "continued") == windows


def test_a_centred_window_before_the_middle_starts_from_the_first_known_frame():
    ddim, calls = DDIM(), []

    def sample_window(idx, latents, first_step, known):
        calls.append((idx, latents, known))
        return torch.tensor(idx, dtype=torch.float32).reshape(1, 1, -1, 1, 1).expand(1, 2, -1, 2, 2)

    noise = torch.randn(1, 2, 32, 2, 2, generator=torch.Generator().manual_seed(0))
    clean = continue_windows(sample_window, noise, ddim, steps=25, window=16, overlap=8, schedule="centred")
    assert torch.equal(clean[0, 0, :, 0, 0], torch.arange(32.0))  # every frame made once, by the window that made it
    idx, latents, (known, _, window_noise) = next(c for c in calls if c[0][0] == 0)  # the window before the middle
    assert known.tolist() == [False] * 8 + [True] * 8
    first = torch.full((1, 2, 16, 2, 2), 8.0)  # frame 8, the first one the middle window made, held still
    torch.testing.assert_close(latents, ddim.add_noise(first, window_noise, int(ddim.set_timesteps(25)[4])))
