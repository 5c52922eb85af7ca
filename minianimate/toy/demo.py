"""`make demo`: the paper's pipeline on the shipped toy checkpoints, in under a minute on a CPU.

One motion module, trained once on the base model, animates the base and two personalized models it never
saw (`outlined`, a DreamBooth-style fine-tune, and `pastel`, a LoRA). The demo writes one animation per model
(a grid of four prompts, one per direction) as MP4 and GIF plus a contact sheet into `outputs/` (every third
frame, then the clip's trail: where the shape went), then prints a small metric table measured on the clips it
made and on held-out prompts (the full table, the domain adapter's row included: `python -m minianimate eval`).
"""
import time
from pathlib import Path

import numpy as np
from einops import rearrange

from minianimate.toy import shapeworld as sw
from minianimate.toy import metrics
from minianimate.toy.datasets import HELD_OUT
from minianimate.toy.evaluation import STYLE_OF, evaluate_clips, format_table
from minianimate.toy.models import CHECKPOINTS, load_pipeline, load_personalized
from minianimate.video_io import contact_sheet, write_png, write_video

PROMPTS = (("red", "circle", "right"), ("green", "square", "up"), ("blue", "triangle", "left"),
           ("yellow", "circle", "down"))  # trained combinations, one per direction
ROW_OF = {"base": "base, trained prompts", "outlined": "outlined (never seen in training)",
          "pastel": "pastel (never seen in training)"}  # the table's row each model's demo clips make
HELD_OUT_PROMPTS = tuple({d: x for x in HELD_OUT for d in [x[2]]}.values())  # one held-out combination a direction


def tile(clips: np.ndarray, columns: int = 4) -> np.ndarray:
    """Clips (N, F, H, W, 3) side by side in one clip (F, H', W', 3)."""
    return np.stack([contact_sheet(np.ascontiguousarray(clips[:, f]), columns) for f in range(clips.shape[1])])


def trail(clip: np.ndarray) -> np.ndarray:
    """One clip (F, H, W, 3) -> one image (H, W, 3): at each pixel the frame farthest from the background colour
    (the shape in every frame at once, over the background), and the shape's centroid in each frame as the
    metrics measure it (`metrics.measure`), a dot of the background's opposite: the path the direction is read from."""
    distance = np.abs(clip.astype(np.float32) - metrics.background_color(clip)[:, None, None]).sum(-1)  # (F, H, W)
    image = np.take_along_axis(clip, distance.argmax(0)[None, ..., None], 0)[0].copy()
    dot = 0 if metrics.background_color(clip[0]).mean() > metrics.PASTEL_LUMA else 255
    for x, y in np.rint(metrics.measure(clip)["centroid"]).astype(float):
        if np.isfinite(x) and np.isfinite(y):
            image[int(np.clip(y, 0, clip.shape[1] - 1)), int(np.clip(x, 0, clip.shape[2] - 1))] = dot
    return image


def sheet_rows(clips: np.ndarray) -> np.ndarray:
    """Clips (N, F, H, W, 3) -> one sheet: a row per clip, every third frame, then the clip's `trail`."""
    frames = np.concatenate([clips[:, ::3], np.stack([trail(c) for c in clips])[:, None]], axis=1)
    return contact_sheet(rearrange(frames, "n f h w c -> (n f) h w c"), columns=frames.shape[1])


def run_demo(out: str = "outputs", steps: int = 10, root=CHECKPOINTS, device=None, dtype=None) -> None:
    """The animations of the 4 PROMPTS for each model, and the metric table: the base, outlined and pastel rows
    measured on those same clips, the held-out row on one fresh clip per direction (HELD_OUT_PROMPTS).
    DDIM `steps`: 10 keeps the demo well under a minute on 2 CPU cores (the contact sheets of 10 and 15 steps
    look the same; 15 steps with the adapter row took 62-66 s on fresh 2-core machines)."""
    started = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(root=root, device=device, dtype=dtype)
    sheets, rows = [], {}
    captions = ", ".join(sw.caption(*x) for x in PROMPTS)
    for model in ("base", "outlined", "pastel"):
        load_personalized(pipe, model, root)
        result = evaluate_clips(pipe, PROMPTS, steps=steps, seed=0, style=STYLE_OF[model])
        rows[ROW_OF[model]] = {"row": ROW_OF[model], **result, "adapter_scale": 0.0}
        clips = result["clips"]
        grid = tile(clips)
        for suffix in (".mp4", ".gif"):
            write_video(out / f"{model}{suffix}", grid)
        sheets.append(sheet_rows(clips))
        print(f"wrote {out / model}.mp4 and .gif: {captions}")
    sheet = np.concatenate(sheets)
    write_png(out / "contact_sheet.png", sheet.repeat(2, axis=0).repeat(2, axis=1))  # 2x: the dots visible
    print(f"wrote {out / 'contact_sheet.png'} (rows: the 4 prompts for base, outlined, pastel; "
          "every 3rd frame, then the trail: the shape in every frame, dots its measured centroids)")
    load_personalized(pipe, "base", root)
    held = "base, held-out prompts"
    rows[held] = {"row": held, **evaluate_clips(pipe, HELD_OUT_PROMPTS, steps=steps, seed=0), "adapter_scale": 0.0}
    table = format_table([rows[name] for name in (ROW_OF["base"], held, ROW_OF["outlined"], ROW_OF["pastel"])])
    (out / "metrics.txt").write_text(table + "\n")
    print(f"\nmetrics on 4 clips a row, DDIM {steps} (indicative; `python -m minianimate eval`: the full set, DDIM 25, "
          "and the domain adapter's row):")
    print(table)
    print(f"\ndone in {time.time() - started:.0f} s")
