"""The wider world's backgrounds: flat colours of four kinds, as LAION's and WebVid's photos are taken on anything.

`random_background` draws one (away from a shape's colour, so the shape stands out), `background_kind` names the kind
a colour reads as, `palette_rgb` draws a colour name in another palette (the motion lab's palette lever), `look_colours`
a training-only look's background and shape colour (its several-bases lever).
ShapeWorld's `render_*` take `background="random"` or a kind (`minianimate.toy.shapeworld`).
"""
import colorsys

import numpy as np

BACKGROUND_KINDS = ("dark", "grey", "light", "coloured")
MIN_SHAPE_CONTRAST = 90.0  # RGB distance between a shape's colour and its background


def random_background(rng: np.random.Generator, kind: str | None = None, avoid=None) -> tuple[float, ...]:
    """A flat background colour (R, G, B) of one of BACKGROUND_KINDS (drawn uniformly if `kind` is None):
    dark (each channel 0-50), grey (60-180, tinted by up to 8 levels a channel), light (each channel 190-255),
    coloured (any hue, saturation 0.25-0.9, value 0.2-0.9). avoid: an RGB colour the background must stand out
    from by MIN_SHAPE_CONTRAST (drawn again until it does; with `kind` None the kind is drawn again too, so a dark
    shape gets a light background)."""
    if kind not in (None, *BACKGROUND_KINDS):
        raise ValueError(f"unknown background kind {kind!r}; expected one of {BACKGROUND_KINDS}")
    for _ in range(1000):
        kind_now = kind or str(rng.choice(BACKGROUND_KINDS))
        if kind_now == "dark":
            rgb = rng.uniform(0, 50, 3)
        elif kind_now == "grey":
            rgb = rng.uniform(60, 180) + rng.uniform(-8, 8, 3)
        elif kind_now == "light":
            rgb = rng.uniform(190, 255, 3)
        else:
            rgb = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.25, 0.9), rng.uniform(0.2, 0.9))) * 255
        if avoid is None or np.linalg.norm(rgb - np.asarray(avoid, float)) >= MIN_SHAPE_CONTRAST:
            return tuple(float(v) for v in rgb)
    raise ValueError(f"no {kind} background stands out from {tuple(avoid)} by {MIN_SHAPE_CONTRAST:g} RGB levels: "
                     "choose another kind (or None)")


PALETTE_HUE, PALETTE_SATURATION, PALETTE_VALUE = 12 / 360, (0.55, 1.0), (0.45, 1.0)


def palette_rgb(rng: np.random.Generator, rgb, saturation=PALETTE_SATURATION, value=PALETTE_VALUE) -> tuple[float, ...]:
    """A shape colour (R, G, B) in another palette than `rgb`'s: its hue moved by up to PALETTE_HUE (the colour keeps
    its name), saturation and value drawn from the ranges `saturation` and `value` (by default deep, dark or bright
    shades, never pastel's pale ones: saturation >= 0.55)."""
    hue = colorsys.rgb_to_hsv(*(np.asarray(rgb, float) / 255))[0] + rng.uniform(-PALETTE_HUE, PALETTE_HUE)
    out = colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(*saturation), rng.uniform(*value))
    return tuple(float(v) * 255 for v in out)


# Training-only looks: the personalized variants of the base the several-bases lever trains the motion module across
# (as AnimateDiff-Lightning trains across base models), never outlined's (rings on black) or pastel's (pale on cream):
# a background kind and the shapes' shades (saturation, value ranges).
LOOKS = {"ink": dict(kind="light", saturation=(0.8, 1.0), value=(0.3, 0.55)),  # deep shades on light paper
         "neon": dict(kind="coloured", saturation=(0.85, 1.0), value=(0.9, 1.0))}  # vivid shades on colour


def look_colours(rng: np.random.Generator, rgb, look: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(background RGB, shape RGB) of a LOOKS look for a shape whose named colour is `rgb` (the hue kept)."""
    if look not in LOOKS:
        raise ValueError(f"unknown look {look!r}; expected one of {tuple(LOOKS)}")
    spec = LOOKS[look]
    shape = palette_rgb(rng, rgb, spec["saturation"], spec["value"])
    return random_background(rng, spec["kind"], avoid=shape), shape


def background_kind(rgb) -> str:
    """Which of BACKGROUND_KINDS an RGB background colour reads as: dark (every channel <= 50), light (every channel
    >= 190), grey (channels within 16 levels of each other), else coloured. Near-black and pastel's cream are dark
    and light."""
    rgb = np.asarray(rgb, float)
    if rgb.max() <= 50:
        return "dark"
    if rgb.min() >= 190:
        return "light"
    return "grey" if rgb.max() - rgb.min() <= 16 else "coloured"
