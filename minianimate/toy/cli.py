"""Command line: `python -m minianimate <command> ...` (run with no command to list them).

Every command works on the toy world and its shipped checkpoints, so the CLI belongs to `minianimate.toy`;
`minianimate/__main__.py` only calls `main`.
"""
import argparse
import sys


def _make_data(args):
    from minianimate.toy.datasets import write_dataset

    write_dataset(args.out, videos=args.videos, images=args.images, seed=args.seed,
                  frames=args.frames, style=args.style, camera=args.camera)


def _train(args):
    from minianimate.toy.stages import run_stage

    run_stage(args.stage, args.config, out=args.out, resume=args.resume)


def _sample_images(args):
    from pathlib import Path

    from minianimate.toy.models import load_t2i
    from minianimate.video_io import write_png, contact_sheet

    model = load_t2i(args.model)
    images = model.generate([args.prompt] * args.n, steps=args.steps, guidance=args.guidance, seed=args.seed,
                            progress=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        write_png(out / f"{i:03d}.png", image)
    write_png(out / "contact_sheet.png", contact_sheet(images))
    print(f"wrote {len(images)} images and contact_sheet.png to {out}")


def _generate(args):
    from pathlib import Path

    from minianimate.toy.models import load_pipeline
    from minianimate.video_io import contact_sheet, write_png, write_video

    out = Path(args.out)
    if out.suffix not in (".mp4", ".gif", ".png"):
        raise SystemExit(f"--out must end in .mp4, .gif or .png (a contact sheet of the frames), got {out}")
    pipe = load_pipeline(model=args.model)
    video = pipe.generate(args.prompt, negative_prompt=args.negative_prompt, frames=args.frames, steps=args.steps,
                          guidance=args.guidance, seed=args.seed, adapter_scale=args.adapter_scale,
                          motion_loras=args.motion_lora, context=args.context, overlap=args.overlap)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_png(out, contact_sheet(video)) if out.suffix == ".png" else write_video(out, video)
    print(f"wrote {out} ({len(video)} frames, {video.shape[2]}x{video.shape[1]})")


def _eval(args):
    import json

    from minianimate.toy.evaluation import eval_table, format_table

    table = eval_table(per_row=args.per_row, steps=args.steps, seed=args.seed)
    print(format_table(table))
    if args.json:
        rows = [{k: v for k, v in row.items() if k != "clips"} for row in table]  # figures only
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


def _demo(args):
    from minianimate.toy.demo import run_demo

    run_demo(args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minianimate", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("make-data", help="render a ShapeWorld dataset in the WebVid layout")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--videos", type=int, default=48, help="number of clips")
    p.add_argument("--images", type=int, default=96, help="number of still images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=16, help="frames per clip")
    p.add_argument("--style", choices=["outlined", "pastel"], default=None)
    p.add_argument("--camera", choices=["zoom-in", "zoom-out", "roll"], default=None,
                   help="make camera-motion clips (augmented still clips) instead of moving shapes")
    p.set_defaults(func=_make_data)

    p = sub.add_parser("train", help="train a stage: vae, base, outlined, pastel (toy T2I), adapter, motion")
    p.add_argument("stage")
    p.add_argument("--config", required=True, help="yaml file (see configs/)")
    p.add_argument("--out", default="data_samples/checkpoints", help="where the trained checkpoint is exported")
    p.add_argument("--resume", action="store_true", help="continue from runs/<stage>/ if a checkpoint is there")
    p.set_defaults(func=_train)

    p = sub.add_parser("sample-images", help="images from the shipped toy text-to-image models")
    p.add_argument("--model", default="base", help="base, outlined, pastel or a diffusers UNet folder")
    p.add_argument("--prompt", required=True)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_sample_images)

    p = sub.add_parser("generate", help="text -> animation with the shipped toy models and motion module")
    p.add_argument("--prompt", required=True, help="e.g. 'a red circle moving left'")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--model", default="base", help="base, outlined, pastel, a diffusers UNet folder or a LoRA file")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--adapter-scale", type=float, default=0.0, help="domain adapter LoRA scale (1 = watermark)")
    p.add_argument("--motion-lora", action="append", default=[], metavar="NAME_OR_PATH[:SCALE]",
                   help="a MotionLoRA (repeat to mix), e.g. zoom-in:0.8")
    p.add_argument("--context", type=int, default=None, help="sliding context window length (long clips)")
    p.add_argument("--overlap", type=int, default=None, help="window overlap (default: a quarter of --context)")
    p.add_argument("--out", required=True, help="FILE.mp4, FILE.gif or FILE.png (contact sheet)")
    p.set_defaults(func=_generate)

    p = sub.add_parser("eval", help="the metric table of the shipped motion module (direction, style, watermark)")
    p.add_argument("--per-row", type=int, default=12, help="clips per row")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the table to this file")
    p.set_defaults(func=_eval)

    p = sub.add_parser("demo", help="the main job on the shipped checkpoints (what `make demo` runs)")
    p.add_argument("--out", default="outputs", help="folder for figures and animations")
    p.set_defaults(func=_demo)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
