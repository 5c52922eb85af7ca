"""ShapeWorld: captions, rendering, video-domain defects, camera motions, the dataset writer."""
import itertools

import numpy as np
import pytest
from PIL import Image

from minianimate.toy import shapeworld as sw
from minianimate.toy.datasets import write_dataset
from minianimate.toy.cli import main
from minianimate.video_io import read_video


def rng(seed=0):
    return np.random.default_rng(seed)


def test_caption_grammar_round_trips():
    for color, shape, direction in itertools.product(sw.COLORS, sw.SHAPES, (None, *sw.DIRECTIONS)):
        text = sw.caption(color, shape, direction)
        assert sw.parse_caption(text) == {"color": color, "shape": shape, "direction": direction}
    assert sw.caption("red", "circle", "still") == "a red circle"


def test_parse_caption_rejects_other_text():
    with pytest.raises(ValueError, match="not a ShapeWorld caption"):
        sw.parse_caption("a purple circle moving left")


def test_flip_caption_swaps_left_and_right_only():
    assert sw.flip_caption("a red circle moving left") == "a red circle moving right"
    assert sw.flip_caption("a red circle moving right") == "a red circle moving left"
    assert sw.flip_caption("a red circle moving up") == "a red circle moving up"
    assert sw.flip_caption("a red circle") == "a red circle"


def test_same_seed_same_frames():
    a, b = sw.render_clip(rng(3)), sw.render_clip(rng(3))
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    assert np.array_equal(sw.render_image(rng(3))[0], sw.render_image(rng(3))[0])
    assert not np.array_equal(a[0], sw.render_clip(rng(4))[0])


def test_image_is_clean_and_captioned():
    image, text, meta = sw.render_image(rng(), color="blue", shape="square")
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert text == "a blue square"
    bg, fg = np.array(sw.BACKGROUND), np.array(sw.COLORS["blue"])
    t = np.clip((image - bg) @ (fg - bg) / ((fg - bg) @ (fg - bg)), 0, 1)[..., None]
    assert np.abs(image - (bg + t * (fg - bg))).max() <= 1  # only background/shape blends: clean
    assert sw.SIZE_RANGE[0] <= meta["size"] <= sw.SIZE_RANGE[1]


def test_margin_keeps_every_shape_that_far_from_the_edge():
    """`margin` px: no ink within it (0: a shape may lie flush against the frame, as ~4% of renders do);
    the same seed draws the same shapes, only placed inward; a margin the frame cannot hold is refused."""
    def ink(image):  # pixels off the plain background
        return np.abs(image.astype(int) - np.array(sw.BACKGROUND)).max(-1) > 8

    flush = [ink(sw.render_image(rng(s))[0]) for s in range(200)]
    assert any(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any() for m in flush)
    for s in range(200):
        m = ink(sw.render_image(rng(s), margin=4)[0])
        assert not (m[:3].any() or m[-3:].any() or m[:, :3].any() or m[:, -3:].any())
        assert sw.render_image(rng(s), margin=4)[1] == sw.render_image(rng(s))[1]
    with pytest.raises(ValueError, match="margin must be in"):
        sw.render_image(rng(), margin=30)


def test_hole_keeps_every_outline_open_that_wide():
    """INRADIUS is each shape's deepest point (`_depth`) per px of size; `hole` px: every outlined shape leaves at
    least that from its centre to the outline's inner edge, its colour and shape kept (drawn as is, some small
    triangles leave under 1 px);
    plain and pastel shapes are drawn as without it; a hole no shape can leave is refused."""
    grid = np.linspace(-10, 10, 2001)
    for shape, fraction in sw.INRADIUS.items():
        assert sw._depth(shape, grid[None, :], grid[:, None], 20.0).max() == pytest.approx(20 * fraction, abs=0.02)

    def clearance(meta):
        return sw.INRADIUS[meta["shape"]] * meta["size"] - meta["outline"]

    drawn = [clearance(sw.render_image(rng(s), shape="triangle", style="outlined")[2]) for s in range(200)]
    assert min(drawn) < 1.0
    picked = [sw.render_image(rng(s), style="outlined", hole=1.5) for s in range(200)]
    assert [caption for _, caption, _ in picked] == [sw.render_image(rng(s), style="outlined")[1] for s in range(200)]
    picked = [meta for _, _, meta in picked]
    assert min(clearance(m) for m in picked) >= 1.5
    assert all(sw.OUTLINE_RANGE[0] <= m["outline"] <= sw.OUTLINE_RANGE[1] for m in picked)
    for style in (None, "pastel"):
        assert np.array_equal(sw.render_image(rng(3), style=style, hole=1.5)[0], sw.render_image(rng(3), style=style)[0])
    with pytest.raises(ValueError, match="hole must be in"):
        sw.render_image(rng(), style="outlined", hole=4.0)


def test_clip_moves_at_the_world_speed_in_its_direction():
    for direction, (dx, dy) in {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}.items():
        clip, text, meta = sw.render_clip(rng(), direction=direction)
        assert clip.shape == (16, 64, 64, 3) and clip.dtype == np.uint8
        assert text.endswith(f"moving {direction}")
        step = np.diff(meta["centres"], axis=0)  # (F - 1, 2)
        assert np.allclose(step, np.array([dx, dy]) * meta["speed"])
        assert sw.SPEED_RANGE[0] <= meta["speed"] <= sw.SPEED_RANGE[1]


