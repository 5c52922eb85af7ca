"""The shipped MotionLoRAs on the held-out prompts: zoom accuracy (aim >= 85%), colour and shape kept.

    python benchmarks/motion_lora_zoom.py [--seeds 8] [--steps 25] [--checkpoints DIR --config YAML --out JSON]

Notebook 08's measurement at full size: the MotionLoRA held-out prompts (`datasets.LORA_HELD_OUT`, colour/shape
pairs no zoom reference showed), `--seeds` clips each, at the references' length (`configs/motion_lora_zoom_in.yaml`,
`frames`), DDIM `--steps`, for no MotionLoRA, zoom-in and zoom-out at 1.0. Writes
benchmarks/results/motion_lora_zoom.json. `--checkpoints` measures another folder's MotionLoRAs (a lever's arm, trained
with `train motion-lora --out DIR`), `--config` takes its clip length from another config.
"""
import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from minianimate.toy import metrics
from minianimate.toy import shapeworld as sw
from minianimate.toy.datasets import LORA_HELD_OUT
from minianimate.toy.models import load_pipeline
from minianimate.toy.provenance import provenance
from minianimate.toy.stages import MotionLoRAStage
from minianimate.trainer import load_config

ROOT = Path(__file__).parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "motion_lora_zoom.json"
SETTINGS = {"none": [], "zoom-in": ["zoom-in:1.0"], "zoom-out": ["zoom-out:1.0"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--checkpoints", default=None, help="checkpoint folder (default: the shipped one)")
    p.add_argument("--config", default=str(ROOT / "configs" / "motion_lora_zoom_in.yaml"))
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    frames = load_config(Path(args.config), MotionLoRAStage).frames
    pipe = load_pipeline("base", *([Path(args.checkpoints)] if args.checkpoints else []))
    prompts = [sw.caption(c, s) for c, s in LORA_HELD_OUT]
    stamp = provenance("vae", "text_encoder", "base", "motion", "motion_loras", root=args.checkpoints)
    out = dict(provenance=stamp, frames=frames, steps=args.steps, seeds=args.seeds, prompts=prompts,
               config=args.config, checkpoints=args.checkpoints, settings={})
    for name in args.settings:
        loras = SETTINGS[name]
        t0 = time.perf_counter()
        clips = np.concatenate([pipe.generate(prompts, frames=frames, steps=args.steps, seed=seed, motion_loras=loras,
                                              progress=False) for seed in range(args.seeds)])
        targets = prompts * args.seeds
        read = [metrics.classify_zoom(x) for x in clips]
        out["settings"][name] = dict(
            zoom=metrics.zoom_accuracy(clips, [name] * len(clips)), read=dict(Counter(map(str, read))),
            color=metrics.color_accuracy(clips, [t.split()[1] for t in targets]),
            shape=metrics.shape_accuracy(clips, [t.split()[2] for t in targets]), n=len(clips),
            seconds=round(time.perf_counter() - t0, 1))
        print(name, json.dumps(out["settings"][name]), flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
