"""Command line: `python -m minianimate <command> ...` (run with no command to list them)."""
import argparse
import sys


def _make_data(args):
    from minianimate.shapeworld import write_dataset

    write_dataset(args.out, videos=args.videos, images=args.images, seed=args.seed,
                  frames=args.frames, style=args.style, camera=args.camera)


def _train(args):
    from minianimate.train_t2i import run_stage

    run_stage(args.stage, args.config, out=args.out, resume=args.resume)


def _sample_images(args):
    from pathlib import Path

    from minianimate.t2i import load_t2i
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


def _demo(args):
    from minianimate.demo import run_demo

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

    p = sub.add_parser("train", help="train a stage: vae, base (toy T2I), ...")
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
