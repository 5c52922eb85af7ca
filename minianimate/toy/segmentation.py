"""Find the shape in ShapeWorld frames: background, watermark, largest component, properties.

The background colour is the median of the frame's border (outside the watermark boxes); a white
watermark found in its box (or in the mirrored box, where a left-right flip puts it) is measured
and blended out; the shape is the largest connected group of pixels far from the background (an
outline's interior filled in), and a soft coverage in [0, 1] gives sub-pixel areas and centroids.
`measure` reads each frame's area, centroid, moments, colour, holes and watermark from that.

Frames are uint8 (..., H, W, 3): `background_color`, `segment` and `measure` take any leading dims.
"""
import numpy as np
from einops import rearrange

from minianimate.toy.shapeworld import MIRRORED_WATERMARK_BOX, WATERMARK_BOX

BORDER = 2  # px of frame border that estimate the background
MIN_CONTRAST = 20.0  # colour distance below which nothing counts as a shape
MIN_AREA = 20  # px; a smaller largest component is noise: "no shape found" (ours: >= 60)


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


def _measure(x: np.ndarray, seg: dict) -> dict:
    """`measure` of float frames x (N, H, W, 3) from their `segment` seg: dict of (N, ...)."""
    cov, ink, filled = seg["coverage"], seg["ink"], seg["filled"]
    area, cx, cy, skew, corners = _moments(cov)
    found = ink.sum(axis=(1, 2)) >= MIN_AREA
    core = ink & (cov > 0.75)
    core = np.where(core.sum((1, 2), keepdims=True) > 0, core, ink)
    rgb = (x * core[..., None]).sum((1, 2)) / np.maximum(core.sum((1, 2)), 1)[:, None]
    holes = 1 - ink.sum((1, 2)) / np.maximum(filled.sum((1, 2)), 1)
    nan = np.where(found, 1.0, np.nan)
    return dict(found=found, area=area * nan, centroid=np.stack([cx, cy], -1) * nan[:, None],
                skew=skew * nan, corners=corners * nan, rgb=rgb * nan[:, None], holes=holes * nan,
                background=seg["background"], watermark=seg["watermark"])


def measure(frames) -> dict:
    """Per-frame properties of the shape, (..., H, W, 3) -> dict of arrays, NaN where none found:
    found (...) bool, area (...) px, centroid (..., 2) as (x, y) px, skew and corners (...) (see
    `_moments`), rgb (..., 3) mean colour of the shape's core, holes (...) fraction of the filled
    shape left empty (outlines), background (..., 3), watermark (...) estimated alpha."""
    x, lead = _flat(frames)
    out = _measure(x, segment(x))
    return {k: v.reshape(lead + v.shape[1:]) for k, v in out.items()}
