"""The motion lab's data levers (benchmarks/motion_lab.py): colour-switch clips for prompt travel, per-frame captions,
and clips repainted on random backgrounds."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from minianimate.toy import metrics
from minianimate.toy import shapeworld as sw
from minianimate.toy.datasets import clip_set

LAB = Path(__file__).resolve().parents[1] / "benchmarks" / "motion_lab.py"


@pytest.fixture(scope="module")
def lab():
    spec = importlib.util.spec_from_file_location("motion_lab", LAB)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_frame_prompts_switch_at_k(lab):
    assert lab.frame_prompts("a red circle moving left", 4) == ["a red circle moving left"] * 4
    assert lab.frame_prompts(("a red circle", "a blue circle", 3), 5) == ["a red circle"] * 3 + ["a blue circle"] * 2


def test_switch_clips_change_colour_at_their_frame_and_keep_one_path(lab):
    clips, captions = lab.switch_clips(3, seed=0, speed=lab.SLOW)
    assert clips.shape == (3, lab.FRAMES, 64, 64, 3) and clips.dtype == np.uint8
    for clip, (before, after, k) in zip(clips, captions):
        assert 4 <= k <= 12 and before.split()[1] != after.split()[1]
        colours = [metrics.classify_color(frame) for frame in clip]
        assert colours[:k] == [before.split()[1]] * k and colours[k:] == [after.split()[1]] * (lab.FRAMES - k)
        assert before.split()[2:] == after.split()[2:]  # same shape and direction
        assert metrics.describe(clip)["max_jump"] < 2.0  # one path across the cut: no jump


def test_repaint_swaps_the_background_and_keeps_the_shape(lab):
    clips, _ = clip_set(4, 0, 8, watermark=False, speed_range=lab.SLOW)
    out = lab.repaint(clips, 1.0, seed=0)
    assert out.shape == clips.shape and out.dtype == np.uint8
    for before, after in zip(clips, out):
        corner = after[:, :2, :2].reshape(-1, 3)
        assert (corner == corner[0]).all() and np.abs(corner[0].astype(int) - sw.BACKGROUND).max() > 5
        dist = np.linalg.norm(before.astype(float) - sw.BACKGROUND, axis=-1)
        shape = dist >= 0.98 * dist.max()  # fully covered shape pixels
        assert np.abs(after[shape].astype(int) - before[shape]).max() <= 40
    assert (lab.repaint(clips, 0.0, seed=0) == clips).all()
