"""Long clips that stay one clip (issue 46): context-window arms on one fixed evaluation.

    python benchmarks/long_clips.py --arms continued-o8 uniform-o4 --clips 24 --frames 48
    python benchmarks/long_clips.py --arms looped-o4 --clips 24 --frames 64
    python benchmarks/long_clips.py --list        # the arms and what each passes to `generate`

The evaluation: `--clips` clips a row, alternately a trained prompt (`evaluation.balanced_prompts(n, False)`: every
direction equally often) and a held-out one (`datasets.HELD_OUT`, cycled), clip i with seed i, one clip per
`generate` call (so a short triage row is the first clips of the full row), DDIM 25, CFG 7.5, domain adapter 0,
the shipped toy checkpoints. `--still` asks for the still prompts (`a red circle`) instead.
Each clip is read by `metrics.describe`: the direction of every 16-frame segment and of the whole clip, jerk,
travel (first to last centroid), the largest centroid step; and the centroid steps at the seams (side-by-side
windows: transitions touching a frame two windows share; continued windows: the hand-over from the frames a
window holds to the ones it makes, one transition either side) against the other steps (95th percentile of each), and for looped clips the last -> first frame step against the clip's median
step. The reference row is ShapeWorld's own clips of the same prompts and length (`render_clip`, no watermark).
Every arm's figures go to benchmarks/results/long_clips.json, with the commit and the motion module's sha256 and
training steps they were measured on.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from minianimate.context import context_windows, window_order
from minianimate.toy import metrics
from minianimate.toy import shapeworld as sw
from minianimate.toy.datasets import HELD_OUT
from minianimate.toy.evaluation import balanced_prompts
from minianimate.toy.models import CHECKPOINTS, FILES, load_pipeline
from minianimate.toy.provenance import provenance

RESULTS = Path(__file__).parent / "results" / "long_clips.json"
SEGMENT = 16  # frames per segment read for direction (the motion module's training length)
# The aims of issue 46 (48-frame clips; looped 64-frame clips).
AIMS = dict(direction=0.90, seam_px=4.0, seam_over_inside_px=1.0, loop_over_median=2.0)

# Each arm: the keyword arguments it passes to `AnimationPipeline.generate` (context 16 in all).
ARMS = {
    "uniform-o4": dict(context=16, overlap=4, context_schedule="uniform"),  # before issue 46: the default
    "uniform-o8": dict(context=16, overlap=8, context_schedule="uniform"),
    "uniform-o12": dict(context=16, overlap=12, context_schedule="uniform"),
    "uniform-o4-flat": dict(context=16, overlap=4, context_schedule="uniform", fuse="flat"),
    "freenoise-o4": dict(context=16, overlap=4, context_schedule="uniform", free_noise=True),
    "freenoise-o8": dict(context=16, overlap=8, context_schedule="uniform", free_noise=True),
    "continued-o4": dict(context=16, overlap=4, context_schedule="continued"),
    "continued-o8": dict(context=16, overlap=8, context_schedule="continued"),  # strength 0.84, the default
    "continued-o12": dict(context=16, overlap=12, context_schedule="continued"),
    "continued-o8-s68": dict(context=16, overlap=8, context_schedule="continued", context_strength=0.68),
    "continued-o8-s92": dict(context=16, overlap=8, context_schedule="continued", context_strength=0.92),
    "continued-o8-s100": dict(context=16, overlap=8, context_schedule="continued", context_strength=1.0),
    "continued-o8-freeinit": dict(context=16, overlap=8, context_schedule="continued", free_init=1),
    "continued-o8-freenoise": dict(context=16, overlap=8, context_schedule="continued", free_noise=True),
    "centred-o8": dict(context=16, overlap=8, context_schedule="centred"),
    "centred-o4": dict(context=16, overlap=4, context_schedule="centred"),
    # path planning (`toy.inference.plan_path`): each window drawn again, up to 4 times, until the planner accepts it
    "continued-o8-plan4": dict(context=16, overlap=8, context_schedule="continued", candidates=4),
    "centred-o8-plan4": dict(context=16, overlap=8, context_schedule="centred", candidates=4),
    "looped-o4": dict(context=16, overlap=4, context_schedule="looped"),
    "looped-o8": dict(context=16, overlap=8, context_schedule="looped"),
}


def cases(n: int, still: bool = False) -> list[tuple[str, str, str]]:
    """The row's (colour, shape, direction) prompts: trained and held-out alternately; the first n of a longer
    row are the n of a shorter one. still: the same colours and shapes, direction 'still'."""
    half = -(-n // 2)
    trained, held = balanced_prompts(half, False, 0), [HELD_OUT[i % len(HELD_OUT)] for i in range(half)]
    row = [c for pair in zip(trained, held) for c in pair][:n]
    return [(c, s, "still") for c, s, _ in row] if still else row


def seam_transitions(windows: list[list[int]], frames: int, schedule: str) -> np.ndarray:
    """bool (frames - 1,): transition t (frame t -> t + 1) is at a seam. Side by side ('uniform', 'looped'): it
    touches a frame two windows share (where their predictions are blended). 'continued': it is within one
    transition of a hand-over, from the last frame a window holds to the first one it makes ('centred': or from the
    last one it makes to the first it holds). One window: none."""
    seams = np.zeros(frames - 1, bool)
    if len(windows) == 1:
        return seams
    if schedule in ("continued", "centred"):
        done = set(window_order(windows, frames, schedule)[0])
        for idx in window_order(windows, frames, schedule)[1:]:
            new = [i for i in idx if i not in done]
            t = new[0] - 1 if new[0] > min(done) else new[-1]  # the transition from known to new frames (or back)
            seams[max(t - 1, 0):min(t + 2, frames - 1)] = True
            done |= set(idx)
        return seams
    shared = np.bincount(np.concatenate(windows), minlength=frames) > 1
    return shared[:-1] | shared[1:]


def clip_figures(clip: np.ndarray, direction: str, seams: np.ndarray) -> dict:
    """One clip (F, H, W, 3) read against its prompted direction; seams: bool (F - 1,) (`seam_transitions`)."""
    d = metrics.describe(clip)
    c = metrics.measure(clip)["centroid"]  # (F, 2) px, NaN where no shape
    steps = np.linalg.norm(np.diff(c, axis=0), axis=-1)  # (F - 1,)
    segments = [metrics.describe(clip[s:s + SEGMENT])["direction"] for s in range(0, len(clip) - SEGMENT + 1, SEGMENT)]
    median = float(np.nanmedian(steps)) if np.isfinite(steps).any() else float("nan")
    first = c[np.isfinite(c[:, 0])][0] if np.isfinite(c[:, 0]).any() else np.full(2, np.nan)
    room = {"right": sw.IMAGE_SIZE - first[0], "left": first[0], "down": sw.IMAGE_SIZE - first[1], "up": first[1]}
    return dict(segments=segments, whole=d["direction"], jerk=d["jerk"], travel=d["displacement"],
                room=float(room.get(direction, np.nan)),  # px from the first centroid to the frame edge ahead
                centroid=c,
                max_jump=d["max_jump"], visible=d["visible"], seam_steps=steps[seams], inside_steps=steps[~seams],
                loop_step=float(np.linalg.norm(c[0] - c[-1])), median_step=median,
                segments_ok=all(s == direction for s in segments), whole_ok=d["direction"] == direction)


def _nan(f, x) -> float:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(f(x)) if len(x) else float("nan")


def summarize(rows: list[dict], frames: int) -> dict:
    """The row's figures from its clips' `clip_figures`."""
    seam = np.concatenate([r["seam_steps"] for r in rows])
    inside = np.concatenate([r["inside_steps"] for r in rows])
    loop = np.array([r["loop_step"] / r["median_step"] if r["median_step"] else float(r["loop_step"] > 0) * np.inf
                     for r in rows])  # a still clip (median step 0) closes its loop when it does not move at all
    out = dict(n=len(rows),
               segments=float(np.mean([r["segments_ok"] for r in rows])),  # every segment the prompted way
               whole=float(np.mean([r["whole_ok"] for r in rows])),
               both=float(np.mean([r["segments_ok"] and r["whole_ok"] for r in rows])),
               segment_rate=float(np.mean([s == r["target"] for r in rows for s in r["segments"]])),
               jerk=_nan(np.mean, [r["jerk"] for r in rows]), travel=_nan(np.mean, [r["travel"] for r in rows]),
               speed=_nan(np.mean, [r["travel"] for r in rows]) / (frames - 1),
               max_jump=_nan(np.mean, [r["max_jump"] for r in rows]),
               visible=float(np.mean([r["visible"] for r in rows])),
               seam_p95=_nan(lambda x: np.percentile(x, 95), seam), inside_p95=_nan(lambda x: np.percentile(x, 95), inside),
               seam_max=_nan(np.max, seam), inside_max=_nan(np.max, inside),
               seam_over_4=float(np.mean([_nan(np.max, r["seam_steps"]) > AIMS["seam_px"] for r in rows])),
               loop_over_median=_nan(np.median, loop), loop_within_2x=float(np.mean(loop <= AIMS["loop_over_median"])),
               room=_nan(np.mean, [r["room"] for r in rows]))
    out["meets"] = dict(direction=out["both"] >= AIMS["direction"],
                        seam=out["seam_over_4"] == 0 and out["seam_p95"] <= out["inside_p95"] + AIMS["seam_over_inside_px"],
                        loop=out["loop_within_2x"] >= AIMS["direction"])
    return out


def reference(row: list[tuple[str, str, str]], frames: int, seams: np.ndarray, seed: int = 0) -> dict:
    """ShapeWorld's own clips of the row's prompts and length (no watermark): what the world does."""
    rng = np.random.default_rng(seed)
    rows = []
    for color, shape, direction in row:
        clip = sw.render_clip(rng, frames, color=color, shape=shape, direction=direction, watermark=False)[0]
        rows.append({**clip_figures(clip, direction, seams), "target": direction})
    return summarize(rows, frames)


def windows_of(arm: dict, frames: int) -> list[list[int]]:
    """The context windows an arm's clips are denoised in (what its seams are measured against)."""
    schedule = arm.get("context_schedule", "uniform")
    layout = "looped" if schedule == "looped" else "uniform"
    return context_windows(frames, arm.get("context", 16), arm.get("overlap", 4), layout)


