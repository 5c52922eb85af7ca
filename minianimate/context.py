"""Sliding context windows: clips longer than the motion module's positional encoding (or its training length).

The motion module attends over at most `max_frames` frames (24 in v1, 32 in v2/v3) and was trained on
16. For a longer clip the community tools (ComfyUI AnimateDiff-Evolved, animatediff-cli) denoise
overlapping windows of `window` frames at every step and average the overlapping noise predictions.
Windows are laid out uniformly: starts 0, window - overlap, ..., the last one flush with the clip's end.
Each prediction is weighted by a pyramid (frames in the middle of a window count more than its edges),
so a frame near one window's border is mostly decided by the neighbouring window, which hides seams.
Peak memory is that of one window, whatever the clip length. The "looped" schedule lets windows wrap from the
last frame to the first, so the clip's end flows into its start: a seamless loop.

Windows denoised side by side each draw their own short path, and where they meet the clip can jump back.
The "continued" schedule denoises them one after another instead: each later window starts from the last frame
the windows before it made, held over its new frames and noised part of the way (SDEdit), and its first
`overlap` frames are held to what the window before made, noised to every step's t (inpainting by replacement),
so it continues the clip where the one before left it. "centred" does the same from the middle window outwards
(`window_order`): the windows before the middle one continue the clip backwards, so a path has room on both sides of
the middle instead of running into the frame's edge after the first window. `free_noise` is FreeNoise's noise
rescheduling (Qiu et al. 2023): every window starts from a shuffle of the first window's noise.
"""
import numpy as np
import torch
from einops import rearrange

FUSE = ("pyramid", "flat")
SCHEDULES = ("uniform", "looped", "continued", "centred")
ONE_AFTER_ANOTHER = ("continued", "centred")  # the schedules `continue_windows` runs; the others fuse side by side


def context_windows(frames: int, window: int = 16, overlap: int = 4, schedule: str = "uniform") -> list[list[int]]:
    """Frame indices of each window. One window of all frames if `window >= frames`.

    >>> context_windows(24, 16, 4)
    [[0, ..., 15], [8, ..., 23]]   # starts 0 and 12 would overshoot: the last window ends at frame 23
    >>> context_windows(24, 16, 4, "looped")
    [[0, ..., 15], [12, ..., 23, 0, 1, 2, 3]]   # starts every 12 frames, wrapping around the end
    "continued" and "centred" lay their windows out as "uniform" does.
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


def window_inputs(idx: list[int], batch: int, frames: int, context: torch.Tensor, kwargs: dict) -> tuple:
    """A window's share of a clip model's inputs: the context of its frames if there is one prompt per frame
    (B*F, L, D) (prompt travel), else all of it; keyword inputs that are clips (B, C, F, H, W) (ControlNet
    conditions) cut to its frames. -> (context, kwargs)."""
    if context.shape[0] == batch * frames and frames > 1:
        context = rearrange(rearrange(context, "(b f) l d -> b f l d", b=batch)[:, idx], "b f l d -> (b f) l d")
    return context, {k: v[:, :, idx] if torch.is_tensor(v) and v.ndim == 5 else v for k, v in kwargs.items()}


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
        out = torch.zeros_like(x)
        total = torch.zeros(f, dtype=x.dtype, device=x.device)
        weights = fuse_weights(self.window, self.fuse).to(x.device, x.dtype)
        for idx in windows:
            ctx, clips = window_inputs(idx, b, f, context, kwargs)
            eps = self.model(x[:, :, idx], t, ctx, **clips)  # per-frame inputs (ControlNet conditions) follow
            out[:, :, idx] += eps * rearrange(weights, "f -> 1 1 f 1 1")
            total[idx] += weights
        return out / rearrange(total, "f -> 1 1 f 1 1")


def free_noise(noise: torch.Tensor, window: int = 16, overlap: int = 4, generator: torch.Generator | None = None
               ) -> torch.Tensor:
    """FreeNoise's noise rescheduling (diffusers' `shuffle_context`): past the first window, each block of
    `window - overlap` frames takes the noise of the block `window` frames before it, shuffled, so every window
    starts from the first window's frames. noise (B, C, F, h, w) -> (B, C, F, h, w)."""
    out, frames, stride = noise.clone(), noise.shape[2], window - overlap
    for start in range(window, frames, stride):
        source = torch.arange(start - window, start - window + stride)
        source = source[torch.randperm(stride, generator=generator)][:frames - start]  # the last block: a prefix
        out[:, :, start:start + len(source)] = out[:, :, source]
    return out


