"""Rule-based metrics agree with the ground truth, also after mp4 compression, blur and noise;
`describe` segments each clip once and gives the same figures as the standalone functions."""
import numpy as np
import pytest
from PIL import Image, ImageFilter

from minianimate.toy import metrics, segmentation, shapeworld as sw
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


def test_describe_segments_a_clip_or_frame_once(clips, monkeypatch):
    calls = {"segment": 0, "watermarks": 0}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return wrapper

    segment = counted("segment", segmentation.segment)  # one counter, whichever module calls it
    watermarks = counted("watermarks", segmentation._watermarks)
    for module in (metrics, segmentation):
        monkeypatch.setattr(module, "segment", segment)
        monkeypatch.setattr(module, "_watermarks", watermarks)
    clip = clips[0][0]
    for x in (clip, clip[0]):  # a clip (F, H, W, 3) and a frame (H, W, 3)
        calls.update(segment=0, watermarks=0)
        metrics.describe(x)
        assert calls == {"segment": 1, "watermarks": 1}
    calls.update(segment=0, watermarks=0)
    metrics.describe_all(np.stack([c for c, _, _ in clips[:3]]))  # (B, F, H, W, 3)
    assert calls == {"segment": 3, "watermarks": 3}


def test_describe_equals_the_standalone_functions(clips):
    right = next(c for c, _, m in clips if m["direction"] == "right")
    blank = np.full((6, 64, 64, 3), 15, np.uint8)
    items = [*(c for c, _, _ in clips[:3]), right[np.random.default_rng(6).permutation(16)], blank]
    for clip in items:
        found = metrics.describe(clip)
        m = metrics.measure(clip)
        path = m["centroid"][m["found"]]
        assert np.array_equal(found["jerk"], metrics.centroid_jerk(clip), equal_nan=True)
        assert found["consistency"] == metrics.frame_consistency(clip)
        assert np.array_equal(found["leakage"], metrics.watermark_leakage(clip), equal_nan=True)
        assert found["visible"] == m["found"].mean()
        assert found["displacement"] == (np.linalg.norm(path[-1] - path[0]) if len(path) > 1 else 0)
        assert {k: found[k] for k in ("color", "shape", "style", "direction", "zoom")} == {
            "color": metrics.classify_color(clip), "shape": metrics.classify_shape(clip),
            "style": metrics.detect_style(clip), "direction": metrics.classify_direction(clip),
            "zoom": metrics.classify_zoom(clip)}
    assert metrics.describe(blank)["visible"] == 0 and metrics.describe(blank)["displacement"] == 0
    frame = metrics.describe(clips[0][0][0])
    assert frame["jerk"] is None and frame["consistency"] is None and frame["visible"] == 1.0


def test_score_equals_the_accuracy_helpers(clips):
    items, metas = [c for c, _, _ in clips[:6]], [m for _, _, m in clips[:6]]
    described = metrics.describe_all(items)
    targets = {key: [m[key] for m in metas] for key in ("color", "shape", "direction")}
    scores = metrics.score(described, dict(targets, zoom=[None] * 6, style="outlined"))
    assert scores["color"] == metrics.color_accuracy(items, targets["color"])
    assert scores["shape"] == metrics.shape_accuracy(items, targets["shape"])
    assert scores["direction"] == metrics.direction_accuracy(items, targets["direction"])
    assert scores["zoom"] == metrics.zoom_accuracy(items, [None] * 6) == 1.0
    assert scores["style"] == metrics.style_rate(items, "outlined") == 0.0
    assert scores["leakage"] == metrics.watermark_leakage(np.stack(items))  # pooled over frames
    assert scores["jerk"] == np.nanmean([metrics.centroid_jerk(c) for c in items])
    assert scores["consistency"] == np.mean([metrics.frame_consistency(c) for c in items])
    travel = np.mean([np.linalg.norm(m["centres"][-1] - m["centres"][0]) for m in metas])  # the rendered paths'
    assert scores["visible"] == 1.0 and abs(scores["displacement"] - travel) < 1.5
    assert metrics.color_accuracy(described, targets["color"]) == scores["color"]  # dicts too
    images = metrics.describe_all([c[0] for c in items])  # frames: no clip figures
    assert set(metrics.score(images, {"shape": targets["shape"]})) == {
        "shape", "leakage", "visible", "displacement"}


def test_demo_trail_shows_the_shape_in_every_frame_and_the_measured_path():
    """The contact sheet's last column (`demo.trail`): the shape at its first and last place, the dots on its path."""
    from minianimate.toy.demo import trail

    for style, dot in ((None, 255), ("pastel", 0)):
        clip, _, meta = sw.render_clip(np.random.default_rng(3), direction="right", style=style, watermark=False)
        found = metrics.measure(clip)
        first, last = (np.rint(found["centroid"][i]).astype(int) for i in (0, -1))
        assert last[0] - first[0] >= 8  # it moved right
        image = trail(clip)
        background = metrics.background_color(clip[0])
        for x, y in (first, last):  # the shape's centre in the first and last frame: a dot over the shape
            assert (image[y, x] == dot).all()
        middle = np.rint(found["centroid"][len(clip) // 2]).astype(int)
        off = np.abs(image[middle[1] + 2, middle[0]].astype(int) - background).sum()
        assert off > 60  # the shape, not the background, below the dots
        assert np.abs(image[0, 0].astype(int) - background).sum() < 30  # away from the path: the background
