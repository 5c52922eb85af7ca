"""The inference techniques of issue 18 on the shipped toy checkpoints: prompt travel, FreeInit, long clips.

    python benchmarks/inference_tricks.py [--steps 25] [--free-init 0 1 2 3] [--part travel freeinit long]

- prompt travel: 12 clips whose colour switches at keyframe 8 (held until frame 7): the colour switched within
  2 frames of the keyframe, and the object stayed one object (a shape in every frame, no step > 6 px);
- FreeInit: 24 clips (every direction equally often, trained prompts) at 0..3 iterations (butterworth,
  cut-offs 0.25): centroid jerk, frame consistency, direction accuracy, seconds per clip;
- long clips: 64 frames, windows of 16 overlapping by 4, uniform and looped schedules, 9 clips each: the seam
  test of notebook 09 (border vs inside jumps against a placebo), the last -> first frame jump, and the
  direction read on each 16-frame stretch.
Writes benchmarks/results/inference_tricks.json.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from minianimate.context import context_windows
from minianimate.toy import metrics
from minianimate.toy import shapeworld as sw
from minianimate.toy.evaluation import balanced_prompts
from minianimate.toy.inference import seam_stats, segment_directions, travel_clips, travel_scores
from minianimate.toy.models import load_pipeline

RESULTS = Path(__file__).parent / "results" / "inference_tricks.json"


def travel(pipe, steps):
    rows = []
    for i, case in enumerate(travel_clips(12)):
        clip = pipe.generate(case["keyframes"], frames=16, steps=steps, seed=i, progress=False)
        rows.append({**travel_scores(clip, case), "keyframes": case["keyframes"]})
    return dict(step_at_change=float(np.nanmean([r["step_at_change"] for r in rows])),
                median_step_elsewhere=float(np.nanmean([r["median_step_elsewhere"] for r in rows])),
                switched=float(np.mean([r["switched"] for r in rows])),
                one_object=float(np.mean([r["one_object"] for r in rows])),
                both=float(np.mean([r["switched"] and r["one_object"] for r in rows])), rows=rows)


def free_init(pipe, steps, iterations):
    cases = balanced_prompts(24, held_out=False, seed=0)
    prompts = [sw.caption(*c) for c in cases]
    out = {}
    for n in iterations:
        start = time.perf_counter()
        clips = np.concatenate([pipe.generate(prompts[i:i + 12], frames=16, steps=steps, seed=i, free_init=n,
                                              progress=False) for i in range(0, 24, 12)])
        seconds = (time.perf_counter() - start) / len(clips)
        seen = metrics.describe_all(clips)
        out[str(n)] = dict(jerk=float(np.nanmean([s["jerk"] for s in seen])),
                           consistency=float(np.nanmean([s["consistency"] for s in seen])),
                           direction=float(np.mean([s["direction"] == c[2] for s, c in zip(seen, cases)])),
                           seconds_per_clip=round(seconds, 2))
        print(f"FreeInit {n}: {out[str(n)]}", flush=True)
    return out


def long_clips(pipe, steps):
    prompts, out = ["a red circle moving right", "a blue square moving down", "a green triangle moving left"], {}
    for schedule in ("uniform", "looped"):
        clips = np.concatenate([pipe.generate(prompts, frames=64, steps=steps, seed=seed, context=16, overlap=4,
                                              context_schedule=schedule, progress=False) for seed in (0, 1, 2)])
        stats = seam_stats(clips, context_windows(64, 16, 4, schedule))
        directions = [segment_directions(c) for c in clips]
        asked = [p.split()[-1] for p in prompts] * 3
        kept = [all(d == a for d in ds) for ds, a in zip(directions, asked)]
        out[schedule] = dict(jump=stats["jump"], accel=stats["accel"], loop=stats["loop"], found=stats["found"],
                             segments_right=float(np.mean([d == a for ds, a in zip(directions, asked) for d in ds])),
                             direction_kept=float(np.mean(kept)), directions=directions)
        for k in ("jump", "accel"):
            out[schedule][k] = {a: b for a, b in out[schedule][k].items() if a != "per_transition"}
        print(f"{schedule}: { {k: v for k, v in out[schedule].items() if k != 'directions'} }", flush=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--free-init", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--part", nargs="+", default=["travel", "freeinit", "long"])
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    torch.set_num_threads(2)
    pipe = load_pipeline()
    results = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    results["steps"] = args.steps
    if "travel" in args.part:
        results["travel"] = travel(pipe, args.steps)
        print("travel:", {k: v for k, v in results["travel"].items() if k != "rows"}, flush=True)
    if "freeinit" in args.part:
        results["free_init"] = free_init(pipe, args.steps, args.free_init)
    if "long" in args.part:
        results["long"] = long_clips(pipe, args.steps)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1, default=float))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
