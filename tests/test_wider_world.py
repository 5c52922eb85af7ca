"""The wider world: backgrounds of four kinds for images and clips, the VAE's wider mix, prompt travel's colour-switch
clips with a caption per frame, and the motion stage trained on them through the library's loss."""
import numpy as np
import pytest
import torch

from minianimate.ddim import DDIM
from minianimate.stages import diffusion_loss
from minianimate.toy import metrics
from minianimate.toy import shapeworld as sw
from minianimate.toy.datasets import clip_set, image_set, switch_set
from minianimate.toy.text_encoder import ToyTextEncoder
from minianimate.toy.vae import render_mix


def _corner(frame):
    return frame[:2, :2].reshape(-1, 3).astype(float)


@pytest.mark.parametrize("kind", sw.BACKGROUND_KINDS)
def test_a_background_kind_is_flat_and_stands_out_from_the_shape(kind):
    rng = np.random.default_rng(0)
    for _ in range(12):
        image, text, meta = sw.render_image(rng, background=kind)
        corner = _corner(image)
        assert (corner == corner[0]).all() and np.allclose(corner[0], np.round(meta["background"]))
        assert np.linalg.norm(np.subtract(meta["background"], sw.COLORS[meta["color"]])) >= sw.MIN_SHAPE_CONTRAST
        assert metrics.classify_color(image) == meta["color"] and text == sw.caption(meta["color"], meta["shape"])
    with pytest.raises(ValueError, match="unknown background kind 'pink'"):
        sw.random_background(rng, "pink")


def test_the_default_background_draws_nothing_so_the_shipped_data_stay_the_same():
    a = sw.render_image(np.random.default_rng(3))
    b = sw.render_image(np.random.default_rng(3), background=None)
    assert (a[0] == b[0]).all() and (_corner(a[0]) == sw.BACKGROUND).all()
    assert (render_mix(6, 0) == render_mix(6, 0, wide=False)).all()


def test_random_backgrounds_cover_dark_and_light_and_clips_keep_one_background():
    images, _ = image_set(40, 0, background="random")
    luma = np.array([_corner(x)[0].mean() for x in images])
    assert luma.min() < 50 and luma.max() > 190
    clips, _ = clip_set(3, 0, frames=4, watermark=False, background="random")
    for clip in clips:
        corners = np.stack([_corner(f)[0] for f in clip])
        assert (corners == corners[0]).all()
    wide = render_mix(30, 0, wide=True)
    assert len({tuple(_corner(x)[0]) for x in wide}) > 20  # not two backgrounds


def test_switch_clips_change_colour_at_their_frame_keep_one_path_and_caption_every_frame():
    clips, captions = switch_set(3, seed=0, frames=16)
    assert clips.shape == (3, 16, 64, 64, 3) and clips.dtype == np.uint8
    for clip, per_frame in zip(clips, captions):
        assert len(per_frame) == 16 and len(set(per_frame)) == 2
        k = per_frame.index(per_frame[-1])
        assert 4 <= k <= 12
        colours = [metrics.classify_color(frame) for frame in clip]
        assert colours == [c.split()[1] for c in per_frame]
        assert metrics.describe(clip)["max_jump"] < 2.0  # one path across the cut: no jump
    clips, captions = switch_set(2, seed=1, frames=8, background="light")
    assert all(_corner(clip[0])[0].mean() >= 190 for clip in clips)


def test_a_caption_per_frame_reaches_each_frame_and_a_wrong_length_is_refused():
    seen = {}

    class Recorder(torch.nn.Linear):  # a "UNet" that keeps the context it was given
        def forward(self, xt, t, context):
            seen["context"] = context
            return torch.zeros_like(xt)

    encoder = ToyTextEncoder(dim=16, layers=1, heads=2)
    x0 = torch.randn(1, 4, 3, 8, 8)
    per_frame = [["a red circle", "a red circle", "a blue circle"]]
    diffusion_loss(Recorder(1, 1), encoder, x0, per_frame, DDIM(), torch.Generator().manual_seed(0), 2,
                   text_dropout=0.0)
    expected = encoder.encode_prompt(per_frame[0] * 2)
    assert seen["context"].shape[0] == 6 and torch.allclose(seen["context"], expected)
    with pytest.raises(TypeError, match="one per frame"):
        diffusion_loss(Recorder(1, 1), encoder, x0, [["a red circle"] * 2], DDIM(), torch.Generator(), 2)


