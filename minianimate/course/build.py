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
"""
import copy
from pathlib import Path

import nbformat

COURSE = Path(__file__).resolve().parents[2] / "course"  # the repository's course/ folder
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUDENT_LINE = "raise NotImplementedError  # your code here"


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


def student_notebook(nb: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """A copy of solution notebook `nb` as students get it: solutions cut, outputs cleared, badge re-pointed."""
    nb = copy.deepcopy(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.source = cut_solutions(cell.source, f"{name}, cell {i}")
            cell.outputs, cell.execution_count = [], None
        else:
            cell.source = cell.source.replace("/blob/main/course/source/", "/blob/main/course/student/")
    return nb


def build(source: Path = COURSE / "source", out: Path = COURSE / "student") -> list[Path]:
    """Write `out/NAME.ipynb` for every `source/NAME.ipynb`; remove student notebooks whose source is gone."""
    sources = sorted(Path(source).glob("*.ipynb"))
    if not sources:
        raise FileNotFoundError(f"no solution notebooks in {source} (run this from a checkout of the repository)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in set(out.glob("*.ipynb")) - {out / p.name for p in sources}:
        stale.unlink()
    for path in sources:
        nbformat.write(student_notebook(nbformat.read(path, as_version=4), path.name), out / path.name)
    return [out / p.name for p in sources]
