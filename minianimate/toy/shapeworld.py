"""ShapeWorld: a toy world of coloured shapes that stands in for LAION (images) and WebVid (videos).

Two domains, as in the paper:
- **images** (the T2I domain): clean frames, one shape, caption `a red circle`;
- **videos** (the video domain): the shape moves `left`/`right`/`up`/`down`, caption
  `a red circle moving left`, and every frame carries WebVid-like *defects* (a translucent white
  watermark box in the bottom-right corner, a mild blur and sensor noise) that the domain adapter
  is meant to absorb.
Two *personalized* styles (`outlined`, `pastel`) stand in for DreamBooth/LoRA models, and three
*camera motions* (`zoom-in`, `zoom-out`, `roll`) made by rule-based augmentation of still clips
are the MotionLoRA references. Everything is numpy and deterministic from a `np.random.Generator`.
"""
import numpy as np
from einops import reduce

from minianimate.data import flip_caption  # noqa: F401  (the caption-aware flip; re-exported)
from minianimate.toy.backgrounds import (  # noqa: F401  (re-exported)
    BACKGROUND_KINDS, LOOKS, MIN_SHAPE_CONTRAST, background_kind, look_colours, palette_rgb, random_background)
from minianimate.toy.video_effects import (  # noqa: F401  (re-exported)
    CAMERA_MOTIONS, MIRRORED_WATERMARK_BOX, NOISE_STD, ROLL_DEGREES, WATERMARK_ALPHA, WATERMARK_BOX, ZOOM_SCALE,
    add_video_defects, add_watermark, camera_augment)

IMAGE_SIZE = 64
BACKGROUND = (15, 15, 15)
PASTEL_BACKGROUND = (235, 225, 210)
PASTEL_WHITE = (255, 250, 240)  # pastel shape colours are mixed halfway toward this
COLORS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230),
          "yellow": (230, 210, 40)}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = ("left", "right", "up", "down")
STYLES = ("outlined", "pastel")
SIZE_RANGE = (14, 22)  # shape diameter / side / base, px
SPEED_RANGE = (0.6, 1.0)  # px per frame: 9-15 px over 16 frames (issue 23: the motion lab's "slower world")
OUTLINE_RANGE = (3.0, 4.0)  # outline width of the `outlined` style, px (about one 16x16 latent pixel)
INRADIUS = {"circle": 0.5, "square": 0.5, "triangle": 1 / (1 + np.sqrt(5))}  # the largest depth (`_depth`) / size
MAX_MARGIN = (IMAGE_SIZE - SIZE_RANGE[1]) / 2  # px: `render_image`'s margin stays below it (the largest shape fits)
MAX_HOLE = INRADIUS["triangle"] * SIZE_RANGE[1] - OUTLINE_RANGE[0]  # px: `render_image`'s hole stays below it
TRAIL_ALPHAS = (0.3, 0.18, 0.08)  # faint copies behind a moving shape (a motion streak), nearest first
TRAIL_GAP = 2.5  # px between the copies of a trail
_SUPERSAMPLE = 4

# The caption grammar: "a {color} {shape}" or "a {color} {shape} moving {direction}".


def caption(color: str, shape: str, direction: str | None = None) -> str:
    """`a red circle`, or `a red circle moving left`; direction None or "still" gives no motion."""
    if direction is None or direction == "still":
        return f"a {color} {shape}"
    return f"a {color} {shape} moving {direction}"


def parse_caption(text: str) -> dict:
    """Inverse of `caption`: {'color', 'shape', 'direction' (None for still captions)}."""
    words = text.split()
    if len(words) == 3 and words[0] == "a":
        words = words + ["moving", None]
    if len(words) != 5 or words[0] != "a" or words[3] != "moving" or words[1] not in COLORS \
            or words[2] not in SHAPES or words[4] not in (None, *DIRECTIONS):
        raise ValueError(f"not a ShapeWorld caption: {text!r}; expected 'a {{color}} {{shape}}' "
                         f"[+ ' moving {{direction}}'] with color in {list(COLORS)}, shape in "
                         f"{list(SHAPES)}, direction in {list(DIRECTIONS)}")
    return {"color": words[1], "shape": words[2], "direction": words[4]}


