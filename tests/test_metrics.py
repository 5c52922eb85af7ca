"""Rule-based metrics agree with the ground truth, also after mp4 compression, blur and noise."""
import numpy as np
import pytest
from PIL import Image, ImageFilter

from minianimate import metrics, shapeworld as sw
from minianimate.video_io import read_video, write_mp4

DIRECTIONS = (*sw.DIRECTIONS, "still")


@pytest.fixture(scope="module")
def clips():
    """200 video-domain clips (watermark, blur, noise), every direction and `still` alike."""
    rng = np.random.default_rng(0)
    return [sw.render_clip(rng, direction=DIRECTIONS[i % 5]) for i in range(200)]


def agreement(items, truths) -> dict:
    """Fraction of items whose `describe` matches the ground-truth meta, per attribute."""
    found = [metrics.describe(x) for x in items]
    return {key: np.mean([d[key] == ((m[key] or "plain") if key == "style" else m[key])
                          for d, m in zip(found, truths)])
            for key in ("color", "shape", "direction", "style") if key in truths[0]}


def blur(clip, radius=1.0):
    return np.stack([np.asarray(Image.fromarray(f).filter(ImageFilter.GaussianBlur(radius))) for f in clip])


def noise(clip, std, seed=0):
    noisy = clip + np.random.default_rng(seed).normal(0, std, clip.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def test_agreement_on_clean_clips(clips):
    scores = agreement([c for c, _, _ in clips], [m for _, _, m in clips])
    assert all(score >= 0.99 for score in scores.values()), scores


def test_agreement_after_mp4_round_trip(clips, tmp_path):
    decoded = []
    for i, (clip, _, _) in enumerate(clips[:30]):
        write_mp4(tmp_path / f"{i}.mp4", clip)
        decoded.append(read_video(tmp_path / f"{i}.mp4"))
    scores = agreement(decoded, [m for _, _, m in clips[:30]])
    assert all(score >= 0.99 for score in scores.values()), scores


@pytest.mark.parametrize("degrade", [lambda c: blur(c, 1.5), lambda c: noise(c, 20),
                                     lambda c: noise(blur(c), 10)], ids=["blur", "noise", "both"])
def test_agreement_on_blurred_and_noisy_clips(clips, degrade):
    scores = agreement([degrade(c) for c, _, _ in clips[:40]], [m for _, _, m in clips[:40]])
    assert all(score >= 0.95 for score in scores.values()), scores


def test_styles_are_detected_and_still_classified():
    rng = np.random.default_rng(1)
    for style in (None, *sw.STYLES):
        images = [sw.render_image(rng, style=style) for _ in range(24)]
        scores = agreement([x for x, _, _ in images], [m for _, _, m in images])
        assert all(score >= 0.99 for score in scores.values()), (style, scores)
        assert metrics.style_rate([blur(x[None])[0] for x, _, _ in images], style) >= 0.95


def test_watermark_leakage_is_one_on_video_frames_and_zero_on_images(clips):
    video = np.stack([c for c, _, _ in clips[:20]])  # (20, F, H, W, 3): any leading dims
    assert metrics.watermark_leakage(video) == pytest.approx(1, abs=0.05)
    assert metrics.watermark_leakage(video[..., ::-1, :]) == pytest.approx(1, abs=0.05)  # flipped
    rng = np.random.default_rng(2)
    images = np.stack([sw.render_image(rng)[0] for _ in range(20)])
    assert metrics.watermark_leakage(images) == pytest.approx(0, abs=0.05)
    pastel = np.stack([sw.render_clip(rng, style="pastel")[0] for _ in range(5)])
    assert metrics.watermark_leakage(pastel) == pytest.approx(1, abs=0.1)


def test_zoom_accuracy_on_camera_clips(clips):
    rng = np.random.default_rng(3)
    motions = ["zoom-in", "zoom-out", "roll"] * 5
    camera = [sw.render_camera_clip(rng, m)[0] for m in motions]
    assert metrics.zoom_accuracy(camera, motions) == 1.0  # roll counts as no zoom
    assert metrics.zoom_accuracy([c for c, _, _ in clips[:20]], [None] * 20) == 1.0


def test_accuracy_helpers_match_describe(clips):
    items, metas = [c for c, _, _ in clips[:10]], [m for _, _, m in clips[:10]]
    assert metrics.color_accuracy(items, [m["color"] for m in metas]) == 1.0
    assert metrics.shape_accuracy(items, [m["shape"] for m in metas]) == 1.0
    assert metrics.direction_accuracy(items, [m["direction"] for m in metas]) == 1.0
    assert metrics.shape_accuracy(items, ["circle"] * 10) < 1.0
    with pytest.raises(ValueError, match="as many targets"):
        metrics.color_accuracy(items, ["red"])


def test_largest_object_wins_over_specks():
    image, _, meta = sw.render_image(np.random.default_rng(4), shape="square")
    image[3:5, 3:5] = 255  # a small bright speck
    centroid = metrics.measure(image)["centroid"]
    assert np.allclose(centroid, meta["centre"], atol=0.5)


def test_nothing_found_in_a_blank_or_noise_frame():
    blank = np.full((4, 64, 64, 3), 15, np.uint8)
    for frames in (blank, noise(blank, 20)):
        found = metrics.describe(frames)
        assert found["color"] is None and found["shape"] is None and found["direction"] is None


def test_measure_accepts_batches_of_clips(clips):
    batch = np.stack([c for c, _, _ in clips[:3]])  # (B, F, H, W, 3)
    m = metrics.measure(batch)
    assert m["area"].shape == (3, 16) and m["centroid"].shape == (3, 16, 2)


def test_smoothness_of_true_motion_and_of_a_jumbled_clip(clips):
    clip = next(c for c, _, m in clips if m["direction"] == "right")
    jumbled = clip[np.random.default_rng(5).permutation(16)]
    assert metrics.centroid_jerk(clip) < 0.5 < 5 < metrics.centroid_jerk(jumbled)
    first, _, a = clips[0]
    other = next(c for c, _, b in clips if b["shape"] != a["shape"] and b["color"] != a["color"])
    mixed = np.where((np.arange(16) % 2 == 0)[:, None, None, None], first, other)  # two objects
    assert metrics.frame_consistency(first) > 0.95
    assert metrics.frame_consistency(mixed) < metrics.frame_consistency(first) - 0.15
