"""ShapeWorld's video-domain defects (WebVid's watermark, blur and sensor noise) and rule-based camera motion (the
MotionLoRA references' zoom and roll), applied to rendered clips; re-exported by `minianimate.toy.shapeworld`."""
import numpy as np
from PIL import Image

CAMERA_MOTIONS = ("zoom-in", "zoom-out", "roll")
WATERMARK_BOX = (slice(56, 62), slice(42, 62))  # rows 56-61, columns 42-61: frame[WATERMARK_BOX]
MIRRORED_WATERMARK_BOX = (slice(56, 62), slice(2, 22))  # where a left-right flip moves it
WATERMARK_ALPHA = 0.45
NOISE_STD = 3.0  # sensor noise of the video domain, in uint8 levels
ZOOM_SCALE = 1.5  # zoom-in ends on the central 1/1.5 of the frame
ROLL_DEGREES = 60.0  # total rotation of a `roll` clip


def add_watermark(frames: np.ndarray) -> np.ndarray:
    """Blend a white box (alpha 0.45) into WATERMARK_BOX of every frame: uint8 (..., H, W, 3)."""
    out = frames.astype(float)
    out[..., WATERMARK_BOX[0], WATERMARK_BOX[1], :] *= 1 - WATERMARK_ALPHA
    out[..., WATERMARK_BOX[0], WATERMARK_BOX[1], :] += WATERMARK_ALPHA * 255
    return np.round(out).astype(np.uint8)


def add_video_defects(rng: np.random.Generator, clip: np.ndarray) -> np.ndarray:
    """WebVid-like defects: mild [1, 2, 1] blur, the watermark, then noise. uint8 (F, H, W, 3)."""
    x = clip.astype(float)
    for axis in (1, 2):  # separable blur over rows then columns, edges replicated
        pad = np.concatenate([x.take([0], axis), x, x.take([-1], axis)], axis=axis)
        n = x.shape[axis]
        x = (pad.take(range(0, n), axis) + 2 * pad.take(range(1, n + 1), axis)
             + pad.take(range(2, n + 2), axis)) / 4
    x = add_watermark(np.round(x).astype(np.uint8)).astype(float)
    x += rng.normal(0, NOISE_STD, size=x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def camera_augment(clip: np.ndarray, motion: str, zoom: float | None = None) -> np.ndarray:
    """Rule-based camera motion of a clip, uint8 (F, H, W, 3) -> (F, H, W, 3).

    zoom-in: progressive centre crop, the crop shrinking from the full frame to 1/zoom of it (default
    ZOOM_SCALE; resized back to the frame size); zoom-out: the same, growing; roll: rotation about the centre,
    0 -> ROLL_DEGREES over the clip, uncovered corners filled with the clip's corner colour.
    """
    if motion not in CAMERA_MOTIONS:
        raise ValueError(f"unknown camera motion {motion!r}; expected one of {CAMERA_MOTIONS}")
    f, h, w, _ = clip.shape
    progress = np.linspace(0, 1, f)
    out = []
    for frame, t in zip(clip, progress):
        image = Image.fromarray(frame)
        if motion == "roll":
            fill = tuple(int(v) for v in frame[0, 0])
            image = image.rotate(ROLL_DEGREES * t, resample=Image.BICUBIC, fillcolor=fill)
        else:
            scale = (zoom or ZOOM_SCALE) ** (t if motion == "zoom-in" else 1 - t)
            ch, cw = h / scale, w / scale
            box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
            image = image.resize((w, h), Image.BICUBIC, box=box)
        out.append(np.asarray(image))
    return np.stack(out)
