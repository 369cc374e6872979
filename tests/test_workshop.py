"""The exercise convention of every chapter, and the participant notebooks of `make workshop`.

- Every chapter notebook with exercises follows CONTRIBUTING.md: an `exercise` directive with a
  label `ex-<chapter>-<n>`, then its worked solution between gated `solution-start` (with
  `:class: dropdown`) and `solution-end` directives, each directive in its own Markdown cell, the
  solution's code cells executed like any other (never skipped).
- `tools/make_workshop.py` (what `make workshop` runs) removes every solution and every output,
  and the participant copy runs top to bottom up to its first exercise.
The checks are proven on planted notebooks first.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
# tools/ is a folder of scripts, not a package: load the script as a module by its path.
_spec = importlib.util.spec_from_file_location("make_workshop", ROOT / "tools" / "make_workshop.py")
make_workshop = sys.modules["make_workshop"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_workshop)
ConventionError, exercise_labels = make_workshop.ConventionError, make_workshop.exercise_labels
find_solutions, participant_copy = make_workshop.find_solutions, make_workshop.participant_copy
BOOK = make_workshop.Book(sorted((ROOT / "chapters").glob("*.ipynb")), ROOT / "references.bib")
DIRECTIVE = re.compile(r"^(`{3,}|:{3,})\{([\w-]+)\}", re.M)

NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb"))
LABEL_FORMAT = re.compile(r"^ex-[a-z]+-\d+$")
SKIPPING_TAGS = {"skip-execution", "nbval-skip", "remove-cell"}


def convention_problems(notebook: nbformat.NotebookNode) -> list[str]:
    """Every way the notebook departs from the exercise convention, as readable messages."""
    try:
        solutions = find_solutions(notebook)
    except ConventionError as error:
        return [str(error)]
    problems = []
    labels = exercise_labels(notebook)
    for label in labels:
        if not LABEL_FORMAT.match(label):
            problems.append(f"exercise label {label!r} is not ex-<chapter>-<n>")
    if len(set(labels)) != len(labels):
        problems.append(f"duplicate exercise labels: {labels}")
    solved = [s.label for s in solutions]
    if sorted(solved) != sorted(labels):
        problems.append(f"exercises {labels} and solutions {solved} do not pair up one to one")
    exercise_cells = {}
    for index, cell in enumerate(notebook.cells):
        for label in exercise_labels(nbformat.v4.new_notebook(cells=[cell])) if cell.cell_type == "markdown" else []:
            exercise_cells[label] = index
    for index, cell in enumerate(notebook.cells):
        names = [m.group(2) for m in DIRECTIVE.finditer(cell.source)] if cell.cell_type == "markdown" else []
        if len(names) > 1 and {"exercise", "solution-start", "solution-end"} & set(names):
            problems.append(f"cell {index} holds {names}: an exercise or solution directive sits alone in its cell")
    for solution in solutions:
        start = notebook.cells[solution.start].source
        if not re.search(r"^:class:\s*dropdown\s*$", start, re.M):
            problems.append(f"solution of {solution.label} is not hidden (`:class: dropdown` missing)")
        if solution.label in exercise_cells and exercise_cells[solution.label] > solution.start:
            problems.append(f"solution of {solution.label} comes before its exercise")
        for cell in notebook.cells[solution.start + 1 : solution.end]:
            tags = set(cell.metadata.get("tags", []))
            if cell.cell_type == "code" and tags & SKIPPING_TAGS:
                problems.append(f"a solution cell of {solution.label} is not executed (tags {sorted(tags)})")
            if cell.cell_type == "markdown" and EXERCISE_IN(cell.source):
                problems.append(f"an exercise directive inside the solution of {solution.label}")
    return problems


def EXERCISE_IN(source: str) -> bool:  # noqa: N802  (reads as a predicate in the loop above)
    return bool(make_workshop.EXERCISE.search(source))


def solution_sources(notebook: nbformat.NotebookNode) -> list[str]:
    """The non-empty sources of the cells strictly inside each worked solution."""
    return [
        cell.source.strip()
        for solution in find_solutions(notebook)
        for cell in notebook.cells[solution.start + 1 : solution.end]
        if cell.source.strip()
    ]


def copy_problems(original: nbformat.NotebookNode, copy: nbformat.NotebookNode) -> list[str]:
    """Every way the participant copy leaks a solution or keeps an output."""
    problems = []
    copy_sources = [cell.source.strip() for cell in copy.cells]
    for source in solution_sources(original):
        if source in copy_sources or any(len(source) > 40 and source in s for s in copy_sources):
            problems.append(f"a solution cell survives: {source.splitlines()[0][:60]!r}")
    for index, cell in enumerate(copy.cells):
        if "{solution-start}" in cell.source or "{solution-end}" in cell.source:
            problems.append(f"cell {index} still holds a solution directive")
        if cell.cell_type == "markdown":
            if "{glue" in cell.source:
                problems.append(f"cell {index} keeps a glue role: participants would see no number")
            if DIRECTIVE.search(cell.source):
                problems.append(f"cell {index} keeps a raw directive: {DIRECTIVE.search(cell.source).group(0)}")
            if leftover := re.search(r"\{[a-z]+(:[a-z]+)?\}`|^\([\w.-]+\)=", cell.source, re.M):
                problems.append(f"cell {index} keeps raw MyST: {leftover.group(0)!r}")
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            problems.append(f"cell {index} keeps its outputs or execution count")
    prompts = [
        c
        for c in copy.cells
        if c.cell_type == "code" and re.fullmatch(r"# Exercise \S+: your solution here\.", c.source.strip())
    ]
    if len(prompts) != len(find_solutions(original)):
        problems.append(f"{len(prompts)} prompt cells for {len(find_solutions(original))} solutions")
    text = "\n".join(cell.source for cell in copy.cells if cell.cell_type == "markdown")
    for label in exercise_labels(original):
        if f"**Exercise {label}.**" not in text:
            problems.append(f"exercise {label} is missing from the copy")
    return problems


# --- the checks, proven on planted notebooks -------------------------------------------------


def planted(*cells: tuple[str, str]) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, source in cells:
        if kind == "md":
            notebook.cells.append(nbformat.v4.new_markdown_cell(source))
        else:
            cell = nbformat.v4.new_code_cell(source, execution_count=1)
            cell.outputs = [nbformat.v4.new_output("stream", text="2\n")]
            notebook.cells.append(cell)
    return notebook


EXERCISE = "## Exercises\n\n```{exercise}\n:label: ex-tt-1\n\nCompute 1 + 1.\n```"
START = "```{solution-start} ex-tt-1\n:class: dropdown\n```\nThe answer, computed:"
END = "```{solution-end}\n```"


def good_notebook() -> nbformat.NotebookNode:
    return planted(
        ("code", "x = 1"),
        ("md", EXERCISE),
        ("md", START),
        ("code", "print(1 + 1)  # the secret"),
        ("md", END),
        ("md", "## Summary"),
    )


def test_a_good_notebook_passes_and_its_copy_has_no_solution():
    notebook = good_notebook()
    assert convention_problems(notebook) == []
    copy = participant_copy(notebook)
    assert copy_problems(notebook, copy) == []
    sources = [c.source for c in copy.cells]
    assert "# Exercise ex-tt-1: your solution here.\n" in sources
    assert not any("secret" in s or "The answer" in s for s in sources)
    assert sources[-1] == "## Summary"
    assert "**Exercise ex-tt-1.** Compute 1 + 1." in sources[1]
    nbformat.validate(copy)


@pytest.mark.parametrize(
    "cells,fragment",
    [
        ((("md", EXERCISE), ("md", START), ("code", "1"), ("md", "## no end")), "never ended"),
        ((("md", EXERCISE), ("md", START + "\n\n" + END)), "own cell"),
        ((("md", EXERCISE), ("md", START.replace(":class: dropdown\n", "")), ("code", "1"), ("md", END)), "not hidden"),
        (
            (("md", EXERCISE.replace("ex-tt-1", "exercise1")), ("md", START), ("code", "1"), ("md", END)),
            "ex-<chapter>-<n>",
        ),
        ((("md", EXERCISE),), "pair up"),
        ((("md", START), ("code", "1"), ("md", END), ("md", EXERCISE)), "before its exercise"),
        ((("md", END),), "without a solution-start"),
    ],
)
def test_the_convention_check_catches_planted_breaks(cells, fragment):
    problems = convention_problems(planted(*cells))
    assert any(fragment in p for p in problems), problems


def test_a_skipped_solution_cell_is_caught():
    notebook = good_notebook()
    notebook.cells[3].metadata["tags"] = ["skip-execution"]
    assert any("not executed" in p for p in convention_problems(notebook))


def test_the_copy_check_catches_a_leaked_solution_and_a_kept_output():
    notebook = good_notebook()
    leaky = participant_copy(notebook)
    leaky.cells.append(nbformat.v4.new_code_cell("print(1 + 1)  # the secret"))
    leaky.cells[0].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    problems = copy_problems(notebook, leaky)
    assert any("survives" in p for p in problems) and any("outputs" in p for p in problems)


def glued_notebook(*markdown: str) -> nbformat.NotebookNode:
    """A planted chapter that glues n_seeds = '6' and says so in its Markdown."""
    notebook = good_notebook()
    glue_cell = nbformat.v4.new_code_cell('glue("n_seeds", "6", display=False)', execution_count=2)
    glue_cell.outputs = [
        nbformat.v4.new_output(
            "display_data",
            data={"application/papermill.record/text/plain": "'6'"},
            metadata={"scrapbook": {"name": "n_seeds", "mime_prefix": "application/papermill.record/"}},
        )
    ]
    notebook.cells.insert(1, glue_cell)
    notebook.cells[2:2] = [nbformat.v4.new_markdown_cell(text) for text in markdown]
    return notebook


def test_the_copy_shows_glued_values_and_no_myst():
    notebook = glued_notebook(
        "(tt-section)=\n## Results\n\nWe ran {glue:text}`n_seeds` seeds, as {cite:t}`wu2018group` did.",
        "```{math}\n:label: eq-tt-1\na = b\n```\nSee {eq}`eq-tt-1`, {ref}`tt-section` and {numref}`ex-tt-1`.",
        "```{note}\nRead this.\n```",
    )
    copy = participant_copy(notebook, BOOK)
    assert copy_problems(notebook, copy) == []
    text = "\n".join(c.source for c in copy.cells if c.cell_type == "markdown")
    assert "We ran 6 seeds, as Wu and He (2018) did." in text
    assert "$$\na = b\\tag{1}\n$$" in text and "See (1), Results and Exercise ex-tt-1." in text
    assert "> **Note.**\n> Read this." in text


def test_a_glue_role_without_a_stored_value_is_refused():
    notebook = glued_notebook("We ran {glue:text}`n_epochs` epochs.")
    with pytest.raises(ConventionError, match="n_epochs"):
        participant_copy(notebook, BOOK)


def test_the_copy_check_catches_raw_myst_and_a_lost_exercise():
    notebook = good_notebook()
    copy = participant_copy(notebook)
    copy.cells[1].source = "We ran {glue:text}`n_seeds` seeds."
    copy.cells.append(nbformat.v4.new_markdown_cell("```{warning}\nraw\n```\n(a-label)=\n{ref}`x`"))
    problems = copy_problems(notebook, copy)
    for fragment in ("glue role", "raw directive", "raw MyST", "ex-tt-1 is missing"):
        assert any(fragment in p for p in problems), (fragment, problems)


def test_an_exercise_sharing_a_cell_with_a_solution_end_is_caught():
    notebook = good_notebook()
    notebook.cells[4].source = END + "\n\n" + EXERCISE.replace("ex-tt-1", "ex-tt-2")
    assert any("sits alone" in p for p in convention_problems(notebook))


def run_make_workshop(out: Path, *notebooks: Path) -> str:
    command = [sys.executable, str(ROOT / "tools" / "make_workshop.py"), "--out", str(out), *map(str, notebooks)]
    return subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout


def test_make_workshop_keeps_an_edited_copy_and_refreshes_an_untouched_one(tmp_path):
    chapters = tmp_path / "chapters"
    chapters.mkdir()
    for name in ("one", "two"):
        nbformat.write(good_notebook(), chapters / f"{name}.ipynb")
    out = tmp_path / "workshop"
    run_make_workshop(out, chapters / "one.ipynb", chapters / "two.ipynb")
    edited = nbformat.read(out / "one.ipynb", as_version=4)
    prompt = next(c for c in edited.cells if c.source.startswith("# Exercise ex-tt-1"))
    prompt.source += "print('my answer')\n"
    nbformat.write(edited, out / "one.ipynb")
    changed = good_notebook()
    changed.cells[0].source = "x = 2"  # the chapter changes after the first run
    nbformat.write(changed, chapters / "two.ipynb")
    stdout = run_make_workshop(out, chapters / "one.ipynb", chapters / "two.ipynb")
    assert "print('my answer')" in (out / "one.ipynb").read_text()
    assert f"kept {out / 'one.ipynb'}" in stdout
    assert nbformat.read(out / "two.ipynb", as_version=4).cells[0].source == "x = 2"


# --- the real chapters -----------------------------------------------------------------------


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_follows_the_exercise_convention(path):
    assert convention_problems(nbformat.read(path, as_version=4)) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_participant_copy_has_no_solution_and_no_output(path):
    original = nbformat.read(path, as_version=4)
    copy = participant_copy(original, BOOK)
    assert copy_problems(original, copy) == []
    # Outside the solutions, the copy is the chapter: the same code, in the same order.
    inside = {i for s in find_solutions(original) for i in range(s.start, s.end + 1)}
    kept = [c.source for i, c in enumerate(original.cells) if i not in inside and c.cell_type == "code"]
    assert [c.source for c in copy.cells if c.cell_type == "code" and not c.source.startswith("# Exercise ")] == kept


def test_make_workshop_writes_every_chapter(tmp_path):
    """The command of `make workshop` writes one clean copy of every chapter."""
    out = tmp_path / "workshop"
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_workshop.py"), "--out", str(out), *map(str, NOTEBOOKS)],
        check=True,
        capture_output=True,
        text=True,
    )
    copies = sorted(out.glob("*.ipynb"))
    assert [p.name for p in copies] == [p.name for p in NOTEBOOKS]
    for original, copy in zip(NOTEBOOKS, copies, strict=True):
        assert copy_problems(nbformat.read(original, as_version=4), nbformat.read(copy, as_version=4)) == []


# Executing every copy again would double the time of `make test` for no new evidence: the test
# above proves each copy's code, up to its first exercise, identical to the chapter's, which nbval
# executes in the same run. One copy is executed for real, to prove that a copy is a runnable
# notebook on its own; `make workshop-check` executes them all before a workshop.
@pytest.mark.parametrize("name", ["overview.ipynb"])
def test_a_participant_copy_runs_up_to_its_first_exercise(tmp_path, name):
    copy = tmp_path / name
    nbformat.write(participant_copy(nbformat.read(ROOT / "chapters" / name, as_version=4), BOOK), copy)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "tools" / "make_workshop.py"), "--run-until-exercise", str(copy)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode == 0, f"{name} fails before its first exercise:\n{output}"
    assert "code cells before the first exercise ran" in result.stdout


def test_the_workshop_guide_names_only_real_exercises():
    """chapters/workshop.md cannot go stale: each exercise label it names exists in its chapter.

    A label of a chapter that has no exercise in the repository yet (being written) is not checked.
    """
    guide = (ROOT / "chapters" / "workshop.md").read_text()
    labels = {label for path in NOTEBOOKS for label in exercise_labels(nbformat.read(path, as_version=4))}
    chapters = {label.split("-")[1] for label in labels}
    named = set(re.findall(r"`(ex-[a-z]+-\d+)`", guide))
    assert named, "the guide names no live exercise"
    assert {n for n in named if n.split("-")[1] in chapters} - labels == set(), "exercises the chapters lack"
