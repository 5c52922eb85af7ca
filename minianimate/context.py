"""Sliding context windows: clips longer than the motion module's positional encoding (or its training length).

The motion module attends over at most `max_frames` frames (24 in v1, 32 in v2/v3) and was trained on
16. For a longer clip the community tools (ComfyUI AnimateDiff-Evolved, animatediff-cli) denoise
overlapping windows of `window` frames at every step and average the overlapping noise predictions.
Windows are laid out uniformly: starts 0, window - overlap, ..., the last one flush with the clip's end.
Each prediction is weighted by a pyramid (frames in the middle of a window count more than its edges),
so a frame near one window's border is mostly decided by the neighbouring window, which hides seams.
Peak memory is that of one window, whatever the clip length. The "looped" schedule lets windows wrap from the
last frame to the first, so the clip's end flows into its start: a seamless loop.
"""
import torch
from einops import rearrange

FUSE = ("pyramid", "flat")
SCHEDULES = ("uniform", "looped")


def context_windows(frames: int, window: int = 16, overlap: int = 4, schedule: str = "uniform") -> list[list[int]]:
    """Frame indices of each window. One window of all frames if `window >= frames`.

    >>> context_windows(24, 16, 4)
    [[0, ..., 15], [8, ..., 23]]   # starts 0 and 12 would overshoot: the last window ends at frame 23
    >>> context_windows(24, 16, 4, "looped")
    [[0, ..., 15], [12, ..., 23, 0, 1, 2, 3]]   # starts every 12 frames, wrapping around the end
    """
    if window < 1 or not 0 <= overlap < window:
        raise ValueError(f"need window >= 1 and 0 <= overlap < window, got window={window}, overlap={overlap}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown context schedule {schedule!r}; use one of {SCHEDULES}")
    if window >= frames:
        return [list(range(frames))]
    if schedule == "looped":
        return [[(s + i) % frames for i in range(window)] for s in range(0, frames, window - overlap)]
    starts = list(range(0, frames - window + 1, window - overlap))
    if starts[-1] + window < frames:
        starts.append(frames - window)
    return [list(range(s, s + window)) for s in starts]


def fuse_weights(window: int, fuse: str = "pyramid") -> torch.Tensor:
    """Weight (window,) of each frame's prediction in a window: pyramid 1, 2, ..., 2, 1 or flat."""
    if fuse not in FUSE:
        raise ValueError(f"unknown fuse {fuse!r}; use one of {FUSE}")
    i = torch.arange(window, dtype=torch.float32)
    return torch.minimum(i + 1, window - i) if fuse == "pyramid" else torch.ones(window)


class ContextWindows:
    """Wraps a clip model (x (B, C, F, H, W), t, context) -> eps so that it runs window by window.

    context: one prompt per clip (B, L, D) or per frame (B*F, L, D) (prompt travel): then each window
    gets its frames' prompts; keyword inputs that are clips (B, C, F, H, W) are cut to the window's frames too.
    With `window >= F` it calls the model once, unchanged.
    """

    def __init__(self, model, window: int = 16, overlap: int = 4, fuse: str = "pyramid", schedule: str = "uniform"):
        self.model, self.window, self.overlap, self.fuse, self.schedule = model, window, overlap, fuse, schedule
        context_windows(window + 1, window, overlap, schedule)  # validate now, not at the first step
        fuse_weights(window, fuse)

    def __call__(self, x: torch.Tensor, t, context: torch.Tensor, **kwargs) -> torch.Tensor:
        b, f = x.shape[0], x.shape[2]
        windows = context_windows(f, self.window, self.overlap, self.schedule)
        if len(windows) == 1:
            return self.model(x, t, context, **kwargs)
        per_frame = context.shape[0] == b * f and f > 1
        out = torch.zeros_like(x)
        total = torch.zeros(f, dtype=x.dtype, device=x.device)
        weights = fuse_weights(self.window, self.fuse).to(x.device, x.dtype)
        for idx in windows:
            ctx = context
            if per_frame:  # the window's frames' prompts
                ctx = rearrange(rearrange(context, "(b f) l d -> b f l d", b=b)[:, idx], "b f l d -> (b f) l d")
            clips = {k: v[:, :, idx] if torch.is_tensor(v) and v.ndim == 5 else v for k, v in kwargs.items()}
            eps = self.model(x[:, :, idx], t, ctx, **clips)  # per-frame inputs (ControlNet conditions) follow
            out[:, :, idx] += eps * rearrange(weights, "f -> 1 1 f 1 1")
            total[idx] += weights
        return out / rearrange(total, "f -> 1 1 f 1 1")
