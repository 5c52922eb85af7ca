"""Video files: write clips as H.264 mp4 (imageio-ffmpeg) or GIF, read them back with decord.

Clips are uint8 arrays (F, H, W, 3) everywhere. mp4 is what the datasets store (small, the WebVid
format); GIF is what the paper's samples are shared as and what notebooks show inline.
"""
import base64
import io
from pathlib import Path

import imageio
import numpy as np

FPS = 8
MP4_CRF = 15  # x264 constant rate factor: low = high quality, so the metrics survive compression


def write_mp4(path, clip: np.ndarray, fps: int = FPS):
    """Write uint8 (F, H, W, 3) as H.264/yuv420p; H and W must be even (ours are 64)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio.get_writer(
        path, format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p", quality=None,
        macro_block_size=2, ffmpeg_log_level="error",
        output_params=["-crf", str(MP4_CRF), "-threads", "1"])
    for frame in clip:
        writer.append_data(np.ascontiguousarray(frame))
    writer.close()


def gif_bytes(clip: np.ndarray, fps: int = FPS) -> bytes:
    """Encode uint8 (F, H, W, 3) as a looping GIF."""
    buffer = io.BytesIO()
    imageio.v3.imwrite(buffer, clip, extension=".gif", duration=1000 / fps, loop=0)
    return buffer.getvalue()


def write_gif(path, clip: np.ndarray, fps: int = FPS):
    """Write uint8 (F, H, W, 3) as a looping GIF at `fps`."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(gif_bytes(clip, fps))


def write_video(path, clip: np.ndarray, fps: int = FPS):
    """Write a clip as .mp4 or .gif, chosen by the file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".mp4":
        return write_mp4(path, clip, fps)
    if suffix == ".gif":
        return write_gif(path, clip, fps)
    raise ValueError(f"cannot write {path}: expected a .mp4 or .gif file name")


def write_png(path, image: np.ndarray):
    """Write uint8 (H, W, 3) as PNG."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    imageio.v3.imwrite(path, image, extension=".png")


def contact_sheet(images: np.ndarray, columns: int = 8, pad: int = 2) -> np.ndarray:
    """Tile uint8 (N, H, W, 3) images (or the frames of a clip) into one (rows*H', cols*W', 3) picture."""
    n, h, w, _ = images.shape
    columns = min(columns, n)
    rows = -(-n // columns)
    sheet = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        sheet[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = image
    return sheet


def gif_html(clips, fps: int = FPS, width: int = 128) -> str:
    """HTML showing clips (a list of uint8 (F, H, W, 3)) side by side as inline base64 GIFs,
    each `width` px wide on screen (pixels enlarged by the browser, not stored larger)."""
    tags = [f'<img src="data:image/gif;base64,{base64.b64encode(gif_bytes(c, fps)).decode()}" '
            f'width="{width}" style="margin:2px;image-rendering:pixelated">' for c in clips]
    return "".join(tags)


class UnreadableVideo(RuntimeError):
    """A video file that is missing or that decord cannot decode."""


def open_video(path):
    """A decord VideoReader on the CPU; raises UnreadableVideo for a missing or broken file."""
    import decord

    try:
        return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except (RuntimeError, decord.DECORDError) as e:
        raise UnreadableVideo(f"cannot read video {path}: {e}") from e


def read_video(path, indices=None) -> np.ndarray:
    """Frames of a video file as uint8 (F, H, W, 3): all of them, or those at `indices`."""
    import decord

    reader = open_video(path)
    indices = range(len(reader)) if indices is None else indices
    try:
        return reader.get_batch(list(indices)).asnumpy()
    except (RuntimeError, decord.DECORDError) as e:
        raise UnreadableVideo(f"cannot decode frames {list(indices)} of {path}: {e}") from e
