"""The paper's ControlNet claim on the toy: the shipped ControlNet (trained on images only) steers every frame of
a clip along a path no training clip has, and the shipped motion module keeps the frames together.

    python benchmarks/controlnet_paths.py [--clips 12] [--steps 25] [--model base outlined pastel] [--speed 1.0]

For each control clip (diagonal, arc, stop-and-go in turn, at `--speed` px/frame: by default the world's top speed,
as fast as any training clip moves) and each model: the clip with the motion module
(AnimationPipeline) and the same ControlNet frame by frame without it (ImagePipeline). Prints per-mode means and
writes benchmarks/results/controlnet_paths.json. Aims (issue 16): centroid within 3 px in >= 90% of frames,
colour and shape as prompted, and the clips smoother (lower jerk) and more consistent than frame by frame.
"""
import argparse
import json
import time
from pathlib import Path

import torch

from minianimate.toy import shapeworld as sw
from minianimate.toy.control import control_clips, follow_paths
from minianimate.toy.models import CHECKPOINTS, load_controlnet, load_pipeline, load_t2i
from minianimate.toy.provenance import provenance

RESULTS = Path(__file__).parent / "results" / "controlnet_paths.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--model", nargs="+", default=["base", "outlined", "pastel"])
    parser.add_argument("--speed", type=float, default=sw.SPEED_RANGE[1], help="px/frame of the control paths")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clips, results = control_clips(args.clips, speed=args.speed), {}
    controlnet = load_controlnet(CHECKPOINTS)
    for model in args.model:
        started = time.time()
        video_pipe, image_pipe = load_pipeline(model), load_t2i(model)
        video_pipe.controlnet = image_pipe.controlnet = controlnet
        found = follow_paths(video_pipe, image_pipe, clips, steps=args.steps)
        results[model] = dict(summary=found["summary"], minutes=round((time.time() - started) / 60, 2),
                              rows=[{k: v for k, v in r.items() if k != "video"} for r in found["rows"]])
        print(f"\n{model} ({args.clips} control clips at {args.speed:g} px/frame, {args.steps} DDIM steps, "
              f"{results[model]['minutes']} min)")
        print(f"{'':16} {'error px':>9} {'<=3px':>6} {'colour':>7} {'shape':>6} {'jerk':>6} {'consistency':>12}")
        for mode, s in found["summary"].items():
            print(f"{mode:16} {s['error']:9.2f} {s['within_3px']:6.1%} {s['color']:7.1%} {s['shape']:6.1%} "
                  f"{s['jerk']:6.2f} {s['consistency']:12.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    stamp = provenance("vae", "text_encoder", "base", "motion", "controlnet",
                       *(m for m in args.model if m in ("outlined", "pastel")))
    Path(args.out).write_text(json.dumps(dict(provenance=stamp, clips=args.clips, steps=args.steps, speed=args.speed,
                                              results=results), indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