def measure(pipe, name: str, n: int, frames: int, still: bool) -> dict:
    """Generate the arm's row and read it: `summarize`'s figures, the seconds per clip, one line per clip."""
    arm, row = ARMS[name], cases(n, still)
    seams = seam_transitions(windows_of(arm, frames), frames, arm.get("context_schedule", "continued"))
    rows, start = [], time.perf_counter()
    for i, (color, shape, direction) in enumerate(row):
        clip = pipe.generate(sw.caption(color, shape, direction), frames=frames, steps=25, guidance=7.5, seed=i,
                             adapter_scale=0.0, progress=False, **{"candidates": 1, **arm})  # planning: only asked
        rows.append({**clip_figures(clip, direction, seams), "target": direction})
        r = rows[-1]
        print(f"  {name} {i:2d} {sw.caption(color, shape, direction):32s} segments {r['segments']} whole {r['whole']} "
              f"travel {r['travel']:.1f} seam max {np.nanmax(r['seam_steps'], initial=0):.1f}", flush=True)
    seconds = (time.perf_counter() - start) / n
    clips = [dict(prompt=sw.caption(*c), seed=i, segments=r["segments"], whole=r["whole"],
                  travel=round(r["travel"], 1), jerk=round(float(r["jerk"]), 2),
                  seam_max=round(_nan(np.max, r["seam_steps"]), 1), inside_max=round(_nan(np.max, r["inside_steps"]), 1),
                  loop=round(r["loop_step"] / r["median_step"], 2), room=round(r["room"], 1),
                  centroid=json.dumps(np.round(r["centroid"], 1).tolist()))  # (F, 2) px as text, NaN: no shape
             for i, (c, r) in enumerate(zip(row, rows))]
    return dict(arm=name, kwargs=arm, frames=frames, still=still, **summarize(rows, frames),
                reference=reference(row, frames, seams), seconds_per_clip=round(seconds, 1), clips=clips)


