"""How open must an outline's hole be for the toy VAE to keep it? (issue 24, the outlined model's triangles)

    python benchmarks/outline_holes.py [--n 60] [--seed 1]

Renders `--n` outlined triangles per colour (ShapeWorld's sizes and outline widths, 3 px from the frame's edge),
passes them through the shipped VAE (encode, decode) and prints, per colour and per band of the hole's width (the
triangle's inradius minus its outline, px: what `render_image(hole=)` bounds), the fraction that
`evaluation.looks_like` reads as outlined, rendered and after the round trip. A DreamBooth model learns the
latents of its images, so what the round trip loses, the model cannot draw.
"""
import argparse

import numpy as np
import torch
from einops import rearrange

from minianimate.autoencoder import decode, encode
from minianimate.toy import evaluation
from minianimate.toy import shapeworld as sw
from minianimate.toy.models import load_vae

BANDS = ((0.0, 0.5), (0.5, 1.0), (1.0, 1.5), (1.5, 2.0), (2.0, 9.0))  # hole width, px


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60, help="triangles per colour")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    vae, rng = load_vae(), np.random.default_rng(args.seed)
    print("hole width px: " + "  ".join(f"[{lo:g}, {hi:g})" for lo, hi in BANDS) + "   (rate read as outlined / n)")
    for color in sw.COLORS:
        images, width = [], []
        for _ in range(args.n):
            size, outline = rng.uniform(*sw.SIZE_RANGE), rng.uniform(*sw.OUTLINE_RANGE)
            centre = rng.uniform(size / 2 + 3, sw.IMAGE_SIZE - size / 2 - 3, size=2)
            images.append(sw._draw(color, "triangle", "outlined", size, outline, centre[None])[0])
            width.append(sw.INRADIUS["triangle"] * size - outline)
        images, width = np.stack(images), np.array(width)  # (n, 64, 64, 3), (n,)
        x = rearrange(torch.from_numpy(images).float() / 127.5 - 1, "n h w c -> n c h w")
        decoded = rearrange((decode(vae, encode(vae, x)).clamp(-1, 1) + 1) * 127.5, "n c h w -> n h w c").numpy()
        for name, pixels in (("rendered", images), ("VAE round trip", decoded)):
            looks = evaluation.looks_like(evaluation.personalized_figures(pixels), "outlined")
            cells = []
            for lo, hi in BANDS:
                band = (lo <= width) & (width < hi)
                cells.append(f"{looks[band].mean():.0%} / {band.sum()}" if band.any() else "- / 0")
            print(f"{color:6s} {name:15s} " + "  ".join(f"{c:>10s}" for c in cells) + f"   all {looks.mean():.0%}")


if __name__ == "__main__":
    main()
