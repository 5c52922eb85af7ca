"""Benchmark: the motion stage's training step against diffusers and against the thread's own matmul rate.

    python benchmarks/motion_step.py [--threads 1 2] [--rounds 8] [--part motion sample image] [--profile-steps 5]

Three steps, each timed for minianimate and for diffusers with the same config and weights (the shipped toy
checkpoints), round by round interleaved (ours, diffusers, a 1024x1024 matmul, ours, ...) so that the machine's
noise hits both alike:
- `motion`: the training step as `python -m minianimate train motion --config configs/motion.yaml` runs it: the
  shipped `MotionUNet`, only the motion modules trainable, `stages.diffusion_loss` (4 clips x 16 frames of
  4x16x16 latents, x0 weighting, text dropout 0.1), backward, gradient clipping at 1.0, AdamW and the learning-rate
  schedule (what `Trainer.fit` does each step, minus checkpoints); diffusers' arm is `UNetMotionModel`;
- `sample`: one guided DDIM step of `sampling.sample` (4 clips x 16 frames, conditional and unconditional in one
  batch: what the demo waits for 10 times a row);
- `image`: the base stage's step (`configs/base.yaml`: 64 images, the UNet and the text encoder trainable, EMA);
  diffusers' arm is `UNet2DConditionModel`.
The latents are Gaussian noise of the stage's shape with real captions (the step's cost does not depend on them).

Each time is taken twice: wall clock and this thread's CPU time (`time.thread_time`, or the process's CPU time
with several threads), which leaves out the time the thread waited while other jobs ran on its core. The
achieved rate is the step's FLOPs (`torch.utils.flop_counter.FlopCounterMode`: matmuls and convolutions) over
its time, next to the same thread's rate on a 1024x1024 fp32 matmul measured in the same rounds. A profile of
minianimate's motion step (the top operators by torch.profiler's wall time and by their CPU time on the thread,
each operator's least time over `--profile-steps` steps, so a step that another job interrupted does not count)
and the commit and checkpoints measured go to benchmarks/results/motion_step.json. With one thread the process
pins itself to one core (the last it may use), with two to two.
"""
import argparse
import json
import os
import platform
import statistics
import time
from collections import Counter
from pathlib import Path

import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from minianimate import stages
from minianimate.inflation import MotionUNet
from minianimate.sampling import sample
from minianimate.toy import datasets
from minianimate.toy import shapeworld as sw
from minianimate.toy.provenance import provenance
from minianimate.toy.models import TOY_UNET, load_motion_unet, load_text_encoder, load_unet, toy_ddim
from minianimate.trainer import TrainConfig, lr_factor, step_generator

RESULTS = Path(__file__).parent / "results" / "motion_step.json"
MOTION = TrainConfig(batch=4, lr=1e-3, warmup=100, decay="constant", weight_decay=0.01, grad_clip=1.0)  # motion.yaml
IMAGE = TrainConfig(batch=64, lr=1e-3, warmup=100, weight_decay=0.01, grad_clip=1.0, steps=1800, ema=0.999)  # base.yaml
FRAMES, MATMUL = 16, 1024


