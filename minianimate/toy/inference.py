"""The inference techniques measured on the toy: seams and loops of long clips, prompt travel, FreeInit.

Every figure is read from `metrics.measure` / `metrics.describe` of generated clips:
- `seam_stats`: centroid jumps and accelerations at transitions that cross a context-window border against
  those inside windows, with a placebo (random inside transitions) for the margin of "no seam";
- `travel_clips` / `travel_scores`: colour switches between keyframe prompts, and the object stays one object;
- `segment_directions`: the direction read on each 16-frame stretch of a long clip.
"""
import numpy as np

from minianimate.toy import metrics
from minianimate.toy import shapeworld as sw

JUMP_PX = 6.0  # a centroid step this large is a jump: the world's shapes move 0.6-1.0 px per frame


def border_transitions(windows: list[list[int]], frames: int) -> np.ndarray:
    """bool (frames - 1,): transition t (frame t -> t + 1) crosses a window border (a window starts at t + 1 or
    ends at t)."""
    border = np.zeros(frames - 1, bool)
    for w in windows:
        if w[0] > 0:
            border[w[0] - 1] = True
        if w[-1] < frames - 1:
            border[w[-1]] = True
    return border


def seam_stats(clips: np.ndarray, windows: list[list[int]], n_placebo: int = 2000, seed: int = 0) -> dict:
    """clips uint8 (N, F, H, W, 3) -> for 'jump' and 'accel': border and inside means, their ratio and the
    placebo's 95th percentile ratio ('margin': a ratio below it is no seam); 'loop': the last -> first frame
    jump over the inside mean (what a looped clip's seam would be); 'found'."""
    c = metrics.measure(clips)["centroid"]  # (N, F, 2) px, NaN where no shape
    jump = np.linalg.norm(np.diff(c, axis=1), axis=-1)  # (N, F - 1)
    accel = np.linalg.norm(np.diff(c, n=2, axis=1), axis=-1)  # (N, F - 2), centred on frames 1..F-2
    border = border_transitions(windows, clips.shape[1])
    rng, out = np.random.default_rng(seed), {}
    for name, x, b in (("jump", jump, border), ("accel", accel, border[:-1] | border[1:])):
        inside = x[:, ~b][~np.isnan(x[:, ~b])]
        k = int(np.sum(~np.isnan(x[:, b])))
        placebo = [rng.choice(inside, k, replace=False).mean() for _ in range(n_placebo)] if k else [np.nan]
        out[name] = dict(border=float(np.nanmean(x[:, b])) if k else float("nan"), inside=float(inside.mean()),
                         ratio=float(np.nanmean(x[:, b]) / inside.mean()) if k else float("nan"),
                         margin=float(np.percentile(np.array(placebo) / inside.mean(), 95)), n_border=k,
                         n_inside=len(inside),
                         per_transition=np.nanmean(x, axis=0))
    loop = np.linalg.norm(c[:, 0] - c[:, -1], axis=-1)
    out["loop"] = float(np.nanmean(loop) / out["jump"]["inside"])
    out["found"] = float(np.mean(~np.isnan(c[..., 0])))
    return out


def segment_directions(clip: np.ndarray, length: int = 16) -> list:
    """The direction `metrics.describe` reads on each `length`-frame stretch of a long clip (F, H, W, 3)."""
    return [metrics.describe(clip[s:s + length])["direction"] for s in range(0, len(clip) - length + 1, length)]


def travel_clips(n: int = 12, frames: int = 16, change: int = 8, seed: int = 7000) -> list[dict]:
    """Prompt-travel cases: one shape and direction, its colour switching at keyframe `change` (held until the
    frame before): dict(keyframes, before, after (colour names), change)."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n):
        before, after = rng.choice(list(sw.COLORS), 2, replace=False)
        shape, direction = str(rng.choice(sw.SHAPES)), str(rng.choice(sw.DIRECTIONS))
        first, second = sw.caption(str(before), shape, direction), sw.caption(str(after), shape, direction)
        keyframes = {0: first, change - 1: first, change: second}
        cases.append(dict(keyframes=keyframes, before=str(before), after=str(after), change=change))
    return cases


def travel_scores(clip: np.ndarray, case: dict, within: int = 2) -> dict:
    """Did the colour switch within `within` frames of the keyframe (the colour read per frame: before on the
    frames up to change - within, after from change + within on), and was the object one object throughout
    (a shape in every frame, no centroid step above JUMP_PX)?"""
    colors = [metrics.describe(frame)["color"] for frame in clip]
    change = case["change"]
    switched = all(c == case["before"] for c in colors[:max(change - within, 1)]) and all(
        c == case["after"] for c in colors[change + within:])
    centroid = metrics.measure(clip)["centroid"]
    steps = np.linalg.norm(np.diff(centroid, axis=0), axis=-1)
    one_object = bool(np.isfinite(centroid).all() and (steps <= JUMP_PX).all())
    near = np.zeros(len(steps), bool)
    near[max(change - 2, 0):change + 2] = True  # the transitions around the keyframe
    return dict(colors=colors, switched=switched, one_object=one_object,
                max_step=float(np.nanmax(steps)) if np.isfinite(steps).any() else float("nan"),
                step_at_change=float(np.nanmax(steps[near])), median_step_elsewhere=float(np.nanmedian(steps[~near])))


PLAN_CANDIDATES = 4  # `load_pipeline`'s default: each window of a long clip drawn up to 4 times (`plan_path`)
PLAN_ROOM_PX = 6.0  # how far the first window may sit from where the planned path is


def plan_path(prompt, clip: np.ndarray, idx: list[int], frames: int, known: np.ndarray) -> float:
    """Path planning for a long clip (the pipeline's `planner`): a window (F, H, W, 3) of frames `idx` scores >= 0
    when the frames it makes (`~known`, with the known frame next to them) move the prompt's way, and, for the first
    window, when it is within PLAN_ROOM_PX of where a path through the whole clip at the world's speed is during its
    frames (the frame's middle at the clip's middle frame), so the windows after it have room to go on instead of
    running into the frame's edge. Lower scores: further from that (-64 for the wrong way). 0 for a prompt that is
    not a ShapeWorld caption."""
    try:
        direction = sw.parse_caption(prompt)["direction"] or "still"
    except (AttributeError, TypeError, ValueError):
        return 0.0
    new = np.flatnonzero(~known)
    made = clip[max(new[0] - 1, 0):new[-1] + 2]  # the frames the window makes, and the known one next to them
    score = 0.0 if metrics.describe(made)["direction"] == direction else -float(sw.IMAGE_SIZE)
    speed = float(np.mean(sw.SPEED_RANGE)) * {"right": 1, "down": 1, "left": -1, "up": -1}.get(direction, 0)
    if known.any() or not speed:
        return score
    want = sw.IMAGE_SIZE / 2 + ((idx[0] + idx[-1]) / 2 - (frames - 1) / 2) * speed  # px on the motion's axis
    along = metrics.measure(clip)["centroid"][:, 1 if direction in ("up", "down") else 0]
    off = abs(np.nanmean(along) - want) if np.isfinite(along).any() else float(sw.IMAGE_SIZE)
    return score - max(0.0, off - PLAN_ROOM_PX)
