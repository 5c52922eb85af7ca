"""Student notebooks from the solution notebooks: one source, the solutions cut out.

In `course/source/*.ipynb` each solution sits between two marker lines, indented like the code around it:

    def attention(q, k, v):
        ### BEGIN SOLUTION
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        return scores.softmax(dim=-1) @ v
        ### END SOLUTION

The student notebook (`course/student/`, same name) has `raise NotImplementedError  # your code here` in its
place, no outputs, and its Colab badge pointing at itself. `python -m minianimate.course build` (or
`make exercises`) rewrites all of them; tests/test_course.py fails when a committed one differs from what it writes.
`build --out DIR --github URL` writes the same student set into another folder (a checkout of the repository a
teacher hands out), its Colab badges opening the notebooks from that repository's folder URL.
"""
import copy
import re
from pathlib import Path

import nbformat

COURSE = Path(__file__).resolve().parents[2] / "course"  # the repository's course/ folder
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUDENT_LINE = "raise NotImplementedError  # your code here"
# A solution notebook's Colab badge, up to the notebook's name; and a GitHub folder as a browser shows it.
SOURCE_BADGE = re.compile(r"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/[\w.-]+/course/source/")
GITHUB_FOLDER = re.compile(r"https://github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?(?:/tree/([\w.-]+)((?:/[\w.-]+)*))?/?")


def cut_solutions(source: str, where: str = "cell") -> str:
    """The code with each marked solution replaced by one `raise NotImplementedError` line at its indentation."""
    lines, start = [], None
    for n, line in enumerate(source.splitlines(), 1):
        marker = line.strip()
        if marker == BEGIN:
            if start:
                raise ValueError(f"{where}, line {n}: {BEGIN} inside the solution opened at line {start}")
            start = n
            lines.append(line[: len(line) - len(line.lstrip())] + STUDENT_LINE)
        elif marker == END:
            if not start:
                raise ValueError(f"{where}, line {n}: {END} without a {BEGIN} before it")
            start = None
        elif not start:
            lines.append(line)
    if start:
        raise ValueError(f"{where}, line {start}: {BEGIN} without an {END}")
    return "\n".join(lines)


def colab_folder(github: str) -> str:
    """The Colab address of a GitHub folder: 'https://github.com/uni/course/tree/main/notebooks' ->
    'https://colab.research.google.com/github/uni/course/blob/main/notebooks/' (no /tree/...: main's root folder)."""
    match = GITHUB_FOLDER.fullmatch(github)
    if not match:
        raise ValueError(f"--github {github!r} is not a GitHub folder address; expected https://github.com/ORG/REPO or "
                         f"https://github.com/ORG/REPO/tree/BRANCH/FOLDER, as your browser shows the folder")
    repo, branch, folder = match[1], match[2] or "main", (match[3] or "").strip("/")
    return f"https://colab.research.google.com/github/{repo}/blob/{branch}/" + (f"{folder}/" if folder else "")


def student_notebook(nb: nbformat.NotebookNode, name: str, colab: str | None = None) -> nbformat.NotebookNode:
    """A copy of solution notebook `nb` as students get it: solutions cut, outputs cleared, the Colab badge
    re-pointed at `colab` + name (a folder's Colab address; default: course/student/ of the badge's repository)."""
    nb = copy.deepcopy(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.source = cut_solutions(cell.source, f"{name}, cell {i}")
            cell.outputs, cell.execution_count = [], None
        else:
            cell.source = SOURCE_BADGE.sub(lambda m: colab or m[0].replace("/course/source/", "/course/student/"),
                                           cell.source)
    return nb


def build(source: Path = COURSE / "source", out: Path = COURSE / "student", colab: str | None = None) -> list[Path]:
    """Write `out/NAME.ipynb` for every `source/NAME.ipynb`, badges pointing at `colab` (see `student_notebook`).
    Only in the repository's own course/student/ are student notebooks whose source is gone removed."""
    sources, out = sorted(Path(source).glob("*.ipynb")), Path(out)
    if not sources:
        raise FileNotFoundError(f"no solution notebooks in {source} (run this from a checkout of the repository)")
    if out.resolve() == Path(source).resolve():
        raise ValueError(f"--out {out} is the solution folder: the student notebooks would overwrite the solutions; "
                         f"choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() == (COURSE / "student").resolve():
        for stale in set(out.glob("*.ipynb")) - {out / p.name for p in sources}:
            stale.unlink()
    for path in sources:
        nbformat.write(student_notebook(nbformat.read(path, as_version=4), path.name, colab), out / path.name)
    return [out / p.name for p in sources]