class Diffusers(nn.Module):
    """A diffusers UNet called the way minianimate's is: (x, t, context per clip or image) -> eps tensor."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, t, context):
        if x.ndim == 5:  # UNetMotionModel wants one context per frame
            context = context.repeat_interleave(x.shape[2], dim=0)
        return self.model(x, t, context).sample


def diffusers_twin(unet):
    """diffusers' UNetMotionModel (for a MotionUNet) or UNet2DConditionModel (for a UNet) with `unet`'s weights."""
    twin = UNet2DConditionModel(**TOY_UNET)
    if isinstance(unet, MotionUNet):
        adapter = {k: v for k, v in unet.adapter_config().items() if not k.startswith("_")}
        twin = UNetMotionModel.from_unet2d(twin, MotionAdapter(**adapter))
    twin.load_state_dict(unet.state_dict(), strict=True)
    return Diffusers(twin)


class TrainStep:
    """One optimizer step of `Trainer.fit` on `stages.diffusion_loss` (no checkpoints, no logging)."""

    def __init__(self, unet, text_encoder, params, latents, captions, cfg: TrainConfig, ema=False, **loss_options):
        self.unet, self.text_encoder, self.params, self.cfg = unet, text_encoder, params, cfg
        self.ema = [p.detach().clone() for p in params] if ema else None
        self.latents, self.captions, self.loss_options, self.ddim = latents, captions, loss_options, toy_ddim()
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(cfg, s))
        self.step = 0

    def __call__(self):
        loss = stages.diffusion_loss(self.unet, self.text_encoder, self.latents, self.captions, self.ddim,
                                     step_generator(self.cfg.seed, self.step), self.cfg.batch, **self.loss_options)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.opt.step()
        self.sched.step()
        if self.ema is not None:  # Trainer's EMA warm-up, then cfg.ema
            decay = min(self.cfg.ema, (1 + self.step) / (10 + self.step))
            with torch.no_grad():
                for e, p in zip(self.ema, self.params):
                    e.lerp_(p, 1 - decay)
        self.step += 1


def motion_steps(captions):
    """minianimate's and diffusers' motion training steps, each with its own copy of the shipped weights."""
    ours = load_motion_unet()
    twin = diffusers_twin(ours)
    latents = torch.randn(64, 4, FRAMES, 16, 16)
    steps = {}
    for name, unet in (("minianimate", ours), ("diffusers", twin)):
        unet.requires_grad_(False)
        params = [p for key, p in unet.named_parameters() if "motion_modules." in key]
        for p in params:
            p.requires_grad_(True)
        steps[name] = TrainStep(unet.train(), load_text_encoder(), params, latents, captions[:64], MOTION,
                                text_dropout=0.1, weighting="x0")
    return steps


def image_steps(captions):
    """The base stage's step: UNet and text encoder trainable, EMA of both, 64 images."""
    ours = load_unet("base")
    twin = diffusers_twin(ours)
    latents = torch.randn(512, 4, 16, 16)
    steps = {}
    for name, unet in (("minianimate", ours), ("diffusers", twin)):
        text_encoder = load_text_encoder()
        params = [*unet.requires_grad_(True).train().parameters(), *text_encoder.requires_grad_(True).parameters()]
        steps[name] = TrainStep(unet, text_encoder, params, latents, captions[:512], IMAGE, ema=True, text_dropout=0.1)
    return steps


def sample_steps(captions):
    """One guided DDIM step (`sampling.sample` with steps=1) for 4 clips: the UNet sees 8 clips x 16 frames."""
    ours = load_motion_unet().eval().requires_grad_(False)
    twin = diffusers_twin(ours).eval().requires_grad_(False)
    text_encoder = load_text_encoder()
    with torch.no_grad():
        cond, uncond = text_encoder.encode_prompt(captions[:4]), text_encoder.encode_prompt([""] * 4)
    shape = (4, 4, FRAMES, 16, 16)
    return {name: (lambda unet=unet: sample(unet, shape, cond, uncond, toy_ddim(), steps=1, progress=False))
            for name, unet in (("minianimate", ours), ("diffusers", twin))}


