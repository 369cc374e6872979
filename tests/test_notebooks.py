"""Static checks on the chapter notebooks that nbval alone does not make.

nbval passes a notebook committed without outputs (there is nothing to compare), so this test
fails when any code cell was never executed. It also keeps the book's table of contents and the
chapter files in step, and enforces the conventions of CONTRIBUTING.md.
"""

import json
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"
NOTEBOOKS = sorted(CHAPTERS.glob("*.ipynb"))
MAX_CODE_LINE = 88  # the site shows code without a horizontal scroll bar up to this width


def figure_problems(number: int, cell: nbformat.NotebookNode) -> list[str]:
    """A cell that draws a figure needs alt text that describes it (not a file name)."""
    if not any("image/png" in output.get("data", {}) for output in cell.get("outputs", [])):
        return []
    alt = cell.metadata.get("mystnb", {}).get("image", {}).get("alt", "")
    if len(alt.split()) < 5:
        return [f"code cell {number} draws a figure without alt text (metadata mystnb.image.alt)"]
    return []


def notebook_problems(notebook: nbformat.NotebookNode) -> list[str]:
    """Everything wrong with one notebook's stored state, as readable messages."""
    problems = []
    if notebook.metadata.get("kernelspec", {}).get("name") != "python3":
        problems.append("kernelspec is not 'python3'")
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code" and cell.source.strip()]
    counts = [cell.execution_count for cell in code_cells]
    for number, cell in enumerate(code_cells, start=1):
        first_line = cell.source.strip().splitlines()[0]
        if cell.execution_count is None:
            problems.append(f"code cell {number} ({first_line!r}) has no execution count: run `make execute`")
        if re.search(r"sys\.path\.(append|insert)", cell.source):
            problems.append(f"code cell {number} edits sys.path; import the installed helpers package")
        if re.search(r"^\s*[!%]\s*pip\s+install", cell.source, re.M):
            problems.append(f"code cell {number} installs packages")
        if re.search(r"#\s*NBVAL_", cell.source):
            problems.append(f"code cell {number} uses an nbval comment marker; use a cell tag")
        if "raise_on_difference=False" in cell.source:
            problems.append(f"code cell {number} turns off raising: a proof must fail when equality fails")
        if "set_num_threads" in cell.source:
            problems.append(f"code cell {number} sets the thread count; seed_everything does that")
        long_lines = [line for line in cell.source.splitlines() if len(line) > MAX_CODE_LINE]
        if long_lines:
            problems.append(f"code cell {number} has {len(long_lines)} line(s) over {MAX_CODE_LINE} characters")
        problems += figure_problems(number, cell)
    if None not in counts and counts != list(range(1, len(counts) + 1)):
        problems.append(f"execution counts are not 1, 2, 3, …: {counts}; re-run top to bottom")
    if code_cells and "seed_everything(" not in code_cells[0].source:
        problems.append("the first code cell does not call seed_everything")
    return problems


def toc_files() -> set[str]:
    return set(re.findall(r"file:\s*(\S+)", (ROOT / "_toc.yml").read_text())) | {
        re.search(r"root:\s*(\S+)", (ROOT / "_toc.yml").read_text()).group(1)
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_executed_and_follows_conventions(path):
    assert notebook_problems(nbformat.read(path, as_version=4)) == []


def test_every_chapter_is_in_the_table_of_contents_and_back():
    listed = toc_files()
    chapters = {f"chapters/{p.stem}" for p in CHAPTERS.iterdir() if p.suffix in {".ipynb", ".md"}}
    assert chapters - listed == set(), "chapters missing from _toc.yml"
    missing = {f for f in listed if not any((ROOT / f).with_suffix(s).exists() for s in (".ipynb", ".md"))}
    assert missing == set(), "_toc.yml lists files that do not exist"


def make_notebook(*sources: str, executed: bool = True) -> nbformat.NotebookNode:
    cells = [nbformat.v4.new_code_cell(s, execution_count=(i + 1 if executed else None)) for i, s in enumerate(sources)]
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return notebook


def test_checker_passes_a_good_notebook():
    assert notebook_problems(make_notebook("seed_everything(0)", "x = 1")) == []


def test_checker_catches_an_unexecuted_notebook():
    problems = notebook_problems(make_notebook("seed_everything(0)", "x = 1", executed=False))
    assert any("no execution count" in p for p in problems)


@pytest.mark.parametrize(
    "source,fragment",
    [
        ("import sys; sys.path.insert(0, '..')", "sys.path"),
        ("!pip install torch", "installs packages"),
        ("# NBVAL_IGNORE_OUTPUT\nprint(1)", "comment marker"),
        ("compare_with_torch(a, b, (2, 3), raise_on_difference=False)", "turns off raising"),
        ("torch.set_num_threads(1)", "thread count"),
        ("x = " + "1 + " * 30 + "1", "over 88 characters"),
    ],
)
def test_checker_catches_convention_breaks(source, fragment):
    problems = notebook_problems(make_notebook("seed_everything(0)", source))
    assert any(fragment in p for p in problems)


def test_checker_wants_alt_text_on_every_figure():
    notebook = make_notebook("seed_everything(0)", "plt.show()")
    notebook.cells[1].outputs = [nbformat.v4.new_output("display_data", data={"image/png": "iVBOR"})]
    assert any("without alt text" in p for p in notebook_problems(notebook))
    notebook.cells[1].metadata["mystnb"] = {"image": {"alt": "fig-bn-noise.png"}}
    assert any("without alt text" in p for p in notebook_problems(notebook))
    notebook.cells[1].metadata["mystnb"] = {"image": {"alt": "Loss against step for four norms"}}
    assert notebook_problems(notebook) == []


def test_checker_catches_out_of_order_counts():
    notebook = make_notebook("seed_everything(0)", "x = 1")
    notebook.cells[1].execution_count = 5
    assert any("not 1, 2, 3" in p for p in notebook_problems(notebook))


def test_notebooks_are_valid_json_and_small():
    for path in NOTEBOOKS:
        json.loads(path.read_text())
        assert path.stat().st_size < 3_000_000, f"{path.name} is over 3 MB"