def test_whole_path_stays_inside_the_frame_for_any_length():
    for seed, frames in itertools.product(range(5), (2, 16, 40)):
        clip, _, meta = sw.render_clip(rng(seed), frames=frames, watermark=False)
        assert clip.shape[0] == frames
        half = meta["size"] / 2
        assert np.all((meta["centres"] >= half - 1e-9) & (meta["centres"] <= 64 - half + 1e-9))


def test_still_clip_does_not_move_and_has_no_direction_in_caption():
    clip, text, _ = sw.render_clip(rng(), direction="still", watermark=False)
    assert np.array_equal(clip[0], clip[-1])
    assert sw.parse_caption(text)["direction"] is None


def test_watermark_is_a_translucent_white_box():
    frame = np.full((64, 64, 3), 15, np.uint8)
    marked = sw.add_watermark(frame)
    assert np.all(marked[56:62, 42:62] == round(0.55 * 15 + 0.45 * 255))
    marked[56:62, 42:62] = 15
    assert np.array_equal(marked, frame)


def test_video_defects_are_in_every_frame_and_deterministic():
    clip, _, _ = sw.render_clip(rng(1), color="red", direction="up")
    again, _, _ = sw.render_clip(rng(1), color="red", direction="up")
    assert np.array_equal(clip, again)
    box = clip[:, 56:62, 42:62].reshape(16, -1, 3).astype(float)
    assert np.all(np.median(box, axis=1) > 100)  # whitened box in every frame
    clean, _, _ = sw.render_clip(rng(1), color="red", direction="up", watermark=False)
    assert 0.5 < np.abs(clip.astype(float) - sw.add_watermark(clean)).mean() < 5  # mild blur + noise


def test_styles():
    pastel, _, _ = sw.render_image(rng(), style="pastel")
    assert np.array_equal(pastel[0, 0], sw.PASTEL_BACKGROUND)
    outlined, _, meta = sw.render_image(rng(), shape="square", style="outlined")
    cx, cy = (int(v) for v in meta["centre"])
    assert np.array_equal(outlined[cy, cx], sw.BACKGROUND)  # hollow inside
    assert (np.abs(outlined.astype(int) - sw.BACKGROUND).sum(-1) > 100).sum() > 40  # but drawn


def test_camera_motions():
    clip, _, _ = sw.render_clip(rng(), direction="still", watermark=False)
    for motion in sw.CAMERA_MOTIONS:
        moved = sw.camera_augment(clip, motion)
        assert moved.shape == clip.shape and moved.dtype == np.uint8
    assert np.array_equal(sw.camera_augment(clip, "zoom-in")[0], clip[0])  # starts on the full view
    assert np.array_equal(sw.camera_augment(clip, "zoom-out")[-1], clip[-1])  # and ends on it
    zoomed = sw.camera_augment(clip, "zoom-in")[-1]
    crop = Image.fromarray(clip[-1]).resize((64, 64), Image.BICUBIC, box=(32 - 64 / 3, 32 - 64 / 3,
                                                                          32 + 64 / 3, 32 + 64 / 3))
    assert np.abs(zoomed.astype(int) - np.asarray(crop)).max() <= 1
    with pytest.raises(ValueError, match="camera motion"):
        sw.camera_augment(clip, "pan")


def test_camera_clip_caption_is_the_still_caption():
    clip, text, meta = sw.render_camera_clip(rng(), "zoom-out", frames=8)
    assert clip.shape == (8, 64, 64, 3)
    assert sw.parse_caption(text)["direction"] is None and meta["camera"] == "zoom-out"


def test_write_dataset_layout(tmp_path):
    write_dataset(tmp_path, videos=3, images=2, seed=0, frames=8)
    rows = (tmp_path / "videos.csv").read_text().splitlines()
    assert rows[0] == "videoid,name,page_dir" and len(rows) == 4
    videoid, name, page_dir = rows[1].split(",")
    clip = read_video(tmp_path / "videos" / page_dir / f"{videoid}.mp4")
    assert clip.shape == (8, 64, 64, 3)
    sw.parse_caption(name)
    rows = (tmp_path / "images.csv").read_text().splitlines()
    assert rows[0] == "file,caption" and len(rows) == 3
    file, text = rows[1].split(",")
    assert np.asarray(Image.open(tmp_path / file)).shape == (64, 64, 3)
    assert sw.parse_caption(text)["direction"] is None


def test_same_seed_same_csv_bytes(tmp_path):
    for name in ("a", "b"):
        write_dataset(tmp_path / name, videos=2, images=3, seed=7, frames=4)
    for csv in ("videos.csv", "images.csv"):
        assert (tmp_path / "a" / csv).read_bytes() == (tmp_path / "b" / csv).read_bytes()
    png = "images/000002.png"
    assert (tmp_path / "a" / png).read_bytes() == (tmp_path / "b" / png).read_bytes()


def test_make_data_command_writes_camera_clips(tmp_path):
    assert main(["make-data", "--out", str(tmp_path), "--videos", "2", "--images", "0",
                 "--frames", "4", "--camera", "zoom-in", "--style", "pastel"]) == 0
    rows = (tmp_path / "videos.csv").read_text().splitlines()[1:]
    assert len(rows) == 2 and all(sw.parse_caption(r.split(",")[1])["direction"] is None for r in rows)
    assert (tmp_path / "images.csv").read_text() == "file,caption\n"
