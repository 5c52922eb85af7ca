"""Datasets in the WebVid layout: decord round trip, sampling, caption-true flips, broken files."""
import shutil
import warnings

import numpy as np
import pytest
import torch
from einops import rearrange

from minianimate import data
from minianimate.toy import metrics, shapeworld
from minianimate.data import FrameDataset, ImageDataset, VideoDataset
from minianimate.toy.datasets import write_dataset
from minianimate.video_io import write_mp4


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """6 clips of 16 frames and 4 images, written once for the whole module."""
    path = tmp_path_factory.mktemp("shapeworld")
    write_dataset(path, videos=6, images=4, seed=0)
    return path


@pytest.fixture
def copy(root, tmp_path):
    """A copy of the dataset that a test may break."""
    shutil.copytree(root, tmp_path / "data")
    return tmp_path / "data"


def to_uint8(pixel_values: torch.Tensor) -> np.ndarray:
    """float (F, C, H, W) in [-1, 1] -> uint8 (F, H, W, 3), for the metrics."""
    x = rearrange(pixel_values, "f c h w -> f h w c").numpy()
    return np.round((x + 1) * 127.5).clip(0, 255).astype(np.uint8)


def test_video_round_trip_shapes_and_range(root):
    item = VideoDataset(root, flip=False)[0]
    x = item["pixel_values"]
    assert x.shape == (16, 3, 64, 64) and x.dtype == torch.float32
    assert -1 <= x.min() < -0.8 and 0.5 < x.max() <= 1  # dark background, bright shape
    first_row = (root / "videos.csv").read_text().splitlines()[1]
    assert item["text"] == first_row.split(",")[1]


def test_frames_stride_and_size(root):
    x = VideoDataset(root, frames=8, stride=2, size=32)[1]["pixel_values"]
    assert x.shape == (8, 3, 32, 32)


def test_frame_indices_follow_the_official_sampling(root, monkeypatch):
    seen = []

    def fake_read(path, indices):
        seen.append(list(indices))
        return np.zeros((len(indices), 64, 64, 3), np.uint8)

    monkeypatch.setattr(data, "read_video", fake_read)
    VideoDataset(root, frames=4, stride=2)[0]  # a window of 7 frames, every 2nd one
    start = seen[0][0]
    assert seen[0] == [start, start + 2, start + 4, start + 6] and 0 <= start <= 16 - 7
    VideoDataset(root, frames=16, stride=4)[0]  # a window of 61 > 16 frames: shortened to the clip
    assert seen[1] == list(range(16))


def test_flip_keeps_captions_true(root):
    dataset = VideoDataset(root, frames=8, flip=True, seed=1)
    originals = {row.split(",")[1] for row in (root / "videos.csv").read_text().splitlines()[1:]}
    flipped = 0
    for _ in range(3):
        for i in range(len(dataset)):
            item = dataset[i]
            caption = shapeworld.parse_caption(item["text"])
            assert metrics.classify_direction(to_uint8(item["pixel_values"])) == caption["direction"]
            flipped += item["text"] not in originals
    assert flipped > 0  # some flips did happen and renamed left/right


def test_same_seed_same_items(root):
    a, b = VideoDataset(root, frames=4, seed=3), VideoDataset(root, frames=4, seed=3)
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert torch.equal(x["pixel_values"], y["pixel_values"]) and x["text"] == y["text"]


def test_frame_dataset_gives_one_video_frame_with_its_defects(root):
    item = FrameDataset(root)[2]
    assert item["pixel_values"].shape == (3, 64, 64)
    frame = to_uint8(item["pixel_values"][None])
    assert metrics.watermark_leakage(frame) > 0.8  # the video domain's watermark is there
    assert "moving" in item["text"]


def test_image_dataset(root):
    dataset = ImageDataset(root)
    assert len(dataset) == 4
    item = dataset[0]
    assert item["pixel_values"].shape == (3, 64, 64) and -1 <= item["pixel_values"].min()
    assert shapeworld.parse_caption(item["text"])["direction"] is None


def test_missing_unreadable_and_short_videos_are_skipped(copy):
    paths = sorted((copy / "videos").rglob("*.mp4"))
    paths[0].write_bytes(b"not a video" * 10)
    paths[1].unlink()
    write_mp4(paths[2], np.zeros((4, 64, 64, 3), np.uint8))
    with pytest.warns(UserWarning, match=r"skipped 3 of 6 videos.*1 missing.*1 unreadable.*1 shorter"):
        dataset = VideoDataset(copy)
    assert len(dataset) == 3 and dataset.skipped == 3
    for i in range(len(dataset)):
        assert dataset[i]["pixel_values"].shape == (16, 3, 64, 64)


def test_a_read_that_fails_later_falls_back_to_another_clip(copy):
    dataset = VideoDataset(copy)
    dataset.items[0][0].write_bytes(b"broken after the check")
    with pytest.warns(UserWarning, match="using another clip"):
        item = dataset[0]
    assert item["pixel_values"].shape == (16, 3, 64, 64) and dataset.failed_reads == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, counted afterwards
        dataset[0]
    assert dataset.failed_reads == 2


def test_empty_dataset_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match=r"videos.csv.*make-data"):
        VideoDataset(tmp_path)
    (tmp_path / "videos.csv").write_text("videoid,name,page_dir\n")
    with pytest.raises(ValueError, match=r"no usable videos.*make-data --out"):
        VideoDataset(tmp_path)
    (tmp_path / "images.csv").write_text("file,caption\n")
    with pytest.raises(ValueError, match=r"no usable images.*make-data"):
        ImageDataset(tmp_path)
