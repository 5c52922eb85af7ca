"""The toy data sets: rendered images, clips and MotionLoRA references, held-out combinations, WebVid-layout files.

Facts about the toy data live here, in one place: which (colour, shape, direction) combinations the motion
stage never sees (`HELD_OUT`, closed under the left-right flip), which colour/shape pairs no MotionLoRA
reference shows (`LORA_HELD_OUT`). Everything is deterministic from a seed.
"""
import csv
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from minianimate.autoencoder import encode, to_tensor
from minianimate.data import VideoDataset, flip_caption
from minianimate.toy import shapeworld as sw
from minianimate.video_io import write_mp4

HELD_OUT = (("red", "triangle", "left"), ("red", "triangle", "right"), ("green", "circle", "up"),
            ("blue", "square", "down"), ("yellow", "square", "left"), ("yellow", "square", "right"))
LORA_HELD_OUT = (("red", "triangle"), ("blue", "circle"), ("yellow", "square"))


def combos(held_out: bool | None = None) -> list[tuple[str, str, str]]:
    """All (colour, shape, direction) combinations; only the held-out ones (True) or only the trained ones
    (False)."""
    every = [(c, s, d) for c in sw.COLORS for s in sw.SHAPES for d in sw.DIRECTIONS]
    return every if held_out is None else [x for x in every if (x in HELD_OUT) == held_out]


def image_set(n: int, seed: int, style: str | None = None, moving: float = 0.0, margin: float = 0.0, hole: float = 0.0,
              background: str | None = None, look: str | None = None) -> tuple[np.ndarray, list[str]]:
    """n ShapeWorld images and captions, uint8 (n, 64, 64, 3).

    moving: the fraction of photos of moving shapes (a motion streak behind them, caption
    `a red circle moving left`), as an image dataset holds photos of running horses next to still ones.
    margin: every shape at least this far (px) from the frame's edge; hole: an outlined shape's hole at least this
    wide (px); background: None (the style's own) or "random" (the wider world's: `sw.random_background`) (all
    `sw.render_image`); look: a training-only look (`sw.LOOKS`: its background and shades, the colour's name kept).
    """
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        direction = str(rng.choice(sw.DIRECTIONS)) if rng.random() < moving else None
        color = str(rng.choice(list(sw.COLORS))) if look else None
        bg, rgb = sw.look_colours(rng, sw.COLORS[color], look) if look else (background, None)
        items.append(sw.render_image(rng, color, style=style, direction=direction, margin=margin, hole=hole,
                                     background=bg, rgb=rgb))
    return np.stack([i[0] for i in items]), [i[1] for i in items]


@torch.no_grad()
def encode_images(vae, images: np.ndarray, captions: list[str], flip: bool = True):
    """Scaled latents (n, 4, 16, 16) of images, followed by those of the mirrored images if `flip` (whose
    captions swap `left` and `right`); returns (latents, captions of every latent)."""
    x = to_tensor(images)
    if flip:
        x = torch.cat([x, x.flip(-1)])
    return encode(vae, x, batch=256), list(captions) + ([flip_caption(c) for c in captions] if flip else [])


def clip_set(n: int, seed: int, frames: int = 16, exclude=HELD_OUT, watermark: bool = True, still: float = 0.0,
             only=None, speed_range=None, background: str | None = None, palette: float = 0.0,
             look: str | None = None):
    """n video-domain clips whose (colour, shape, direction) is not in `exclude`: uint8 (n, F, 64, 64, 3)
    and captions `a red circle moving left`; a fraction `still` are still shapes (`a red circle`).
    only: draw from these combinations alone (still the ones not in `exclude`); speed_range: px/frame (lo, hi),
    default `shapeworld.SPEED_RANGE`; background: as `image_set`'s; palette: a fraction of the clips whose shape is
    drawn in another palette (`shapeworld.palette_rgb`: its colour name's hue, other shades), captioned as before;
    look: every clip in a training-only look (`shapeworld.LOOKS`), captioned as before."""
    rng = np.random.default_rng(seed)
    allowed = [x for x in (combos() if only is None else only) if x not in set(exclude)]
    if not allowed:
        raise ValueError(f"no combination left to draw clips from: only={only!r} minus exclude={exclude!r}")
    clips, captions = [], []
    for _ in tqdm(range(n), desc="rendering clips", leave=False):
        color, shape, direction = allowed[rng.integers(len(allowed))]
        direction = "still" if rng.random() < still else direction
        rgb = sw.palette_rgb(rng, sw.COLORS[color]) if palette and rng.random() < palette else None
        bg, rgb = sw.look_colours(rng, sw.COLORS[color], look) if look else (background, rgb)
        clip, text, _ = sw.render_clip(rng, frames, color, shape, direction, watermark=watermark,
                                       speed_range=speed_range, background=bg, rgb=rgb)
        clips.append(clip)
        captions.append(text)
    return np.stack(clips), captions


