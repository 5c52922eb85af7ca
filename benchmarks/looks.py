"""The training-only looks' LoRAs (the several-bases lever's variants of the base): do they draw their look?

    python benchmarks/looks.py --checkpoints data_samples/wide [--seeds 4] [--out JSON]

For the base and each look LoRA in CHECKPOINTS/looks/ (`python -m minianimate train look`), every `a {color} {shape}`
prompt is sampled `--seeds` times (`evaluation.sample_prompts`: DDIM 25, CFG 7.5). Per model: the share of images whose
background reads as the look's kind (`shapeworld.background_kind` of the border), the colour and shape rates, and the
median HSV value of the shapes' colour beside the look's range (`shapeworld.LOOKS`). Real renders in each look are the
reference row. Writes benchmarks/results/looks.json.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch

from minianimate.lora import LoRA
from minianimate.toy import evaluation
from minianimate.toy import shapeworld as sw
from minianimate.toy.datasets import image_set
from minianimate.toy.models import FILES, load_t2i
from minianimate.toy.provenance import provenance

ROOT = Path(__file__).parent.parent


def figures(images: np.ndarray, targets, look: str) -> dict:
    """Look figures of images (N, 64, 64, 3) and their (colour, shape) targets."""
    f = evaluation.personalized_figures(images)
    kinds = [sw.background_kind(rgb) for rgb in evaluation.metrics.background_color(images)]
    values = []
    for image in images:  # the shape's pixels: those far from the border's colour
        frame = image.reshape(-1, 3).astype(float)
        far = frame[np.abs(frame - frame[0]).sum(1) > 60]
        values.append(float(np.median(far, 0).max() / 255) if len(far) else float("nan"))
    return {"n": len(images), "look_kind": round(float(np.mean([k == sw.LOOKS[look]["kind"] for k in kinds])), 3),
            "kinds": {k: kinds.count(k) for k in sw.BACKGROUND_KINDS},
            "color": round(float(np.mean([c == t[0] for c, t in zip(f["color"], targets)])), 3),
            "shape": round(float(np.mean([s == t[1] for s, t in zip(f["shape"], targets)])), 3),
            "shape_value": round(float(np.nanmedian(values)), 3), "look_value": sw.LOOKS[look]["value"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", default=str(ROOT / "data_samples" / "wide"))
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "looks.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.checkpoints)
    files = sorted((root / FILES["looks"]).glob("*.safetensors"))
    if not files:
        raise SystemExit(f"error: no look LoRA in {root / FILES['looks']}: make one with `python -m minianimate train "
                         f"look --config configs/wide/look_ink.yaml --out {root}`")
    base, targets = evaluation.sample_prompts(load_t2i("base", root), args.seeds)
    rows = {}
    for file in files:
        look = file.stem
        pairs = [(c, s) for c in sw.COLORS for s in sw.SHAPES]
        real = np.concatenate([image_set(len(pairs), seed, look=look)[0] for seed in range(args.seeds)])
        real_targets = [tuple(c.split()[1:3]) for seed in range(args.seeds)
                        for c in image_set(len(pairs), seed, look=look)[1]]
        pipe = load_t2i("base", root)
        LoRA.load(pipe.unet, file).merge()
        images, _ = evaluation.sample_prompts(pipe, args.seeds)
        rows[look] = {"real renders": figures(real, real_targets, look), "base": figures(base, targets, look),
                      "look LoRA": figures(images, targets, look)}
        for name, r in rows[look].items():
            print(f"{look:5s} {name:13s} look's background {r['look_kind']:.0%}  colour {r['color']:.0%}  "
                  f"shape {r['shape']:.0%}  shape value {r['shape_value']:.2f} (look {r['look_value']})  {r['kinds']}")
    stamp = {"by_section": {"base": provenance("vae", "text_encoder", "base", root=root),
                            "looks": provenance("looks", root=root)}}
    Path(args.out).write_text(json.dumps({"seeds": args.seeds, "checkpoints": str(root), "rows": rows,
                                          "provenance": stamp}, indent=1) + "\n")


if __name__ == "__main__":
    main()
