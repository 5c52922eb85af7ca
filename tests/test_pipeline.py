"""AnimationPipeline and sliding context windows: shapes, dtypes, determinism, clear errors, exact fallbacks."""
import numpy as np
import pytest
import torch

from minianimate.context import ContextWindows, context_windows, fuse_weights
from minianimate.inflation import MotionUNet
from minianimate.pipeline import AnimationPipeline, ImagePipeline, parse_motion_lora
from minianimate.toy.models import load_text_encoder, load_vae
from minianimate.unet import UNet

TINY = dict(sample_size=16, block_out_channels=(16, 32), layers_per_block=1, attention_head_dim=2,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=64, norm_num_groups=8)


@pytest.fixture(scope="module")
def pipe():
    """The shipped VAE and text encoder around a tiny random motion UNet (fast, and the same code path)."""
    torch.manual_seed(0)
    unet = MotionUNet(TINY, dict(heads=2, max_frames=8)).eval().requires_grad_(False)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "proj_out" in name:
                p.normal_(0, 0.02)  # let the motion modules do something
    return AnimationPipeline(load_vae(), load_text_encoder(), unet)


def test_output_shape_dtype_and_determinism(pipe):
    a = pipe.generate("a red circle moving left", frames=4, steps=2, seed=3, progress=False)
    assert a.shape == (4, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, pipe.generate("a red circle moving left", frames=4, steps=2, seed=3, progress=False))
    assert not np.array_equal(a, pipe.generate("a red circle moving left", frames=4, steps=2, seed=4, progress=False))
    batch = pipe.generate(["a red circle moving left", "a blue square moving up"], frames=4, steps=2, seed=3,
                          progress=False, height=32, width=48)
    assert batch.shape == (2, 4, 32, 48, 3)


def test_bad_sizes_and_lengths_give_clear_errors(pipe):
    with pytest.raises(ValueError, match="multiples of the VAE's factor 4"):
        pipe.generate("a red circle", frames=4, steps=1, height=70, progress=False)
    with pytest.raises(ValueError, match="positional encoding.*context"):
        pipe.generate("a red circle", frames=12, steps=1, progress=False)
    with pytest.raises(ValueError, match="no domain adapter"):
        pipe.generate("a red circle", frames=4, steps=1, adapter_scale=1.0, progress=False)
    with pytest.raises(FileNotFoundError, match="MotionLoRA 'spin' not found"):
        pipe.generate("a red circle", frames=4, steps=1, motion_loras=["spin"], progress=False)
    with pytest.raises(FileNotFoundError, match="personalized model"):
        pipe.load_personalized("no/such/model")
    with pytest.raises(ValueError, match="NAME_OR_PATH"):
        parse_motion_lora("zoom-in:fast")
    assert parse_motion_lora("zoom-in:0.8") == ("zoom-in", 0.8) and parse_motion_lora("roll") == ("roll", 1.0)
    assert parse_motion_lora(r"C:\\models\\zoom.ckpt") == (r"C:\\models\\zoom.ckpt", 1.0)  # a Windows path


def test_long_clips_run_with_context_windows(pipe):
    video = pipe.generate("a red circle moving left", frames=12, steps=2, context=8, overlap=2, progress=False)
    assert video.shape == (12, 64, 64, 3)


def test_fuse_is_an_argument_of_generate(pipe):
    kwargs = dict(frames=12, steps=2, seed=1, context=8, overlap=2, context_schedule="uniform", progress=False)
    pyramid = pipe.generate("a red circle moving left", **kwargs)
    flat = pipe.generate("a red circle moving left", fuse="flat", **kwargs)
    shape = pipe.latent_shape(1, None, None, 12)
    by_hand = pipe.decode(pipe.denoise(ContextWindows(pipe.unet, 8, 2, "flat"), shape, ["a red circle moving left"],
                                       steps=2, seed=1))[0]
    assert np.array_equal(flat, by_hand) and not np.array_equal(flat, pyramid)


