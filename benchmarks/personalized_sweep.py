"""Personalized-model arms side by side (issue 24's levers): each arm trains `outlined` or `pastel` from the shipped
base into its own folder, then is scored as `python -m minianimate eval --personalized` scores it (48 images,
seeds 0-3) and on a second set (seeds 4-7), optionally under the ControlNet (`benchmarks/controlnet_paths.py`'s
figures, motion-module clips) and as the `eval` table's motion row.

    python benchmarks/personalized_sweep.py ARMS.yaml [--arms NAME ...] [--workers 4] [--device auto]
        [--work runs/sweep] [--out results.json] [--budget 600] [--cn] [--motion]

ARMS.yaml: `NAME: {stage: outlined|pastel, from: CONFIG.yaml (optional), KEY: VALUE ...}`, KEYs overriding the
config's fields. Every arm runs in its own process (one CPU thread, the device given); the shipped checkpoint
folder is linked, never written. Results (one dict per arm: rates, aims met, minutes) go to `--out` as each arm
ends; `--budget` seconds after the start no new arm begins and running ones are stopped.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "data_samples" / "checkpoints"


def arm_config(spec: dict):
    """The stage and its config dataclass of one arm's spec."""
    from minianimate.trainer import load_config
    from minianimate.toy.stages import STAGES
    spec = dict(spec)
    stage = spec.pop("stage")
    kind = STAGES[stage][1]
    base = load_config(ROOT / spec.pop("from"), kind) if "from" in spec else kind()
    return stage, type(base)(**{**asdict(base), **spec})


def run_arm(name: str, spec: dict, work: Path, device: str, cn: bool, motion: bool, quick: bool = False) -> dict:
    """Train and score one arm in work/name (the shipped files linked in, the trained one written there); `quick`:
    every step of it on a few samples of 3 DDIM steps (a check of the script, not a measurement)."""
    import torch
    torch.set_num_threads(1)
    from minianimate.device import pick_device
    from minianimate.toy import evaluation as ev
    from minianimate.toy import models
    from minianimate.toy.control import control_clips, follow_paths
    from minianimate.toy.demo import ROW_OF
    from minianimate.toy.stages import run_stage

    stage, cfg = arm_config(spec)
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    trained = models.FILES[stage]
    for entry in SHIPPED.iterdir():  # links to the shipped files; the stage's own output and the log are not linked
        link = folder / entry.name
        if entry.name not in (trained, "training_log.json") and not link.exists():
            link.symlink_to(entry.resolve())
    dev = pick_device(device)
    started = time.time()
    run_stage(stage, cfg, out=folder, run=folder / "run", progress=False, device=str(dev))
    result = {"arm": name, "stage": stage, "config": asdict(cfg), "train_minutes": round((time.time() - started) / 60, 2)}
    for label, seed in (("seeds 0-3", 0), ("seeds 4-7", 4)):
        rows = ev.personalized_table(root=folder, models=(stage,), seed=seed, progress=False, device=dev,
                                     **(dict(seeds=1, steps=3) if quick else {}))
        result[label] = [{k: v for k, v in r.items() if k != "images"} for r in rows]
        result[label + " met"] = sum(rows[-1]["met"].values())
    if cn:
        video_pipe = models.load_pipeline(stage, root=folder, device=dev)
        image_pipe = models.load_t2i(stage, root=folder).to(dev)
        video_pipe.controlnet = image_pipe.controlnet = models.load_controlnet(folder)
        result["controlnet"] = follow_paths(video_pipe, image_pipe, control_clips(1 if quick else 12),
                                            steps=3 if quick else 25)["summary"]
    if motion:
        row = ev.eval_table(root=folder, per_row=2 if quick else 24, steps=3 if quick else 25, rows=(ROW_OF[stage],),
                            progress=False,
                            pipe=models.load_pipeline(root=folder, device=dev))[0]
        result["motion"] = {k: v for k, v in row.items() if isinstance(v, (int, float, str))}
    result["minutes"] = round((time.time() - started) / 60, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("arms_file")
    parser.add_argument("--arms", nargs="*", help="run these arms only (default: all, in the file's order)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work", default=str(ROOT / "runs" / "sweep"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "sweep" / "results.json"))
    parser.add_argument("--budget", type=float, default=float("inf"), help="seconds; no arm starts after them")
    parser.add_argument("--cn", action="store_true", help="also follow the ControlNet paths (12 clips)")
    parser.add_argument("--motion", action="store_true", help="also the eval table's motion row (24 clips)")
    parser.add_argument("--quick", action="store_true", help="a check of the script: few samples, 3 DDIM steps")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # an arm, run in this process (the workers' call)
    args = parser.parse_args()
    arms = yaml.safe_load(Path(args.arms_file).read_text())
    work = Path(args.work)
    if args.one:
        result = run_arm(args.one, arms[args.one], work, args.device, args.cn, args.motion, args.quick)
        (work / args.one / "result.json").write_text(json.dumps(result, indent=1))
        return
    names = args.arms or list(arms)
    unknown = [n for n in names if n not in arms]
    if unknown:
        raise SystemExit(f"{args.arms_file} has no arm {', '.join(unknown)}; it has {', '.join(arms)}")
    for name in names:
        arm_config(arms[name])  # a bad key fails here, before any arm starts
    started, queue, running, logs, results = time.time(), list(names), {}, {}, []
    while queue or running:
        while queue and len(running) < args.workers and time.time() - started < args.budget:
            name = queue.pop(0)
            command = [sys.executable, __file__, args.arms_file, "--one", name, "--device", args.device,
                       "--work", str(work)] + ["--cn"] * args.cn + ["--motion"] * args.motion + ["--quick"] * args.quick
            (work / name).mkdir(parents=True, exist_ok=True)
            logs[name] = open(work / name / "log.txt", "w")
            running[name] = subprocess.Popen(command, stdout=logs[name], stderr=subprocess.STDOUT,
                                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        if time.time() - started >= args.budget:
            queue.clear()
            for name, process in running.items():
                process.kill()
        time.sleep(2)
        for name, process in list(running.items()):
            if process.poll() is None:
                continue
            del running[name]
            logs.pop(name).close()
            path = work / name / "result.json"
            result = json.loads(path.read_text()) if path.exists() else {"arm": name, "failed": process.returncode}
            results.append(result)
            Path(args.out).write_text(json.dumps(results, indent=1))
            print(f"{time.time() - started:6.0f}s {name}: {summary(result)}", flush=True)


def summary(result: dict) -> str:
    """One line: the model's rates on both seed sets, the ControlNet and motion figures."""
    if "failed" in result:
        return f"failed ({result['failed']})"
    line = f"train {result['train_minutes']} min"
    for label in ("seeds 0-3", "seeds 4-7"):
        r = result[label][-1]
        worst = min(r["style_by_shape"].values())
        line += (f" | {label}: " + "/".join(f"{100 * v:.0f}" for v in (r["color"], r["shape"], r["style"], worst,
                                                                        r["inside"], r["clean"]))
                 + f" {result[label + ' met']}/5")
    if "controlnet" in result:
        s = result["controlnet"]["motion module"]
        line += f" | CN {100 * s['within_3px']:.1f}% colour {100 * s['color']:.0f}%"
    if "motion" in result:
        line += f" | motion dir {100 * result['motion']['direction']:.0f}% jerk {result['motion']['jerk']:.2f}"
    return line


if __name__ == "__main__":
    main()