def clock(fn, threads: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of fn(): this thread's CPU time, or the process's with several threads."""
    cpu = time.thread_time if threads == 1 else time.process_time
    wall, start = time.perf_counter(), cpu()
    fn()
    return time.perf_counter() - wall, cpu() - start


def flops(fn) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def summary(times: list[float]) -> dict:
    return {"min": round(min(times), 4), "median": round(statistics.median(times), 4), "n": len(times)}


def measure(steps: dict, threads: int, rounds: int) -> dict:
    """Interleaved rounds of every arm and the matmul; times, ratio ours / diffusers, rates."""
    a, b = torch.randn(MATMUL, MATMUL), torch.randn(MATMUL, MATMUL)
    matmul = lambda: [a @ b for _ in range(10)]  # noqa: E731
    arms = {**steps, "matmul": matmul}
    for fn in arms.values():  # warm-up
        fn()
    gflop = flops(steps["minianimate"]) / 1e9
    times = {name: {"wall": [], "cpu": []} for name in arms}
    for _ in range(rounds):
        for name, fn in arms.items():
            wall, cpu = clock(fn, threads)
            times[name]["wall"].append(wall)
            times[name]["cpu"].append(cpu)
    out = {"gflop": round(gflop, 2)}
    for kind in ("cpu", "wall"):
        ours, ref = (summary(times[n][kind]) for n in ("minianimate", "diffusers"))
        mm_rate = 10 * 2 * MATMUL ** 3 / 1e9 / min(times["matmul"][kind])
        out[kind] = {"minianimate_s": ours, "diffusers_s": ref,
                     "ratio_median": round(ours["median"] / ref["median"], 3),
                     "ratio_min": round(ours["min"] / ref["min"], 3),
                     "gflops": round(gflop / ours["min"], 1), "matmul_gflops": round(mm_rate, 1),
                     "of_matmul": round(gflop / ours["min"] / mm_rate, 3)}
    return out


class CPUTimes(TorchDispatchMode):
    """Every aten operator's CPU time on this thread (forward and backward: the autograd engine runs a CPU
    graph's backward on the calling thread), by operator and by operator and first input's shape."""

    def __init__(self):
        super().__init__()
        self.by_op, self.by_shape = Counter(), Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = time.thread_time()
        out = func(*args, **(kwargs or {}))
        spent = time.thread_time() - start
        shape = list(args[0].shape) if args and isinstance(args[0], torch.Tensor) else []
        self.by_op[f"aten::{func.overloadpacket.__name__}"] += spent * 1e6
        self.by_shape[f"aten::{func.overloadpacket.__name__} {shape}"] += spent * 1e6
        return out


def profile_table(step, n: int, top: int = 15) -> dict:
    """The top operators of `step`, twice: torch.profiler (wall time) and `CPUTimes` (this thread's CPU time).
    Each operator's least time over n steps (another job that takes the core away makes a step's time longer,
    never shorter), and its share of their sum."""
    tables = {"torch_profiler": ([], []), "thread_cpu_time": ([], [])}
    for _ in range(n):
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            step()
        tables["torch_profiler"][0].append(Counter({e.key: e.self_cpu_time_total for e in prof.key_averages()}))
        tables["torch_profiler"][1].append(Counter({f"{e.key} {e.input_shapes[:1]}": e.self_cpu_time_total
                                                    for e in prof.key_averages(group_by_input_shape=True)}))
        with CPUTimes() as cpu:
            step()
        tables["thread_cpu_time"][0].append(cpu.by_op)
        tables["thread_cpu_time"][1].append(cpu.by_shape)

    def table(counters):
        least = {k: min(c[k] for c in counters) for k in set().union(*counters)}
        total = sum(least.values())
        rows = sorted(least.items(), key=lambda kv: -kv[1])[:top]
        return {"total_ms": round(total / 1e3, 1),
                "top": [{"op": k, "ms": round(v / 1e3, 2), "share": round(v / total, 3)} for k, v in rows]}
    return {name: {"by_operator": table(ops), "by_operator_and_shape": table(shapes)}
            for name, (ops, shapes) in tables.items()}


CORES = sorted(os.sched_getaffinity(0))


def pin(threads: int) -> None:
    """torch on `threads` threads, the process on as many cores (the last ones it may use)."""
    torch.set_num_threads(threads)
    os.sched_setaffinity(0, CORES[-threads:])


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "affinity": CORES,
            "load_average_start": os.getloadavg(), "torch": torch.__version__,
            "diffusers": __import__("diffusers").__version__}


AIMS = {"of_matmul": 0.5, "ratio_median": 0.75}  # one thread: >= half the matmul's rate; <= 0.75 of diffusers' time


def aims(result: dict) -> dict:
    """The aims for the one-thread motion step (CPU time) against what was measured."""
    cpu = result["steps"].get("motion", {}).get("1_threads", {}).get("cpu")
    if cpu is None:
        return {}
    return {"of_matmul_at_least": {"aim": AIMS["of_matmul"], "measured": cpu["of_matmul"],
                                   "met": cpu["of_matmul"] >= AIMS["of_matmul"]},
            "ours_over_diffusers_at_most": {"aim": AIMS["ratio_median"], "measured": cpu["ratio_median"],
                                            "met": cpu["ratio_median"] <= AIMS["ratio_median"]}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--part", nargs="+", default=["motion", "sample", "image"], choices=["motion", "sample", "image"])
    parser.add_argument("--profile-steps", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    torch.manual_seed(0)
    captions = [sw.caption(*x) for x in datasets.combos(held_out=False)] * 100
    build = {"motion": motion_steps, "sample": sample_steps, "image": image_steps}
    result = {"provenance": provenance("base", "motion", "motion_config", "text_encoder"), "machine": machine(),
              "settings": vars(args), "steps": {}}
    for part in args.part:
        steps = build[part](captions)
        result["steps"][part] = {}
        for threads in args.threads:
            pin(threads)
            figures = measure(steps, threads, args.rounds)
            result["steps"][part][f"{threads}_threads"] = figures
            cpu = figures["cpu"]
            print(f"{part:6s} {threads} thread(s): minianimate {cpu['minianimate_s']['median']:.3f} s, diffusers "
                  f"{cpu['diffusers_s']['median']:.3f} s (CPU, median), ratio {cpu['ratio_median']:.3f}; "
                  f"{figures['gflop']:.1f} GFLOP at {cpu['gflops']:.0f} GFLOP/s = {cpu['of_matmul']:.0%} of the "
                  f"matmul's {cpu['matmul_gflops']:.0f}", flush=True)
        if part == "motion":
            pin(1)
            result["profile_motion_step_1_thread"] = profile_table(steps["minianimate"], args.profile_steps)
            for row in result["profile_motion_step_1_thread"]["thread_cpu_time"]["by_operator"]["top"][:8]:
                print(f"    {row['share']:6.1%} {row['ms']:8.1f} ms  {row['op']}")
    result["machine"]["load_average_end"] = os.getloadavg()
    result["aims"] = aims(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
