"""Datasets in the WebVid layout, read the way the official AnimateDiff loader reads WebVid.

A root folder holds `videos.csv` (videoid,name,page_dir; clips at videos/{page_dir}/{videoid}.mp4)
and `images.csv` (file,caption). Clips are decoded with decord; a clip of `frames` frames is
sampled from a window of `(frames - 1) * stride + 1` frames (shortened to the video's length) at
`np.linspace` indices, then resized (short side), centre-cropped, randomly flipped and normalised
to [-1, 1]. One change from the official loader: a flip also mirrors the caption (`moving left`
becomes `moving right`), or half the flipped clips would show the opposite of what they say.

    VideoDataset  -> pixel_values (F, C, H, W), text   motion module / MotionLoRA stages
    FrameDataset  -> pixel_values (C, H, W), text      one random frame: the domain adapter stage
    ImageDataset  -> pixel_values (C, H, W), text      the T2I (image) domain
"""
import csv
import re
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image
from torch.utils.data import Dataset

from minianimate.video_io import UnreadableVideo, open_video, read_video

_MIRRORED = {"left": "right", "right": "left"}


def flip_caption(text: str) -> str:
    """The caption of the horizontally mirrored frames: the words `left` and `right` swap
    (`a red circle moving left` -> `... moving right`); any other caption is unchanged."""
    return re.sub(r"\b(left|right)\b", lambda m: _MIRRORED[m.group(1)], text)


def _read_csv(path: Path, columns: tuple) -> list[dict]:
    if not path.is_file():
        raise ValueError(f"{path} not found: no dataset there. Render one with "
                         f"`python -m minianimate make-data --out {path.parent}`")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not set(columns) <= set(rows[0]):
        raise ValueError(f"{path} has columns {list(rows[0])}; expected {list(columns)}")
    return rows


def _empty(path: Path, what: str) -> ValueError:
    return ValueError(f"no usable {what} in {path}. Render a dataset with `python -m "
                      f"minianimate make-data --out {path.parent}` (or point `root` at one)")


