"""Draw AnimateDiff's three training stages, and inference, as one picture: notebooks/assets/stages.png.

    python notebooks/assets/stages_diagram.py

Each stage is a column: what it consumes (top), the model with its frozen parts grey and the part it trains
orange, and what it writes (bottom). The README and notebooks 04-08 show the PNG; rerun this script after
changing it and commit both.
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parent / "stages.png"
FROZEN, TRAINS, DATA, PLAIN = "#d9d9d9", "#f4a259", "#cfe3f5", "white"

# column: (title, consumes, [(model part, colour)], writes)
COLUMNS = [
    ("Stage 1: domain adapter",
     "single frames of the videos\n(watermark, blur, noise)\n+ their captions",
     [("VAE, text encoder", FROZEN), ("base UNet", FROZEN), ("LoRA on its spatial layers", TRAINS)],
     "domain_adapter.safetensors"),
    ("Stage 2: motion module",
     "16-frame clips + captions\n(paper: under the adapter at 1;\ntoy: clean clips, no adapter)",
     [("VAE, text encoder", FROZEN), ("base UNet (inflated)", FROZEN), ("motion modules", TRAINS)],
     "motion_module.safetensors"),
    ("Stage 3: MotionLoRA",
     "about 50 reference clips of one\ncamera motion (zoom, roll),\nstill captions",
     [("VAE, text encoder", FROZEN), ("base UNet + motion modules", FROZEN),
      ("LoRA on temporal attention", TRAINS)],
     "motion_loras/zoom-in.safetensors"),
    ("Inference: nothing trains",
     "a prompt (and optionally a\nControlNet condition per frame)",
     [("VAE, text encoder", FROZEN), ("base, DreamBooth or LoRA UNet", FROZEN),
      ("motion module + MotionLoRAs", FROZEN)],
     "a clip (adapter scale lowered,\noften to 0)"),
]


def box(ax, x, y, w, h, text, colour, bold=False, size=8.5):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.01,rounding_size=0.04", fc=colour, ec="#555555",
                                lw=0.8))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size, weight="bold" if bold else None)


def main() -> None:
    fig, ax = plt.subplots(figsize=(12.5, 4.3))
    ax.set(xlim=(0, 4.62), ylim=(-0.15, 3.15))
    ax.axis("off")
    for i, (title, consumes, parts, writes) in enumerate(COLUMNS):
        x, w = 0.08 + 1.13 * i, 1.05
        ax.text(x + w / 2, 3.05, title, ha="center", va="center", fontsize=10, weight="bold")
        box(ax, x, 2.25, w, 0.62, consumes, DATA, size=8)
        ax.annotate("", (x + w / 2, 2.0), (x + w / 2, 2.25), arrowprops=dict(arrowstyle="->", lw=1))
        for j, (part, colour) in enumerate(parts):
            box(ax, x, 1.55 - 0.36 * j, w, 0.3, part, colour, bold=colour == TRAINS, size=8)
        ax.annotate("", (x + w / 2, 0.5), (x + w / 2, 0.83), arrowprops=dict(arrowstyle="->", lw=1))
        box(ax, x, 0.2, w, 0.28, writes, PLAIN, size=7.5)
    for colour, label, x in ((DATA, "what it consumes", 0.1), (FROZEN, "frozen", 1.3), (TRAINS, "trained", 2.1)):
        ax.add_patch(FancyBboxPatch((x, -0.12), 0.12, 0.1, boxstyle="square,pad=0", fc=colour, ec="#555555", lw=0.8))
        ax.text(x + 0.16, -0.07, label, va="center", fontsize=8)
    fig.savefig(OUT, dpi=90, bbox_inches="tight", metadata={"Software": None})
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
