"""Measure the paper's claims on generated clips: direction, colour, shape, style, watermark, smoothness.

`evaluate_clips` samples one clip per (colour, shape, direction) prompt and seed and reads them with the
rule-based `minianimate.metrics`; `eval_table` runs the set behind `python -m minianimate eval` and
`make demo`: the base model on trained and held-out prompts, the personalized models with the same motion
module, and the domain adapter at scale 1 and 0.
"""
import numpy as np

from minianimate import metrics
from minianimate import shapeworld as sw


def evaluate_clips(pipe, prompts, per_combo: int = 1, frames: int = 16, steps: int = 25, guidance: float = 7.5,
                   seed: int = 0, adapter_scale: float = 0.0, style: str | None = None, batch: int = 8,
                   progress: bool = False, **generate_kwargs) -> dict:
    """Generate `per_combo` clips for each (colour, shape, direction) in `prompts` and measure them.

    Returns {'direction', 'color', 'shape', 'style' (rate of `style`, None = plain), 'leakage' (watermark,
    1 = the video domain's), 'jerk' (px/frame^3, mean), 'consistency' (mean), 'n', 'clips' (N, F, H, W, 3),
    'targets' [(colour, shape, direction)]}. The same arguments give the same clips.
    """
    targets = [x for x in prompts for _ in range(per_combo)]
    texts = [sw.caption(*x) for x in targets]
    clips = []
    for i in range(0, len(texts), batch):
        clips.append(pipe.generate(texts[i:i + batch], frames=frames, steps=steps, guidance=guidance, seed=seed + i,
                                   adapter_scale=adapter_scale, progress=progress, **generate_kwargs))
    clips = np.concatenate(clips)
    colors, shapes, directions = zip(*targets)
    return {"direction": metrics.direction_accuracy(clips, directions),
            "color": metrics.color_accuracy(clips, colors), "shape": metrics.shape_accuracy(clips, shapes),
            "style": metrics.style_rate(clips, style), "leakage": metrics.watermark_leakage(clips),
            "jerk": float(np.nanmean([metrics.centroid_jerk(c) for c in clips])),
            "consistency": float(np.mean([metrics.frame_consistency(c) for c in clips])),
            "n": len(clips), "clips": clips, "targets": targets}


def balanced_prompts(n: int, held_out: bool | None = False, seed: int = 0) -> list[tuple[str, str, str]]:
    """n (colour, shape, direction) prompts, every direction equally often, from the trained (False),
    held-out (True) or all (None) combinations."""
    from minianimate.train_video import combos

    pool = combos(held_out)
    rng = np.random.default_rng(seed)
    by_direction = {d: [x for x in pool if x[2] == d] for d in sw.DIRECTIONS}
    by_direction = {d: xs for d, xs in by_direction.items() if xs}
    out = []
    while len(out) < n:
        for d, xs in by_direction.items():
            if len(out) < n:
                out.append(xs[rng.integers(len(xs))])
    return out


ROWS = ("base, trained prompts", "base, held-out prompts", "outlined (never seen in training)",
        "pastel (never seen in training)", "base, adapter scale 1")


def eval_table(root=None, per_row: int = 12, frames: int = 16, steps: int = 25, guidance: float = 7.5, seed: int = 0,
               rows=ROWS, progress: bool = True, pipe=None) -> list[dict]:
    """The metric table: one dict per row with direction / colour / shape / style / leakage / jerk /
    consistency. `per_row` clips per row (held-out: every held-out combination, repeated)."""
    from tqdm.auto import tqdm

    from minianimate.pipeline import AnimationPipeline
    from minianimate.train_video import HELD_OUT

    if pipe is None:
        pipe = AnimationPipeline.from_pretrained(**({} if root is None else {"root": root}))
    trained, everything = balanced_prompts(per_row, False, seed), balanced_prompts(per_row, None, seed + 1)
    held = [HELD_OUT[i % len(HELD_OUT)] for i in range(max(per_row, len(HELD_OUT)))]
    plan = {"base, trained prompts": ("base", trained, 0.0, None),
            "base, held-out prompts": ("base", held, 0.0, None),
            "outlined (never seen in training)": ("outlined", everything, 0.0, "outlined"),
            "pastel (never seen in training)": ("pastel", everything, 0.0, "pastel"),
            "base, adapter scale 1": ("base", trained, 1.0, None)}
    table = []
    for row in tqdm(rows, desc="eval", disable=not progress):
        model, prompts, adapter_scale, style = plan[row]
        if pipe.model != model:
            pipe.load_personalized(model)
        result = evaluate_clips(pipe, prompts, frames=frames, steps=steps, guidance=guidance, seed=seed,
                                adapter_scale=adapter_scale, style=style)
        table.append({"row": row, **{k: v for k, v in result.items() if k not in ("clips", "targets")},
                      "adapter_scale": adapter_scale, "clips": result["clips"]})
    return table


def format_table(table: list[dict]) -> str:
    """The table as text (accuracies in %, leakage relative to the real watermark, jerk in px/frame^3)."""
    head = f"{'':36s} {'direction':>9s} {'colour':>7s} {'shape':>6s} {'style':>6s} {'watermark':>9s} " \
           f"{'jerk':>5s} {'consist.':>8s} {'n':>3s}"
    lines = [head, "-" * len(head)]
    for r in table:
        lines.append(f"{r['row']:36s} {100 * r['direction']:8.0f}% {100 * r['color']:6.0f}% {100 * r['shape']:5.0f}% "
                     f"{100 * r['style']:5.0f}% {r['leakage']:9.2f} {r['jerk']:5.2f} {r['consistency']:8.2f} "
                     f"{r['n']:3d}")
    return "\n".join(lines)