# ---------------------------------------------------------------------------------------------
# Rendering: a shape is a "depth" function (distance inside its boundary, px), rasterised with
# 4x4 supersampling so edges are anti-aliased and sub-pixel motion is smooth.

def _depth(shape: str, x: np.ndarray, y: np.ndarray, size: float) -> np.ndarray:
    """Distance from (x, y) (relative to the shape's centre) to its boundary, > 0 inside."""
    h = size / 2
    if shape == "circle":
        return h - np.hypot(x, y)
    if shape == "square":
        return h - np.maximum(np.abs(x), np.abs(y))
    if shape == "triangle":  # apex up, base `size` wide and `size` high, centred on its bbox
        right = (h + y - 2 * x) / np.sqrt(5)  # edge through the apex (0, -h) and (h, h)
        left = (h + y + 2 * x) / np.sqrt(5)  # edge through the apex and (-h, h)
        return np.minimum(h - y, np.minimum(right, left))
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _coverage(shape: str, cx: float, cy: float, size: float, outline: float | None) -> np.ndarray:
    """Fraction of each pixel covered by the shape centred at (cx, cy): float (H, W) in [0, 1].

    `outline` (px) keeps only the band 0 <= depth < outline, i.e. an unfilled outline.
    """
    cov = np.zeros((IMAGE_SIZE, IMAGE_SIZE))
    r = int(np.ceil(size / 2)) + 2
    y0, y1 = max(int(cy) - r, 0), min(int(cy) + r + 1, IMAGE_SIZE)
    x0, x1 = max(int(cx) - r, 0), min(int(cx) + r + 1, IMAGE_SIZE)
    sub = (np.arange(_SUPERSAMPLE) + 0.5) / _SUPERSAMPLE
    ys = (np.arange(y0, y1)[:, None] + sub).ravel() - cy  # pixel i spans [i, i + 1)
    xs = (np.arange(x0, x1)[:, None] + sub).ravel() - cx
    d = _depth(shape, xs[None, :], ys[:, None], size)
    inside = (d >= 0) if outline is None else (d >= 0) & (d < outline)
    cov[y0:y1, x0:x1] = reduce(inside.astype(float), "(h sy) (w sx) -> h w", "mean", sy=_SUPERSAMPLE, sx=_SUPERSAMPLE)
    return cov


def _palette(color: str, style: str | None, background=None, rgb=None) -> tuple[np.ndarray, np.ndarray]:
    """(background RGB, shape RGB) as float arrays for a colour name and a style; `background` (RGB) and `rgb`
    (the shape's RGB) replace the style's own."""
    if style not in (None, *STYLES):
        raise ValueError(f"unknown style {style!r}; expected None or one of {STYLES}")
    if color not in COLORS:
        raise ValueError(f"unknown color {color!r}; expected one of {list(COLORS)}")
    fg = np.array(COLORS[color] if rgb is None else rgb, float)
    bg = np.array(BACKGROUND, float)
    if style == "pastel":
        bg, fg = np.array(PASTEL_BACKGROUND, float), 0.5 * fg + 0.5 * np.array(PASTEL_WHITE, float)
    return (bg if background is None else np.array(background, float)), fg


def _background(rng: np.random.Generator, background, color: str, rgb) -> tuple | None:
    """`background` as given to `render_*`: None (the style's own), "random" or a kind (drawn from `rng`, away from
    the shape's colour), or an RGB triple."""
    if background is None or not isinstance(background, str):
        return background
    return random_background(rng, None if background == "random" else background, COLORS[color] if rgb is None
                             else rgb)


