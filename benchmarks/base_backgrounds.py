"""The base text-to-image model per background kind: what it draws on dark, grey, light and coloured backgrounds.

    python benchmarks/base_backgrounds.py --checkpoints data_samples/wide [--seeds 8] [--out JSON]

Every `a {color} {shape}` prompt is sampled `--seeds` times (`evaluation.sample_prompts`: DDIM 25, CFG 7.5) by the
base model of each checkpoint folder given (default: the wider world's and the shipped one). Each image's background
is read off its border (`segmentation.background_color`) and named by `shapeworld.background_kind`; per kind: how many
images, the colour and shape rates (`personalized_figures`) and the clean-background rate (background std at most the
shipped base's CLEAN_PERCENTILE percentile on the same prompts and seeds, the reference `eval --personalized` uses).
Real renders on each kind (`render_image(background=kind)`) give the same figures as a reference row, and again after a
round trip through each folder's VAE (the cleanest background that folder's latents can give). Writes
benchmarks/results/base_backgrounds.json.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch

from minianimate.toy import evaluation
from minianimate.toy import shapeworld as sw
from minianimate.toy.models import CHECKPOINTS, load_t2i, load_vae
from minianimate.toy.provenance import provenance
from vae_recon import reconstruct  # benchmarks/: the VAE round trip vae_recon.py measures

ROOT = Path(__file__).parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "base_backgrounds.json"


def by_kind(images: np.ndarray, targets, reference: float) -> dict:
    """{kind: {n, share, color, shape, clean}} of images (N, 64, 64, 3) and their (colour, shape) targets."""
    f = evaluation.personalized_figures(images)
    kinds = [sw.background_kind(rgb) for rgb in evaluation.metrics.background_color(images)]
    rows = {}
    for kind in (*sw.BACKGROUND_KINDS, "all"):
        idx = [i for i, k in enumerate(kinds) if kind in (k, "all")]
        if not idx:
            rows[kind] = {"n": 0, "share": 0.0}
            continue
        rows[kind] = {"n": len(idx), "share": round(len(idx) / len(images), 3),
                      "color": round(float(np.mean([f["color"][i] == targets[i][0] for i in idx])), 3),
                      "shape": round(float(np.mean([f["shape"][i] == targets[i][1] for i in idx])), 3),
                      "clean": round(float(np.mean(f["background_std"][idx] <= reference)), 3)}
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", nargs="+", default=[str(ROOT / "data_samples" / "wide"), str(CHECKPOINTS)])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shipped, targets = evaluation.sample_prompts(load_t2i("base", CHECKPOINTS), args.seeds)
    std = evaluation.personalized_figures(shipped)["background_std"]
    reference = float(np.percentile(std, evaluation.CLEAN_PERCENTILE, method="higher"))
    pairs = [(c, s) for c in sw.COLORS for s in sw.SHAPES]
    rng = np.random.default_rng(3000)
    real = np.stack([sw.render_image(rng, c, s, background=kind)[0] for kind in sw.BACKGROUND_KINDS for c, s in pairs])
    rows = {"real renders": by_kind(real, [p for _ in sw.BACKGROUND_KINDS for p in pairs], reference)}
    for folder in args.checkpoints:
        images = shipped if Path(folder).resolve() == CHECKPOINTS.resolve() else \
            evaluation.sample_prompts(load_t2i("base", folder), args.seeds)[0]
        rows[folder] = by_kind(images, targets, reference)
        back = reconstruct(load_vae(folder), real)  # the real renders through the folder's VAE: what it can keep
        rows[f"real renders through {folder}'s VAE"] = by_kind(back, [p for _ in sw.BACKGROUND_KINDS for p in pairs],
                                                                 reference)
    for name, kinds in rows.items():
        print(name)
        for kind, r in kinds.items():
            figures = "" if not r["n"] else f"colour {r['color']:.0%}  shape {r['shape']:.0%}  clean {r['clean']:.0%}"
            print(f"  {kind:9s} n {r['n']:3d} ({r['share']:.0%})  {figures}")
    stamp = {"by_section": {folder: provenance("vae", "text_encoder", "base", root=folder)
                            for folder in args.checkpoints}}
    Path(args.out).write_text(json.dumps({"seeds": args.seeds, "reference": reference, "rows": rows,
                                          "provenance": stamp}, indent=1) + "\n")


if __name__ == "__main__":
    main()