def _to_tensor(frames: np.ndarray, size: int, flip: bool) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> float (F, 3, size, size) in [-1, 1]: resize the short side to `size`,
    centre-crop, optionally mirror left-right."""
    x = rearrange(torch.from_numpy(np.array(frames)), "f h w c -> f c h w").float() / 255
    h, w = x.shape[-2:]
    if min(h, w) != size:
        scale = size / min(h, w)
        x = F.interpolate(x, size=(max(size, round(h * scale)), max(size, round(w * scale))),
                          mode="bilinear", antialias=True, align_corners=False)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    x = x[..., top:top + size, left:left + size]
    if flip:
        x = x.flip(-1)
    return x * 2 - 1


class VideoDataset(Dataset):
    """Clips of a WebVid-layout folder: {'pixel_values': float (F, C, H, W) in [-1, 1], 'text'}.

    Every video is opened once here: missing, unreadable or shorter-than-`frames` ones are
    skipped with one warning. A read that still fails later falls back to another clip (counted
    in `failed_reads`), so an epoch never stops half way. Random choices (window start, flip)
    come from a generator seeded by (seed, index, items served so far), so DataLoader workers do
    not repeat each other.
    """

    def __init__(self, root, frames=16, stride=4, size=64, flip=True, seed=0):
        self.root, self.frames, self.stride = Path(root), frames, stride
        self.size, self.flip, self.seed = size, flip, seed
        self.served, self.failed_reads = 0, 0
        csv_path = self.root / "videos.csv"
        rows = _read_csv(csv_path, ("videoid", "name", "page_dir"))
        short = f"shorter than {frames} frames"
        self.items, skipped = [], {"missing": [], "unreadable": [], short: []}
        for row in rows:
            path = self.root / "videos" / row["page_dir"] / f"{row['videoid']}.mp4"
            if not path.is_file():
                skipped["missing"].append(path)
                continue
            try:
                length = len(open_video(path))
            except UnreadableVideo:
                skipped["unreadable"].append(path)
                continue
            if length < frames:
                skipped[short].append(path)
                continue
            self.items.append((path, row["name"], length))
        self.skipped = sum(len(paths) for paths in skipped.values())
        if self.skipped:
            detail = "; ".join(f"{len(paths)} {why} (e.g. {', '.join(map(str, paths[:2]))})"
                               for why, paths in skipped.items() if paths)
            warnings.warn(f"skipped {self.skipped} of {len(rows)} videos listed in {csv_path}: "
                          f"{detail}")
        if not self.items:
            raise _empty(csv_path, f"videos of at least {frames} frames")

    def __len__(self) -> int:
        return len(self.items)

    def _sample(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """uint8 (frames, H, W, 3) from the clip at `index`, and its caption (the official
        sampling: a window of (frames - 1) * stride + 1 frames, shortened to the video)."""
        path, text, length = self.items[index]
        window = min(length, (self.frames - 1) * self.stride + 1)
        start = int(rng.integers(0, length - window + 1))
        indices = np.linspace(start, start + window - 1, self.frames, dtype=int)
        return read_video(path, indices), text

    def _read(self, index: int) -> tuple[torch.Tensor, str]:
        """float (F, C, H, W) in [-1, 1] and caption; another clip if this one fails to read."""
        rng = np.random.default_rng([self.seed, index, self.served])
        self.served += 1
        for _ in range(len(self.items)):
            try:
                frames, text = self._sample(index, rng)
                break
            except UnreadableVideo as e:
                if not self.failed_reads:
                    warnings.warn(f"{e}; using another clip instead (counted in `failed_reads`)")
                self.failed_reads += 1
                index = int(rng.integers(len(self.items)))
        else:
            raise _empty(self.root / "videos.csv", "videos (none of them could be read)")
        flip = self.flip and rng.random() < 0.5
        return _to_tensor(frames, self.size, flip), flip_caption(text) if flip else text

    def __getitem__(self, index: int) -> dict:
        pixel_values, text = self._read(index)
        return {"pixel_values": pixel_values, "text": text}


class FrameDataset(VideoDataset):
    """One random frame per video (the domain adapter's training data, which must carry the
    video domain's defects): {'pixel_values': float (C, H, W) in [-1, 1], 'text'}."""

    def __init__(self, root, size=64, flip=True, seed=0):
        super().__init__(root, frames=1, stride=1, size=size, flip=flip, seed=seed)

    def __getitem__(self, index: int) -> dict:
        pixel_values, text = self._read(index)
        return {"pixel_values": pixel_values[0], "text": text}


class ImageDataset(Dataset):
    """Images listed in `root/images.csv`: {'pixel_values': float (C, H, W) in [-1, 1], 'text'}.
    Missing image files are skipped with one warning."""

    def __init__(self, root, size=64, flip=True, seed=0):
        self.root, self.size, self.flip, self.seed, self.served = Path(root), size, flip, seed, 0
        csv_path = self.root / "images.csv"
        rows = _read_csv(csv_path, ("file", "caption"))
        self.items = [(self.root / row["file"], row["caption"]) for row in rows]
        missing = [path for path, _ in self.items if not path.is_file()]
        if missing:
            warnings.warn(f"skipped {len(missing)} of {len(rows)} images listed in {csv_path}: "
                          f"missing (e.g. {', '.join(map(str, missing[:2]))})")
            self.items = [(path, text) for path, text in self.items if path.is_file()]
        if not self.items:
            raise _empty(csv_path, "images")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        path, text = self.items[index]
        rng = np.random.default_rng([self.seed, index, self.served])
        self.served += 1
        image = np.asarray(Image.open(path).convert("RGB"))[None]  # (1, H, W, 3)
        flip = self.flip and rng.random() < 0.5
        return {"pixel_values": _to_tensor(image, self.size, flip)[0],
                "text": flip_caption(text) if flip else text}