_STEP = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def _draw(color: str, shape: str, style: str | None, size: float, outline: float | None,
          centres: np.ndarray, trail: str | None = None, background=None, rgb=None) -> np.ndarray:
    """Render one frame per centre (x, y): uint8 (F, H, W, 3).

    trail: a direction; faint copies of the shape (TRAIL_ALPHAS) are drawn behind it, the way a photo
    of a running horse shows which way it runs. It is what lets a single frame (and so the frozen image
    model, whose features are all a motion module sees) tell `moving left` from `moving right`.
    background, rgb: RGB colours replacing the style's background and the named colour (`_palette`).
    """
    bg, fg = _palette(color, style, background, rgb)
    frames = []
    for cx, cy in centres:
        frame = bg
        if trail is not None:
            dx, dy = _STEP[trail]
            for k, alpha in reversed(list(enumerate(TRAIL_ALPHAS, 1))):
                a = alpha * _coverage(shape, cx - k * TRAIL_GAP * dx, cy - k * TRAIL_GAP * dy, size, outline)
                frame = frame * (1 - a[..., None]) + fg * a[..., None]
        a = _coverage(shape, cx, cy, size, outline)[..., None]  # (H, W, 1)
        frames.append(frame * (1 - a) + fg * a)
    return np.round(np.stack(frames)).astype(np.uint8)


def _choose(rng: np.random.Generator, color, shape, style):
    """Fill in the unspecified attributes: (color, shape, size, outline width or None)."""
    color = color or str(rng.choice(list(COLORS)))
    shape = shape or str(rng.choice(SHAPES))
    size = rng.uniform(*SIZE_RANGE)
    outline = rng.uniform(*OUTLINE_RANGE) if style == "outlined" else None
    return color, shape, size, outline


def render_image(rng: np.random.Generator, color=None, shape=None, style=None, direction=None, margin: float = 0.0,
                 hole: float = 0.0, background=None, rgb=None):
    """A clean T2I-domain image: (uint8 (H, W, 3), caption `a {color} {shape}`, meta dict).

    Unspecified colour/shape are drawn from `rng`; the shape lies fully inside the frame, at least `margin` px
    from its edge (0: it may lie flush against it).
    direction: None (a still shape) or one of DIRECTIONS: a photo of a moving shape, its motion streak
    (trail) behind it, caption `a {color} {shape} moving {direction}`.
    hole: an `outlined` shape's hole is at least this wide (px) from its centre to the outline's inner edge
    (its size and width are drawn again until it is, its colour and shape kept; 0: as drawn, where a small triangle's 4 px outline may leave
    under 1 px, a hole the VAE closes).
    background: None (the style's own: near-black, pastel's cream), "random" or one of BACKGROUND_KINDS (drawn by
    `random_background`, away from the shape's colour), or an RGB triple. rgb: the shape's RGB instead of the named
    colour's (the caption still names `color`).
    """
    if direction not in (None, *DIRECTIONS):
        raise ValueError(f"unknown direction {direction!r}; expected None or one of {DIRECTIONS}")
    if not 0 <= hole < MAX_HOLE:
        raise ValueError(f"hole must be in [0, {MAX_HOLE:.2f}) px (a triangle of the largest size and thinnest "
                         f"outline), got {hole}")
    color, shape, size, outline = _choose(rng, color, shape, style)
    while outline is not None and INRADIUS[shape] * size - outline < hole:  # the same colour and shape, redrawn
        _, _, size, outline = _choose(rng, color, shape, style)
    if not 0 <= margin < MAX_MARGIN:
        raise ValueError(f"margin must be in [0, {MAX_MARGIN:g}) px, got {margin}")
    centre = rng.uniform(size / 2 + margin, IMAGE_SIZE - size / 2 - margin, size=2)
    background = _background(rng, background, color, rgb)
    image = _draw(color, shape, style, size, outline, centre[None], trail=direction, background=background,
                  rgb=rgb)[0]
    meta = dict(color=color, shape=shape, style=style, size=size, outline=outline, direction=direction,
                centre=tuple(float(v) for v in centre), background=background)
    return image, caption(color, shape, direction), meta


def silhouette(shape: str, centres, size: float) -> np.ndarray:
    """The ControlNet condition: the shape's silhouette, white on black, at each centre (x, y): uint8 (F, H, W, 3)
    (anti-aliased edges; any white blob a user paints reads the same way)."""
    masks = [_coverage(shape, cx, cy, size, None) for cx, cy in np.reshape(centres, (-1, 2))]
    return np.repeat(np.round(np.stack(masks) * 255).astype(np.uint8)[..., None], 3, axis=-1)


