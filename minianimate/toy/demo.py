"""`make demo`: the paper's pipeline on the shipped toy checkpoints, in under a minute on a CPU.

One motion module, trained once on the base model, animates the base and two personalized models it never
saw (`outlined`, a DreamBooth-style fine-tune, and `pastel`, a LoRA). The demo writes one animation per model
(a grid of four prompts, one per direction) as MP4 and GIF plus a contact sheet into `outputs/`, then prints a
small metric table measured on the clips it made (the full table: `python -m minianimate eval`).
"""
import time
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from minianimate.toy.evaluation import eval_table, format_table
from minianimate.toy.models import CHECKPOINTS, load_pipeline, load_personalized
from minianimate.video_io import contact_sheet, write_png, write_video

PROMPTS = ("a red circle moving right", "a green square moving up", "a blue triangle moving left",
           "a yellow circle moving down")


def tile(clips: np.ndarray, columns: int = 4) -> np.ndarray:
    """Clips (N, F, H, W, 3) side by side in one clip (F, H', W', 3)."""
    return np.stack([contact_sheet(np.ascontiguousarray(clips[:, f]), columns) for f in range(clips.shape[1])])


def every_third_frame(clips: np.ndarray) -> np.ndarray:
    """Clips (N, F, H, W, 3) -> one sheet: a row per clip, every third frame."""
    frames = clips[:, ::3]
    return contact_sheet(rearrange(frames, "n f h w c -> (n f) h w c"), columns=frames.shape[1])


def run_demo(out: str = "outputs", steps: int = 25, per_row: int = 4, root=CHECKPOINTS, device=None,
             dtype=None) -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(root=root, device=device, dtype=dtype)
    sheets = []
    for model in ("base", "outlined", "pastel"):
        load_personalized(pipe, model, root)
        clips = pipe.generate(list(PROMPTS), steps=steps, seed=0, progress=False)
        grid = tile(clips)
        for suffix in (".mp4", ".gif"):
            write_video(out / f"{model}{suffix}", grid)
        sheets.append(every_third_frame(clips))
        print(f"wrote {out / model}.mp4 and .gif: {', '.join(PROMPTS)}")
    write_png(out / "contact_sheet.png", np.concatenate(sheets))
    print(f"wrote {out / 'contact_sheet.png'} (rows: the 4 prompts for base, outlined, pastel; every 3rd frame)")
    table = format_table(eval_table(root, per_row=per_row, steps=steps, progress=False, pipe=pipe))
    (out / "metrics.txt").write_text(table + "\n")
    print(f"\nmetrics on {per_row}-6 fresh clips per row (indicative; `python -m minianimate eval` for the full set):")
    print(table)
    print(f"\ndone in {time.time() - started:.0f} s")
