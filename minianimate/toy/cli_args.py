"""The command line's argument types and checks: whole numbers, finite numbers, output paths, device/dtype.
Each turns a bad value into one line that says what was wrong (see `minianimate.toy.cli`); the ranges are
checked by `minianimate.checks`, as the Python API checks them."""
import argparse
from pathlib import Path

from minianimate import checks
from minianimate.device import DTYPES


class UsageError(Exception):
    """A bad command line: argparse's complaint, raised instead of printed with the usage."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message.replace("argument ", "", 1))


def count(low: int = 1, high: int | None = None):
    """An argparse type: a whole number in [low, high] (`checks.whole`, as the Python API checks it)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        try:
            return checks.whole(None, value, low, high)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def number(low: float | None = None):
    """An argparse type: a finite number >= low (`checks.finite`, as the Python API checks it)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        try:
            return checks.finite(None, value, low)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def out_file(out: str, suffixes: tuple, what: str) -> Path:
    path = Path(out)
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"--out must end in {what}, got {out}")
    if path.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name ending in {what}")
    return path


def out_folder(out: str) -> Path:
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; give a folder")
    return path


def precision(parser) -> None:
    """--device and --dtype (`minianimate.device`)."""
    parser.add_argument("--device", default=None, help="auto (the default: cuda, else mps, else cpu), cpu, cuda, "
                                                       "cuda:1, mps")
    parser.add_argument("--dtype", choices=list(DTYPES), default=None,
                        help="float32 (default), or bfloat16/float16 autocast on a GPU (weights stay float32)")


def read_control(path: str, frames: int):
    """--control: a video (.mp4/.gif: one condition per generated frame, spread over its frames) or an image
    (.png/.jpg: one for all), resized to the toy frame size: uint8 (F, 64, 64, 3) or (64, 64, 3)."""
    import imageio.v3 as iio
    import numpy as np
    import torch

    from minianimate.video_io import read_video

    if not Path(path).is_file():
        raise FileNotFoundError(f"--control {path} not found: give a silhouette video (.mp4, .gif) or image (.png)")
    video = np.asarray(read_video(path) if path.lower().endswith(".mp4") else iio.imread(path, index=None))
    video = video[..., :3] if video.ndim == 4 else video[None, ..., :3]
    if 1 < len(video) < frames:
        raise ValueError(f"--control {path} has {len(video)} frames for --frames {frames}: give at least as many")
    video = video[np.linspace(0, len(video) - 1, frames).round().astype(int)] if len(video) > 1 else video
    x = torch.nn.functional.interpolate(torch.from_numpy(video).permute(0, 3, 1, 2).float(), size=(64, 64),
                                        mode="bilinear", antialias=True)
    out = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out if len(out) > 1 else out[0]


# --- checks that need the checkpoint folder (cheap: no model is loaded) --------------------------------------
def checkpoints(args, *names) -> Path:
    """--checkpoints (default: the package's shipped folder), with the files `names` (see models.FILES) in it."""
    from minianimate.toy.models import CHECKPOINTS, shipped

    root = Path(args.checkpoints) if args.checkpoints else CHECKPOINTS
    for name in names:
        shipped(name, root)
    return root


def check_prompts(root: Path, *prompts: str) -> None:
    """Every word of the prompts is in the toy text encoder's vocabulary."""
    from minianimate.toy.models import read_json, shipped
    from minianimate.toy.text_encoder import VOCAB, WordTokenizer

    WordTokenizer(VOCAB, read_json(shipped("text_encoder", root) / "config.json")["max_len"])(list(prompts))
