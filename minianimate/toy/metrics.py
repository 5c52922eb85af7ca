"""Rule-based metrics of ShapeWorld frames and clips: colour, shape, style, motion, smoothness.

`describe` segments a frame or clip once (`minianimate.toy.segmentation`) and reads everything off
that one measurement: colour by hue, shape by its moments (a triangle is lopsided, a square has
corners), direction from the centroid trajectory, zoom from the area trend, style from background
and holes, plus the clip figures (jerk, consistency, watermark leakage, visibility, displacement).
`describe_all` and `score` turn a batch into an evaluation without segmenting it again.
Built to be read on *generated* frames too, which are blurrier and noisier than the ground truth:
thresholds sit halfway between the classes, the descriptors survive blur, fits are robust
(medians, Theil-Sen slopes) and clips vote over their frames.

Frames are uint8 (H, W, 3); clips (F, H, W, 3). `measure`, `segment` and `watermark_leakage`
take any leading dims; `classify_*` take one frame or one clip; `*_accuracy` take a batch of
frames/clips or of their `describe` dicts. The segmentation's public names are re-exported here.
"""
import colorsys
from collections import Counter

import numpy as np

from minianimate.toy.segmentation import (  # BORDER ... segment: re-exported
    BORDER, MIN_AREA, MIN_CONTRAST, _flat, _measure, _moments, _total, _watermarks,
    background_color, measure, segment)
from minianimate.toy.shapeworld import COLORS, WATERMARK_ALPHA

TRIANGLE_SKEW = 0.57  # |vertical skewness| of a triangle (0 for circles and squares)
SQUARE_CORNERS = 0.6  # diagonal minus axial excess kurtosis of a square (0 for circles)
STILL_SPEED = 0.2  # px/frame; slower centroids are "still" (a third of the world's slowest, 0.6-1.0)
ZOOM_LOG_AREA = 0.2  # |log(last area / first area)| above this is a zoom (ours: 2 log 1.5 = 0.81)
OUTLINE_HOLES = 0.04  # an object whose filled area is > 4% hole is drawn as an outline
PASTEL_LUMA = 128  # backgrounds brighter than this are the pastel style
STEADY_VISIBLE, STEADY_JUMP, STEADY_TRAVEL = 0.95, 4.0, (0.5, 1.5)  # a steady clip (see `steady`)
_HUES = {name: colorsys.rgb_to_hsv(*(np.array(rgb) / 255))[0] * 360 for name, rgb in COLORS.items()}


def _vote(labels) -> str | None:
    """Most common label that is not None (None if there is none)."""
    labels = [label for label in labels if label is not None]
    return Counter(labels).most_common(1)[0][0] if labels else None


def _hue_name(rgb: np.ndarray) -> str | None:
    if np.isnan(rgb).any():
        return None
    hue = colorsys.rgb_to_hsv(*(rgb / 255))[0] * 360
    return min(_HUES, key=lambda name: min(abs(hue - _HUES[name]), 360 - abs(hue - _HUES[name])))


def _shape_name(skew: float, corners: float) -> str | None:
    if np.isnan(skew):
        return None
    if abs(skew) > TRIANGLE_SKEW / 2:
        return "triangle"
    return "square" if corners > SQUARE_CORNERS / 2 else "circle"


def _theil_sen(y: np.ndarray) -> float:
    """Robust slope of y (F,) against the frame index: the median of all pairwise slopes."""
    t = np.flatnonzero(~np.isnan(y))
    if len(t) < 2:
        return np.nan
    i, j = np.triu_indices(len(t), k=1)
    return float(np.median((y[t[j]] - y[t[i]]) / (t[j] - t[i])))


def _direction(m: dict) -> str | None:
    vx, vy = _theil_sen(m["centroid"][:, 0]), _theil_sen(m["centroid"][:, 1])
    if np.isnan(vx):
        return None
    if max(abs(vx), abs(vy)) < STILL_SPEED:
        return "still"
    if abs(vx) >= abs(vy):
        return "right" if vx > 0 else "left"
    return "down" if vy > 0 else "up"


def _zoom(m: dict) -> str | None:
    change = _theil_sen(np.log(m["area"])) * (len(m["area"]) - 1)
    if np.isnan(change):
        return None
    if abs(change) < ZOOM_LOG_AREA:
        return "none"
    return "zoom-in" if change > 0 else "zoom-out"


def _style(background: np.ndarray, holes: float) -> str:
    if background.mean() > PASTEL_LUMA:
        return "pastel"
    return "outlined" if holes > OUTLINE_HOLES else "plain"


def _frames(x) -> np.ndarray:
    """One frame (H, W, 3) or clip (F, H, W, 3) -> float frames (F, H, W, 3), F = 1 for a frame."""
    x = np.asarray(x)
    if x.ndim not in (3, 4):
        raise ValueError(f"expected one frame (H, W, 3) or one clip (F, H, W, 3), got {x.shape}")
    return _flat(x)[0]


