"""Command line: `python -m minianimate <command> ...` (run with no command to list them).

Every command works on the toy world and its shipped checkpoints (`--checkpoints DIR` for another folder), so
the CLI belongs to `minianimate.toy`; `minianimate/__main__.py` only calls `main`. Every argument is checked
before any model loads: a wrong one, or a missing or damaged file, ends in one line `error: ...` and exit
status 2 (`--debug` shows the traceback instead).
"""
import argparse
import sys
from pathlib import Path

from minianimate.device import pick_device
from minianimate.toy.cli_args import (Parser, UsageError, check_prompts, checkpoints, count, number, out_file,
                                      out_folder, precision, read_control)


# --- the commands: check everything, then load and work ------------------------------------------------------
def _make_data(args):
    from minianimate.toy.datasets import write_dataset

    write_dataset(out_folder(args.out), videos=args.videos, images=args.images, seed=args.seed, frames=args.frames,
                  style=args.style, camera=args.camera, overwrite=args.overwrite)


def _train(args):
    from minianimate.toy.models import CHECKPOINTS
    from minianimate.toy.stages import STAGES, run_stage

    shipped_configs = CHECKPOINTS.parents[1] / "configs"
    if args.out is None and args.stage in STAGES and Path(args.config).is_file() and (
            Path(args.config).resolve().parent != shipped_configs):
        raise ValueError(f"{args.config} is not one of {shipped_configs}, and its result would replace the shipped "
                         f"checkpoints in {CHECKPOINTS}: give --out DIR (a copy of that folder), or --out "
                         f"{CHECKPOINTS} to mean it")
    pick_device(args.device)
    run_stage(args.stage, args.config, out=out_folder(args.out) if args.out else CHECKPOINTS, resume=args.resume,
              run=args.run, device=args.device, dtype=args.dtype, steps=args.steps)


def _sample_images(args):
    from minianimate.toy.models import check_personalized, load_t2i
    from minianimate.video_io import contact_sheet, write_png

    root = checkpoints(args, "vae", "text_encoder", "base")
    check_prompts(root, args.prompt)
    check_personalized(args.model, root, lora_ok=False)
    out = out_folder(args.out)

    model = load_t2i(args.model, root).to(pick_device(args.device), args.dtype)
    images = model.generate([args.prompt] * args.n, steps=args.steps, guidance=args.guidance, seed=args.seed,
                            progress=True)
    out.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        write_png(out / f"{i:03d}.png", image)
    write_png(out / "contact_sheet.png", contact_sheet(images))
    print(f"wrote {len(images)} images and contact_sheet.png to {out}")


def _generate(args):
    from minianimate.toy.models import FILES, check_motion_lora, check_personalized, read_json, shipped

    root = checkpoints(args, "vae", "text_encoder", "base", "motion", "motion_config")
    out = out_file(args.out, (".mp4", ".gif", ".png"), ".mp4, .gif or .png (a contact sheet of the frames)")
    from minianimate.checks import keyframes
    from minianimate.pipeline import DEFAULT_CONTEXT
    from minianimate.travel import parse_travel

    prompt = parse_travel(args.prompt_travel) if args.prompt_travel else args.prompt
    if args.prompt_travel:
        keyframes("--prompt-travel", prompt, args.frames)  # inside the clip
    check_prompts(root, *(prompt.values() if args.prompt_travel else [prompt]), args.negative_prompt)
    check_personalized(args.model, root, lora_ok=True)
    longest = read_json(shipped("motion_config", root))["motion"]["max_frames"]
    if args.context is not None and args.context > longest:
        raise ValueError(f"--context {args.context} is longer than the motion module's positional encoding "
                         f"({longest} frames)")
    context = args.context or (min(DEFAULT_CONTEXT, longest) if args.frames > DEFAULT_CONTEXT else None)  # generate's
    if args.overlap is not None and (context is None or args.overlap >= context):
        raise ValueError(f"--overlap {args.overlap} needs --context, and must be smaller than it")
    if args.adapter_scale and not (root / FILES["adapter"]).is_file():
        raise FileNotFoundError(f"--adapter-scale {args.adapter_scale:g}: {root} has no {FILES['adapter']}")
    loras = [check_motion_lora(spec, root) for spec in args.motion_lora]
    device = pick_device(args.device)
    control = read_control(args.control, args.frames) if args.control and checkpoints(args, "controlnet") else None

    from minianimate.toy.models import load_pipeline
    from minianimate.video_io import contact_sheet, write_png, write_video

    pipe = load_pipeline(model=args.model, root=root, device=device, dtype=args.dtype)
    if control is not None:
        from minianimate.toy.models import load_controlnet

        pipe.controlnet = load_controlnet(root)
    video = pipe.generate(prompt, negative_prompt=args.negative_prompt, frames=args.frames, steps=args.steps,
                          guidance=args.guidance, seed=args.seed, adapter_scale=args.adapter_scale,
                          motion_loras=loras, context=args.context, overlap=args.overlap,
                          context_schedule=args.context_schedule, control=control, control_scale=args.control_scale,
                          free_init=args.free_init, free_init_filter=args.free_init_filter, candidates=args.candidates)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_png(out, contact_sheet(video)) if out.suffix.lower() == ".png" else write_video(out, video)
    print(f"wrote {out} ({len(video)} frames, {video.shape[2]}x{video.shape[1]})")


