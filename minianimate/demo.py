"""`make demo`: the main job that exists so far. Until the animation pipeline lands it shows the foundation:
the UNet parity report against diffusers and DDIM trajectories on a 2D mixture with an exact denoiser.
"""
import math
from pathlib import Path

import torch

from minianimate.ddim import DDIM


def parity_report() -> str:
    """Our UNet and MotionUNet vs diffusers on tiny random models, and the SD1.5 parameter count."""
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    from minianimate.inflation import MotionUNet
    from minianimate.unet import SD15, UNet

    torch.manual_seed(0)
    cfg = dict(sample_size=16, block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=4,
               down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
               up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=24, norm_num_groups=8)
    ref = UNet2DConditionModel(**cfg).eval()
    adapter = MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=2,
                            motion_norm_num_groups=8, use_motion_mid_block=True)
    ref_video = UNetMotionModel.from_unet2d(ref, adapter).eval()
    with torch.no_grad():
        for p in ref_video.parameters():
            p.normal_(0, 0.05)
    ours, ours_video = UNet.from_diffusers(ref).eval(), MotionUNet.from_diffusers(ref_video).eval()
    x, clip, context = torch.randn(2, 4, 16, 16), torch.randn(1, 4, 8, 16, 16), torch.randn(2, 7, 24)
    with torch.no_grad():
        d_image = (ours(x, 500, context) - ref(x, 500, context).sample).abs().max().item()
        d_video = (ours_video(clip, 500, context[:1]) -
                   ref_video(clip, 500, context[:1].repeat_interleave(8, 0)).sample).abs().max().item()
    with torch.device("meta"):
        sd15 = sum(p.numel() for p in UNet(SD15).parameters())
        mm = {v: sum(p.numel() for p in MotionUNet(SD15, v).motion_parameters()) for v in ("v1", "v2", "v3")}
    lines = ["minianimate vs diffusers (tiny random models, fp32 CPU)",
             f"  UNet        max |ours - diffusers| = {d_image:.2e}  (keys identical: "
             f"{list(ours.state_dict()) == list(ref.state_dict())})",
             f"  MotionUNet  max |ours - diffusers| = {d_video:.2e}  (8-frame clip, mid-block module)",
             f"  SD1.5 UNet parameters: {sd15:,}",
             "  motion modules at SD1.5 scale: " + ", ".join(f"{v} {n / 1e6:.2f} M" for v, n in mm.items())]
    return "\n".join(lines)


def mixture_eps(x: torch.Tensor, abar: torch.Tensor, means: torch.Tensor, std: float) -> torch.Tensor:
    """The exact noise prediction E[eps | x_t] for data drawn from an equal mixture of isotropic Gaussians.

    x (N, 2), means (K, 2) -> (N, 2). Under x_t = sqrt(abar) x0 + sqrt(1-abar) eps, component k gives
    x_t ~ N(sqrt(abar) mu_k, abar std^2 + 1 - abar); E[eps | x_t] = -sqrt(1-abar) * score(x_t).
    """
    var = abar * std ** 2 + (1 - abar)
    diff = x[:, None, :] - abar.sqrt() * means[None]  # (N, K, 2)
    weights = torch.softmax(-(diff ** 2).sum(-1) / (2 * var), dim=1)  # posterior over components, (N, K)
    score = -(weights[..., None] * diff).sum(1) / var
    return -(1 - abar).sqrt() * score


def ddim_figure(path: Path, steps: int = 25) -> None:
    """DDIM trajectories (eta 0 and 1) from noise to an 8-Gaussian ring, with the exact denoiser."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    angles = torch.arange(8) * 2 * math.pi / 8
    means = 2.5 * torch.stack([angles.cos(), angles.sin()], dim=1)
    ddim = DDIM(beta_schedule="linear")
    ddim.set_timesteps(steps)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), dpi=80)
    for ax, eta in zip(axes, (0.0, 1.0)):
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(64, 2, generator=generator)
        path_points = [x]
        for t in ddim.timesteps:
            x = ddim.step(mixture_eps(x, ddim.alphas_cumprod[t], means, 0.15), t, x, eta=eta, generator=generator)
            path_points.append(x)
        traj = torch.stack(path_points)  # (steps+1, N, 2)
        for i in range(traj.shape[1]):
            ax.plot(traj[:, i, 0], traj[:, i, 1], lw=0.6, alpha=0.6)
        ax.scatter(*means.T, c="k", marker="x", label="data modes")
        ax.scatter(*traj[-1].T, s=8, c="r", label="samples")
        ax.set_title(f"DDIM, {steps} steps, eta={eta:g}")
        ax.set_aspect("equal")
    axes[0].legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_demo(out: str = "outputs") -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = parity_report()
    print(report)
    (out / "parity_report.txt").write_text(report + "\n")
    ddim_figure(out / "ddim_trajectories.png")
    print(f"wrote {out / 'parity_report.txt'} and {out / 'ddim_trajectories.png'}")