def _labels(m: dict) -> dict:
    """Colour, shape, style (voted over the frames), direction and zoom of a `measure` (F, ...)."""
    return dict(color=_vote(_hue_name(rgb) for rgb in m["rgb"]),
                shape=_vote(_shape_name(s, c) for s, c in zip(m["skew"], m["corners"])),
                style=_vote(_style(bg, h) for bg, h in zip(m["background"], m["holes"])),
                direction=_direction(m), zoom=_zoom(m))


def _jerk(centroid: np.ndarray) -> float:
    """Mean norm of the third difference of centroids (F, 2), NaN steps left out; NaN if none."""
    jerk = np.linalg.norm(np.diff(centroid, n=3, axis=0), axis=-1)  # (F - 3,)
    jerk = jerk[~np.isnan(jerk)]
    return float(jerk.mean()) if len(jerk) else float("nan")


def _max_jump(centroid: np.ndarray) -> float:
    """Largest centroid step (px) between neighbouring frames (F, 2) where both found; inf with fewer than two."""
    steps = np.linalg.norm(np.diff(centroid, axis=0), axis=-1)
    steps = steps[~np.isnan(steps)]
    return float(steps.max()) if len(steps) else float("inf")


def _consistency(x: np.ndarray, seg: dict) -> float:
    """`frame_consistency` of float frames x (F, H, W, 3) from their `segment` seg."""
    fg = seg["coverage"][..., None] * (x - seg["background"][:, None, None, :])  # (F, H, W, 3)
    _, cx, cy, _, _ = _moments(seg["coverage"])
    cosines = []
    for t in range(len(fg) - 1):
        shift = np.round([cy[t + 1] - cy[t], cx[t + 1] - cx[t]])
        moved = np.roll(fg[t], tuple(np.nan_to_num(shift).astype(int)), axis=(0, 1))
        norm = np.sqrt((moved ** 2).sum() * (fg[t + 1] ** 2).sum())  # not np.linalg.norm: BLAS threads spin
        cosines.append((moved * fg[t + 1]).sum() / norm if norm > 0 else 0.0)
    return float(np.mean(cosines))


def _leakage(alpha: np.ndarray) -> float:
    """Mean estimated watermark alpha (any shape, NaN left out) relative to the real one's 0.45."""
    return float(np.nanmean(alpha)) / WATERMARK_ALPHA


def describe(x) -> dict:
    """Everything read from one frame (H, W, 3) or clip (F, H, W, 3), segmented once (F = 1 for
    a frame): 'color', 'shape', 'style' (clips vote over their frames), 'direction', 'zoom',
    'jerk' (`centroid_jerk`), 'consistency' (`frame_consistency`) (these four None for a frame),
    'leakage' (`watermark_leakage`), 'watermark' (F,) the alpha found in each frame,
    'visible' the fraction of frames with a shape, 'displacement' px from the first to the last
    centroid found (0.0 with fewer than two), 'max_jump' (clips) the largest frame-to-frame centroid step, px."""
    frames = _frames(x)
    seg = segment(frames)
    m = _measure(frames, seg)
    clip = np.ndim(x) == 4
    path = m["centroid"][m["found"]]  # (K, 2) the centroids found
    return dict(_labels(m), jerk=_jerk(m["centroid"]) if clip else None,
                consistency=_consistency(frames, seg) if clip else None,
                leakage=_leakage(m["watermark"]), watermark=m["watermark"],
                visible=float(m["found"].mean()), max_jump=_max_jump(m["centroid"]) if clip else None,
                displacement=float(np.linalg.norm(path[-1] - path[0])) if len(path) > 1 else 0.0)


def describe_all(items) -> list[dict]:
    """`describe` of each frame (H, W, 3) or clip (F, H, W, 3) of items, e.g. (N, F, H, W, 3)."""
    return [describe(x) for x in items]


def _classify(x) -> dict:
    """The labels of `describe` only (none of its clip figures), for one frame or clip."""
    return _labels(measure(_frames(x)))


def classify_color(x) -> str | None:
    """Colour name of the shape in a frame or clip: the palette colour of nearest hue (pastel
    and watermarked colours keep their hue). None if no shape is found."""
    return _classify(x)["color"]


def classify_shape(x) -> str | None:
    """`circle`, `square` or `triangle` from the shape's moments (`segmentation._moments`): a
    triangle is lopsided top to bottom, a square has corners on its diagonals, a circle neither;
    an outline's interior counts as filled. None if no shape is found."""
    return _classify(x)["shape"]


def classify_direction(clip) -> str | None:
    """`left`/`right`/`up`/`down` from the centroid's robust (Theil-Sen) velocity, `still` below
    STILL_SPEED px/frame, None if the shape is found in fewer than two frames.
    clip: (F, H, W, 3)."""
    return _classify(clip)["direction"]


def classify_zoom(clip) -> str | None:
    """`zoom-in` (shape grows), `zoom-out` (shrinks) or `none`, from the robust trend of log area
    over the clip; None if the shape is found in fewer than two frames. clip: (F, H, W, 3)."""
    return _classify(clip)["zoom"]


