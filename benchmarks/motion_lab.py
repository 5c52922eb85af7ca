"""Motion lab: short, equal arms of stage 2 (the motion module) on the same cached clip latents.

Every arm starts from fresh (identity) motion modules on the frozen toy base, with the same seed, the
same clips and the same number of steps; only its levers differ. Every arm is then evaluated on the
same fixed set (12 held-out + 12 trained prompts, 16 frames, adapter scale 0, DDIM 25, CFG 7.5) by
direction accuracy, centroid jerk, visible-frame rate, frame consistency and start-to-end displacement,
and the loss per timestep bin is measured with the motion modules on and zeroed (where do they help?).

    python benchmarks/motion_lab.py --arms plain,shared-noise --steps 800 --out runs/lab
    python benchmarks/motion_lab.py --table --out runs/lab       # the table of every arm run so far

Clip latents are cached in `OUT/cache/` (rendering + encoding 2,000 clips takes minutes, once).
Results: `OUT/ARM.json` per arm and `OUT/table.md`. The arms measured so far are kept in
`benchmarks/results/motion_lab/` (copied from runs/lab).
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from minianimate import LoRA
from minianimate.autoencoder import encode_clips
from minianimate.pipeline import AnimationPipeline
from minianimate.sampling import frame_noise
from minianimate.trainer import Trainer, TrainConfig
from minianimate.toy import metrics
from minianimate.toy import shapeworld as sw
from minianimate.toy.datasets import HELD_OUT, clip_set
from minianimate.toy.evaluation import balanced_prompts
from minianimate.toy.models import CHECKPOINTS, FILES, TOY_MOTION, load_motion_unet, load_text_encoder, load_vae, toy_ddim

COMMON = dict(steps=800, batch=4, lr=1e-3, frames=16, clips=2000, still=0.1, seed=0)
ARMS = {  # name -> levers; every lever's default is the plain recipe
    "plain": {},
    "shared-noise": {"noise_share": 0.5},
    "high-t": {"high_t": 0.7},
    "shared+high-t": {"noise_share": 0.5, "high_t": 0.7},
    "min-snr": {"weighting": "min-snr"},
    "frame-diff": {"frame_diff": 1.0},
    "shared-0.8": {"noise_share": 0.8},
    "watermark+adapter-random": {"watermark": True, "adapter": "random"},
}
LEVERS = dict(noise_share=0.0, high_t=0.0, weighting="eps", frame_diff=0.0, watermark=False, adapter=None)
BINS = ((0, 200), (200, 400), (400, 600), (600, 800), (800, 1000))


def timesteps(batch: int, generator, high_t: float, T: int = 1000) -> torch.Tensor:
    """Uniform timesteps, except a fraction `high_t` drawn from the upper half (t >= T/2)."""
    t = torch.randint(0, T, (batch,), generator=generator)
    high = torch.randint(T // 2, T, (batch,), generator=generator)
    return torch.where(torch.rand(batch, generator=generator) < high_t, high, t)


def lab_loss(unet, text_encoder, latents, captions, ddim, generator, batch, levers, adapter=None):
    idx = torch.randint(0, len(latents), (batch,), generator=generator)
    x0 = latents[idx]
    drop = torch.rand(batch, generator=generator) < 0.1
    prompts = ["" if d else captions[i] for i, d in zip(idx.tolist(), drop.tolist())]
    noise = frame_noise(x0.shape, generator, levers["noise_share"])
    t = timesteps(batch, generator, levers["high_t"])
    if adapter is not None and levers["adapter"] == "random":
        scale = float(torch.rand((), generator=generator))
        adapter.scale, adapter.enabled = scale, True
    eps = unet(ddim.add_noise(x0, noise, t), t, text_encoder.encode_prompt(prompts))
    err = (eps - noise) ** 2  # (B, C, F, h, w)
    per_clip = err.mean(dim=(1, 2, 3, 4))
    if levers["weighting"] == "min-snr":  # Min-SNR-5 for epsilon prediction: min(snr, 5) / snr
        abar = ddim.alphas_cumprod[t]
        snr = abar / (1 - abar)
        per_clip = per_clip * torch.clamp(snr, max=5.0) / snr
    loss = per_clip.mean()
    if levers["frame_diff"]:
        diff = (eps - noise).diff(dim=2)
        loss = loss + levers["frame_diff"] * diff.pow(2).mean() / 2
    return loss


def cached_clips(vae, out: Path, n: int, frames: int, still: float, watermark: bool, seed: int):
    path = out / "cache" / f"clips{n}_f{frames}_still{still}_wm{int(watermark)}_seed{seed}.pt"
    if path.exists():
        data = torch.load(path, weights_only=False)
        return data["latents"], data["captions"]
    clips, captions = clip_set(n, seed + 2000, frames, still=still, watermark=watermark)
    latents = encode_clips(vae, clips)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"latents": latents, "captions": captions}, path)
    return latents, captions


class zeroed:
    """Context manager: the motion modules' output projections set to zero (identity modules)."""

    def __init__(self, unet):
        self.unet = unet

    def __enter__(self):
        self.saved = {n: p.detach().clone() for n, p in self.unet.named_parameters() if ".proj_out." in n
                      and "motion_modules" in n}
        with torch.no_grad():
            for n, p in self.unet.named_parameters():
                if n in self.saved:
                    p.zero_()

    def __exit__(self, *exc):
        with torch.no_grad():
            for n, p in self.unet.named_parameters():
                if n in self.saved:
                    p.copy_(self.saved[n])