def window_order(windows: list[list[int]], frames: int, schedule: str = "continued") -> list[list[int]]:
    """The order in which "continued" ("centred") windows are denoised: first to last (from the window nearest the
    clip's middle, then always the window next to those done that is nearest the middle)."""
    if schedule != "centred":
        return windows
    middle = lambda idx: abs(idx[0] + idx[-1] - (frames - 1))  # noqa: E731  (twice the distance of the centres)
    order, done = [min(windows, key=middle)], set(min(windows, key=middle))
    while len(order) < len(windows):
        after = min((w for w in windows if w not in order and done & set(w)), key=middle)
        order.append(after)
        done |= set(after)
    return order


def continue_windows(sample_window, noise: torch.Tensor, ddim, steps: int, window: int = 16, overlap: int = 4,
                     strength: float = 0.84, schedule: str = "continued", plan=None) -> torch.Tensor:
    """The "continued" ("centred") schedule: windows denoised one after another (`window_order`), each continuing the
    clip the ones before made.

    The first window is sampled as a plain clip. Each later window holds its frames that earlier windows made
    (`known`) to those latents, noised to every step's t with their starting noise; its new frames start as the
    known frame next to them held still (the last known one, or the first where the new frames come before it),
    noised to the step `strength` of the way from clean to pure noise (SDEdit: 1.0 starts from pure noise), so the
    window picks the motion up where the one before left it.
    sample_window(idx, latents, first_step, known) -> clean latents (B, C, len(idx), h, w): `sampling.sample`
    on the frames `idx` from `latents` at timestep `first_step`, with `known` = (mask (len(idx),), clean, noise).
    noise (B, C, F, h, w): the clip's starting noise. Returns clean latents (B, C, F, h, w).
    plan(idx, known, draw, noise) -> clean latents: path planning (`planned`), `draw(noise)` as often as it likes.
    """
    frames = noise.shape[2]
    clean, done = torch.zeros_like(noise), torch.zeros(frames, dtype=torch.bool)
    first = round((1 - strength) * steps)
    timesteps = ddim.set_timesteps(steps)
    for idx in window_order(context_windows(frames, window, overlap, schedule), frames, schedule):
        known = done[idx]

        def draw(window_noise, idx=idx, known=known):  # the window, from its starting noise (B, C, len(idx), h, w)
            if not known.any():
                return sample_window(idx, window_noise, 0, None)
            held_frames = [i for i, k in zip(idx, known) if k]
            backwards = not known[0]  # the new frames come before the known ones
            last = clean[:, :, [min(held_frames) if backwards else max(held_frames)]]  # (B, C, 1, h, w)
            held = ddim.add_noise(last.expand_as(window_noise), window_noise, int(timesteps[first]))
            return sample_window(idx, held, first, (known, clean[:, :, idx], window_noise))

        latents = draw(noise[:, :, idx]) if plan is None else plan(idx, known, draw, noise[:, :, idx])
        new = [i for i, k in zip(idx, known) if not k]
        clean[:, :, new] = latents[:, :, ~known].to(clean.dtype)
        done[idx] = True
    return clean


def planned(planner, decode, prompts, frames: int, candidates: int, fresh):
    """Path planning, `continue_windows`' `plan`: each window drawn again from fresh noise (`fresh(size)`) until
    `planner(prompt, clip (len(idx), H, W, 3), idx, frames, known (len(idx),))` scores a draw >= 0 for every prompt,
    at most `candidates` times; the draw it scores highest is kept, prompt by prompt. decode: latents -> clips."""
    def plan(idx, known, draw, noise):
        outs, scores = [], []
        for k in range(candidates):
            outs.append(draw(noise if k == 0 else fresh(noise.shape)))
            scores.append([planner(p, c, idx, frames, known.numpy()) for p, c in zip(prompts, decode(outs[-1]))])
            if (np.max(scores, axis=0) >= 0).all():  # every clip has a draw the planner accepts
                break
        return torch.stack([outs[k][b] for b, k in enumerate(np.argmax(scores, axis=0))])
    return plan