def _eval(args):
    names = ("vae", "text_encoder", "base", "outlined", "pastel") if args.personalized else (
        "vae", "text_encoder", "base", "motion", "motion_config", "outlined", "pastel", "adapter")
    root = checkpoints(args, *names)
    if args.json and Path(args.json).is_dir():
        raise ValueError(f"--json {args.json} is a folder; give a file name")
    import json

    from minianimate.toy.evaluation import eval_table, format_personalized, format_table, personalized_table

    if args.personalized:
        table = personalized_table(root=root, seeds=args.seeds, steps=args.steps, seed=args.seed)
        print(format_personalized(table))
    else:
        table = eval_table(root=root, per_row=args.per_row, steps=args.steps, seed=args.seed)
        print(format_table(table))
    if args.json:
        from minianimate.toy.provenance import provenance

        rows = [{k: v for k, v in row.items() if k not in ("clips", "images")} for row in table]  # figures only
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"provenance": provenance(*names, root=root), "rows": rows}, indent=2))


def _demo(args):
    root = checkpoints(args, "vae", "text_encoder", "base", "motion", "motion_config", "outlined", "pastel",
                       "adapter")
    out, device = out_folder(args.out), pick_device(args.device)
    from minianimate.toy.demo import run_demo

    run_demo(out, root=root, device=device, dtype=args.dtype)


def _ablate(args):
    from minianimate.toy.ablations import run_ablation

    run_ablation(args.name, args.quick, args.resume, checkpoints(args), out_folder(args.out) if args.out else None)


