"""What users reach for at inference: prompt travel, FreeInit, looped context windows (their mechanics)."""
import numpy as np
import pytest
import torch

from minianimate.context import context_windows
from minianimate.free_init import lowpass, mix_frequencies
from minianimate.travel import frame_weights, parse_travel, travel_context

from test_pipeline import pipe  # noqa: F401  (the tiny random pipeline fixture)


def test_keyframe_weights_are_exact_at_keyframes_and_linear_between():
    weights = frame_weights({2: "a", 6: "b", 7: "c"}, 10)
    assert weights.shape == (10, 3) and torch.allclose(weights.sum(1), torch.ones(10))
    for column, frame in enumerate([2, 6, 7]):
        assert torch.equal(weights[frame], torch.eye(3)[column])
    assert torch.equal(weights[:2], torch.eye(3)[[0, 0]]) and torch.equal(weights[8:], torch.eye(3)[[2, 2]])
    assert torch.allclose(weights[3:6, 1], torch.tensor([0.25, 0.5, 0.75]))
    with pytest.raises(ValueError, match=r"keyframes \[0, 16\] must lie in 0..15"):
        frame_weights({0: "a", 16: "b"}, 16)


def test_travel_embeddings_equal_the_keyframe_prompts_at_the_keyframes(pipe):  # noqa: F811
    keyframes = {0: "a red circle moving left", 5: "a blue circle moving left"}
    context = travel_context(pipe.text_encoder, keyframes, 8)
    red, blue = pipe.text_encoder.encode_prompt(list(keyframes.values()))
    assert context.shape == (8, *red.shape)
    assert torch.equal(context[0], red) and torch.equal(context[5], blue) and torch.equal(context[7], blue)
    torch.testing.assert_close(context[2], 0.6 * red + 0.4 * blue)


def test_parse_travel_reads_the_cli_form_and_names_a_bad_entry():
    assert parse_travel("0:a red circle moving left|16:a blue circle moving right") == {
        0: "a red circle moving left", 16: "a blue circle moving right"}
    with pytest.raises(ValueError, match="bad prompt travel entry 'x:a red circle'"):
        parse_travel("x:a red circle")


def test_travel_with_one_prompt_everywhere_is_plain_generation(pipe):  # noqa: F811
    kwargs = dict(frames=6, steps=2, seed=3, progress=False)
    plain = pipe.generate("a red circle moving left", **kwargs)
    same = pipe.generate({0: "a red circle moving left", 4: "a red circle moving left"}, **kwargs)
    assert same.shape == plain.shape and np.abs(same.astype(int) - plain.astype(int)).max() <= 1
    travel = pipe.generate({0: "a red circle moving left", 4: "a blue square moving up"}, context=4, overlap=2,
                           **kwargs)
    assert travel.shape == plain.shape and not np.array_equal(travel, plain)


def test_free_init_with_zero_iterations_is_plain_sampling(pipe):  # noqa: F811
    kwargs = dict(frames=6, steps=2, seed=3, progress=False)
    plain = pipe.generate("a red circle moving left", **kwargs)
    assert np.array_equal(pipe.generate("a red circle moving left", free_init=0, **kwargs), plain)
    again = pipe.generate("a red circle moving left", free_init=1, **kwargs)
    assert again.shape == plain.shape and not np.array_equal(again, plain)
    assert np.array_equal(again, pipe.generate("a red circle moving left", free_init=1, **kwargs)), "seeded"


def test_the_ideal_filter_keeps_exactly_the_low_band():
    g = torch.Generator().manual_seed(0)
    low, high = torch.randn(2, 4, 8, 6, 6, generator=g), torch.randn(2, 4, 8, 6, 6, generator=g)
    mask = lowpass(low.shape, "ideal", 0.25, 0.25)
    assert set(mask.unique().tolist()) == {0.0, 1.0} and mask[4, 3, 3] == 1  # the centre (DC) is kept
    spectrum = lambda x: torch.fft.fftshift(torch.fft.fftn(x, dim=(-3, -2, -1)), dim=(-3, -2, -1))  # noqa: E731
    mixed = spectrum(mix_frequencies(low, high, mask))
    keep = mask.bool()
    torch.testing.assert_close(mixed[..., keep], spectrum(low)[..., keep], rtol=0, atol=1e-4)
    torch.testing.assert_close(mixed[..., ~keep], spectrum(high)[..., ~keep], rtol=0, atol=1e-4)
    for kind in ("butterworth", "gaussian"):
        soft = lowpass((8, 6, 6), kind)
        assert soft.max() == 1 and soft.min() >= 0 and soft[4, 3, 3] == 1 and soft[0, 0, 0] < 0.5
    with pytest.raises(ValueError, match="free_init_filter must be one of butterworth, gaussian, ideal"):
        lowpass((8, 6, 6), "box")


def test_looped_windows_wrap_around_and_cover_every_frame_equally():
    windows = context_windows(24, 16, 4, "looped")
    assert windows == [list(range(16)), [(12 + i) % 24 for i in range(16)]]
    counts = np.bincount(np.concatenate(windows), minlength=24)
    assert (counts >= 1).all() and 23 in windows[1] and 0 in windows[1]
    assert context_windows(8, 16, 4, "looped") == [list(range(8))]
    with pytest.raises(ValueError, match="unknown context schedule 'spiral'"):
        context_windows(24, 16, 4, "spiral")


def test_a_looped_long_clip_generates(pipe):  # noqa: F811
    video = pipe.generate("a red circle moving left", frames=12, steps=2, seed=0, context=8, overlap=4,
                          context_schedule="looped", progress=False)
    assert video.shape == (12, 64, 64, 3)