def stamp() -> dict:
    """The commit (`dirty` if tracked files had changes) and the checkpoint files the figures were measured on, with the
    motion module's training steps (`minianimate.toy.provenance`)."""
    config = json.loads((CHECKPOINTS / FILES["motion_config"]).read_text())
    return provenance("vae", "text_encoder", "base", "motion", "motion_config", motion_module_steps=config.get("steps"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", default=["continued-o8"], choices=sorted(ARMS))
    parser.add_argument("--clips", type=int, default=24, help="clips a row (trained and held-out alternately)")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--still", action="store_true", help="still prompts ('a red circle') instead of moving ones")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--list", action="store_true", help="print the arms and exit")
    args = parser.parse_args()
    if args.list:
        for name, kwargs in ARMS.items():
            print(f"{name:18s} {kwargs}")
        return
    torch.set_num_threads(1)
    pipe = load_pipeline()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {"aims": AIMS, "runs": []}
    for name in args.arms:
        where = stamp()
        run = {**measure(pipe, name, args.clips, args.frames, args.still), "commit": where["commit"],
               "dirty": where.get("dirty", False), "motion_module_steps": where["motion_module_steps"],
               "command": f"python benchmarks/long_clips.py --arms {name} --clips {args.clips} --frames {args.frames}"
                          + (" --still" if args.still else "")}
        key = (name, args.clips, args.frames, args.still)
        results["runs"] = [r for r in results["runs"] if (r["arm"], r["n"], r["frames"], r["still"]) != key] + [run]
        section = f"{name} n{args.clips} f{args.frames}" + (" still" if args.still else "")
        results.setdefault("provenance", {"by_section": {}})["by_section"][section] = where
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1, default=float))
        print(f"{name}: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in run.items()
                                    if k in ("both", "segments", "whole", "segment_rate", "travel", "jerk", "seam_p95",
                                             "inside_p95", "seam_max", "seam_over_4", "loop_over_median",
                                             "loop_within_2x", "seconds_per_clip", "meets")), flush=True)
        print(f"  reference (ShapeWorld): travel {run['reference']['travel']:.1f}, "
              f"jerk {run['reference']['jerk']:.2f}", flush=True)


if __name__ == "__main__":
    main()
