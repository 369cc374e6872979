"""Write the participant notebooks: every chapter without its worked solutions, outputs cleared.

Usage: python tools/make_workshop.py --out workshop chapters/*.ipynb   (what `make workshop` runs)

The book's exercise convention (CONTRIBUTING.md) puts a worked solution between a Markdown cell
holding a ```{solution-start} <label>``` directive and one holding ```{solution-end}```. In the
copy, everything from the solution-start directive to the solution-end directive (the directives,
the explanation and the solution's code cells) is replaced by one empty code cell whose only line
is a prompt naming the exercise. Markdown before the start directive or after the end directive,
in the same cells, is kept. Every output and execution count is cleared.

Participants open the copies in plain Jupyter, which renders no MyST. So before the outputs are
cleared, every MyST role and directive becomes plain Markdown: a `{glue:text}` role becomes the
value the chapter stored, `{ref}`/`{numref}`/`{doc}`/`{eq}` become the words they stand for (section
titles, "Exercise ex-...", figure captions, equation numbers written as `\tag`s), citations become
"Author (year)", a `{math}` directive becomes a `$$` block, an exercise becomes bold plain text,
and `(label)=` targets go.

A copy a participant has edited is never overwritten: each copy records a fingerprint of the
sources it was written with, and a copy whose sources no longer match is kept, with a message.
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
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


def participant_copy(notebook: nbformat.NotebookNode, book: Book | None = None) -> nbformat.NotebookNode:
    """A copy of `notebook` with each worked solution replaced by a prompt cell, MyST made plain
    Markdown (with the glued values this notebook stored), outputs cleared."""
    solutions = find_solutions(notebook)
    flatten = MystFlattener(notebook, book or Book())
    result = nbformat.v4.new_notebook(metadata=copy.deepcopy(notebook.metadata))
    by_start = {s.start: s for s in solutions}
    index = 0
    while index < len(notebook.cells):
        cell = notebook.cells[index]
        solution = by_start.get(index)
        if solution is None:
            result.cells.append(_cleared(cell, flatten))
            index += 1
            continue
        before = notebook.cells[solution.start].source[: START.search(notebook.cells[solution.start].source).start()]
        end_source = notebook.cells[solution.end].source
        after = end_source[END.search(end_source).end() :]
        if before.strip():
            result.cells.append(nbformat.v4.new_markdown_cell(flatten(before.rstrip() + "\n")))
        result.cells.append(nbformat.v4.new_code_cell(PROMPT.format(label=solution.label)))
        if after.strip():
            result.cells.append(nbformat.v4.new_markdown_cell(flatten(after.strip() + "\n")))
        index = solution.end + 1
    for number, cell in enumerate(result.cells):  # unique ids, as nbformat 4.5 requires
        cell["id"] = f"cell-{number}"
    result.metadata["workshop_copy"] = {"fingerprint": fingerprint(result)}
    nbformat.validate(result)
    return result


def fingerprint(notebook: nbformat.NotebookNode) -> str:
    """A hash of the cells' sources: what a participant changes when they edit a copy."""
    return hashlib.sha256("\x00".join(cell.source for cell in notebook.cells).encode()).hexdigest()


def is_edited(path: Path) -> bool:
    """True when the copy at `path` was changed since make_workshop wrote it (or is not a copy)."""
    notebook = nbformat.read(path, as_version=4)
    recorded = notebook.metadata.get("workshop_copy", {}).get("fingerprint")
    return recorded != fingerprint(notebook)


# --- MyST to plain Markdown ------------------------------------------------------------------

ROLE = re.compile(r"\{(?P<role>[a-z]+(?::[a-z]+)?)\}`(?P<body>[^`]*)`")
TARGET = re.compile(r"^\((?P<label>[\w.-]+)\)=[ \t]*\n", re.M)
HEADING = re.compile(r"^#+\s+(?P<title>.+?)\s*$", re.M)
MATH_BLOCK = re.compile(r"^(?P<fence>`{3,}|:{3,})\{math\}[^\n]*\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S)
ANY_DIRECTIVE = re.compile(
    r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[\w-]+)\}(?P<argument>[^\n]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S
)
EXPLICIT = re.compile(r"^(?P<text>.*?)\s*<(?P<target>[^<>]+)>$", re.S)


