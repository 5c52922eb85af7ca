"""A figure a notebook states in its prose is a figure its cells print, or one the files it cites hold.

Every number in a notebook's markdown is looked for, at the precision the prose gives it, in what the notebook
holds: the text of its stored outputs, its code (the settings its cells use), and the files it cites (`configs/`,
`benchmarks/results/`, `data_samples/` jsons and yamls, named anywhere in the notebook). A number found nowhere is a
figure nothing in the notebook backs, which is how prose goes stale when a model is retrained and the cells re-run.
Numbers that are not measurements are left out by rule (section numbers, list markers, notebook numbers, anything
inside `code` or $math$, names such as SD1.5 or 2D) or by the explicit list below. The check is by value, not by
place: a stale figure that happens to equal another number the notebook holds passes; one held nowhere fails.
"""
import json
import re
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CITABLE = ("configs", "benchmarks/results", "data_samples")  # where a cited json or yaml may live

# Numbers a notebook's prose may state without a cell printing them: not measurements. Keep it short and say why.
NOT_MEASURED = {
    "*": {2021: "a paper's year", 2022: "a paper's year", 2023: "a paper's year"},
    "01": {10000: "the sinusoidal encoding's base period, a constant of the formula"},
    "03": {0.18215: "SD1.5's VAE scaling factor, a config value"},
    "12": {4.3: "the size of the SD1.5 download, for the reader", 3.4: "the size of a file the download skips",
           6: "the size of the real weights' export, for the reader"},
}

# A number: digits with optional thousands commas, decimals and exponent, not glued to a word (v2, SD1.5, x0) and
# not part of a version (2.13.0).
NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?:[eE]([-+]?\d+))?(?!\.\d)")
HELD_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
CITED = re.compile(r"[\w./-]*?([\w-]+\.(?:json|yaml))")


def prose_numbers(markdown: str) -> list[tuple[str, float, int, bool]]:
    """(text, value, decimals, percent) of every number the prose states as a figure."""
    text = re.sub(r"```.*?```", " ", markdown, flags=re.S)           # code blocks
    text = re.sub(r"\$\$.*?\$\$|\$[^$\n]+\$", " ", text, flags=re.S)  # math
    text = re.sub(r"`[^`\n]*`", " ", text)                            # inline code
    text = re.sub(r"\]\([^)]*\)|https?://\S+|<[^>]+>", " ", text)      # link targets, addresses, html tags
    text = re.sub(r"Stable Diffusion \d\.\d|WebVid-\d+M", " ", text)     # names: SD 1.5, WebVid-10M
    text = re.sub(r"(?m)^\s*#+\s*[\d.]*\s*(·\s*)?", " ", text)         # heading numbers: '# 03 ·', '## 4.'
    text = re.sub(r"(?m)^\s*\d+\.\s", " ", text)                      # ordered-list markers
    text = re.sub(r"(?i)\b(notebooks?|sections?|rungs?|phases?|stage|items?|chapter)\s+(\d+(,\s*|\s*(and|or|-)\s*)?)+",
                  " ", text)                                          # 'notebook 04', 'sections 5 and 6'
    found = []
    for m in NUMBER.finditer(text):
        after = text[m.end():m.end() + 2]
        if after[:1].isalpha() and not (after[0] == "x" and not after[1:2].isalnum()):
            continue  # 2D, 95th, 16x16 (a size, not a figure); 1.27x (a ratio) is kept
        digits = m.group(1).replace(",", "")
        value = float(digits + (m.group(2) or "")) * 10 ** int(m.group(3) or 0)
        decimals = len(m.group(2) or ".") - 1 - int(m.group(3) or 0)
        found.append((m.group(0), value, decimals, text[m.end():].lstrip()[:1] == "%"))
    return found


def output_text(cell: dict) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append("".join(out["text"]))
        for kind in ("text/plain", "text/html", "text/markdown"):
            parts.append("".join(out.get("data", {}).get(kind, "")))
    return re.sub(r"base64,[A-Za-z0-9+/=]+", " ", "\n".join(parts))


def cited_files(text: str) -> set[Path]:
    """The jsons and yamls under CITABLE that the notebook names (by path or, if unique there, by file name)."""
    candidates = [p for folder in CITABLE for p in (ROOT / folder).rglob("*") if p.suffix in (".json", ".yaml")]
    files = set()
    for m in CITED.finditer(text):
        path, name = m.group(0), m.group(1)
        exact = [p for p in candidates if p.relative_to(ROOT).as_posix().endswith(path.lstrip("./"))]
        by_name = [p for p in candidates if p.name == name]
        files |= set(exact or (by_name if len(by_name) == 1 else []))
    return files


@lru_cache(maxsize=None)
def held(notebook: Path) -> tuple[float, ...]:
    """Every number the notebook's outputs, code and cited files hold (percentages also as fractions and back)."""
    cells = json.loads(notebook.read_text())["cells"]
    source = "\n".join("".join(c["source"]) for c in cells)
    texts = [output_text(c) for c in cells] + ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    texts += [p.read_text() for p in sorted(cited_files(source))]
    values = set()
    for text in texts:
        for m in HELD_NUMBER.finditer(text):
            v = float(m.group(0).replace(",", ""))
            values |= {v, v / 100} if text[m.end():m.end() + 1] == "%" else {v}
            if v <= 1.5:
                values.add(v * 100)
    return tuple(sorted(values))


def unbacked(notebook: Path) -> list[str]:
    """The prose numbers of a notebook that nothing it holds backs, as 'cell N: text'."""
    values = held(notebook)
    allowed = {**NOT_MEASURED["*"], **NOT_MEASURED.get(notebook.name[:2], {})}
    missing = []
    for i, cell in enumerate(json.loads(notebook.read_text())["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        for text, value, decimals, percent in prose_numbers("".join(cell["source"])):
            tolerance = 0.5 * 10.0 ** -max(decimals, 0) + 1e-9
            targets = [value, value / 100] if percent else [value]
            if value in allowed or any(abs(v - t) <= tolerance * (t / value if value else 1)
                                       for t in targets for v in values):
                continue
            missing.append(f"cell {i}: {text}{'%' if percent else ''}")
    return missing


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_in_the_prose_is_backed_by_the_notebook(notebook):
    assert unbacked(notebook) == []


def test_a_figure_the_notebook_does_not_hold_is_found(tmp_path):
    import nbformat

    def notebook(prose: str, printed: str) -> Path:
        cell = nbformat.v4.new_code_cell("print(loss)")
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=printed)]
        path = tmp_path / f"{len(list(tmp_path.iterdir()))}.ipynb"
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(prose), cell]), path)
        return path

    prose = "## 2. Training\n\nAfter 1,500 steps the loss fell to 0.12 and 83% of clips moved (`steps=10` in code)."
    assert unbacked(notebook(prose, "1500 steps: loss 0.1234, direction 0.833")) == []
    assert unbacked(notebook(prose, "1800 steps: loss 0.1234, direction 0.833")) == ["cell 0: 1,500"]
    assert unbacked(notebook(prose, "1500 steps: loss 0.131, direction 0.75")) == ["cell 0: 0.12", "cell 0: 83%"]


if __name__ == "__main__":  # list what each notebook's prose states without backing
    for nb in NOTEBOOKS:
        print(nb.name, unbacked(nb))