def detect_style(x) -> str | None:
    """`pastel` (light background), `outlined` (the filled shape is more than OUTLINE_HOLES
    hollow) or `plain`, for a frame (H, W, 3) or a clip (F, H, W, 3)."""
    return _classify(x)["style"]


def watermark_leakage(frames) -> float:
    """How much watermark the frames (..., H, W, 3) carry: the estimated alpha of a white blend
    over the watermark box's background (the shape's pixels left out; the mirrored box, where
    flipped training clips have it, counts too), relative to the real watermark's 0.45.
    About 1 for video-domain frames (flipped or not), about 0 for clean images."""
    x, _ = _flat(frames)
    return _leakage(_total(_watermarks(x, background_color(x))))


def centroid_jerk(clip) -> float:
    """Mean size of the centroid's third difference, px/frame^3: ~0 for steady motion, large for a
    shape that jitters or jumps; NaN without four frames in a row with a shape.
    clip: (F, H, W, 3)."""
    return _jerk(measure(clip)["centroid"])


def frame_consistency(clip) -> float:
    """Mean cosine similarity of consecutive frames' foregrounds (coverage times colour minus
    background) after aligning their centroids to the whole pixel: 1 when the same object only
    moves, lower when it flickers, changes shape or colour, or vanishes. clip: (F, H, W, 3)."""
    x, _ = _flat(clip)
    return _consistency(x, segment(x))


_TARGET = {"color": lambda color: color, "shape": lambda shape: shape,
           "direction": lambda direction: direction or "still",
           "zoom": lambda motion: motion if motion in ("zoom-in", "zoom-out") else "none",
           "style": lambda style: style or "plain"}  # how each attribute's targets are read


def _accuracy(key: str, items, targets) -> float:
    """Fraction of items (frames, clips or their `describe` dicts) whose `key` equals the target."""
    items, targets = list(items), list(targets)
    if len(items) != len(targets) or not items:
        raise ValueError(f"need as many targets as items (> 0), got {len(items)} items "
                         f"and {len(targets)} targets")
    found = (x[key] if isinstance(x, dict) else _classify(x)[key] for x in items)
    return float(np.mean([label == _TARGET[key](y) for label, y in zip(found, targets)]))


def color_accuracy(items, colors) -> float:
    """Fraction of frames/clips (or descriptions) whose `classify_color` equals the target."""
    return _accuracy("color", items, colors)


def shape_accuracy(items, shapes) -> float:
    """Fraction of frames/clips (or descriptions) whose `classify_shape` equals the target shape."""
    return _accuracy("shape", items, shapes)


def direction_accuracy(clips, directions) -> float:
    """Fraction of clips (or descriptions) whose `classify_direction` equals the target (None
    counts as `still`)."""
    return _accuracy("direction", clips, directions)


def zoom_accuracy(clips, motions) -> float:
    """Fraction of clips (or descriptions) whose `classify_zoom` equals the target (`zoom-in`,
    `zoom-out`; None or any other camera motion counts as `none`)."""
    return _accuracy("zoom", clips, motions)


def style_rate(items, style: str | None) -> float:
    """Fraction of frames/clips (or descriptions) detected as `style` (None means `plain`)."""
    items = list(items)
    return _accuracy("style", items, [style] * len(items))


def score(descriptions, targets: dict) -> dict:
    """Evaluation figures of N `describe` dicts (`describe_all`), without segmenting again.

    targets: any of 'color', 'shape', 'direction', 'zoom' (N each, read as the `*_accuracy`
    functions read them) and 'style' (one style for all, as `style_rate`). Returns those
    accuracies ('style': the rate), 'leakage' (over all frames: `watermark_leakage` of all the
    items), 'visible' and 'displacement' (means) and, for clips, 'jerk' (mean over the clips, NaN
    left out) and 'consistency' (mean)."""
    ds = list(descriptions)
    out = {key: _accuracy(key, ds, [y] * len(ds) if key == "style" else y)
           for key, y in targets.items()}
    out.update(leakage=_leakage(np.concatenate([d["watermark"] for d in ds])),
               visible=float(np.mean([d["visible"] for d in ds])),
               displacement=float(np.mean([d["displacement"] for d in ds])))
    if all(d["jerk"] is not None for d in ds):
        out.update(jerk=float(np.nanmean([d["jerk"] for d in ds])),
                   consistency=float(np.mean([d["consistency"] for d in ds])))
    return out


def steady(description: dict, reference_displacement: float) -> bool:
    """A steady clip (from its `describe` dict): the shape visible in >= 95% of frames, no frame-to-frame
    centroid step over 4 px, and (for a moving prompt, `reference_displacement` > 0: the mean start-to-end
    displacement of real clips of the same prompts) travel 50-150% of the real clips'."""
    d = description
    if d["visible"] < STEADY_VISIBLE or not d["max_jump"] <= STEADY_JUMP:
        return False
    if reference_displacement > 0:
        lo, hi = STEADY_TRAVEL
        return lo * reference_displacement <= d["displacement"] <= hi * reference_displacement
    return True
