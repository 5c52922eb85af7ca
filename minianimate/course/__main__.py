"""The course's commands: `python -m minianimate.course build` and `python -m minianimate.course grade PATH...`."""
import argparse
import sys
from pathlib import Path

from minianimate.course.build import build
from minianimate.course.grader import grade_notebook, notebook_exercises, score_table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minianimate.course")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="write course/student/*.ipynb from the solution notebooks in course/source/")
    grade = commands.add_parser("grade", help="run students' notebooks, then every hidden check; print a score table")
    grade.add_argument("paths", nargs="+", type=Path, help="notebooks, or folders of them")
    args = parser.parse_args(argv)

    if args.command == "build":
        for path in build():
            print(f"wrote {path}")
        return 0
    notebooks = [p for path in args.paths for p in (sorted(path.glob("*.ipynb")) if path.is_dir() else [path])]
    try:
        if not notebooks:
            raise ValueError(f"no notebooks in {', '.join(map(str, args.paths))}")
        for path in notebooks:
            if not path.is_file():
                raise ValueError(f"{path}: no such notebook")
            notebook_exercises(path)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    graded = {}
    for path in notebooks:
        print(f"grading {path} ...", file=sys.stderr)
        graded[str(path)] = grade_notebook(path)
    print(score_table(graded))
    return 0


if __name__ == "__main__":
    sys.exit(main())
