"""Benchmark: minianimate's UNet vs diffusers' UNet2DConditionModel, same config and weights, fp32 CPU.

Measures a training step (forward + backward) and an inference forward, interleaving the two models
round by round so that machine noise hits both alike, and prints the time ratio (ours / diffusers).

    python benchmarks/unet_step.py [--rounds 20] [--batch 16] [--size 16]
"""
import argparse
import statistics
import time

import torch
from diffusers import UNet2DConditionModel

from minianimate.unet import UNet

TOY = dict(sample_size=16, block_out_channels=(32, 64, 64), layers_per_block=1, attention_head_dim=4,
           down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
           up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=64,
           norm_num_groups=16)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ref = UNet2DConditionModel(**TOY)
    ours = UNet.from_diffusers(ref)
    x = torch.randn(args.batch, 4, args.size, args.size)
    t = torch.randint(0, 1000, (args.batch,))
    context = torch.randn(args.batch, 8, TOY["cross_attention_dim"])
    print(f"toy UNet {sum(p.numel() for p in ours.parameters()) / 1e6:.2f} M params, batch {args.batch}, "
          f"{args.size}x{args.size}x4, {args.threads} threads, torch {torch.__version__}")

    def train_step(model, is_ref):
        out = model(x, t, context)
        out = out.sample if is_ref else out
        out.square().mean().backward()
        model.zero_grad(set_to_none=True)

    def infer(model, is_ref):
        with torch.no_grad():
            model(x, t, context)

    for name, step in (("train step (fwd+bwd)", train_step), ("inference forward", infer)):
        for model, is_ref in ((ours, False), (ref, True)):  # warm-up
            step(model, is_ref)
        times = {"minianimate": [], "diffusers": []}
        for _ in range(args.rounds):
            times["minianimate"].append(timed(lambda: step(ours, False)))
            times["diffusers"].append(timed(lambda: step(ref, True)))
        ours_ms, ref_ms = (1000 * statistics.median(times[k]) for k in ("minianimate", "diffusers"))
        print(f"{name:22s} minianimate {ours_ms:7.1f} ms | diffusers {ref_ms:7.1f} ms | ratio {ours_ms / ref_ms:.3f}")


if __name__ == "__main__":
    main()
