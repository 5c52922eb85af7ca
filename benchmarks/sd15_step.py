"""SD1.5-size MotionUNet (random weights, v2 motion modules): minianimate vs diffusers' `UNetMotionModel` on a GPU.

    python benchmarks/sd15_step.py            # on a CUDA GPU: bf16 autocast, interleaved repeats
    python benchmarks/sd15_step.py --smoke    # a tiny config on the CPU: checks the script, measures nothing

Two measurements, each on both models with the same weights, alternating A B A B ...:
- a training step of the motion modules (everything else frozen): 16 frames of 256x256 (32x32 latents), batch 1;
- 25-step DDIM sampling with classifier-free guidance: 16 frames of 512x512 (64x64 latents).
Prints median seconds, the time ratio minianimate / diffusers (aim <= 0.9) and peak memory ratio (aim <= 1.0).
"""
import argparse
import statistics
import sys
import time

import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

from minianimate import DDIM, MotionUNet
from minianimate.sampling import sample
from minianimate.unet import SD15

TINY = dict(sample_size=8, block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32, norm_num_groups=8)


def models(config: dict, device):
    """diffusers' UNetMotionModel (random, v2: mid-block modules) and minianimate's MotionUNet with its weights."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config)
    adapter = MotionAdapter(block_out_channels=config["block_out_channels"], motion_layers_per_block=config[
        "layers_per_block"], motion_norm_num_groups=config["norm_num_groups"], motion_num_attention_heads=8,
        motion_max_seq_length=32, use_motion_mid_block=True)
    theirs = UNetMotionModel.from_unet2d(unet, adapter)
    ours = MotionUNet.from_diffusers(theirs)
    return ours.to(device), theirs.to(device)


def call(model, x, t, context):
    if isinstance(model, UNetMotionModel):  # it takes the context per frame (its pipeline repeats it)
        return model(x, t, encoder_hidden_states=context.repeat_interleave(x.shape[2], dim=0)).sample
    return model(x, t, context)


def train_step(model, frames, size, context_dim, device, dtype):
    params = [p for n, p in model.named_parameters() if "motion_modules" in n]
    model.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-4)
    x = torch.randn(1, 4, frames, size, size, device=device)
    context = torch.randn(1, 77, context_dim, device=device)

    def step():
        with torch.autocast(device.type, dtype=dtype):
            loss = call(model, x, torch.tensor([500], device=device), context).float().pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def sampling(model, frames, size, context_dim, device, dtype, steps):
    context = torch.randn(1, 77, context_dim, device=device)
    uncond = torch.zeros_like(context)

    def run():
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype):
            sample(lambda x, t, c: call(model, x, t, c), (1, 4, frames, size, size), context, uncond, DDIM(), steps,
                   progress=False)
    return run


def measure(fn, device, repeats: int) -> tuple[list, float]:
    fn()  # warm-up (kernels, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else float("nan")
    return times, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny config on the CPU (checks the script only)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        print("error: benchmarks/sd15_step.py measures an SD1.5-size model on a CUDA GPU and this machine has none; "
              "run it on a GPU (or --smoke to check the script on a tiny config)", file=sys.stderr)
        return 2
    device = torch.device("cuda" if not args.smoke else "cpu")
    config, dtype = (TINY, torch.bfloat16) if args.smoke else (SD15, torch.bfloat16)
    frames, train_size, sample_size, steps = (4, 8, 8, 2) if args.smoke else (16, 32, 64, 25)
    ours, theirs = models(dict(config), device)
    rows = []
    for name, make in [(f"train step {frames}x{train_size * 8}^2", lambda m: train_step(
            m, frames, train_size, config["cross_attention_dim"], device, dtype)),
                       (f"sampling {steps} steps {frames}x{sample_size * 8}^2", lambda m: sampling(
            m, frames, sample_size, config["cross_attention_dim"], device, dtype, steps))]:
        times, peaks = {"ours": [], "theirs": []}, {"ours": [], "theirs": []}
        for _ in range(2):  # interleaved: A B A B
            for label, model in (("ours", ours), ("theirs", theirs)):
                t, peak = measure(make(model), device, args.repeats)
                times[label] += t
                peaks[label].append(peak)
        rows.append((name, statistics.median(times["ours"]), statistics.median(times["theirs"]), max(peaks["ours"]),
                     max(peaks["theirs"])))
    print(f"{'':34} {'ours s':>8} {'diffusers s':>11} {'time ratio':>10} {'ours GiB':>9} {'diff GiB':>9} {'mem ratio':>9}")
    for name, a, b, ma, mb in rows:
        print(f"{name:34} {a:8.3f} {b:11.3f} {a / b:10.2f} {ma:9.2f} {mb:9.2f} {ma / mb if mb > 0 else float('nan'):9.2f}")
    print(f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, {dtype}, torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