def _convert(args):
    from minianimate.pretrained import convert_motion_module

    if not Path(args.source).exists():
        raise FileNotFoundError(f"{args.source} not found: give a motion-module file or MotionAdapter folder")
    if Path(args.out).exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists; remove it or add --overwrite")
    print(f"wrote {convert_motion_module(args.source, args.out, args.to, args.heads, args.groups)}")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m minianimate", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    where = dict(default=None, metavar="DIR", help="checkpoint folder (default: the package's shipped "
                                                   "data_samples/checkpoints, wherever you run)")

    def command(name, func, help):
        p = sub.add_parser(name, help=help)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        p.set_defaults(func=func)
        return p

    p = command("make-data", _make_data, "render a ShapeWorld dataset in the WebVid layout")
    p.add_argument("--out", required=True, help="output folder (empty, or --overwrite)")
    p.add_argument("--videos", type=count(0), default=48, help="number of clips")
    p.add_argument("--images", type=count(0), default=96, help="number of still images")
    p.add_argument("--seed", type=count(0), default=0)
    p.add_argument("--frames", type=count(1), default=16, help="frames per clip")
    p.add_argument("--style", choices=["outlined", "pastel"], default=None)
    p.add_argument("--camera", choices=["zoom-in", "zoom-out", "roll"], default=None,
                   help="make camera-motion clips (augmented still clips) instead of moving shapes")
    p.add_argument("--overwrite", action="store_true", help="replace the dataset already in --out")

    p = command("train", _train, "train a stage: vae, base, outlined, pastel (toy T2I), look (a training-only "
                "variant), adapter, motion, motion-lora")
    precision(p)
    p.add_argument("stage")
    p.add_argument("--config", required=True, help="yaml file (see configs/)")
    p.add_argument("--out", default=None, metavar="DIR", help="checkpoint folder the stage starts from and exports "
                   "to (default: the package's shipped data_samples/checkpoints)")
    p.add_argument("--run", default=None, metavar="DIR", help="training checkpoints (default: runs/<stage>-<config "
                   "file's stem>)")
    p.add_argument("--resume", action="store_true", help="continue the run folder's checkpoint (refused if it was "
                   "saved with another config but in steps)")
    p.add_argument("--steps", type=int, default=None, help="train to this step instead of the config's (with "
                   "--resume: continue a run further)")

    p = command("sample-images", _sample_images, "images from the shipped toy text-to-image models")
    precision(p)
    p.add_argument("--model", default="base", help="base, outlined, pastel or a diffusers UNet folder")
    p.add_argument("--prompt", required=True)
    p.add_argument("--n", type=count(1), default=8)
    p.add_argument("--seed", type=count(0), default=0)
    p.add_argument("--steps", type=count(1, 1000), default=25)
    p.add_argument("--guidance", type=number(0), default=7.5, help="classifier-free guidance (0: unconditional, "
                   "1: none)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--checkpoints", **where)

    p = command("generate", _generate, "text -> animation with the shipped toy models and motion module")
    precision(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", help="e.g. 'a red circle moving left'")
    what.add_argument("--prompt-travel", metavar="F:PROMPT|F:PROMPT", help="a prompt per keyframe, interpolated, "
                      "e.g. '0:a red circle moving left|15:a blue circle moving left'")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--model", default="base", help="base, outlined, pastel, a diffusers UNet folder or a LoRA file")
    p.add_argument("--frames", type=count(1), default=16)
    p.add_argument("--steps", type=count(1, 1000), default=25)
    p.add_argument("--guidance", type=number(0), default=7.5, help="classifier-free guidance (0: unconditional, "
                   "1: none)")
    p.add_argument("--seed", type=count(0), default=0)
    p.add_argument("--adapter-scale", type=number(), default=0.0, help="domain adapter LoRA scale (1 = watermark)")
    p.add_argument("--motion-lora", action="append", default=[], metavar="NAME_OR_PATH[:SCALE]",
                   help="a MotionLoRA (repeat to mix), e.g. zoom-in:0.8")
    p.add_argument("--context", type=count(1), default=None, help="context window length (default: 16 for "
                   "--frames over 16)")
    p.add_argument("--overlap", type=count(0), default=None, help="window overlap (default: half of --context "
                   "continued, a quarter uniform or looped)")
    p.add_argument("--context-schedule", choices=["continued", "centred", "uniform", "looped"], default="continued",
                   help="continued: each window continues the one before (one path); centred: the same from the "
                   "middle window outwards; uniform: windows side by side; looped: side by side, wrapping the last "
                   "frames into the first (a seamless loop)")
    p.add_argument("--candidates", type=count(1), default=None, help="a long clip's path planning: each window "
                   "drawn up to N times until it moves the prompted way, the first with room (default 4; 1: off)")
    p.add_argument("--free-init", type=count(0, 5), default=0, metavar="N", help="FreeInit iterations (0: off; "
                   "the community uses 1-3, each costs one more sampling pass)")
    p.add_argument("--free-init-filter", choices=["butterworth", "gaussian", "ideal"], default="butterworth")
    p.add_argument("--control", default=None, metavar="FILE", help="ControlNet condition: a silhouette video "
                   "(.mp4/.gif, white on black, one frame per generated frame) or one image (.png) for all")
    p.add_argument("--control-scale", type=number(0), default=1.0, help="ControlNet residual scale")
    p.add_argument("--out", required=True, help="FILE.mp4, FILE.gif or FILE.png (contact sheet)")
    p.add_argument("--checkpoints", **where)

    p = command("eval", _eval, "the metric table of the shipped motion module (direction, style, watermark)")
    p.add_argument("--per-row", type=count(1), default=12, help="clips per row")
    p.add_argument("--personalized", action="store_true", help="instead: the personalized T2I models (base, "
                   "outlined, pastel) on every colour x shape prompt: colour, shape, style, whole shape inside, "
                   "clean background")
    p.add_argument("--seeds", type=count(1), default=4, help="--personalized: seeds per prompt (4: 48 images a model)")
    p.add_argument("--steps", type=count(1, 1000), default=25)
    p.add_argument("--seed", type=count(0), default=0)
    p.add_argument("--json", default=None, help="also write the table to this file")
    p.add_argument("--checkpoints", **where)

    p = command("demo", _demo, "the main job on the shipped checkpoints (what `make demo` runs)")
    precision(p)
    p.add_argument("--out", default="outputs", help="folder for figures and animations")
    p.add_argument("--checkpoints", **where)
    p = command("ablate", _ablate, "the paper's ablations: train every arm of NAME, measure it, write its json")
    p.add_argument("name", metavar="NAME", help="an ablation of minianimate/toy/ablations.py (a wrong one lists them)")
    p.add_argument("--quick", action="store_true", help="a few steps and clips, in a temporary folder")
    p.add_argument("--resume", action="store_true", help="continue stopped arms, keep finished ones")
    p.add_argument("--checkpoints", **where)
    p.add_argument("--out", default=None, metavar="DIR", help="folder of NAME.json (default: data_samples/ablations)")
    p = command("convert", _convert, "a motion module to diffusers (MotionAdapter folder) or official (.ckpt)")
    p.add_argument("source", help="motion-module file (.ckpt/.safetensors) or MotionAdapter folder")
    p.add_argument("out", help="output folder (--to diffusers) or .ckpt/.safetensors file (--to official)")
    p.add_argument("--to", choices=["diffusers", "official"], required=True)
    p.add_argument("--heads", type=count(1), default=None, help="attention heads, unless a json beside it says "
                   "(default 8)")
    p.add_argument("--groups", type=count(1), default=None, help="GroupNorm groups (default 32, SD1.5's)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    return parser


def main(argv=None) -> int:
    """Run a command; an error is one line `error: ...` on stderr and exit status 2 (unless --debug)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        args.func(args)
    except Exception as e:
        if "--debug" in argv:
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        if not (isinstance(e, (UsageError, ValueError, OSError)) or type(e).__module__.startswith("minianimate")):
            message = f"{type(e).__name__}: {message} (a bug? --debug shows the traceback)"
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