def switch_set(n: int, seed: int, frames: int = 16, exclude=HELD_OUT, background: str | None = None):
    """n clean clips of one trained shape and direction whose colour switches at frame k (frames/4 to 3 frames/4), the
    same path drawn twice in two colours and cut at k, as prompt travel asks: uint8 (n, F, 64, 64, 3) and each clip's
    captions, one per frame (the first colour's caption until frame k - 1, then the second's)."""
    rng = np.random.default_rng(seed)
    allowed = [x for x in combos() if x not in set(exclude)]
    clips, captions = [], []
    for _ in range(n):
        _, shape, direction = allowed[rng.integers(len(allowed))]
        before, after = (str(c) for c in rng.choice(list(sw.COLORS), 2, replace=False))
        k, state = int(rng.integers(frames // 4, 3 * frames // 4 + 1)), int(rng.integers(2**31))
        bg = background
        while isinstance(bg, str):  # one background for both halves, standing out from both colours
            bg = sw.random_background(rng, None if background == "random" else background, sw.COLORS[before])
            bg = bg if np.linalg.norm(np.subtract(bg, sw.COLORS[after])) >= sw.MIN_SHAPE_CONTRAST else background
        a, first, _ = sw.render_clip(np.random.default_rng(state), frames, before, shape, direction, watermark=False,
                                     background=bg)
        b, second, _ = sw.render_clip(np.random.default_rng(state), frames, after, shape, direction, watermark=False,
                                      background=bg)
        clips.append(np.concatenate([a[:k], b[k:]]))
        captions.append([first] * k + [second] * (frames - k))
    return np.stack(clips), captions


def folder_set(root, frames: int = 16, stride: int = 1, seed: int = 0):
    """Every clip of a WebVid-layout folder, read by `VideoDataset` (with its random flip): float
    (n, F, 3, 64, 64) in [-1, 1] and captions."""
    data = VideoDataset(root, frames=frames, stride=stride, seed=seed)
    items = [data[i] for i in tqdm(range(len(data)), desc=f"reading {root}", leave=False)]
    return torch.stack([x["pixel_values"] for x in items]), [x["text"] for x in items]


def reference_set(camera: str, n: int, seed: int, frames: int = 16, exclude=LORA_HELD_OUT, watermark: bool = True,
                  zoom: float | None = None):
    """n MotionLoRA references: still shapes seen by a rule-based camera motion (`shapeworld.camera_augment`,
    zooming by `zoom`, default `ZOOM_SCALE`), with the video domain's defects (clean if not `watermark`);
    colour/shape pairs in `exclude` left out. uint8 (n, F, 64, 64, 3), the still captions (`a red circle`: the
    camera motion is not in the caption)."""
    rng = np.random.default_rng(seed)
    pairs = [(c, s) for c in sw.COLORS for s in sw.SHAPES if (c, s) not in set(exclude)]
    items = [sw.render_camera_clip(rng, camera, frames, *pairs[i % len(pairs)], watermark=watermark, zoom=zoom)
             for i in range(n)]
    return np.stack([x[0] for x in items]), [x[1] for x in items]



def write_dataset(out, videos: int, images: int, seed: int, frames=16, style=None, camera=None,
                  overwrite: bool = False):
    """Render a dataset in the WebVid layout under `out`:

        out/videos.csv             videoid,name,page_dir   (name = caption)
        out/videos/{page_dir}/{videoid}.mp4                (H.264, 8 fps)
        out/images.csv             file,caption            (file relative to `out`)
        out/images/{i:06d}.png

    camera: None for clips of moving shapes, or a CAMERA_MOTIONS name for still clips seen by
    that camera motion (MotionLoRA references). The same seed gives the same files. A folder that is not
    empty is refused unless `overwrite`, which first removes the dataset in it (so no stale clip stays).
    """
    out = Path(out)
    if min(videos, images) < 0 or videos + images == 0 or frames < 1 or seed < 0:
        raise ValueError(f"need videos, images >= 0 (not both 0), frames >= 1 and seed >= 0; got videos={videos}, "
                         f"images={images}, frames={frames}, seed={seed}")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty: pass --overwrite (overwrite=True) to replace the dataset "
                                  f"in it, or choose an empty folder")
        for name in ("videos", "images"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("videos.csv", "images.csv"):
            (out / name).unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in tqdm(range(videos), desc=f"clips -> {out}", disable=videos == 0):
        if camera is None:
            clip, text, _ = sw.render_clip(rng, frames=frames, style=style)
        else:
            clip, text, _ = sw.render_camera_clip(rng, camera, frames=frames, style=style)
        videoid, page_dir = f"{i:06d}", f"{i // 1000:03d}"
        path = out / "videos" / page_dir / f"{videoid}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_mp4(path, clip)
        rows.append((videoid, text, page_dir))
    _write_csv(out / "videos.csv", ("videoid", "name", "page_dir"), rows)

    rows = []
    for i in tqdm(range(images), desc=f"images -> {out}", disable=images == 0):
        image, text, _ = sw.render_image(rng, style=style)
        file = f"images/{i:06d}.png"
        (out / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(out / file)
        rows.append((file, text))
    _write_csv(out / "images.csv", ("file", "caption"), rows)


def _write_csv(path: Path, header: tuple, rows: list):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