class Book:
    """What cross-references need from the whole book: section titles, chapter titles, citations."""

    def __init__(self, chapters: list[Path] = (), bibliography: Path | None = None) -> None:
        self.sections: dict[str, str] = {}
        self.chapters: dict[str, str] = {}
        for path in chapters:
            sources = _markdown_sources(path)
            first = HEADING.search("\n".join(sources))
            self.chapters[path.stem] = first.group("title") if first else path.stem
            self.sections.update(self.sections_of(sources))
        self.citations = _citations(bibliography) if bibliography and bibliography.exists() else {}

    @staticmethod
    def sections_of(sources: list[str]) -> dict[str, str]:
        """Label -> title of each section that a `(label)=` target names, in these Markdown sources."""
        found = {}
        for source in sources:
            for match in TARGET.finditer(source):
                if heading := HEADING.match(source, match.end()):
                    found[match.group("label")] = heading.group("title")
        return found

    def cite(self, keys: str, textual: bool) -> str:
        names = []
        for key in (k.strip() for k in keys.split(",")):
            authors, year = self.citations.get(key, (key, ""))
            names.append(f"{authors} ({year})" if textual else f"{authors}, {year}")
        return "; ".join(names) if textual else f"({'; '.join(names)})"


def _markdown_sources(path: Path) -> list[str]:
    if path.suffix == ".ipynb":
        return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]
    return [path.read_text()]


def _citations(bibliography: Path) -> dict[str, tuple[str, str]]:
    """BibTeX key -> ("Wu and He", "2018"), read with two regular expressions (the book's .bib is plain)."""
    found = {}
    for entry in re.split(r"^@", bibliography.read_text(), flags=re.M)[1:]:
        key = re.match(r"\w+\{([^,]+),", entry)
        authors = re.search(r"author\s*=\s*\{(.*?)\},?\s*$", entry, re.M)
        year = re.search(r"year\s*=\s*\{?(\d{4})", entry)
        if not (key and authors and year):
            continue
        surnames = [a.split(",")[0].strip().strip("{}") for a in authors.group(1).split(" and ")]
        text = " and ".join(surnames) if len(surnames) <= 2 else f"{surnames[0]} et al."
        found[key.group(1)] = (text, year.group(1))
    return found