@torch.no_grad()
def bin_losses(unet, text_encoder, latents, captions, ddim, share, n=32, seed=123) -> dict:
    """Epsilon MSE per timestep bin on the first n clips, same noise for every arm; modules on and zeroed."""
    g = torch.Generator().manual_seed(seed)
    x0 = latents[:n]
    noise = frame_noise(x0.shape, g, share)
    context = text_encoder.encode_prompt(list(captions[:n]))
    out = {}
    for lo, hi in BINS:
        t = torch.randint(lo, hi, (n,), generator=g)
        xt = ddim.add_noise(x0, noise, t)
        on = sum(F.mse_loss(unet(xt[i:i + 8], t[i:i + 8], context[i:i + 8]), noise[i:i + 8]).item()
                 for i in range(0, n, 8)) / (n // 8)
        with zeroed(unet):
            off = sum(F.mse_loss(unet(xt[i:i + 8], t[i:i + 8], context[i:i + 8]), noise[i:i + 8]).item()
                      for i in range(0, n, 8)) / (n // 8)
        out[f"{lo}-{hi - 1}"] = {"modules": on, "zeroed": off}
    return out


def eval_prompts():
    held = [HELD_OUT[i % len(HELD_OUT)] for i in range(12)]
    return held, balanced_prompts(12, False, seed=0)


def generate(unet, vae, text_encoder, targets, frames, share, seed, steps=25, guidance=7.5, batch=8):
    """Clips of (colour, shape, direction) targets, 8 at a time, the start noise shared across frames by `share`."""
    pipe = AnimationPipeline(vae, text_encoder, unet, toy_ddim())
    prompts = [sw.caption(*x) for x in targets]
    return np.concatenate([pipe.generate(prompts[i:i + batch], frames=frames, steps=steps, guidance=guidance,
                                         seed=seed + i, noise_share=share, progress=False)
                           for i in range(0, len(prompts), batch)])


def clip_figures(clips, targets) -> dict:
    """Direction accuracy, jerk, visible-frame rate, consistency, displacement (px, start to end)."""
    colors, _, directions = zip(*targets)
    figures = metrics.score(metrics.describe_all(clips), dict(direction=directions, color=colors))
    return {k: figures[k] for k in ("direction", "jerk", "visible", "consistency", "displacement", "color")}


def run_arm(name: str, levers: dict, common: dict, out: Path) -> dict:
    levers = {**LEVERS, **levers}
    started = time.time()
    torch.manual_seed(common["seed"])
    root = CHECKPOINTS
    vae, text_encoder = load_vae(root), load_text_encoder(root)
    unet = load_motion_unet(root, TOY_MOTION).requires_grad_(False)
    for p in unet.motion_parameters():
        p.requires_grad_(True)
    adapter = None
    if levers["adapter"]:
        adapter = LoRA.load(unet, root / FILES["adapter"], scale=1.0).requires_grad_(False)
    latents, captions = cached_clips(vae, out, common["clips"], common["frames"], common["still"],
                                     levers["watermark"], common["seed"])
    ddim = toy_ddim()
    cfg = TrainConfig(steps=common["steps"], batch=common["batch"], lr=common["lr"], warmup=50,
                      checkpoint_every=common["steps"], seed=common["seed"])
    trainer = Trainer({"unet": unet}, cfg, out / "runs" / name, params=unet.motion_parameters())
    unet.train()
    trainer.fit(lambda step, g: lab_loss(unet, text_encoder, latents, captions, ddim, g, cfg.batch, levers, adapter),
                desc=name)
    train_minutes = (time.time() - started) / 60
    unet.eval()
    if adapter is not None:
        adapter.scale, adapter.enabled = 0.0, False
    held, trained = eval_prompts()
    result = {"arm": name, "levers": levers, "common": common, "train_minutes": round(train_minutes, 2),
              "final_loss": sum(trainer.losses[-50:]) / 50}
    for label, targets in (("held_out", held), ("trained", trained)):
        clips = generate(unet, vae, text_encoder, targets, 16, levers["noise_share"], seed=1)
        result[label] = clip_figures(clips, targets)
        np.save(out / f"{name}_{label}.npy", clips[:4])
    result["bins"] = bin_losses(unet, text_encoder, latents, captions, ddim, levers["noise_share"])
    result["minutes"] = round((time.time() - started) / 60, 2)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "bins"}, indent=1))
    return result


def table(out: Path) -> str:
    rows = ["| arm | steps | min | held-out dir. | trained dir. | jerk | visible | consistency | displacement px | "
            "colour | loss t 800-999 on/zeroed |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(out.glob("*.json")):
        r = json.loads(path.read_text())
        h, t = r["held_out"], r["trained"]
        both = lambda k: (h[k] + t[k]) / 2  # noqa: E731
        b = r["bins"]["800-999"]
        rows.append(f"| {r['arm']} | {r['common']['steps']} | {r['minutes']:.0f} | {h['direction']:.2f} | "
                    f"{t['direction']:.2f} | {both('jerk'):.1f} | {both('visible'):.2f} | {both('consistency'):.2f} "
                    f"| {both('displacement'):.1f} | {both('color'):.2f} | {b['modules']:.4f}/{b['zeroed']:.4f} |")
    text = "\n".join(rows)
    (out / "table.md").write_text(text + "\n")
    return text


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arms", default="plain", help=f"comma-separated, from {sorted(ARMS)}")
    p.add_argument("--steps", type=int, default=COMMON["steps"])
    p.add_argument("--out", default="runs/lab")
    p.add_argument("--table", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.table:
        for name in args.arms.split(","):
            if name not in ARMS:
                raise SystemExit(f"error: unknown arm {name!r}; use one of {sorted(ARMS)}")
        for name in args.arms.split(","):
            run_arm(name, ARMS[name], {**COMMON, "steps": args.steps}, out)
    print(table(out))


if __name__ == "__main__":
    main()
