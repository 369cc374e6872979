"""Write the participant notebooks: every chapter without its worked solutions, outputs cleared.

Usage: python tools/make_workshop.py --out workshop chapters/*.ipynb   (what `make workshop` runs)

The book's exercise convention (CONTRIBUTING.md) puts a worked solution between a Markdown cell
holding a ```{solution-start} <label>``` directive and one holding ```{solution-end}```. In the
copy, everything from the solution-start directive to the solution-end directive (the directives,
the explanation and the solution's code cells) is replaced by one empty code cell whose only line
is a prompt naming the exercise. Markdown before the start directive or after the end directive,
in the same cells, is kept. Every output and execution count is cleared.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

# A MyST directive fence: three or more backticks or colons, then {name}; the closing fence.
START = re.compile(
    r"^(?P<fence>`{3,}|:{3,})\{solution-start\}\s*(?P<label>\S*)[^\n]*\n(?P<body>.*?)^(?P=fence)[ \t]*$\n?", re.M | re.S
)
END = re.compile(r"^(?P<fence>`{3,}|:{3,})\{solution-end\}[^\n]*\n(?:.*?)^(?P=fence)[ \t]*$\n?", re.M | re.S)
EXERCISE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{exercise\}[^\n]*\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S)
EXERCISE_BLOCK = re.compile(
    r"^(?P<fence>`{3,}|:{3,})\{exercise\}[^\n]*\n(?P<body>.*?)^(?P=fence)[ \t]*$\n?", re.M | re.S
)
LABEL = re.compile(r"^:label:\s*(\S+)", re.M)

PROMPT = "# Exercise {label}: your solution here.\n"


@dataclass
class Solution:
    """One worked solution of a notebook: its label and the cells (indices) it spans."""

    label: str
    start: int  # index of the cell holding solution-start
    end: int  # index of the cell holding solution-end


class ConventionError(ValueError):
    """The notebook does not follow the exercise convention of CONTRIBUTING.md."""


def exercise_labels(notebook: nbformat.NotebookNode) -> list[str]:
    """The labels of the notebook's exercise directives, in order."""
    labels = []
    for cell in notebook.cells:
        if cell.cell_type != "markdown":
            continue
        for match in EXERCISE.finditer(cell.source):
            label = LABEL.search(match.group("body"))
            labels.append(label.group(1) if label else "")
    return labels


def find_solutions(notebook: nbformat.NotebookNode) -> list[Solution]:
    """The worked solutions, checked to be well formed (start, then end, never nested)."""
    solutions, open_start, open_label = [], None, None
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "markdown":
            if cell.cell_type == "code" and ("{solution-start}" in cell.source or "{solution-end}" in cell.source):
                raise ConventionError(f"cell {index}: a solution directive in a code cell")
            continue
        starts, ends = list(START.finditer(cell.source)), list(END.finditer(cell.source))
        if len(starts) + len(ends) > 1:
            raise ConventionError(
                f"cell {index}: more than one solution directive in one cell; each sits in its own cell"
            )
        if starts:
            if open_start is not None:
                raise ConventionError(
                    f"cell {index}: solution-start of {starts[0]['label']} before the end of {open_label}"
                )
            open_start, open_label = index, starts[0].group("label")
        elif ends:
            if open_start is None:
                raise ConventionError(f"cell {index}: solution-end without a solution-start")
            solutions.append(Solution(open_label, open_start, index))
            open_start = None
        elif "{solution-start}" in cell.source or "{solution-end}" in cell.source:
            raise ConventionError(f"cell {index}: a solution directive that is not a well-formed fenced directive")
    if open_start is not None:
        raise ConventionError(f"cell {open_start}: solution-start of {open_label} is never ended")
    return solutions


def participant_copy(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of `notebook` with each worked solution replaced by a prompt cell, outputs cleared."""
    solutions = find_solutions(notebook)
    result = nbformat.v4.new_notebook(metadata=copy.deepcopy(notebook.metadata))
    by_start = {s.start: s for s in solutions}
    index = 0
    while index < len(notebook.cells):
        cell = notebook.cells[index]
        solution = by_start.get(index)
        if solution is None:
            result.cells.append(_cleared(cell))
            index += 1
            continue
        before = notebook.cells[solution.start].source[: START.search(notebook.cells[solution.start].source).start()]
        end_source = notebook.cells[solution.end].source
        after = end_source[END.search(end_source).end() :]
        if before.strip():
            result.cells.append(nbformat.v4.new_markdown_cell(before.rstrip() + "\n"))
        result.cells.append(nbformat.v4.new_code_cell(PROMPT.format(label=solution.label)))
        if after.strip():
            result.cells.append(nbformat.v4.new_markdown_cell(after.strip() + "\n"))
        index = solution.end + 1
    for number, cell in enumerate(result.cells):  # unique ids, as nbformat 4.5 requires
        cell["id"] = f"cell-{number}"
    nbformat.validate(result)
    return result


def plain_exercise(source: str) -> str:
    """Markdown with each exercise directive rewritten as plain Markdown Jupyter shows well."""

    def rewrite(match: re.Match) -> str:
        body = match.group("body")
        label = LABEL.search(body)
        text = "\n".join(line for line in body.splitlines() if not re.match(r"^:\w[\w-]*:", line)).strip()
        return f"**Exercise {label.group(1) if label else ''}.** {text}\n"

    return EXERCISE_BLOCK.sub(rewrite, source)


def _cleared(cell: nbformat.NotebookNode) -> nbformat.NotebookNode:
    cell = copy.deepcopy(cell)
    if cell.cell_type == "code":
        cell.outputs = []
        cell.execution_count = None
    cell.metadata.pop("execution", None)
    if cell.cell_type == "markdown":
        cell.source = plain_exercise(cell.source)
    return cell


def write_workshop(paths: list[Path], out: Path) -> list[Path]:
    """Write one participant copy per notebook into `out`; return the written paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        target = out / path.name
        nbformat.write(participant_copy(notebook), target)
        written.append(target)
    return written


def run_until_first_exercise(path: Path, timeout: int = 600) -> int:
    """Execute the cells of notebook `path` that come before its first exercise; return their count.

    Raises nbclient's CellExecutionError when a cell fails (cells tagged raises-exception may
    raise, as on the site and in nbval).
    """
    import nbclient  # only needed here

    notebook = nbformat.read(path, as_version=4)
    first = next(
        (
            i
            for i, c in enumerate(notebook.cells)
            if c.cell_type == "markdown" and (EXERCISE.search(c.source) or "**Exercise " in c.source)
        ),
        len(notebook.cells),
    )
    notebook.cells = notebook.cells[:first]
    client = nbclient.NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    return sum(1 for c in notebook.cells if c.cell_type == "code")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("workshop"))
    parser.add_argument(
        "--run-until-exercise",
        action="store_true",
        help="instead of writing copies, execute each given notebook up to its first exercise",
    )
    args = parser.parse_args(argv)
    if args.run_until_exercise:
        for path in args.notebooks:
            print(f"{path}: {run_until_first_exercise(path)} code cells before the first exercise ran")
        return 0
    try:
        written = write_workshop(args.notebooks, args.out)
    except ConventionError as error:
        print(f"make_workshop: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