def _path(rng, frames, size, direction, speed):
    """Centres (F, 2) of a straight path at `speed` px/frame that stays inside the frame."""
    lo, hi = size / 2, IMAGE_SIZE - size / 2
    travel = speed * (frames - 1)
    start = rng.uniform(lo, max(lo, hi - travel))  # along the motion axis: the whole path fits
    across = rng.uniform(lo, hi)
    along = start + speed * np.arange(frames)
    if direction in ("left", "up"):
        along = lo + hi - along  # same path, walked backwards
    if direction in ("left", "right"):
        return np.stack([along, np.full(frames, across)], axis=1)
    return np.stack([np.full(frames, across), along], axis=1)


def render_clip(rng: np.random.Generator, frames=16, color=None, shape=None, direction=None,
                style=None, watermark=True, speed_range=None, background=None, rgb=None):
    """A video-domain clip: (uint8 (F, H, W, 3), caption, meta dict).

    direction: one of DIRECTIONS (random if None) or "still" (caption without motion).
    The shape moves at SPEED_RANGE px/frame, or `speed_range` (lo, hi) if given (slower if `frames` is too
    long for the path to fit).
    watermark: add the video-domain defects (watermark box, blur, noise); False gives clean frames.
    background: as `render_image`'s (drawn once for the whole clip); rgb: the shape's colour instead of its name's.
    """
    color, shape, size, outline = _choose(rng, color, shape, style)
    direction = direction or str(rng.choice(DIRECTIONS))
    if direction not in (*DIRECTIONS, "still"):
        raise ValueError(f"unknown direction {direction!r}; expected one of {DIRECTIONS} "
                         "or 'still'")
    if direction == "still":
        speed = 0.0
        centre = rng.uniform(size / 2, IMAGE_SIZE - size / 2, size=(1, 2))
        centres = np.repeat(centre, frames, axis=0)
    else:
        speed = min(rng.uniform(*(speed_range or SPEED_RANGE)), (IMAGE_SIZE - size) / max(frames - 1, 1))
        centres = _path(rng, frames, size, direction, speed)
    streak = direction if direction != "still" else None  # the motion streak (see `_draw`)
    background = _background(rng, background, color, rgb)
    clip = _draw(color, shape, style, size, outline, centres, trail=streak, background=background, rgb=rgb)
    if watermark:
        clip = add_video_defects(rng, clip)
    meta = dict(color=color, shape=shape, style=style, size=size, direction=direction,
                speed=speed, centres=centres, background=background, rgb=rgb)
    return clip, caption(color, shape, direction), meta


def render_camera_clip(rng: np.random.Generator, motion: str, frames=16, color=None, shape=None,
                       style=None, watermark=True, zoom: float | None = None, background=None):
    """A MotionLoRA reference: a still clip seen by a moving camera (`camera_augment`, zooming by `zoom`).

    The shape is placed near the centre so it stays whole in the most zoomed/rotated frame.
    The caption is the still caption (`a red circle`): the camera motion is not in the caption.
    background: as `render_image`'s.
    Returns (uint8 (F, H, W, 3), caption, meta dict).
    """
    color, shape, size, outline = _choose(rng, color, shape, style)
    margin = IMAGE_SIZE / 2 / (zoom or ZOOM_SCALE) - size / 2 - 1  # centre offset that stays in the crop
    centre = IMAGE_SIZE / 2 + rng.uniform(-margin, margin, size=2)
    background = _background(rng, background, color, None)
    clip = _draw(color, shape, style, size, outline, np.repeat(centre[None], frames, axis=0), background=background)
    clip = camera_augment(clip, motion, zoom)
    if watermark:  # the watermark sits on the screen, so it is added after the camera moved
        clip = add_video_defects(rng, clip)
    meta = dict(color=color, shape=shape, style=style, size=size, direction="still",
                camera=motion, centre=tuple(float(v) for v in centre))
    return clip, caption(color, shape), meta