def test_the_pipeline_reads_channels_and_factor_from_its_models():
    """No toy constants: an SD-shaped VAE (factor 8, 3 latent channels here) and UNet work unchanged."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=3, norm_num_groups=8,
                        layers_per_block=1).eval()
    config = {**TINY, "in_channels": 3, "out_channels": 3, "sample_size": 4}
    encoder = load_text_encoder()
    images = ImagePipeline(vae, encoder, UNet(config).eval()).generate(["a red circle"], steps=1)
    assert images.shape == (1, 32, 32, 3)
    unet = MotionUNet(config, dict(heads=2, max_frames=8)).eval()
    video = AnimationPipeline(vae, encoder, unet).generate("a red circle", frames=3, steps=1, height=48, width=64,
                                                           progress=False)
    assert video.shape == (3, 48, 64, 3)
    with pytest.raises(ValueError, match="multiples of the VAE's factor 8"):
        AnimationPipeline(vae, encoder, unet).generate("a red circle", frames=3, steps=1, height=36, progress=False)


def test_window_schedule_covers_every_frame():
    for frames in range(1, 70):
        for window, overlap in ((16, 4), (8, 2), (16, 0), (5, 4)):
            windows = context_windows(frames, window, overlap)
            covered = sorted({i for w in windows for i in w})
            assert covered == list(range(frames))
            assert all(len(w) == min(window, frames) and w == list(range(w[0], w[0] + len(w))) for w in windows)
            assert all(b[0] - a[0] <= window - overlap for a, b in zip(windows, windows[1:]))
    assert context_windows(24, 16, 4) == [list(range(16)), list(range(8, 24))]
    assert fuse_weights(4).tolist() == [1, 2, 2, 1]
    with pytest.raises(ValueError, match="overlap < window"):
        context_windows(20, 8, 8)


def test_context_windows_equal_the_plain_path_when_the_window_covers_the_clip():
    torch.manual_seed(0)
    unet = MotionUNet(TINY, dict(heads=2, max_frames=16)).eval()
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "proj_out" in name:
                p.normal_(0, 0.05)
        x, ctx = torch.randn(1, 4, 6, 16, 16), torch.randn(1, 3, 64)
        assert torch.equal(ContextWindows(unet, 8, 2)(x, 10, ctx), unet(x, 10, ctx))
        # a frame-wise model is fused back exactly (weights sum to one), per-frame prompts follow their frames
        framewise = lambda x, t, c: x * 2 + c.unflatten(0, (x.shape[0], -1)).mean((2, 3))[:, None, :, None, None]  # noqa
        x, ctx = torch.randn(2, 4, 20, 2, 2), torch.randn(40, 3, 5)
        torch.testing.assert_close(ContextWindows(framewise, 8, 3)(x, 0, ctx), framewise(x, 0, ctx))


def test_vae_slicing_decodes_the_same_frames(pipe):
    kwargs = dict(frames=4, steps=2, seed=3, progress=False)
    whole = pipe.generate("a red circle moving left", **kwargs)
    try:
        sliced = pipe.enable_vae_slicing(1).generate("a red circle moving left", **kwargs)
    finally:
        pipe.vae_batch = 4
    assert np.abs(sliced.astype(int) - whole.astype(int)).max() <= 1


def test_bfloat16_sampling_stays_close_to_float32(pipe):
    """Autocast on the CPU: the same code path a GPU takes with --dtype bfloat16; the seed gives the same noise."""
    kwargs = dict(frames=4, steps=2, seed=3, progress=False)
    full = pipe.generate("a red circle moving left", **kwargs)
    try:
        half = pipe.to("cpu", "bfloat16").generate("a red circle moving left", **kwargs)
    finally:
        pipe.to("cpu", "float32")
    assert half.shape == full.shape and all(p.dtype == torch.float32 for p in pipe.unet.parameters())
    assert np.abs(half.astype(float) - full.astype(float)).mean() < 8
