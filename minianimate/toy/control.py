"""The toy ControlNet: ShapeWorld silhouettes as conditions, its training stage, and what it is measured by.

Condition: the shape's silhouette, white on black, the size of the frame (`shapeworld.silhouette`). The
ControlNet is trained on *images only*, on the frozen base T2I; on clips it then steers every frame while
the motion module (trained without it) keeps them together, the paper's claim measured by `follow_paths`.

    python -m minianimate train controlnet --config configs/controlnet.yaml
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from minianimate import stages
from minianimate.controlnet import ControlNet
from minianimate.trainer import TrainConfig
from minianimate.unet import UNet
from minianimate.toy import datasets, metrics, segmentation
from minianimate.toy import shapeworld as sw
from minianimate.toy.models import FILES, SHIP_DTYPE, load_t2i, load_text_encoder, load_vae, toy_ddim

CONTROL_CHANNELS = (16, 32, 64)  # the conditioning embedding: two stride-2 convs, the toy VAE's factor 4


@dataclass
class ControlNetStage(TrainConfig):
    images: int = 8000
    text_dropout: float = 0.1
    check: int = 48  # held-out conditions scored after training (mask IoU, colour)


def control_set(n: int, seed: int, rng=None) -> tuple[np.ndarray, list[str], np.ndarray]:
    """n still ShapeWorld images, their captions and silhouettes: uint8 (n, 64, 64, 3), [str], uint8 (n, 64, 64, 3)."""
    rng = rng or np.random.default_rng(seed)
    items = [sw.render_image(rng) for _ in range(n)]
    masks = [sw.silhouette(meta["shape"], meta["centre"], meta["size"])[0] for _, _, meta in items]
    return np.stack([i[0] for i in items]), [i[1] for i in items], np.stack(masks)


def as_conditions(silhouettes: np.ndarray) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float (n, 3, H, W) in [0, 1], what `ControlNet` reads."""
    return rearrange(torch.from_numpy(np.ascontiguousarray(silhouettes)).float() / 255, "n h w c -> n c h w")


def controlnet_stage(cfg: ControlNetStage, out: Path, run: Path, resume: bool, progress: bool):
    """A ControlNet copied from the frozen base UNet's encoder, trained on silhouette -> image pairs (and their
    mirror images); exported as a diffusers ControlNetModel folder, then scored on held-out conditions."""
    vae, text_encoder = load_vae(out), load_text_encoder(out)
    unet = UNet.from_pretrained(out / FILES["base"])
    images, captions, masks = control_set(cfg.images, cfg.seed + 4000)
    latents, captions = datasets.encode_images(vae, images, captions)  # + mirror images, `left`/`right` swapped
    conditions = as_conditions(np.concatenate([masks, masks[:, :, ::-1]]))
    controlnet = ControlNet.from_unet(unet, CONTROL_CHANNELS)
    trainer = stages.train_controlnet(unet, controlnet, text_encoder, latents, captions, conditions, toy_ddim(), cfg,
                                      run, resume=resume, progress=progress, text_dropout=cfg.text_dropout)
    if trainer.rank != 0:
        return None
    trainer.use_ema()  # with `ema`, its weights are exported
    controlnet.save_pretrained(out / FILES["controlnet"], dtype=SHIP_DTYPE)
    pipe = load_t2i("base", out)
    pipe.controlnet = ControlNet.from_pretrained(out / FILES["controlnet"]).eval()
    scores = score_images(pipe, cfg.check, seed=cfg.seed + 5000)
    return {"trainer": trainer, **{k: v for k, v in scores.items() if k not in ("rows", "samples", "masks")}}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else float("nan")


@torch.no_grad()
def score_images(pipe, n: int = 48, seed: int = 5000, steps: int = 25, batch: int = 16) -> dict:
    """Generate n images from held-out silhouettes (their prompt `a {color} {shape}`) and measure: the mask IoU
    of the generated shape with the condition, and whether colour and shape follow the prompt."""
    _, captions, masks = control_set(n, seed)
    images = np.concatenate([pipe.generate(captions[i:i + batch], steps=steps, seed=seed + i,
                                           control=masks[i:i + batch]) for i in range(0, n, batch)])
    filled = segmentation.segment(images)["filled"]
    rows = []
    for image, caption, mask, found in zip(images, captions, masks, filled):
        asked, seen = sw.parse_caption(caption), metrics.describe(image)
        rows.append(dict(iou=iou(found, mask[..., 0] > 127), color=seen["color"] == asked["color"],
                         shape=seen["shape"] == asked["shape"]))
    ious = np.array([r["iou"] for r in rows])
    return dict(scored=n, iou_mean=float(np.nanmean(ious)), iou_median=float(np.nanmedian(ious)),
                iou_at_least_0_8=float(np.mean(ious >= 0.8)), color=float(np.mean([r["color"] for r in rows])),
                shape=float(np.mean([r["shape"] for r in rows])), rows=rows, samples=images[:8], masks=masks[:8])


