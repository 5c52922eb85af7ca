"""Benchmark: peak memory of sampling long clips with sliding context windows (memory flat in frames?).

Each case runs in a fresh process (so peaks do not mix) and reports the growth of the process's peak
resident memory during sampling over its level after loading the models (`ru_maxrss`; CPU), and, on a GPU,
`torch.cuda.max_memory_allocated`. Uses the shipped toy checkpoints (or a random toy motion UNet with --random).

    python benchmarks/context_memory.py [--frames 16 32 64] [--context 16] [--steps 3]
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def one_case(frames: int, context: int | None, steps: int, random: bool, vae_slice: int | None,
             candidates: int | None = None) -> dict:
    import torch

    from minianimate.inflation import MotionUNet
    from minianimate.pipeline import AnimationPipeline
    from minianimate.toy.models import TOY_UNET, load_pipeline, load_text_encoder, load_vae, toy_ddim

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if random:
        unet = MotionUNet(TOY_UNET, dict(heads=4, max_frames=32)).eval().requires_grad_(False)
        pipe = AnimationPipeline(load_vae(), load_text_encoder(), unet, toy_ddim(), device=device)
    else:
        pipe = load_pipeline(device=device)
    if vae_slice:
        pipe.enable_vae_slicing(vae_slice)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB after loading
    start = time.perf_counter()
    pipe.generate("a red circle moving right", frames=frames, steps=steps, context=context, candidates=candidates,
                  progress=False)  # candidates None: the pipeline's path planning (the toy's: up to 4 draws a window)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"frames": frames, "context": context, "peak_rss_mib": round(peak, 1),
           "sampling_growth_mib": round(peak - base, 1), "seconds": round(seconds, 2)}
    if device == "cuda":
        out["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--context", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--random", action="store_true", help="random toy motion UNet instead of the shipped one")
    parser.add_argument("--vae-slice", type=int, default=None, help="decode this many frames at a time "
                        "(`pipe.enable_vae_slicing`; default: the pipeline's)")
    parser.add_argument("--candidates", type=int, default=None, help="path planning's draws a window (default: the "
                        "toy pipeline's; 1: none)")
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes a case (the ratio of the medians: "
                        "one process's growth varies by about 20 MiB)")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: run one case, print json
    args = parser.parse_args()
    if args.case:
        frames, context = json.loads(args.case)
        print(json.dumps(one_case(frames, context, args.steps, args.random, args.vae_slice, args.candidates)))
        return
    rows = []
    for frames in args.frames:
        for context in ([None] if frames <= args.context else []) + [args.context]:
            cmd = [sys.executable, __file__, "--case", json.dumps([frames, context]), "--steps", str(args.steps)]
            cmd += ["--vae-slice", str(args.vae_slice)] if args.vae_slice else []
            cmd += ["--candidates", str(args.candidates)] if args.candidates else []
            for _ in range(args.repeats):
                result = subprocess.run(cmd + (["--random"] if args.random else []), capture_output=True, text=True)
                if result.returncode:
                    sys.exit(result.stderr)
                rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
                print(rows[-1], flush=True)
    windowed = {f: statistics.median(r["sampling_growth_mib"] for r in rows
                                     if r["frames"] == f and r["context"] == args.context) for f in args.frames}
    shortest, longest = min(windowed), max(windowed)
    ratio = windowed[longest] / max(windowed[shortest], 1e-6)
    print(f"BENCH sampling memory growth with context {args.context}: {longest} frames / {shortest} frames "
          f"= {ratio:.2f}x ({windowed[longest]} MiB vs {windowed[shortest]} MiB, medians of {args.repeats} processes)")


if __name__ == "__main__":
    main()
