"""The toy ControlNet's data and measurements: silhouettes, held-out paths, the scores."""
import numpy as np
import pytest

from minianimate.toy import metrics
from minianimate.toy import shapeworld as sw
from minianimate.toy.control import PATHS, as_conditions, control_clips, control_set, iou, path_centres


def test_the_silhouette_is_the_rendered_shape_white_on_black():
    images, captions, masks = control_set(6, seed=0)
    assert images.shape == masks.shape == (6, 64, 64, 3) and masks.dtype == np.uint8
    found = metrics.measure(images)["centroid"]
    assert np.allclose(found, metrics.measure(masks)["centroid"], atol=0.5), "same place"
    for image, caption, mask in zip(images, captions, masks):
        shape = np.abs(image.astype(int) - np.array(sw.BACKGROUND)).sum(-1) > 60
        assert iou(shape, mask[..., 0] > 127) > 0.9
    conditions = as_conditions(masks)
    assert conditions.shape == (6, 3, 64, 64) and 0 <= conditions.min() and conditions.max() == 1


@pytest.mark.parametrize("kind", PATHS)
def test_control_paths_are_ones_no_training_clip_takes(kind):
    centres = path_centres(kind, 16, np.random.default_rng(0))
    assert centres.shape == (16, 2) and (centres > 8).all() and (centres < 56).all(), "inside the frame"
    steps = np.diff(centres, axis=0)
    straight_and_steady = (np.abs(steps).min(1) < 1e-9).all() and np.allclose(steps, steps[0])
    assert not straight_and_steady  # training clips move along one axis at a constant speed


@pytest.mark.parametrize("kind", PATHS)
@pytest.mark.parametrize("speed", [sw.SPEED_RANGE[1], 2.5])
def test_control_paths_move_at_the_speed_asked_centred_in_the_frame(kind, speed):
    centres = path_centres(kind, 16, np.random.default_rng(1), speed)
    moved = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert np.isclose(moved.max(), speed, rtol=0.01) and (moved <= speed + 1e-9).all()
    assert np.allclose((centres.max(0) + centres.min(0)) / 2, 32)


def test_control_clips_cycle_through_the_paths_with_prompts_of_colour_and_shape():
    clips = control_clips(6, frames=8)
    assert [c["path"] for c in clips] == list(PATHS) * 2
    for clip in clips:
        parsed = sw.parse_caption(clip["prompt"])
        assert parsed["direction"] is None and clip["silhouettes"].shape == (8, 64, 64, 3)
        assert np.allclose(metrics.measure(clip["silhouettes"])["centroid"], clip["centres"], atol=0.6)
