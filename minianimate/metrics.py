"""Rule-based metrics of ShapeWorld frames: find the shape, then read off its colour, shape, motion.

Every measure starts from `segment`: the background colour is the median of the frame's border
(outside the watermark box), the shape is the largest connected group of pixels far from it (an
outline's interior filled in; a watermark found in its box is blended out first), and a soft
coverage in [0, 1] gives sub-pixel areas and centroids. From there: colour by hue, shape by its
moments (a triangle is lopsided, a square has corners), direction from the centroid trajectory,
zoom from the area trend, style from background and holes, and watermark leakage from the box.
Built to be read on *generated* frames too, which are blurrier and noisier than the ground truth:
thresholds sit halfway between the classes, the descriptors survive blur, fits are robust
(medians, Theil-Sen slopes) and clips vote over their frames.

Frames are uint8 (H, W, 3); clips (F, H, W, 3). `measure`, `segment` and `watermark_leakage`
take any leading dims; `classify_*` take one frame or one clip; `*_accuracy` take a batch.
"""
import colorsys
from collections import Counter

import numpy as np
from einops import rearrange

from minianimate.shapeworld import COLORS, MIRRORED_WATERMARK_BOX, WATERMARK_ALPHA, WATERMARK_BOX

BORDER = 2  # px of frame border that estimate the background
MIN_CONTRAST = 20.0  # colour distance below which nothing counts as a shape
MIN_AREA = 20  # px; a smaller largest component is noise: "no shape found" (ours: >= 60)
TRIANGLE_SKEW = 0.57  # |vertical skewness| of a triangle (0 for circles and squares)
SQUARE_CORNERS = 0.6  # diagonal minus axial excess kurtosis of a square (0 for circles)
STILL_SPEED = 0.5  # px/frame; slower centroids are "still" (the world moves at 1.5-2.5)
ZOOM_LOG_AREA = 0.2  # |log(last area / first area)| above this is a zoom (ours: 2 log 1.5 = 0.81)
OUTLINE_HOLES = 0.04  # an object whose filled area is > 4% hole is drawn as an outline
PASTEL_LUMA = 128  # backgrounds brighter than this are the pastel style
_HUES = {name: colorsys.rgb_to_hsv(*(np.array(rgb) / 255))[0] * 360 for name, rgb in COLORS.items()}


def _flat(frames) -> tuple[np.ndarray, tuple]:
    """uint8 (..., H, W, 3) -> float (N, H, W, 3) and the leading shape (...)."""
    x = np.asarray(frames)
    if x.ndim < 3 or x.shape[-1] != 3:
        raise ValueError(f"expected RGB frames (..., H, W, 3), got shape {x.shape}")
    return rearrange(x, "... h w c -> (...) h w c").astype(float), x.shape[:-3]


_BOXES = (WATERMARK_BOX, MIRRORED_WATERMARK_BOX)


def _box(h: int, w: int, where=WATERMARK_BOX) -> np.ndarray:
    """bool (H, W), True inside the watermark box (`where`)."""
    box = np.zeros((h, w), bool)
    box[where] = True
    return box


def _ring(h: int, w: int) -> np.ndarray:
    """bool (H, W), True on the frame's border (BORDER px wide) outside the watermark box."""
    ring = np.ones((h, w), bool)
    ring[BORDER:-BORDER, BORDER:-BORDER] = False
    return ring & ~_box(h, w) & ~_box(h, w, MIRRORED_WATERMARK_BOX)


def background_color(frames) -> np.ndarray:
    """Median colour of the border pixels outside the watermark box: (..., H, W, 3) -> (..., 3)."""
    x, lead = _flat(frames)
    return np.median(x[:, _ring(*x.shape[1:3])], axis=1).reshape(*lead, 3)


