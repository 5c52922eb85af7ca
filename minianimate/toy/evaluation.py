"""Measure the paper's claims on generated images and clips: direction, colour, shape, style, watermark, smoothness.

Every generated item is described once by the rule-based `minianimate.toy.metrics.describe` and every
figure is read from those descriptions. `evaluate_images` samples the toy T2I on all 12 `a {color} {shape}`
prompts; `evaluate_clips` one clip per (colour, shape, direction) prompt and seed; `eval_table` runs the set
behind `python -m minianimate eval` and `make demo`: the base model on trained and held-out prompts, the
personalized models with the same motion module, and the domain adapter at scale 1 and 0.
"""
import numpy as np
from tqdm.auto import tqdm

from minianimate.toy import metrics
from minianimate.toy import shapeworld as sw
from minianimate.toy.datasets import HELD_OUT, combos
from minianimate.toy.models import load_pipeline, load_personalized


def evaluate_images(pipe, per_prompt: int = 4, steps: int = 25, guidance: float = 7.5, seed: int = 0,
                    style: str | None = None) -> dict:
    """Colour / shape accuracy and style rate of an ImagePipeline over all `a {color} {shape}` prompts.
    Returns `metrics.score`'s figures, 'n' and the images under "images" (N, 64, 64, 3)."""
    pairs = [(c, s) for c in sw.COLORS for s in sw.SHAPES for _ in range(per_prompt)]
    prompts = [sw.caption(c, s) for c, s in pairs]
    images = np.concatenate([pipe.generate(prompts[i:i + 48], steps=steps, guidance=guidance, seed=seed + i)
                             for i in range(0, len(prompts), 48)])
    colors, shapes = zip(*pairs)
    figures = metrics.score(metrics.describe_all(images), dict(color=colors, shape=shapes, style=style))
    return {**figures, "n": len(images), "images": images}


def evaluate_clips(pipe, prompts, per_combo: int = 1, frames: int = 16, steps: int = 25, guidance: float = 7.5,
                   seed: int = 0, adapter_scale: float = 0.0, style: str | None = None, batch: int = 8,
                   progress: bool = False, **generate_kwargs) -> dict:
    """Generate `per_combo` clips for each (colour, shape, direction) in `prompts` and measure them.

    Returns `metrics.score`'s figures (accuracies, leakage, jerk, consistency, visible, displacement), 'n',
    'clips' (N, F, H, W, 3) and 'targets' [(colour, shape, direction)].
    The same arguments give the same clips."""
    targets = [x for x in prompts for _ in range(per_combo)]
    texts = [sw.caption(*x) for x in targets]
    clips = np.concatenate([pipe.generate(texts[i:i + batch], frames=frames, steps=steps, guidance=guidance,
                                          seed=seed + i, adapter_scale=adapter_scale, progress=progress,
                                          **generate_kwargs) for i in range(0, len(texts), batch)])
    colors, shapes, directions = zip(*targets)
    figures = metrics.score(metrics.describe_all(clips),
                            dict(color=colors, shape=shapes, direction=directions, style=style))
    return {**figures, "n": len(clips), "clips": clips, "targets": targets}


def balanced_prompts(n: int, held_out: bool | None = False, seed: int = 0) -> list[tuple[str, str, str]]:
    """n (colour, shape, direction) prompts, every direction equally often, from the trained (False),
    held-out (True) or all (None) combinations."""
    rng = np.random.default_rng(seed)
    by_direction = {d: [x for x in combos(held_out) if x[2] == d] for d in sw.DIRECTIONS}
    by_direction = {d: xs for d, xs in by_direction.items() if xs}
    out = []
    while len(out) < n:
        for xs in by_direction.values():
            if len(out) < n:
                out.append(xs[rng.integers(len(xs))])
    return out


def held_out_check(pipe, frames: int, steps: int = 15, seed: int = 1) -> dict:
    """The check at each motion-stage checkpoint: one clip per held-out combination, adapter off."""
    result = evaluate_clips(pipe, HELD_OUT, frames=frames, steps=steps, seed=seed)
    return {"held_out_direction": result["direction"], "color": result["color"], "jerk": result["jerk"]}


ROWS = ("base, trained prompts", "base, held-out prompts", "outlined (never seen in training)",
        "pastel (never seen in training)", "base, adapter scale 1")


def eval_table(root=None, per_row: int = 12, frames: int = 16, steps: int = 25, guidance: float = 7.5, seed: int = 0,
               rows=ROWS, progress: bool = True, pipe=None) -> list[dict]:
    """The metric table: one dict per row with `evaluate_clips`' figures and its clips. `per_row` clips per row
    (held-out: every held-out combination, repeated)."""
    root_kwargs = {} if root is None else {"root": root}
    pipe = pipe or load_pipeline(**root_kwargs)
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
            load_personalized(pipe, model, **root_kwargs)
        result = evaluate_clips(pipe, prompts, frames=frames, steps=steps, guidance=guidance, seed=seed,
                                adapter_scale=adapter_scale, style=style)
        table.append({"row": row, **{k: v for k, v in result.items() if k != "targets"},
                      "adapter_scale": adapter_scale})
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