def test_the_motion_stage_trains_switch_clips_under_a_mixed_adapter_and_resumes_with_its_checks(tmp_path):
    """`train motion`'s own path with the lab's levers: colour-switch clips, the adapter's scale drawn per step, the
    wider world's backgrounds; the checks a run made are kept when it resumes to more steps, and the export chains
    onto the module it started from."""
    import json
    import shutil

    from minianimate.toy.models import CHECKPOINTS
    from minianimate.toy.stages import MotionStage, motion_stage, train_motion

    out = tmp_path / "ckpt"
    shutil.copytree(CHECKPOINTS, out)
    cfg = MotionStage(steps=2, batch=2, clips=2, frames=4, checkpoint_every=1, switch=0.5, adapter_mix=True,
                      background="random", check=False, init="motion_module.safetensors")
    scales = []

    def on_check(trainer, unet, adapter):
        assert not adapter.enabled  # checks sample with the adapter off
        return {"scale": adapter.scale}

    unet, trainer, history, clips = train_motion(cfg, out, tmp_path / "run", False, False, on_check=on_check)
    scales = [row["scale"] for row in history]
    assert clips == 3 and [row["step"] for row in history] == [1, 2]
    assert len(set(scales)) == 2 and all(0 <= s <= 1 for s in scales)  # a scale per step, not the config's 1.0
    cfg4 = MotionStage(**{**cfg.__dict__, "steps": 3})
    _, trainer, history, _ = train_motion(cfg4, out, tmp_path / "run", True, False, on_check=on_check)
    assert [row["step"] for row in history] == [1, 2, 3] and [r["scale"] for r in history[:2]] == scales
    before = json.loads((out / "motion_module.json").read_text())
    motion_stage(MotionStage(**{**cfg.__dict__, "steps": 1}), out, tmp_path / "run2", False, False)
    after = json.loads((out / "motion_module.json").read_text())
    assert after["steps"] == before["steps"] + 1 and after["phases"][-1]["steps"] == 1


def test_any_shape_colour_gets_a_background_it_stands_out_from_and_an_impossible_one_is_an_error():
    rng = np.random.default_rng(0)
    for rgb in [(0, 0, 0), (20, 30, 10), (255, 255, 255), (128, 128, 128), (230, 210, 40)]:
        for _ in range(20):
            bg = sw.random_background(rng, avoid=rgb)
            assert np.linalg.norm(np.subtract(bg, rgb)) >= sw.MIN_SHAPE_CONTRAST
    with pytest.raises(ValueError, match="no dark background stands out from"):
        sw.random_background(rng, "dark", avoid=(20, 20, 20))


def test_each_kind_reads_back_as_itself_mostly_and_the_styles_backgrounds_as_dark_and_light():
    rng = np.random.default_rng(0)
    for kind in ("dark", "grey", "light"):
        assert all(sw.background_kind(sw.random_background(rng, kind)) == kind for _ in range(50))
    coloured = [sw.background_kind(sw.random_background(rng, "coloured")) for _ in range(200)]
    assert coloured.count("coloured") >= 150  # a dull or dark hue may read as grey or dark
    assert sw.background_kind(sw.BACKGROUND) == "dark" and sw.background_kind(sw.PASTEL_BACKGROUND) == "light"



def test_palette_clips_keep_their_caption_and_colour_name_in_other_shades_never_pale():
    plain, captions = clip_set(12, 5, frames=4, watermark=False)
    again, _ = clip_set(12, 5, frames=4, watermark=False, palette=0.0)
    assert np.array_equal(plain, again)  # no palette: not one more draw from the generator
    rng = np.random.default_rng(0)
    for color, named in sw.COLORS.items():
        shades = [sw.palette_rgb(rng, named) for _ in range(50)]
        assert all(metrics._hue_name(np.array(rgb)) == color for rgb in shades)  # the colour keeps its name
        assert min(max(rgb) - min(rgb) for rgb in shades) >= 0.55 * 0.45 * 255 - 1e-6  # saturated: never pale
        assert np.ptp([max(rgb) for rgb in shades]) > 80  # dark and bright shades, not one
    clips, shaded = clip_set(12, 5, frames=4, watermark=False, palette=1.0)
    assert len(shaded) == 12 and all(c.split()[1] in sw.COLORS for c in shaded)
    for clip, caption in zip(clips, shaded):  # the shape's pixels: the caption's colour name, another shade
        frame = clip[0].reshape(-1, 3).astype(float)
        shape = frame[np.abs(frame - frame[0]).sum(1) > 60]
        assert metrics._hue_name(np.median(shape, 0)) == caption.split()[1]
    assert not np.array_equal(clips, plain)


def test_the_wider_worlds_motion_config_is_the_labs_chain_arm_field_for_field(monkeypatch):
    """`train motion --config configs/wide/motion.yaml` trains what the motion lab's chain arms train (their run
    folders resume through it): the same MotionStage, field for field."""
    import importlib.util
    import json
    from dataclasses import asdict
    from pathlib import Path

    from minianimate.toy.stages import MotionStage, load_config

    root = Path(__file__).resolve().parent.parent
    monkeypatch.setattr(metrics, "STILL_SPEED", metrics.STILL_SPEED)  # the lab reads directions its own way: restored
    spec = importlib.util.spec_from_file_location("motion_lab", root / "benchmarks" / "motion_lab.py")
    lab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lab)
    arm = lab.stage_config({**lab.LEVERS, **lab.ARMS["r3-wide-chain-long"]}, None)
    config = load_config(root / "configs" / "wide" / "motion.yaml", MotionStage)
    assert json.loads(json.dumps(asdict(arm))) == json.loads(json.dumps(asdict(config)))
    assert config.watermark and config.adapter_scale == 1.0 and config.background == "random"
