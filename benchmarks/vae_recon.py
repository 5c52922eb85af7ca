"""How faithfully the toy VAE gives back real ShapeWorld images: encode, decode (the latent's mean), compare.

    python benchmarks/vae_recon.py [--checkpoints DIR ... --labels NAME ...] [--n 32] [--out JSON]

The shipped json compares the first phase's VAE (configs/vae.yaml; its weights are those of git commit 775fc89,
`git show 775fc89:data_samples/checkpoints/vae/diffusion_pytorch_model.safetensors` into a folder with the shipped
config.json) with the shipped one (then its decoder fine-tuned on whole frames, configs/vae_decoder.yaml).

For each checkpoint folder (default: the shipped one), `--n` real renders of each style (plain, outlined, pastel;
seed 1000 + i) are reconstructed and read with the personalized measurement (`personalized_figures`): PSNR (dB),
the median background std (uint8 levels; a flat background is 0, the base model's clean-background reference is
its 90th percentile), the rate of shapes wholly inside the frame and of outlines whose hole is visible. The real
renders' own figures are the first row. Writes benchmarks/results/vae_recon.json.

The wider world's figures (`--pairs N`, default 100): PSNR of renders on each background kind
(`shapeworld.BACKGROUND_KINDS`, plain shapes), and the colour round trip of N background / shape pairs no VAE trained
on (both colours uniform over the RGB cube, seed 7000 + i, at least MIN_SHAPE_CONTRAST apart; a flat background with a
20 px square centred): the largest channel error (RGB levels) of the decoded background's median (pixels >= 6 px
from the square) and of the square's (its central 12 x 12 px); a pair passes within 12 / 20 levels.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch

from minianimate.autoencoder import to_tensor, to_uint8
from minianimate.toy import evaluation
from minianimate.toy import shapeworld as sw
from minianimate.toy.models import CHECKPOINTS, load_vae
from minianimate.toy.provenance import provenance
from minianimate.toy.vae import psnr

ROOT = Path(__file__).parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "vae_recon.json"
STYLES = {"plain": None, "outlined": "outlined", "pastel": "pastel"}
PAIR_SQUARE, BG_TOLERANCE, SHAPE_TOLERANCE = (slice(22, 42), slice(22, 42)), 12, 20


def colour_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n (background, shape) RGB pairs, uniform over the cube, MIN_SHAPE_CONTRAST apart, and their images: float
    (n, 2, 3), uint8 (n, 64, 64, 3)."""
    pairs = []
    for i in range(n):
        rng = np.random.default_rng(7000 + i)
        while True:
            bg, fg = rng.integers(0, 256, (2, 3)).astype(float)
            if np.linalg.norm(bg - fg) >= sw.MIN_SHAPE_CONTRAST:
                break
        pairs.append((bg, fg))
    pairs = np.array(pairs)
    images = np.broadcast_to(pairs[:, 0, None, None, :], (n, sw.IMAGE_SIZE, sw.IMAGE_SIZE, 3)).copy()
    images[:, PAIR_SQUARE[0], PAIR_SQUARE[1]] = pairs[:, 1, None, None, :]
    return pairs, images.astype(np.uint8)


def pair_errors(pairs: np.ndarray, decoded: np.ndarray) -> dict:
    """Largest channel error of the decoded background and square medians against the pairs' colours."""
    far = np.ones((sw.IMAGE_SIZE, sw.IMAGE_SIZE), bool)
    far[16:48, 16:48] = False  # >= 6 px from the square
    bg = np.abs(np.median(decoded[:, far], axis=1) - pairs[:, 0]).max(-1)
    fg = np.abs(np.median(decoded[:, 26:38, 26:38].reshape(len(decoded), -1, 3), axis=1) - pairs[:, 1]).max(-1)
    ok = (bg <= BG_TOLERANCE) & (fg <= SHAPE_TOLERANCE)
    return dict(pairs=len(pairs), within=float(ok.mean()), background_median=float(np.median(bg)),
                shape_median=float(np.median(fg)), background_p90=float(np.percentile(bg, 90)),
                shape_p90=float(np.percentile(fg, 90)))


def figures(real: np.ndarray, images: np.ndarray) -> dict:
    f = evaluation.personalized_figures(images)
    return dict(psnr=None if real is images else round(psnr(real, images), 2),  # None: the renders themselves
                background_std=round(float(np.median(f["background_std"])), 2),
                inside=float(f["inside"].mean()), hole=float((f["hole_px"] >= evaluation.HOLE_PX).mean()))


@torch.no_grad()
def reconstruct(vae, real: np.ndarray) -> np.ndarray:
    x = to_tensor(real)  # (N, 3, 64, 64) in [-1, 1]
    return to_uint8(vae.decode(vae.encode(x).latent_dist.mean).sample)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", nargs="+", default=[str(CHECKPOINTS)])
    parser.add_argument("--labels", nargs="+", help="a name for each folder in the json (default: its path)")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    real = {name: np.stack([sw.render_image(np.random.default_rng(1000 + i), style=style)[0] for i in range(args.n)])
            for name, style in STYLES.items()}
    real.update({kind: np.stack([sw.render_image(np.random.default_rng(2000 + i), background=kind)[0]
                                 for i in range(args.n)]) for kind in sw.BACKGROUND_KINDS})
    pairs, pair_images = colour_pairs(args.pairs)
    rows = {"real renders": {name: figures(x, x) for name, x in real.items()}}
    for folder, label in zip(args.checkpoints, args.labels or args.checkpoints):
        vae = load_vae(folder)
        rows[label] = {name: figures(x, reconstruct(vae, x)) for name, x in real.items()}
        rows[label]["unseen colour pairs"] = pair_errors(pairs, reconstruct(vae, pair_images))
    for row, by_style in rows.items():
        print(row)
        for name, f in by_style.items():
            if "pairs" in f:
                print(f"  {name}: {f['within']:.0%} of {f['pairs']} within {BG_TOLERANCE} / {SHAPE_TOLERANCE} levels; "
                      f"median errors {f['background_median']:.1f} / {f['shape_median']:.1f}, 90th percentile "
                      f"{f['background_p90']:.1f} / {f['shape_p90']:.1f}")
                continue
            psnr = "     -" if f["psnr"] is None else f"{f['psnr']:6.2f}"
            print(f"  {name:9s} PSNR {psnr} dB  background std {f['background_std']:5.2f}  "
                  f"inside {f['inside']:.0%}  hole {f['hole']:.0%}")
    stamp = {"by_section": {label: provenance("vae", root=folder) for folder, label in
                            zip(args.checkpoints, args.labels or args.checkpoints)}}
    Path(args.out).write_text(json.dumps({"n": args.n, "pairs": args.pairs, "rows": rows, "provenance": stamp},
                                         indent=1) + "\n")


if __name__ == "__main__":
    main()
