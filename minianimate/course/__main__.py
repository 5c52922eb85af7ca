"""The course's commands: `python -m minianimate.course build [--out DIR --github URL]` and
`python -m minianimate.course grade PATH... [--kernel NAME]`."""
import argparse
import sys
from pathlib import Path

from minianimate.course.build import COURSE, build, colab_folder
from minianimate.course.grader import grade_notebook, notebook_exercises, score_table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minianimate.course")
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("build", help="write the student notebooks (the solutions cut out) from the solution "
                                             "notebooks in course/source/")
    make.add_argument("--out", type=Path, default=COURSE / "student",
                      help="the folder to write them to (default course/student/), e.g. a checkout of the "
                           "repository you hand out: it gets the student notebooks only")
    make.add_argument("--github", metavar="URL", help="the GitHub folder --out is pushed to, as your browser shows it "
                                                      "(https://github.com/ORG/REPO/tree/BRANCH/FOLDER): the Colab "
                                                      "badges open the notebooks from there")
    grade = commands.add_parser("grade", help="run students' notebooks, then every hidden check; print a score table")
    grade.add_argument("paths", nargs="+", type=Path, help="notebooks, or folders of them")
    grade.add_argument("--kernel", default="python3", help="the Jupyter kernel to run them in; it must import "
                                                           "minianimate (default python3)")
    args = parser.parse_args(argv)
    try:
        return _build(args) if args.command == "build" else _grade(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _build(args) -> int:
    colab = colab_folder(args.github) if args.github else None
    for path in build(out=args.out, colab=colab):
        print(f"wrote {path}")
    return 0


def _grade(args) -> int:
    notebooks = [p for path in args.paths for p in (sorted(path.glob("*.ipynb")) if path.is_dir() else [path])]
    if not notebooks:
        raise ValueError(f"no notebooks in {', '.join(map(str, args.paths))}")
    for path in notebooks:
        if not path.is_file():
            raise ValueError(f"{path}: no such notebook")
        notebook_exercises(path)
    _check_kernel(args.kernel)
    graded = {}
    for path in notebooks:
        print(f"grading {path} ...", file=sys.stderr)
        graded[str(path)] = grade_notebook(path, kernel=args.kernel)
    print(score_table(graded))
    return 0


def _check_kernel(name: str) -> None:
    """Refuse a kernel name Jupyter does not know, naming the ones it does and how to register this Python."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    specs = KernelSpecManager()
    try:
        specs.get_kernel_spec(name)
    except NoSuchKernel:
        known = ", ".join(sorted(specs.find_kernel_specs())) or "none"
        raise ValueError(f"no Jupyter kernel called {name!r} (there are: {known}); register this Python as one: "
                         f"{sys.executable} -m ipykernel install --user --name {name}") from None


if __name__ == "__main__":
    sys.exit(main())