def _watermark_strength(x: np.ndarray, bg: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Estimated alpha of a white watermark over `box` (H, W) of each frame (N, H, W, 3): (N,).

    Box pixels are split into how far they are blended from the background toward white (t) and
    how far off that blend line their colour lies; the median t of the pixels on the line (the
    shape's pixels are off it) is the watermark's alpha: 0.45 for the video domain, 0 for images.
    """
    white = 255.0 - bg[:, None, :]  # (N, 1, 3) the blend direction
    rel = x[:, box] - bg[:, None, :]  # (N, P, 3) box pixels
    length2 = np.maximum((white ** 2).sum(-1), 1e-6)  # (N, 1)
    t = (rel * white).sum(-1) / length2  # (N, P)
    off = np.linalg.norm(rel - np.clip(t, 0, 1)[..., None] * white, axis=-1)
    tolerance = np.clip(0.3 * np.sqrt(length2), 12, 40)  # a short line for light backgrounds
    alpha = [np.median(ti[oi < tol]) if (oi < tol).any() else np.nan
             for ti, oi, tol in zip(t, off, tolerance[:, 0])]
    return np.array(alpha)


def _watermarks(x: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Alpha of the watermark (N, 2) in its box and in the mirrored box, where the data loader's
    random flip puts it in half of the training clips (so a model may draw it there too)."""
    return np.stack([_watermark_strength(x, bg, _box(*x.shape[1:3], where)) for where in _BOXES], 1)


def _total(alpha: np.ndarray) -> np.ndarray:
    """Sum of the alphas found over both boxes, (N, 2) -> (N,); NaN where neither was seen."""
    return np.where(np.isnan(alpha).all(1), np.nan, np.nansum(alpha, 1))


def _label_runs(mask: np.ndarray, diagonal: bool):
    """Connected components of a bool (H, W) mask, computed on runs of pixels along rows.

    Returns the runs (row, start, end) as three (R,) arrays and each run's component id (R,).
    Runs in neighbouring rows that overlap are linked; the links are then collapsed by
    min-label propagation with pointer jumping (each run ends with the smallest run index of
    its component). diagonal: 8-connectivity (runs touching at a corner join), else 4.
    """
    edges = np.diff(np.pad(mask.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    rows, starts = np.nonzero(edges == 1)
    ends = np.nonzero(edges == -1)[1]  # run r covers columns starts[r] .. ends[r] - 1
    first = np.searchsorted(rows, np.arange(mask.shape[0] + 1))  # runs of row y: first[y]..
    # every pair (run k, run j of the row above) is a candidate link
    count = np.where(rows > 0, first[rows] - first[np.maximum(rows - 1, 0)], 0)
    k = np.repeat(np.arange(len(rows)), count)
    offset = first[np.maximum(rows - 1, 0)] - np.cumsum(count) + count
    j = np.repeat(offset, count) + np.arange(len(k))
    slack = int(diagonal)
    linked = (starts[j] < ends[k] + slack) & (starts[k] < ends[j] + slack)
    j, k = j[linked], k[linked]
    ids = np.arange(len(rows))
    while True:
        low = np.minimum(ids[j], ids[k])
        new = ids.copy()
        np.minimum.at(new, ids[j], low)  # hook each component's root onto the smaller label
        np.minimum.at(new, ids[k], low)
        new = new[new]
        new = new[new]
        if np.array_equal(new, ids):
            return rows, starts, ends, ids
        ids = new


def _paint(shape, rows, starts, ends) -> np.ndarray:
    """bool (H, W) mask of the given runs."""
    edges = np.zeros((shape[0], shape[1] + 1), int)
    np.add.at(edges, (rows, starts), 1)
    np.add.at(edges, (rows, ends), -1)
    return np.cumsum(edges, axis=1)[:, :-1] > 0


def _largest_with_holes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The largest 8-connected component of each bool (N, H, W) mask, and the same with its holes
    filled (background that cannot reach the frame's edge). Frames are labelled in one go, stacked
    into one tall image with a 1 px background frame around each."""
    n, h, w = mask.shape
    tall = rearrange(np.pad(mask, ((0, 0), (1, 1), (1, 1))), "n h w -> (n h) w")
    rows, starts, ends, ids = _label_runs(tall, diagonal=True)
    frame = rows // (h + 2)
    size = np.bincount(ids, weights=ends - starts, minlength=len(ids))[ids]  # (R,) per run
    largest = np.zeros(n)
    np.maximum.at(largest, frame, size)
    best = np.full(n, len(ids))
    tie = size == largest[frame]
    np.minimum.at(best, frame[tie], ids[tie])  # ties: the component met first
    keep = ids == best[frame]
    ink = _paint(tall.shape, rows[keep], starts[keep], ends[keep])
    rows, starts, ends, ids = _label_runs(~ink, diagonal=False)
    inside = ids != ids[0]  # run 0 is the top padding row, connected to every frame's outside
    filled = ink | _paint(tall.shape, rows[inside], starts[inside], ends[inside])
    ink, filled = (rearrange(m, "(n h) w -> n h w", n=n)[:, 1:-1, 1:-1] for m in (ink, filled))
    return ink, filled


def segment(frames) -> dict:
    """Find the shape in each frame. (..., H, W, 3) -> dict of
    coverage (..., H, W) soft coverage in [0, 1] of the shape (an outline's interior counts as 1),
    ink (..., H, W) bool, the pixels drawn in the shape's colour (the largest component),
    filled (..., H, W) bool, ink with its holes filled,
    background (..., 3) colour, watermark (...) the estimated alpha of the watermark (0.45 in the
    video domain; the watermark's box and its mirror image are searched: see `_watermarks`)."""
    x, lead = _flat(frames)
    n, h, w = x.shape[:3]
    bg = background_color(x)  # (N, 3)
    alpha = _watermarks(x, bg)  # (N, 2)
    for where, a in zip(_BOXES, alpha.T):  # undo each watermark's blend toward white
        box, a = _box(h, w, where), np.clip(np.nan_to_num(a), 0, 0.9)[:, None, None]
        x[:, box] = (x[:, box] - a * 255) / (1 - a)
    dist = np.sqrt(((x - bg[:, None, None, :]) ** 2).sum(-1))  # (N, H, W) distance from background
    noise = np.median(dist[:, _ring(h, w)], axis=1)[:, None, None]  # (N, 1, 1)
    contrast = np.percentile(dist, 99.5, axis=(1, 2))[:, None, None]  # the shape's colour distance
    contrast = np.maximum(contrast, noise + MIN_CONTRAST)
    soft = np.clip((dist - noise) / (contrast - noise), 0, 1)
    ink, filled = _largest_with_holes(soft > 0.5)
    rim = np.pad(filled, ((0, 0), (1, 1), (1, 1)))
    rim = np.maximum.reduce([rim[:, 1 + dy:h + 1 + dy, 1 + dx:w + 1 + dx]
                             for dy in (-1, 0, 1) for dx in (-1, 0, 1)])  # filled, grown by 1 px
    coverage = np.where(filled & ~ink, 1.0, soft * rim)
    return dict(coverage=coverage.reshape(*lead, h, w), ink=ink.reshape(*lead, h, w),
                filled=filled.reshape(*lead, h, w), background=bg.reshape(*lead, 3),
                watermark=_total(alpha).reshape(lead))


def _moments(cov: np.ndarray):
    """Shape descriptors of coverages (N, H, W) from their central moments, all (N,):
    area, centroid x and y, `skew` (vertical skewness: -0.57 for an apex-up triangle, 0 for
    shapes symmetric top to bottom) and `corners` (fourth cumulant along the diagonals minus along
    the axes, over the variance squared: 0.6 for an axis-aligned square, 0 for a circle).
    A symmetric blur leaves third and fourth cumulants unchanged and only grows the variance, so
    both descriptors shrink a little under blur but keep their sign and order."""
    n = len(cov)
    i, y, x = np.nonzero(cov)  # only the covered pixels, all frames at once
    weight = cov[i, y, x]
    area = np.bincount(i, weight, minlength=n)
    safe = np.maximum(area, 1e-6)

    def mean(z):  # coverage-weighted mean per frame of a per-pixel quantity z (P,)
        return np.bincount(i, weight * z, minlength=n) / safe

    cx, cy = mean(x + 0.5), mean(y + 0.5)
    dx, dy = x + 0.5 - cx[i], y + 0.5 - cy[i]
    var_x, var_y = mean(dx ** 2), mean(dy ** 2)
    skew = mean(dy ** 3) / np.maximum(var_y, 1e-6) ** 1.5

    def cumulant4(z):
        return mean(z ** 4) - 3 * mean(z ** 2) ** 2

    u, v = (dx + dy) / np.sqrt(2), (dx - dy) / np.sqrt(2)
    corners = (cumulant4(u) + cumulant4(v) - cumulant4(dx) - cumulant4(dy)) / 2
    corners /= np.maximum((var_x + var_y) / 2, 1e-6) ** 2
    return area, cx, cy, skew, corners


def measure(frames) -> dict:
    """Per-frame properties of the shape, (..., H, W, 3) -> dict of arrays, NaN where none found:
    found (...) bool, area (...) px, centroid (..., 2) as (x, y) px, skew and corners (...) (see
    `_moments`), rgb (..., 3) mean colour of the shape's core, holes (...) fraction of the filled
    shape left empty (outlines), background (..., 3), watermark (...) estimated alpha."""
    x, lead = _flat(frames)
    seg = segment(x)
    cov, ink, filled = seg["coverage"], seg["ink"], seg["filled"]
    area, cx, cy, skew, corners = _moments(cov)
    found = ink.sum(axis=(1, 2)) >= MIN_AREA
    core = ink & (cov > 0.75)
    core = np.where(core.sum((1, 2), keepdims=True) > 0, core, ink)
    rgb = (x * core[..., None]).sum((1, 2)) / np.maximum(core.sum((1, 2)), 1)[:, None]
    holes = 1 - ink.sum((1, 2)) / np.maximum(filled.sum((1, 2)), 1)
    nan = np.where(found, 1.0, np.nan)
    out = dict(found=found, area=area * nan, centroid=np.stack([cx, cy], -1) * nan[:, None],
               skew=skew * nan, corners=corners * nan, rgb=rgb * nan[:, None], holes=holes * nan,
               background=seg["background"], watermark=seg["watermark"])
    return {k: v.reshape(lead + v.shape[1:]) for k, v in out.items()}


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


def _per_frame(x) -> dict:
    """`measure` of one frame (H, W, 3) or clip (F, H, W, 3), always with a frame axis."""
    x = np.asarray(x)
    if x.ndim not in (3, 4):
        raise ValueError(f"expected one frame (H, W, 3) or one clip (F, H, W, 3), got {x.shape}")
    return measure(x[None] if x.ndim == 3 else x)


def describe(x) -> dict:
    """Everything the classifiers read from one frame (H, W, 3) or clip (F, H, W, 3), measured
    once: {'color', 'shape', 'style', 'direction', 'zoom'} (direction and zoom None for a frame).
    Clips vote over their frames for colour, shape and style."""
    m = _per_frame(x)
    return dict(color=_vote(_hue_name(rgb) for rgb in m["rgb"]),
                shape=_vote(_shape_name(s, c) for s, c in zip(m["skew"], m["corners"])),
                style=_vote(_style(bg, h) for bg, h in zip(m["background"], m["holes"])),
                direction=_direction(m), zoom=_zoom(m))


def classify_color(x) -> str | None:
    """Colour name of the shape in a frame or clip: the palette colour of nearest hue (pastel
    and watermarked colours keep their hue). None if no shape is found."""
    return describe(x)["color"]


def classify_shape(x) -> str | None:
    """`circle`, `square` or `triangle` from the shape's moments (`_moments`): a triangle is
    lopsided top to bottom, a square has corners on its diagonals, a circle neither; an outline's
    interior counts as filled. None if no shape is found."""
    return describe(x)["shape"]


def classify_direction(clip) -> str | None:
    """`left`/`right`/`up`/`down` from the centroid's robust (Theil-Sen) velocity, `still` below
    STILL_SPEED px/frame, None if the shape is found in fewer than two frames.
    clip: (F, H, W, 3)."""
    return describe(clip)["direction"]


def classify_zoom(clip) -> str | None:
    """`zoom-in` (shape grows), `zoom-out` (shrinks) or `none`, from the robust trend of log area
    over the clip; None if the shape is found in fewer than two frames. clip: (F, H, W, 3)."""
    return describe(clip)["zoom"]


def detect_style(x) -> str | None:
    """`pastel` (light background), `outlined` (the filled shape is more than OUTLINE_HOLES
    hollow) or `plain`, for a frame (H, W, 3) or a clip (F, H, W, 3)."""
    return describe(x)["style"]


def watermark_leakage(frames) -> float:
    """How much watermark the frames (..., H, W, 3) carry: the estimated alpha of a white blend
    over the watermark box's background (the shape's pixels left out; the mirrored box, where
    flipped training clips have it, counts too), relative to the real watermark's 0.45.
    About 1 for video-domain frames (flipped or not), about 0 for clean images."""
    x, _ = _flat(frames)
    return float(np.nanmean(_total(_watermarks(x, background_color(x))))) / WATERMARK_ALPHA


def centroid_jerk(clip) -> float:
    """Mean size of the centroid's third difference, px/frame^3: ~0 for steady motion, large for a
    shape that jitters or jumps; NaN without four frames in a row with a shape.
    clip: (F, H, W, 3)."""
    jerk = np.linalg.norm(np.diff(measure(clip)["centroid"], n=3, axis=0), axis=-1)  # (F - 3,)
    jerk = jerk[~np.isnan(jerk)]
    return float(jerk.mean()) if len(jerk) else float("nan")


def frame_consistency(clip) -> float:
    """Mean cosine similarity of consecutive frames' foregrounds (coverage times colour minus
    background) after aligning their centroids to the whole pixel: 1 when the same object only
    moves, lower when it flickers, changes shape or colour, or vanishes. clip: (F, H, W, 3)."""
    x, _ = _flat(clip)
    seg = segment(x)
    fg = seg["coverage"][..., None] * (x - seg["background"][:, None, None, :])  # (F, H, W, 3)
    _, cx, cy, _, _ = _moments(seg["coverage"])
    cosines = []
    for t in range(len(fg) - 1):
        shift = np.round([cy[t + 1] - cy[t], cx[t + 1] - cx[t]])
        moved = np.roll(fg[t], tuple(np.nan_to_num(shift).astype(int)), axis=(0, 1))
        norm = np.linalg.norm(moved) * np.linalg.norm(fg[t + 1])
        cosines.append((moved * fg[t + 1]).sum() / norm if norm > 0 else 0.0)
    return float(np.mean(cosines))


def _accuracy(classify, items, targets) -> float:
    items, targets = list(items), list(targets)
    if len(items) != len(targets) or not items:
        raise ValueError(f"need as many targets as items (> 0), got {len(items)} items "
                         f"and {len(targets)} targets")
    return float(np.mean([classify(x) == y for x, y in zip(items, targets)]))


def color_accuracy(items, colors) -> float:
    """Fraction of frames/clips whose `classify_color` equals the target colour name."""
    return _accuracy(classify_color, items, colors)


def shape_accuracy(items, shapes) -> float:
    """Fraction of frames/clips whose `classify_shape` equals the target shape name."""
    return _accuracy(classify_shape, items, shapes)


def direction_accuracy(clips, directions) -> float:
    """Fraction of clips whose `classify_direction` equals the target (None counts as `still`)."""
    return _accuracy(classify_direction, clips, [d or "still" for d in directions])


def zoom_accuracy(clips, motions) -> float:
    """Fraction of clips whose `classify_zoom` equals the target (`zoom-in`, `zoom-out`; None or
    any other camera motion counts as `none`)."""
    targets = [m if m in ("zoom-in", "zoom-out") else "none" for m in motions]
    return _accuracy(classify_zoom, clips, targets)


def style_rate(items, style: str | None) -> float:
    """Fraction of frames/clips detected as `style` (None means `plain`)."""
    items = list(items)
    return _accuracy(detect_style, items, [style or "plain"] * len(items))
