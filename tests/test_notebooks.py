"""What a reader of the stored notebooks gets: quick mode by default, outputs from one commit, clean and small."""
import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
DIAGRAM = "assets/stages.png"  # AnimateDiff's three stages, drawn by notebooks/assets/stages_diagram.py
PROGRESS_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+|it/s\]")


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def code_cells(nb: dict) -> list[str]:
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def outputs(nb: dict):
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            yield i, out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_opens_in_quick_mode(path):
    first = code_cells(load(path))[0]
    assert first.startswith("QUICK = True  #"), "the first code cell sets QUICK = True (False: the full run)"
    assert 'os.environ.get("MINIANIMATE_QUICK"), QUICK)' in code_cells(load(path))[1]  # the variable still wins


def test_the_stored_outputs_come_from_one_clean_commit():
    stamps = {p.name: load(p)["metadata"].get("minianimate") for p in NOTEBOOKS}
    assert all(s and s.get("quick") and not s.get("dirty") for s in stamps.values()), stamps
    assert len({s["commit"] for s in stamps.values()}) == 1, f"re-run them all with `make notebooks`: {stamps}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_stored_outputs_are_those_of_the_code_cells_shown(path):
    """The commit the outputs ran on had these code cells (markdown may have been edited since)."""
    commit = load(path)["metadata"]["minianimate"]["commit"]
    ran = subprocess.run(["git", "show", f"{commit}:notebooks/{path.name}"], cwd=ROOT, capture_output=True, text=True)
    if ran.returncode:
        pytest.skip(f"commit {commit[:12]} is not in this clone")
    assert code_cells(json.loads(ran.stdout)) == code_cells(load(path)), "code changed since the run: `make notebooks`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_outputs_hold_no_progress_bars_warnings_or_errors(path):
    for i, out in outputs(load(path)):
        assert out["output_type"] != "error", f"cell {i}: {out.get('ename')}"
        assert not (out["output_type"] == "stream" and out["name"] == "stderr"), f"cell {i}: {''.join(out['text'])}"
        text = "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
        assert not PROGRESS_BAR.search(text) and "Warning" not in text, f"cell {i}: {text[:200]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_notebooks_stay_small(path):
    assert path.stat().st_size < 2_000_000


@pytest.mark.parametrize("path", [*NOTEBOOKS, ROOT / "README.md"], ids=lambda p: p.stem)
def test_no_issue_numbers_a_reader_cannot_look_up(path):
    assert not re.search(r"\bissues? \d", path.read_text(), re.I)


def test_the_stage_diagram_is_in_the_readme_and_the_stage_notebooks():
    assert (ROOT / "notebooks" / DIAGRAM).is_file()
    assert f"notebooks/{DIAGRAM}" in (ROOT / "README.md").read_text()
    for path in NOTEBOOKS:
        if path.name[:2] in ("04", "05", "06", "07", "08"):
            assert f"]({DIAGRAM})" in path.read_text(), path.name


def test_the_readme_opens_with_pictures_of_what_the_models_do():
    readme = (ROOT / "README.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme.split("## Two commands")[0])
    assert any(i.endswith("contact_sheet.png") for i in images) and sum(i.endswith(".gif") for i in images) >= 3
    assert all((ROOT / i).is_file() for i in images), images
    assert sum((ROOT / i).stat().st_size for i in images if i.endswith(".gif")) < 1_500_000


def test_the_glossary_is_in_the_readme_and_notebook_00():
    words = ("ladder", "rung", "arm", "lever", "held-out", "smoke run", "shipped", "aim")
    for text in ((ROOT / "README.md").read_text(), (ROOT / "notebooks" / "00_shapeworld.ipynb").read_text()):
        glossary = text[text.index("Words these notebooks use"):][:4000]
        assert all(f"**{w}" in glossary for w in words), [w for w in words if f"**{w}" not in glossary]
