"""Command line: `python -m minianimate <command> ...` (run with no command to list them)."""
import argparse
import sys


def _make_data(args):
    from minianimate.shapeworld import write_dataset

    write_dataset(args.out, videos=args.videos, images=args.images, seed=args.seed,
                  frames=args.frames, style=args.style, camera=args.camera)


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