# --- the paper's claim on clips: paths no training clip has ------------------------------------------------
PATHS = ("diagonal", "arc", "stop-and-go")
ARC_RADIUS = 10.0  # px


def path_centres(kind: str, frames: int, rng: np.random.Generator, speed: float = sw.SPEED_RANGE[1]) -> np.ndarray:
    """Centres (F, 2) of a path ShapeWorld's clips never take, centred in the frame: a diagonal, an arc (a part of
    a circle of ARC_RADIUS px), or moving-stopping-moving. Training clips move straight left, right, up or down at
    SPEED_RANGE px/frame; the control paths move at `speed` px/frame, by default the world's top speed (issue 23:
    every video stage follows the world's speed; at 2.5x it the motion module pulls the object back, see
    `benchmarks/controlnet_paths.py --speed`)."""
    t = np.arange(frames, dtype=float)
    if kind == "diagonal":
        way = rng.choice([-1, 1], size=2) / np.sqrt(2)
        centres = np.outer(speed * t, way)
    elif kind == "arc":
        angle = rng.uniform(0, 2 * np.pi) + rng.choice([-1, 1]) * speed * t / ARC_RADIUS
        centres = ARC_RADIUS * np.stack([np.cos(angle), np.sin(angle)], 1)
    elif kind == "stop-and-go":
        moved = np.clip(t, 0, frames // 3) + np.clip(t - 2 * frames // 3, 0, None)  # go, stop, go
        centres = np.zeros((frames, 2))
        centres[:, rng.integers(2)] = rng.choice([-1, 1]) * speed * moved
    else:
        raise ValueError(f"unknown path {kind!r}; use one of {PATHS}")
    return 32 + centres - (centres.max(0) + centres.min(0)) / 2


def control_clips(n: int = 12, frames: int = 16, seed: int = 6000, speed: float = sw.SPEED_RANGE[1]) -> list[dict]:
    """n control clips, the paths in turn at `speed` px/frame: dict(prompt 'a {color} {shape}', path, silhouettes
    uint8 (F, 64, 64, 3), centres (F, 2))."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        color, shape = str(rng.choice(list(sw.COLORS))), str(rng.choice(sw.SHAPES))
        centres = path_centres(PATHS[i % len(PATHS)], frames, rng, speed)
        clips.append(dict(prompt=sw.caption(color, shape), path=PATHS[i % len(PATHS)], centres=centres,
                          silhouettes=sw.silhouette(shape, centres, rng.uniform(16, 20))))
    return clips


@torch.no_grad()
def follow_paths(video_pipe, image_pipe, clips: list[dict], steps: int = 25, seed: int = 0) -> dict:
    """Each control clip generated twice with the same ControlNet: as a clip (with the motion module) and frame
    by frame as images (without it). Per clip: centroid error against the silhouette's (px, per frame), colour
    and shape against the prompt, centroid jerk and frame consistency."""
    rows = []
    for i, clip in enumerate(clips):
        frames = len(clip["silhouettes"])
        target = metrics.measure(clip["silhouettes"])["centroid"]
        asked = sw.parse_caption(clip["prompt"])
        for mode in ("motion module", "frame by frame"):
            if mode == "motion module":
                video = video_pipe.generate(clip["prompt"], frames=frames, steps=steps, seed=seed + i,
                                            control=clip["silhouettes"], progress=False)
            else:
                video = image_pipe.generate([clip["prompt"]] * frames, steps=steps, seed=seed + i,
                                            control=clip["silhouettes"])
            seen = metrics.describe(video)
            error = np.linalg.norm(metrics.measure(video)["centroid"] - target, axis=-1)  # NaN: no shape found
            rows.append(dict(clip=i, path=clip["path"], mode=mode, error=float(np.nanmean(error)),
                             within_3px=float(np.mean(np.nan_to_num(error, nan=np.inf) <= 3)),
                             color=seen["color"] == asked["color"], shape=seen["shape"] == asked["shape"],
                             jerk=seen["jerk"], consistency=seen["consistency"], video=video))
    summary = {}
    for mode in ("motion module", "frame by frame"):
        r = [row for row in rows if row["mode"] == mode]
        summary[mode] = {k: float(np.nanmean([row[k] for row in r])) for k in
                         ("error", "within_3px", "color", "shape", "jerk", "consistency")}
    return dict(rows=rows, summary=summary)
