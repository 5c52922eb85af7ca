"""`make demo`: the paper's pipeline on the shipped toy checkpoints, in under a minute on a CPU.

One motion module, trained once on the base model, animates the base and two personalized models it never
saw (`outlined`, a DreamBooth-style fine-tune, and `pastel`, a LoRA). The demo writes one animation per model
(a grid of four prompts, one per direction) as MP4 and GIF plus a contact sheet into `outputs/`, then prints a
small metric table measured on the clips it made (the full table: `python -m minianimate eval`).
"""
import time
from pathlib import Path

import numpy as np
from einops import rearrange

from minianimate.toy import shapeworld as sw
from minianimate.toy.evaluation import ROWS, STYLE_OF, eval_table, evaluate_clips, format_table
from minianimate.toy.models import CHECKPOINTS, load_pipeline, load_personalized
from minianimate.video_io import contact_sheet, write_png, write_video

PROMPTS = (("red", "circle", "right"), ("green", "square", "up"), ("blue", "triangle", "left"),
           ("yellow", "circle", "down"))  # trained combinations, one per direction
ROW_OF = {"base": "base, trained prompts", "outlined": "outlined (never seen in training)",
          "pastel": "pastel (never seen in training)"}  # the table's row each model's demo clips make
FRESH_ROWS = ("base, held-out prompts", "base, adapter scale 1")  # rows that need clips of their own


def tile(clips: np.ndarray, columns: int = 4) -> np.ndarray:
    """Clips (N, F, H, W, 3) side by side in one clip (F, H', W', 3)."""
    return np.stack([contact_sheet(np.ascontiguousarray(clips[:, f]), columns) for f in range(clips.shape[1])])


def every_third_frame(clips: np.ndarray) -> np.ndarray:
    """Clips (N, F, H, W, 3) -> one sheet: a row per clip, every third frame."""
    frames = clips[:, ::3]
    return contact_sheet(rearrange(frames, "n f h w c -> (n f) h w c"), columns=frames.shape[1])


def run_demo(out: str = "outputs", steps: int = 15, per_row: int = 4, root=CHECKPOINTS, device=None,
             dtype=None) -> None:
    """The animations of the 4 PROMPTS for each model, and the metric table: the base, outlined and pastel rows
    measured on those same clips, the held-out and adapter rows on `per_row` (held-out: 6) fresh clips.
    DDIM `steps`: 15 keeps the demo under a minute on 2 CPU cores (measured 44-47 s; 20 steps 53-63 s, 25 steps 72 s)."""
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
        sheets.append(every_third_frame(clips))
        print(f"wrote {out / model}.mp4 and .gif: {captions}")
    write_png(out / "contact_sheet.png", np.concatenate(sheets))
    print(f"wrote {out / 'contact_sheet.png'} (rows: the 4 prompts for base, outlined, pastel; every 3rd frame)")
    for row in eval_table(root, per_row=per_row, steps=steps, rows=FRESH_ROWS, progress=False, pipe=pipe):
        rows[row["row"]] = row
    table = format_table([rows[name] for name in ROWS])
    (out / "metrics.txt").write_text(table + "\n")
    print(f"\nmetrics on 4-6 clips per row, DDIM {steps} (indicative; `python -m minianimate eval`: the full set, DDIM 25):")
    print(table)
    print(f"\ndone in {time.time() - started:.0f} s")