class MystFlattener:
    """Rewrites one notebook's MyST Markdown as plain Markdown (see the module docstring)."""

    def __init__(self, notebook: nbformat.NotebookNode, book: Book) -> None:
        self.book = book
        own = Book.sections_of([cell.source for cell in notebook.cells if cell.cell_type == "markdown"])
        self.sections = {**book.sections, **own}
        self.glued = stored_glue(notebook)
        self.figures = {
            figure["name"]: figure.get("caption", "")
            for cell in notebook.cells
            if (figure := cell.metadata.get("mystnb", {}).get("figure", {})).get("name")
        }
        self.equations = {}
        for cell in notebook.cells:
            if cell.cell_type == "markdown":
                for match in MATH_BLOCK.finditer(cell.source):
                    label = LABEL.search(match.group("body"))
                    if label:
                        self.equations[label.group(1)] = len(self.equations) + 1

    def __call__(self, source: str) -> str:
        source = TARGET.sub("", source)
        source = MATH_BLOCK.sub(self._math, source)
        source = plain_exercise(source)
        source = ANY_DIRECTIVE.sub(self._directive, source)
        return ROLE.sub(self._role, source)

    def _math(self, match: re.Match) -> str:
        label = LABEL.search(match.group("body"))
        body = "\n".join(line for line in match.group("body").splitlines() if not re.match(r"^:\w[\w-]*:", line))
        tag = f"\\tag{{{self.equations[label.group(1)]}}}" if label else ""
        return f"$$\n{body.strip()}{tag}\n$$"

    def _directive(self, match: re.Match) -> str:
        """Any other directive (an admonition, say): a quoted block titled with its name."""
        title = match.group("argument").strip() or match.group("name").replace("-", " ").capitalize()
        body = "\n".join(line for line in match.group("body").splitlines() if not re.match(r"^:\w[\w-]*:", line))
        return "\n".join([f"> **{title}.**", *(f"> {line}" if line else ">" for line in body.strip().splitlines())])

    def _role(self, match: re.Match) -> str:
        role, body = match.group("role"), match.group("body")
        explicit = EXPLICIT.match(body)
        text, target = (explicit.group("text"), explicit.group("target")) if explicit else (None, body)
        if role in ("glue", "glue:", "glue:text", "glue:any"):
            name = target.split(":")[0]
            if name not in self.glued:
                raise ConventionError(f"{{glue}} role names {name!r}, which the notebook never glued")
            return self.glued[name]
        if role == "ref":
            return text or self.sections.get(target, f"the section {target}")
        if role == "numref":
            if target.startswith("ex-"):
                return f"Exercise {target}"
            caption = self.figures.get(target, "")
            return text or (f'the figure "{caption.split(". ")[0].rstrip(".")}"' if caption else target)
        if role == "eq":
            return f"({self.equations[target]})" if target in self.equations else f"equation {target}"
        if role == "doc":
            return text or self.book.chapters.get(Path(target).stem, target)
        if role in ("cite", "cite:p", "cite:t"):
            return self.book.cite(target, textual=role == "cite:t")
        if role == "math":
            return f"${body}$"
        return text or target


def stored_glue(notebook: nbformat.NotebookNode) -> dict[str, str]:
    """The text each glued name displays on the site, read from the notebook's stored outputs."""
    values = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            text = output.get("data", {}).get("application/papermill.record/text/plain")
            if name and text is not None:
                try:
                    value = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    value = text
                values[name] = value if isinstance(value, str) else text
    return values


def plain_exercise(source: str) -> str:
    """Markdown with each exercise directive rewritten as plain Markdown Jupyter shows well."""

    def rewrite(match: re.Match) -> str:
        body = match.group("body")
        label = LABEL.search(body)
        text = "\n".join(line for line in body.splitlines() if not re.match(r"^:\w[\w-]*:", line)).strip()
        return f"**Exercise {label.group(1) if label else ''}.** {text}\n"

    return EXERCISE_BLOCK.sub(rewrite, source)


def _cleared(cell: nbformat.NotebookNode, flatten: MystFlattener) -> nbformat.NotebookNode:
    cell = copy.deepcopy(cell)
    if cell.cell_type == "code":
        cell.outputs = []
        cell.execution_count = None
    cell.metadata.pop("execution", None)
    if cell.cell_type == "markdown":
        cell.source = flatten(cell.source)
    return cell


def write_workshop(paths: list[Path], out: Path, book: Book | None = None) -> tuple[list[Path], list[Path]]:
    """Write one participant copy per notebook into `out`; return (written, kept edited copies)."""
    out.mkdir(parents=True, exist_ok=True)
    book = book or Book()
    written, kept = [], []
    for path in paths:
        target = out / path.name
        if target.exists() and is_edited(target):
            kept.append(target)
            continue
        nbformat.write(participant_copy(nbformat.read(path, as_version=4), book), target)
        written.append(target)
    return written, kept


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
        "--bibliography", type=Path, default=Path(__file__).resolve().parent.parent / "references.bib"
    )
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
    chapters = sorted({*args.notebooks, *(md for p in args.notebooks for md in p.parent.glob("*.md"))})
    book = Book(chapters, args.bibliography)
    try:
        written, kept = write_workshop(args.notebooks, args.out, book)
    except ConventionError as error:
        print(f"make_workshop: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    for path in kept:
        print(f"kept {path}: it was edited since it was written; delete it (or move it away) to get a fresh copy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
